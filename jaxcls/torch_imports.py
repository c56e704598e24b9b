"""fastai 0.7's ``fastai.torch_imports`` under jaxcls: the framework and the ImageNet architectures.

    from jaxcls.torch_imports import *        # was: from fastai.torch_imports import *

fastai's gave torch, nn, F and torchvision's models; here they are jax, jax.numpy as jnp,
flax.linen as nn, optax, and jaxcls's resnet18 / resnet34 / resnet50 (the arch names
tfms_from_model and ConvLearner.pretrained take). A cell asking torch about CUDA becomes
``jax.devices()``.

A thin re-export for porting notebooks: no logic of its own, and nothing in jaxcls imports it.
"""
import jax
import optax

from jax import numpy as jnp
from flax import linen as nn

from jaxcls.models import resnet18, resnet34, resnet50

__all__ = [
    'jax', 'optax', 'jnp', 'nn', 'resnet18', 'resnet34', 'resnet50',
]
