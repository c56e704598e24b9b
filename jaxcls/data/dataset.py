"""ImageDataset: one decoded split (uint8 images, targets, names), and the checks of a tfms pair.

A dataset is what :mod:`jaxcls.data.decode` gives for one split, with the
targets of the rows that were kept; :class:`~jaxcls.data.imagedata.ImageClassifierData`
holds three of them and their loaders. :func:`check_tfms` and :func:`resolve_size`
are the checks every constructor of the data object makes of ``tfms=`` and
``cache_size=``.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from jaxcls.data.decode_cache import default_cache_size
from jaxcls.data.loader import shard_indices
from jaxcls.data.tfm_ops import denorm as tfm_denorm

if TYPE_CHECKING:
    from jaxcls.data.decode import Decoded

__all__ = ['ImageDataset', 'check_tfms', 'resolve_size']


class ImageDataset:
    """One decoded split.

    Attributes:
      x: uint8 (N, S, S, 3) images (in RAM or a read-only memory map).
      y: int64 (N,) class indices, float32 (N, c) multi-hot targets, or
        int64 zeros for an unlabelled test split.
      fnames: names relative to the dataset root ('train/cats/cat.1.jpg'), or
        generated names ('trn[0]', 'train[0]') for arrays and TFDS.
      classes, c, is_multi: as on the data object.
      fingerprint: stable string identifying the decoded pixels (cache key for
        precomputed activations).
      skipped: (name, reason) of files found but not decoded.
      cache_file: the .npy the images live in, or None.
      ids: int64 position of each row in the whole split when this dataset is
        one process's share of it (several processes); None for a whole split.
      transform: the TfmConfig of the loaders over this split (set by the data
        object: training transforms on trn_ds, validation ones on the others),
        whose normalisation :meth:`denorm` undoes; None for a bare dataset.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray | None, fnames: Sequence[str],
                 classes: Sequence, *, is_multi: bool = False, fingerprint: str = '',
                 skipped: Sequence[tuple[str, str]] = (), cache_file: str | None = None,
                 from_cache: bool = False, labelled: bool = True,
                 ids: Sequence[int] | None = None):
        self.x = x
        self.y = np.zeros((len(x),), np.int64) if y is None else y
        self.fnames = list(fnames)
        self.classes = list(classes)
        self.is_multi = is_multi
        self.fingerprint = fingerprint
        self.skipped = list(skipped)
        self.cache_file = cache_file
        self.from_cache = from_cache
        self.labelled = labelled and y is not None
        self.ids = None if ids is None else np.asarray(ids, np.int64).reshape(-1)
        self.transform = None
        if not (len(self.x) == len(self.y) == len(self.fnames)):
            raise ValueError(f'{len(self.x)} images, {len(self.y)} targets and {len(self.fnames)} '
                             f'names; they must match')
        if self.ids is not None and len(self.ids) != len(self.x):
            raise ValueError(f'{len(self.ids)} ids for {len(self.x)} images; pass one per image')

    @classmethod
    def from_decoded(cls, d: Decoded, y: np.ndarray | None, classes: Sequence, *,
                     is_multi: bool = False, ids: Sequence[int] | None = None) -> 'ImageDataset':
        """The decoded images with the targets (and `ids`) of the rows that were kept."""
        return cls(d.x, None if y is None else np.asarray(y)[d.kept], d.fnames, classes,
                   is_multi=is_multi, fingerprint=d.fingerprint, skipped=d.skipped,
                   cache_file=d.cache_file, from_cache=d.from_cache, labelled=y is not None,
                   ids=None if ids is None else np.asarray(ids, np.int64)[d.kept])

    def shard(self, index: int, count: int) -> 'ImageDataset':
        """The rows index, index + count, ... of this whole split (process `index` of `count`).

        >>> ds = ImageDataset(np.zeros((5, 2, 2, 3), np.uint8), np.arange(5), list('abcde'), ['x'])
        >>> s = ds.shard(1, 2); s.fnames, s.y.tolist(), s.ids.tolist()
        (['b', 'd'], [1, 3], [1, 3])
        """
        if self.ids is not None:
            raise ValueError('this dataset is already one process\'s share (ids is set)')
        idx = shard_indices(len(self), index, count)
        sl = slice(int(index), None, int(count))  # a view, also of a memory map
        return ImageDataset(self.x[sl], self.y[sl] if self.labelled else None,
                            [self.fnames[i] for i in idx], self.classes, is_multi=self.is_multi,
                            fingerprint=f'{self.fingerprint}-p{index}of{count}' if self.fingerprint
                            else '', skipped=self.skipped, cache_file=self.cache_file,
                            from_cache=self.from_cache, labelled=self.labelled, ids=idx)

    def with_transform(self, tfm: Any) -> 'ImageDataset':
        """A copy (sharing the arrays) whose :attr:`transform` is `tfm`."""
        new = copy.copy(self)
        new.transform = tfm
        return new

    def denorm(self, x: Any) -> np.ndarray:
        """Images as the model saw them back to displayable pixels: numpy float32 (n, H, W, 3)
        in [0, 1], fastai 0.7's ``ds.denorm``.

        `x` is normalised float images from a loader (``x, y = next(iter(data.val_dl))``),
        in jaxcls's NHWC or fastai's NCHW layout, one image or a batch (one image gains a
        batch axis, as in fastai); uint8 images (``ds.x``, ``ds[i][0]``) are raw pixels and
        only scaled to [0, 1].

        >>> from jaxcls.data.tfm_config import tfms_from_stats
        >>> _, val = tfms_from_stats(((0.5,) * 3, (0.25,) * 3), 2)
        >>> ds = ImageDataset(np.zeros((1, 2, 2, 3), np.uint8), [0], ['a'], ['x']).with_transform(val)
        >>> ds.denorm(np.zeros((3, 2, 2))).shape, float(ds.denorm(np.full((1, 2, 2, 3), 2.0)).max())
        ((1, 2, 2, 3), 1.0)
        """
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or 3 not in (x.shape[1], x.shape[3]):
            raise ValueError(f'denorm takes images (n, H, W, 3) or (n, 3, H, W), or one image; '
                             f'got shape {x.shape}')
        if x.shape[3] != 3:
            x = np.moveaxis(x, 1, 3)               # fastai's NCHW -> NHWC
        if x.dtype == np.uint8:
            return x.astype(np.float32) / 255.0
        if self.transform is None:
            raise ValueError('this dataset has no transform to undo; take it from a data object '
                             'built with tfms=tfms_from_model(arch, sz) (data.trn_ds.denorm), or '
                             'call transforms.denorm(x, tfm) with the config')
        return tfm_denorm(x, self.transform)

    @property
    def c(self) -> int:
        return len(self.classes)

    @property
    def cache_size(self) -> int:
        return int(self.x.shape[1])

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __repr__(self) -> str:
        return (f'ImageDataset({len(self)} images {self.cache_size}px, {self.c} classes'
                f'{", multi-label" if self.is_multi else ""}, fingerprint={self.fingerprint!r})')


