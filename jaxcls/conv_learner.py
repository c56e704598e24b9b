"""fastai 0.7's ``fastai.conv_learner`` under jaxcls: ConvLearner and everything a notebook reaches through it.

    from jaxcls.conv_learner import *        # was: from fastai.conv_learner import *

fastai's conv_learner handed on, through its star imports, the libraries (imports,
torch_imports), transforms, dataset, model, sgdr and metrics; this module hands on the jaxcls
modules of the same names, so lesson 2's single ``from jaxcls.conv_learner import *`` gives np,
plt, ImageClassifierData, tfms_from_model, ConvLearner, get_cv_idxs, to_np and accuracy_np. The
plots are in jaxcls.plots, as in fastai.

A thin re-export for porting notebooks: no logic of its own, and nothing in jaxcls imports it.
"""
from jaxcls.imports import (
    collections, contextlib, copy, datetime, itertools, json, math, os, pickle, random, re, shutil,
    string, sys, threading, time, warnings, np, PIL, abstractmethod, Counter, OrderedDict, Iterable,
    ProcessPoolExecutor, ThreadPoolExecutor, partial, glob, iglob, chain, attrgetter, itemgetter,
    Path, Image, ImageEnhance, ImageOps, tqdm, trange, plt
)
from jaxcls.torch_imports import jax, optax, jnp, nn, resnet18, resnet34, resnet50
from jaxcls.core import to_np
from jaxcls.transforms import (
    AugParams, CropType, RandomDihedral, RandomFlip, RandomLighting, RandomRotate, RandomZoom,
    TfmConfig, affine_matrix, apply_affine, aug_samples, augment, center_crop, denorm, lighting,
    sample_params, tfms_from_model, tfms_from_stats, transforms_basic, transforms_side_on,
    transforms_top_down, val_transform
)
from jaxcls.dataset import (
    ImageDataset, BadImageError, ImageClassifierData, LayoutError, csv_items, folder_items,
    get_cv_idxs, list_images
)
from jaxcls.dataloader import DataLoader, TfmDataLoader
from jaxcls.model import (
    convnet, Loop, HParams, layer_group_sgd, sgd, ModelState, TrainState, create_train_state,
    make_eval_step, make_features_step, make_predict_step, make_train_step, make_tta_step
)
from jaxcls.sgdr import (
    CSVLogger, Callback, DivergenceGuard, LossRecorder, ProgressBar, Recorder, TensorBoardLogger,
    TrainingDiverged, LRFinder, ModelCheckpoint, SaveBest, cos_between, fit_schedule,
    lr_find_schedule, lr_range, one_cycle, one_cycle_schedule, sgdr, sgdr_epochs
)
from jaxcls.metrics import accuracy, accuracy_np, accuracy_thresh, bce_loss, fbeta, nll_loss
from jaxcls.learner import Predictor, ConvLearner, OutOfDeviceMemory, ResumeMismatch

__all__ = [
    'collections', 'contextlib', 'copy', 'datetime', 'itertools', 'json', 'math', 'os', 'pickle',
    'random', 're', 'shutil', 'string', 'sys', 'threading', 'time', 'warnings', 'np', 'PIL',
    'abstractmethod', 'Counter', 'OrderedDict', 'Iterable', 'ProcessPoolExecutor',
    'ThreadPoolExecutor', 'partial', 'glob', 'iglob', 'chain', 'attrgetter', 'itemgetter', 'Path',
    'Image', 'ImageEnhance', 'ImageOps', 'tqdm', 'trange', 'plt', 'jax', 'optax', 'jnp', 'nn',
    'resnet18', 'resnet34', 'resnet50', 'to_np', 'AugParams', 'CropType', 'RandomDihedral',
    'RandomFlip', 'RandomLighting', 'RandomRotate', 'RandomZoom', 'TfmConfig', 'affine_matrix',
    'apply_affine', 'aug_samples', 'augment', 'center_crop', 'denorm', 'lighting', 'sample_params',
    'tfms_from_model', 'tfms_from_stats', 'transforms_basic', 'transforms_side_on',
    'transforms_top_down', 'val_transform', 'ImageDataset', 'BadImageError', 'ImageClassifierData',
    'LayoutError', 'csv_items', 'folder_items', 'get_cv_idxs', 'list_images', 'DataLoader',
    'TfmDataLoader', 'convnet', 'Loop', 'HParams', 'layer_group_sgd', 'sgd', 'ModelState',
    'TrainState', 'create_train_state', 'make_eval_step', 'make_features_step', 'make_predict_step',
    'make_train_step', 'make_tta_step', 'CSVLogger', 'Callback', 'DivergenceGuard', 'LossRecorder',
    'ProgressBar', 'Recorder', 'TensorBoardLogger', 'TrainingDiverged', 'LRFinder',
    'ModelCheckpoint', 'SaveBest', 'cos_between', 'fit_schedule', 'lr_find_schedule', 'lr_range',
    'one_cycle', 'one_cycle_schedule', 'sgdr', 'sgdr_epochs', 'accuracy', 'accuracy_np',
    'accuracy_thresh', 'bce_loss', 'fbeta', 'nll_loss', 'Predictor', 'ConvLearner',
    'OutOfDeviceMemory', 'ResumeMismatch',
]
