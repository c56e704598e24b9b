"""What a saved model says about itself: the one schema and its one reader.

`learn.save(name)` and every ModelCheckpoint step write, next to the arrays, a JSON
description (`describe`): the arch and its facts, the class list, the head, the image and
cache sizes, the validation transform, which layer groups were trainable, the jaxcls
version. `read(folder)` is the only reader: `learn.load`, `Predictor.load` and the
`jaxcls` command all go through it, so a folder that is not a jaxcls model, or one written
without a part they need, gives the same one-line `ModelFileError` everywhere.

    >>> meta = read('data/dogscats/models/224_all')        # doctest: +SKIP
    >>> meta['arch'], meta['classes'], tfm_from_json(meta['val_tfms']).sz   # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp

from jaxcls.data import transforms as T

from . import checkpoint as ckpt
from . import export as ex
from .integrity import DamagedModelError, ModelFileError  # noqa: F401 (re-exported)
from .integrity import tree_shapes, verify_shapes
from .recipe import init_ema

# Everything a model must describe to be rebuilt without its training data.
REQUIRED = ('arch', 'arch_spec', 'classes', 'c', 'is_multi', 'head', 'stages', 'sz',
            'cache_size', 'val_tfms')
# The layout of a saved model this version writes: 2 added the digest item (jaxcls.train.
# integrity); 1 (no 'format' key) is read too, unverified. A larger number is a newer jaxcls's.
MODEL_FORMAT = 2
# What makes two networks hold the same arrays.
NETWORK_KEYS = ('arch', 'c', 'stages', 'head')


def tfm_to_json(cfg: T.TfmConfig) -> dict:
    """A TfmConfig as plain JSON values (tuples as lists, enums as ints)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else int(v) if isinstance(v, T.CropType) else v
    return out


def tfm_from_json(d: dict) -> T.TfmConfig:
    """The TfmConfig `tfm_to_json` wrote."""
    v = dict(d)
    v['crop_type'] = T.CropType(v['crop_type'])
    return T.TfmConfig(**{k: tuple(x) if isinstance(x, list) else x for k, x in v.items()})


def describe(*, arch_name: str, spec: Any, classes, is_multi: bool, head: dict, stages,
             trainable, sz: int, cache_size: int, pretrained: bool, val_tfms: T.TfmConfig) -> dict:
    """The JSON a saved model carries (see the module docstring)."""
    from jaxcls import __version__
    return {'arch': arch_name, 'classes': [str(c) for c in classes], 'c': len(classes),
            'is_multi': bool(is_multi), 'head': dict(head), 'stages': list(stages),
            'trainable': list(trainable), 'sz': int(sz), 'cache_size': int(cache_size),
            'pretrained': bool(pretrained), 'val_tfms': tfm_to_json(val_tfms),
            'arch_spec': spec.to_json(), 'jaxcls': __version__, 'format': MODEL_FORMAT}


def read(folder: str) -> dict:
    """The description saved in `folder` (a model folder, or a file `learn.export` wrote),
    checked against its digest and for every REQUIRED part.

    Raises FileNotFoundError (naming the saved models beside it) for a missing folder,
    ModelFileError for a folder or file that is not a jaxcls model, is damaged, lacks parts
    or was written by a newer jaxcls.
    """
    meta = ex.read_export_meta(folder) if os.path.isfile(folder) else ckpt.load_meta(folder)
    if not isinstance(meta, dict):
        raise ModelFileError(f'{folder!r} is not a jaxcls model folder: its description is a '
                             f'{type(meta).__name__}, not the dict jaxcls writes')
    fmt = meta.get('format', 1)
    if not isinstance(fmt, int) or fmt > MODEL_FORMAT:
        from jaxcls import __version__
        raise ModelFileError(f"{folder!r} was saved by jaxcls {meta.get('jaxcls', '?')} in model "
                             f'format {fmt}; this jaxcls {__version__} reads formats up to '
                             f'{MODEL_FORMAT}: upgrade jaxcls to load it')
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ModelFileError(f'{folder!r} is not a jaxcls model folder this version can read: it '
                             f'was saved without {missing} (an older one? save it again with this '
                             'version of jaxcls: learn.save(name))')
    return meta