def check_tfms(tfms) -> tuple[Any, Any]:
    """`tfms` as a (train, valid) pair of configs with ``.sz`` (or Nones); TypeError otherwise."""
    if tfms is None:
        tfms = (None, None)
    try:
        trn, val = tfms
    except (TypeError, ValueError):
        raise TypeError(f'tfms must be a (train, valid) pair as returned by '
                        f'tfms_from_model(arch, sz); got {tfms!r}') from None
    for t in (trn, val):
        if t is not None and not hasattr(t, 'sz'):
            raise TypeError(f'tfms entries must be transform configs with .sz (from '
                            f'tfms_from_model(arch, sz)); got {t!r}')
    return trn, val


def resolve_size(tfms, cache_size: int | None) -> tuple[int | None, int]:
    """(sz, cache size) from the tfms pair and an explicit cache_size."""
    szs = [int(t.sz) for t in tfms if t is not None]
    sz = max(szs) if szs else None
    if cache_size is not None:
        cache_size = int(cache_size)
        if sz is not None and cache_size < sz:
            raise ValueError(f'cache_size={cache_size} is smaller than the training size sz={sz}; '
                             f'use cache_size >= {sz} (default {default_cache_size(sz)})')
        return sz, cache_size
    if sz is None:
        raise ValueError('ImageClassifierData needs an image size: pass '
                         'tfms=tfms_from_model(arch, sz) (or cache_size=S for the decoded size)')
    return sz, default_cache_size(sz)
