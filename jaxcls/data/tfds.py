"""TensorFlow Datasets -> the same uint8 cache and loaders, without TensorFlow where the format allows.

A dataset prepared in the ``array_record`` format is read through
``tfds.data_source`` (random access, no TensorFlow): images come out as their
encoded bytes (``tfds.decode.SkipDecoding``) and are decoded by jaxcls's own
thread pool (:mod:`jaxcls.data.decode`: EXIF, any mode to RGB, draft, centre
square), exactly like files. A dataset in another format (TFRecord, the TFDS
default) is read through ``builder.as_dataset`` when TensorFlow is installed,
with the GPU hidden from TensorFlow first; without TensorFlow the error says to
``pip install 'jaxcls[tf]'`` or to prepare the data as array_record.

Nothing is downloaded unless ``download=True``. The data object is built from
what :func:`read_tfds` returns by ``ImageClassifierData.from_tfds``
(:mod:`jaxcls.data.imagedata`); this module knows nothing of it.

The decoded cache is keyed on the dataset's files (names, sizes, mtimes) plus
the split, so a second run only stats those files; class indices are cached
next to it.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxcls.data import decode as dec

__all__ = ['TfdsSplit', 'read_tfds']

_ROLES = {'train': 'train', 'trn': 'train', 'valid': 'valid', 'val': 'valid',
          'validation': 'valid', 'test': 'test'}


@dataclass
class TfdsSplit:
    """One decoded TFDS split: the decoded images and the targets of the kept rows' inputs."""

    split: str
    decoded: dec.Decoded
    y: np.ndarray  # one per input record (index with decoded.kept)


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError("ImageClassifierData.from_tfds needs tensorflow_datasets: pip install "
                          "tensorflow-datasets importlib_resources") from None
    return tfds


def _roles(split) -> dict[str, str]:
    if isinstance(split, str):
        raise ValueError(f"split={split!r}: pass (train_split, valid_split[, test_split]), e.g. "
                         f"('train', 'test') or ('train[:90%]', 'train[90%:]'), or a dict "
                         f"{{'train': ..., 'valid': ..., 'test': ...}}")
    if isinstance(split, dict):
        out = {}
        for k, v in split.items():
            if k not in _ROLES:
                raise ValueError(f"split dict key {k!r}; use 'train', 'valid' and optionally 'test'")
            out[_ROLES[k]] = v
    else:
        split = tuple(split)
        if len(split) not in (2, 3):
            raise ValueError(f'split={split!r}: give 2 (train, valid) or 3 (train, valid, test) '
                             f'split names')
        out = dict(zip(('train', 'valid', 'test'), split))
    if 'train' not in out or 'valid' not in out:
        raise ValueError(f'split={split!r} needs a train and a valid split')
    return out


def _dataset_signature(data_dir: str | None) -> list | None:
    """Names, sizes and mtimes of the prepared dataset's files, or None when not on local disk."""
    if not data_dir or not os.path.isdir(data_dir):
        return None
    out = []
    for f in sorted(os.listdir(data_dir)):
        p = os.path.join(data_dir, f)
        if os.path.isfile(p):
            st = os.stat(p)
            out.append([f, st.st_size, st.st_mtime_ns])
    return out


def _label_info(feature, label_key: str) -> tuple[list[str], bool]:
    names = getattr(feature, 'names', None)
    if names is not None:
        return list(names), False
    inner = getattr(feature, 'feature', None)  # tfds.features.Sequence(ClassLabel)
    if inner is not None and getattr(inner, 'names', None) is not None:
        return list(inner.names), True
    raise ValueError(f'feature {label_key!r} is {feature!r}, not a ClassLabel (or a Sequence of '
                     f'ClassLabel); pass label_key= the name of the class-label feature')


def _as_target(v, c: int, multi: bool):
    if multi:
        t = np.zeros((c,), np.float32)
        t[np.asarray(v, np.int64).reshape(-1)] = 1.0
        return t
    return int(np.asarray(v))


class _TfRecords:
    """Sequential reader over builder.as_dataset for formats without random access (needs TF)."""

    def __init__(self, builder, split, image_key, name, fmt):
        try:
            import tensorflow as tf
        except ImportError:
            raise ImportError(
                f'TFDS dataset {name!r} is stored as {fmt}, which only TensorFlow can read: '
                f"pip install 'jaxcls[tf]' (tensorflow-cpu), or prepare it in the array_record "
                f"format, which jaxcls reads without TensorFlow: "
                f"tfds.builder({name!r}).download_and_prepare(file_format='array_record')"
            ) from None
        tf.config.set_visible_devices([], 'GPU')  # TF must never take the accelerator from JAX
        import tensorflow_datasets as tfds
        ds = builder.as_dataset(split=split, shuffle_files=False,
                                decoders={image_key: tfds.decode.SkipDecoding()})
        self._it = iter(tfds.as_numpy(ds))
        self.n = int(builder.info.splits[split].num_examples)

    def __len__(self):
        return self.n

    def __getitems__(self, idx):
        return [next(self._it) for _ in idx]


