"""jaxcls: the fast.ai lesson-1 image-classification workflow in JAX.

    from jaxcls import ImageClassifierData, ConvLearner, tfms_from_model, resnet34, transforms_side_on
"""
__version__ = '0.1.0'

from jaxcls.data.imagedata import ImageClassifierData, ImageDataset
from jaxcls.data.transforms import (CropType, RandomDihedral, RandomFlip, RandomLighting,
                                    RandomRotate, RandomZoom, tfms_from_model, tfms_from_stats,
                                    transforms_basic, transforms_side_on, transforms_top_down)
from jaxcls.models import resnet18, resnet34, resnet50
from jaxcls.interpret import ClassificationInterpretation
from jaxcls.train.callbacks import Callback, CSVLogger, TensorBoardLogger
from jaxcls.train.learner import ConvLearner, TrainingDiverged
from jaxcls.train.memory import OutOfDeviceMemory
from jaxcls.train.metrics import accuracy, accuracy_thresh, fbeta
from jaxcls.train.resume import ModelCheckpoint, ResumeMismatch, SaveBest

__all__ = [
    'CSVLogger', 'Callback', 'ClassificationInterpretation', 'ConvLearner', 'ModelCheckpoint',
    'OutOfDeviceMemory', 'ResumeMismatch', 'SaveBest', 'TensorBoardLogger', 'CropType', 'ImageClassifierData', 'ImageDataset', 'RandomDihedral',
    'RandomFlip', 'RandomLighting', 'RandomRotate', 'RandomZoom', 'TrainingDiverged', 'accuracy',
    'accuracy_thresh', 'fbeta', 'resnet18', 'resnet34', 'resnet50', 'tfms_from_model',
    'tfms_from_stats', 'transforms_basic', 'transforms_side_on', 'transforms_top_down',
]
