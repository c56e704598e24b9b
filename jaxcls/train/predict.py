"""A learner's predictions: over the validation or test set, on an array, and with test-time
augmentation. Each runs one of the learner's compiled public steps (jaxcls.train.steps:
`make_predict_step`, `make_tta_step`) over a loader, on the model's variables alone.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from . import memory as mem
from .metrics import bce_loss, nll_loss

# Folded into the run's key for TTA's augmentation keys (one per augmented pass).
TTA_SALT = 7


def _split(learn, is_test: bool):
    ds = learn.data.test_ds if is_test else learn.data.val_ds
    if ds is None:
        raise ValueError('there is no test set; build the data with test_name=... to predict on one')
    return ds


def _images(batch: dict) -> dict:
    """The part of a loader's batch the inference steps read: an unlabelled test set (int
    zeros) and a multi-label validation set (float rows) then share one compiled step."""
    return {'image': batch['image']}


def with_targs(learn, is_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, targets) for valid (or test: targets are zeros when unlabelled), in order."""
    _split(learn, is_test)
    if learn.precompute:
        learn._features.ensure()
        loader = learn._features.predict_loader(is_test)
    else:
        loader = learn.data.test_dl if is_test else learn.data.val_dl
    fn, model = learn.steps.get('predict'), learn.steps.model_state()
    with mem.guard(learn, 'predicting'):
        outs = [fn(model, _images(batch)) for batch in loader.iter_epoch(0)]
        # Real rows only, in split order, on every process (a collective with several).
        preds = loader.collect(outs)
    return preds, loader.targets()


def on_array(learn, x: Any) -> np.ndarray:
    """Predictions for a batch: uint8 images (N, H, W, 3), H and W >= sz, are centre-cropped
    and normalised; float arrays must already be normalised (N, sz, sz, 3)."""
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f'predict_array takes a batch (N, H, W, 3); got shape {x.shape}')
    kind = 'predict_uint8' if x.dtype == np.uint8 else 'predict_float'
    return np.asarray(learn.steps.get(kind)(learn.steps.model_state(images=True), {'image': x}))


def tta(learn, n_aug: int = 4, is_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """fastai 0.7's TTA: ceil(n_aug/4) copies of the plain pass, then n_aug augmented passes
    (one vmapped, jitted call per batch, keys from the learner's seed); with the targets."""
    _split(learn, is_test)
    was = learn._precompute
    learn._precompute = False  # augmentation needs images, not stored activations
    try:
        plain, targs = with_targs(learn, is_test)
        loader = learn.data.test_dl if is_test else learn.data.val_dl
        fn, model = learn.steps.get('tta'), learn.steps.model_state()
        keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(learn.seed), TTA_SALT), n_aug)
        outs = []
        with mem.guard(learn, 'in TTA'):
            for b, batch in enumerate(loader.iter_epoch(0)):
                outs.append(fn(model, _images(batch),
                               jax.vmap(lambda k: jax.random.fold_in(k, b))(keys)))
            aug = loader.collect(outs, axis=1)
    finally:
        learn._precompute = was
    return np.concatenate([np.stack([plain] * math.ceil(n_aug / 4)), aug]), targs


def validate(learn) -> dict:
    """{'val_loss', metric name: value} of the learner on the validation set."""
    preds, targs = with_targs(learn)
    loss = bce_loss(preds, targs) if learn.is_multi else nll_loss(preds, targs)
    return {'val_loss': loss, **{getattr(m, '__name__', type(m).__name__): float(m(preds, targs))
                                 for m in learn.metrics}}
