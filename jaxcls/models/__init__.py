"""Flax ResNets that match torchvision, their per-arch facts, and the weight loader."""
from jaxcls.archs import ARCHS, ArchSpec, get_arch
from .resnet import ResNet
from .zoo import Model, build, resnet18, resnet34, resnet50

__all__ = ['ARCHS', 'ArchSpec', 'Model', 'ResNet', 'build', 'get_arch', 'resnet18', 'resnet34',
           'resnet50']