def check_same_network(saved: dict, mine: dict, folder: str) -> None:
    """Raise ValueError, naming both, unless `saved` describes the network `mine` does."""
    if any(saved.get(k) != mine[k] for k in NETWORK_KEYS):
        raise ValueError(
            f"checkpoint {folder} holds {saved.get('arch')} with {saved.get('c')} classes "
            f"(stages {saved.get('stages')}, head {saved.get('head')}); this learner is "
            f"{mine['arch']} with {mine['c']} classes (stages {mine['stages']}, head "
            f"{mine['head']}). Load it into a learner built the same way.")


def check_standard_head(meta: dict, folder: str, fix: str) -> None:
    """Raise ModelFileError for a custom head: only the learner that built it can rebuild it."""
    head = meta['head']
    if 'custom_head' in head:
        raise ModelFileError(f'{folder} has a custom head ({head["custom_head"]}); {fix}')


def save(learn, name: str) -> str:
    """`learn.save(name)`: params, BatchNorm statistics, optimizer state and step to
    {data.path}/models/{name} (Orbax, atomic), with `learn.describe()`. Returns the folder.

    With the recipe's moving average of the weights on, 'params' and 'batch_stats' are the
    average (what the learner validates and predicts with, so every reader gets that model),
    the weights themselves are under 'raw', and the description says 'ema': its decay."""
    state, meta = learn.state, learn.describe()
    model = learn.steps.model_state(images=True)
    tree = {'params': model.params, 'batch_stats': model.batch_stats,
            'opt_state': state.opt_state, 'step': state.step}
    if learn.recipe.ema and state.ema is not None:
        tree['raw'], meta['ema'] = state.variables, learn.recipe.ema
    return ckpt.save_checkpoint(os.path.join(learn._models_dir(), name), tree, meta)


def load(learn, name: str) -> None:
    """`learn.load(name)`: the arrays saved by `save(name)`, into a learner built the same way
    (arch, classes, head); the optimizer state too when the same layer groups are trainable.
    `name` may also be a file `learn.export` wrote (weights and statistics only)."""
    folder = os.path.join(learn._models_dir(), name)
    meta = read(folder)
    check_same_network(meta, learn.describe(), folder)
    state = learn.state
    if os.path.isfile(folder):
        _, tree = ex.read_export(folder)
        verify_shapes({'params': state.params, 'batch_stats': state.batch_stats},
                      {'arrays': {'state': tree_shapes(tree)}}, folder)
        cast = {k: jax.tree_util.tree_map(lambda t, a: jnp.asarray(a, t.dtype), getattr(state, k),
                                          tree[k]) for k in ('params', 'batch_stats')}
        ema = init_ema(cast) if learn.recipe.ema else None   # an export holds one model
        learn.state = learn._place(state.replace(**cast, ema=ema))
        if learn.precompute:
            learn._features.ensure()
        return
    target = {'params': state.params, 'batch_stats': state.batch_stats, 'step': state.step}
    if 'ema' in meta:  # saved with a moving average: the weights themselves are under 'raw'
        target['raw'] = state.variables
    if tuple(meta.get('trainable', ())) == learn.trainable:
        target['opt_state'] = state.opt_state
        restored = ckpt.load_checkpoint(folder, target)
    else:  # another optimizer structure: everything else, cast to the learner's dtypes
        full = ckpt.load_checkpoint(folder)
        restored = {k: jax.tree_util.tree_map(lambda t, a: jnp.asarray(a, t.dtype), v, full[k])
                    for k, v in target.items()}
    params, stats, ema = restored['params'], restored['batch_stats'], None
    if learn.recipe.ema:  # the saved model is the average; it goes on from there
        ema = {'params': params, 'batch_stats': stats}
        if 'raw' in restored:
            params, stats = restored['raw']['params'], restored['raw']['batch_stats']
        else:
            ema = init_ema(ema)
    learn.state = learn._place(state.replace(
        params=params, batch_stats=stats, step=restored['step'], ema=ema,
        opt_state=restored.get('opt_state', state.opt_state)))
    if learn.precompute:
        learn._features.ensure()
