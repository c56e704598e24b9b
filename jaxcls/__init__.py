"""jaxcls: the fast.ai lesson-1 image-classification workflow in JAX.

    from jaxcls import ImageClassifierData, ConvLearner, tfms_from_model, resnet34, transforms_side_on

The names below are imported on first use (PEP 562), so `import jaxcls.cli` or
`import jaxcls.hugepages` does not pay for jax and flax before it needs them.

A notebook written for fastai 0.7 imports jaxcls's modules of the same names instead:
``from jaxcls.conv_learner import *`` for ``from fastai.conv_learner import *``, and so on
(imports, torch_imports, core, transforms, dataset, dataloader, model, sgdr, metrics,
learner, plots, planet).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = '0.1.0'

# public name -> the module that defines it
_HOME = {
    'ImageClassifierData': 'jaxcls.data.imagedata', 'ImageDataset': 'jaxcls.data.dataset',
    **dict.fromkeys(['CropType', 'RandomDihedral', 'RandomFlip', 'RandomLighting', 'RandomRotate',
                     'RandomZoom', 'tfms_from_model', 'tfms_from_stats', 'transforms_basic',
                     'transforms_side_on', 'transforms_top_down'], 'jaxcls.data.tfm_config'),
    **dict.fromkeys(['resnet18', 'resnet34', 'resnet50'], 'jaxcls.models'),
    'ClassificationInterpretation': 'jaxcls.interpret', 'ImageClassifierCleaner': 'jaxcls.widgets',
    'Callback': 'jaxcls.train.callbacks',
    **dict.fromkeys(['CSVLogger', 'TensorBoardLogger'], 'jaxcls.train.loggers'),
    'ConvLearner': 'jaxcls.train.learner', 'TrainingDiverged': 'jaxcls.train.callbacks',
    'OutOfDeviceMemory': 'jaxcls.train.memory',
    **dict.fromkeys(['Predictor', 'load_learner'], 'jaxcls.train.inference'),
    'ModelFileError': 'jaxcls.train.integrity',
    **dict.fromkeys(['accuracy', 'accuracy_np', 'accuracy_thresh', 'f2', 'fbeta', 'opt_th'],
                   'jaxcls.train.metrics'),
    **dict.fromkeys(['plot_confusion_matrix', 'plots_from_files'], 'jaxcls.plots'),
    'get_cv_idxs': 'jaxcls.data.items',
    **dict.fromkeys(['ModelCheckpoint', 'ResumeMismatch', 'SaveBest'], 'jaxcls.train.resume'),
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
    else:
        try:                                   # a subpackage: jaxcls.models, jaxcls.data, ...
            value = importlib.import_module(f'{__name__}.{name}')
        except ModuleNotFoundError as e:
            if e.name != f'{__name__}.{name}':
                raise
            raise AttributeError(f'module {__name__!r} has no attribute {name!r}') from None
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_HOME))