def read_tfds(name: str, size: int, *, data_dir: str | None = None, split=('train', 'test'),
              image_key: str = 'image', label_key: str = 'label',
              cache_dir: str | None | bool = None, num_workers: int | None = None,
              on_bad: str = 'skip', quiet: bool = False, download: bool = False
              ) -> tuple[list[str], bool, dict[str, TfdsSplit], str | None]:
    """Decodes the splits of a prepared TFDS dataset to uint8 caches of side `size`.

    Returns:
      (classes, is_multi, {'train'|'valid'|'test': TfdsSplit}, dataset folder or None).
    """
    tfds = _import_tfds()
    roles = _roles(split)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:
        raise ValueError(f'TFDS dataset {name!r} not found (data_dir={data_dir!r}): {str(e)[:300]}. '
                         f'Prepare it first, or pass data_dir= the folder holding {name}/') from None
    features = builder.info.features
    keys = list(features.keys()) if hasattr(features, 'keys') else []
    for k, what in ((image_key, 'image_key'), (label_key, 'label_key')):
        if k not in keys:
            raise ValueError(f'TFDS dataset {name!r} has no feature {k!r}; its features are '
                             f'{keys}: pass {what}= one of them')
    classes, is_multi = _label_info(features[label_key], label_key)
    ds_dir = os.fspath(builder.data_dir) if getattr(builder, 'data_dir', None) else None
    files = _dataset_signature(ds_dir)
    cdir = cache_dir
    if cdir is None:
        cdir = os.path.join(ds_dir, 'jaxcls-cache') if files is not None else False
    out = {}
    for role, s in roles.items():
        if s is None:
            continue
        try:
            src = tfds.data_source(name, split=s, data_dir=data_dir, download=download,
                                   decoders={image_key: tfds.decode.SkipDecoding()})
        except NotImplementedError:  # not a random-access format
            fmt = getattr(builder.info.file_format, 'value', builder.info.file_format)
            src = _TfRecords(builder, s, image_key, name, fmt)
        except (KeyError, ValueError, AssertionError) as e:
            raise ValueError(f'TFDS dataset {name!r} cannot read split {s!r} ({e}); its splits '
                             f'are {sorted(builder.info.splits)}') from None
        n = len(src)
        signature = None if files is None else {'dataset': name, 'split': str(s),
                                                'image_key': image_key, 'files': files}
        labels: dict[int, Any] = {}

        def read(idx, src=src, labels=labels):
            recs = src.__getitems__(idx) if hasattr(src, '__getitems__') else [src[i] for i in idx]
            for i, r in zip(idx, recs):
                labels[i] = _as_target(r[label_key], len(classes), is_multi)
            return [r[image_key] for r in recs]

        names = [f'{s}[{i}]' for i in range(n)]
        d = dec.decode_records(read, names, size, signature=signature, name=f'{name}-{role}',
                               cache_dir=cdir, num_workers=num_workers, on_bad=on_bad, quiet=quiet)
        y = _labels(d, src, labels, n, label_key, classes, is_multi, signature, cdir, name, role)
        out[role] = TfdsSplit(str(s), d, y)
    return classes, is_multi, out, ds_dir


def _labels(d, src, labels, n, label_key, classes, is_multi, signature, cdir, name, role):
    """All n targets: collected while decoding, or from the label cache next to a reused image cache."""
    lpath = None
    if signature is not None and cdir not in (None, False) and d.cache_file:
        h = hashlib.sha1(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:12]
        lpath = os.path.join(os.fspath(cdir), f'{name}-{role}-labels-{h}.npy')
    if len(labels) < n and lpath and os.path.exists(lpath):
        y = np.load(lpath)
        if len(y) == n:
            return y
    if len(labels) < n:  # image cache reused but the label cache is missing: read the labels
        for s in range(0, n, 1024):
            idx = list(range(s, min(s + 1024, n)))
            recs = src.__getitems__(idx) if hasattr(src, '__getitems__') else [src[i] for i in idx]
            for i, r in zip(idx, recs):
                labels[i] = _as_target(r[label_key], len(classes), is_multi)
    y = np.stack([labels[i] for i in range(n)]).astype(np.float32 if is_multi else np.int64) \
        if n else np.zeros((0,), np.int64)
    if lpath:
        try:
            tmp = f'{lpath}.{os.getpid()}.tmp.npy'
            np.save(tmp, y)
            os.replace(tmp, lpath)
        except OSError:
            pass
    return y

