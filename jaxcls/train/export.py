"""One-file models: `learn.export('model.jaxcls')`, read back by `load_learner` /
`Predictor.load` and `jaxcls predict model.jaxcls img.jpg` without the training data.

The file is a safetensors file (jaxcls.models.weight_files.write_safetensors): the network's
parameters and BatchNorm statistics as plain arrays named by their paths
('params/body/conv1/kernel'), and in its string metadata the marker 'jaxcls-export', the
export format, the model description every saved model carries (jaxcls.train.modelfile:
arch, classes, head, sizes, the validation transform and its normalisation) and the digest
of both (jaxcls.train.integrity). No pickle, no code: any safetensors reader opens it, and
reading it runs nothing. It is written next to its name and renamed into place under a lock,
after a free-space check (jaxcls.train.safe_write).

    >>> learn.export('dogscats.jaxcls')                     # doctest: +SKIP
    >>> p = load_learner('data/dogscats/dogscats.jaxcls')   # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from jaxcls.models.weight_files import read_safetensors, write_safetensors

from . import safe_write as sw
from .integrity import (DamagedModelError, ModelFileError, digest_item, leaf_paths,
                        verify_json, verify_tree)

__all__ = ['MARKER', 'EXPORT_FORMAT', 'write_export', 'read_export', 'read_export_meta']

MARKER = 'jaxcls-export'
# 1: params and batch_stats, the description and the digest in the metadata.
EXPORT_FORMAT = 1


def write_export(fname: str, variables: dict, meta: dict) -> str:
    """Write `variables` ({'params', 'batch_stats'}) and `meta` to the file `fname`,
    atomically (see the module docstring). Returns its absolute path."""
    fname = os.path.abspath(os.fspath(fname))
    if os.path.isdir(fname):
        raise ModelFileError(f'{fname} is a folder; export to a file name, e.g. '
                             f'{os.path.join(fname, "model.jaxcls")}')
    tree = {k: variables[k] for k in ('params', 'batch_stats')}
    arrays = {p: np.asarray(a) for p, a in leaf_paths(tree)}
    digest = digest_item({'state': tree}, {'meta': meta})
    metadata = {'format': MARKER, 'version': str(EXPORT_FORMAT),
                'meta': json.dumps(meta), 'digest': json.dumps(digest)}
    os.makedirs(os.path.dirname(fname), exist_ok=True)
    nbytes = sum(a.nbytes for a in arrays.values()) + (1 << 20)   # + the JSON metadata
    with sw.replacing(fname, nbytes, 'exported model') as tmp, open(tmp, 'wb') as f:
        write_safetensors(f, arrays, metadata)
    return fname


def _open(fname: str) -> tuple[dict, dict, dict]:
    """(meta, digest, arrays) of an export file, each error a ModelFileError naming it."""
    fname = os.path.abspath(os.fspath(fname))
    try:
        metadata, arrays = read_safetensors(fname)
    except FileNotFoundError:
        raise
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise ModelFileError(f'{fname} is not a jaxcls model file, or it is damaged ({e}); pass '
                             'a file written by learn.export(name) or a model folder') from e
    if metadata.get('format') != MARKER:
        raise ModelFileError(f'{fname} is a safetensors file but not a jaxcls model (no '
                             f"'{MARKER}' marker): plain weights go in weights=, a model comes "
                             'from learn.export(name)')
    version = metadata.get('version', '')
    if not version.isdigit() or int(version) > EXPORT_FORMAT:
        from jaxcls import __version__
        raise ModelFileError(f'{fname} was exported in format {version!r}; this jaxcls '
                             f'{__version__} reads export formats up to {EXPORT_FORMAT}: upgrade '
                             'jaxcls to load it')
    try:
        meta, digest = json.loads(metadata['meta']), json.loads(metadata['digest'])
    except (KeyError, json.JSONDecodeError) as e:
        raise DamagedModelError(f'{fname} is damaged: its description cannot be read ({e}); '
                                'use another copy, or export the model again') from e
    verify_json(meta, digest, fname, 'meta')
    return meta, digest, arrays


def read_export_meta(fname: str) -> dict:
    """The model description in an export file, checked against its digest."""
    return _open(fname)[0]


def read_export(fname: str) -> tuple[dict, dict]:
    """(meta, {'params', 'batch_stats'} as nested dicts of numpy arrays) of an export file,
    every array checked against its digest."""
    meta, digest, arrays = _open(fname)
    tree: dict[str, Any] = {}
    for path, a in arrays.items():
        node = tree
        *parents, leaf = path.split('/')
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = a
    missing = [k for k in ('params', 'batch_stats') if k not in tree]
    if missing:
        raise DamagedModelError(f'{fname} is damaged: it holds no {missing}; use another copy, '
                                'or export the model again')
    verify_tree(tree, digest, fname, 'state')
    listed = set(digest['arrays'].get('state', {}))
    if listed != set(arrays):
        raise DamagedModelError(f'{fname} is damaged: {len(listed - set(arrays))} of its arrays '
                                'are missing; use another copy, or export the model again')
    return meta, tree
