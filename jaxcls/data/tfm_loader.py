"""TfmDataLoader: a DataLoader that also iterates as fastai 0.7's loaders did, in (x, y) pairs.

The data object's six loaders are these, under fastai 0.7's names:

=============  ==================  =====================  ==========
name           images              transforms             order
=============  ==================  =====================  ==========
``trn_dl``     training            training (augmented)   shuffled
``val_dl``     validation          validation             file order
``fix_dl``     training            validation             file order
``aug_dl``     validation          training (augmented)   file order
``test_dl``    test                validation             file order
``test_aug_dl`` test               training (augmented)   file order
=============  ==================  =====================  ==========

A loader is read in one of two ways:

* ``x, y = next(iter(dl))`` -- fastai's view, for looking at the data: ``x`` is
  float32 ``(n, sz, sz, 3)`` normalised images on the device, put through the
  loader's transform (`tfm_ops.augment` for training transforms,
  `tfm_ops.val_transform` otherwise), ``y`` their targets; the last batch is
  shorter, as in fastai (padding rows are dropped). The images are NHWC,
  jaxcls's and JAX's layout (fastai's torch tensors were NCHW); ``ds.denorm(x)``
  and the plots take either layout.
* ``dl.iter_epoch(e)`` -- the step's view (:class:`~jaxcls.data.loader.DataLoader`):
  dict batches of uint8 images, targets and a mask of real rows, which the
  jitted train step augments itself. ``learn.fit`` and a JAX loop of one's own
  read these; the transform above is never applied to them.

The fastai view's random augmentation draws one seed per batch from numpy's
global generator, as fastai 0.7 drew its augmentations: ``np.random.seed(s)``
repeats them, and two fresh data objects show different augmentations (lesson
1 stacks six draws of ``next(iter(data.aug_dl))`` to show what augmentation
does). The order of ``trn_dl`` still comes from its ``key``, like every
``iter_epoch``. With several processes each process's rows arrive whole: the
padding of the last batch is kept there (``mask`` is in ``iter_epoch``'s
batches).
"""
from __future__ import annotations

import functools
from typing import Any, Iterator

import jax
import numpy as np

from jaxcls.data import tfm_ops
from jaxcls.data.loader import DataLoader

__all__ = ['TfmDataLoader', 'jitted']


@functools.lru_cache(maxsize=None)
def jitted(name: str):
    """`tfm_ops` functions under jit with their configs static -- one compile per shape
    instead of the many small ones of an eager call: 'augment' (key, images, cfg),
    'augment_seeded' (int seed, images, cfg), 'val_transform' (images, cfg) and
    'aug_samples' (key, image, cfg, n)."""
    if name == 'augment':
        return jax.jit(tfm_ops.augment, static_argnums=2)
    if name == 'augment_seeded':
        return jax.jit(lambda seed, x, cfg: tfm_ops.augment(jax.random.PRNGKey(seed), x, cfg),
                       static_argnums=2)
    if name == 'val_transform':
        return jax.jit(tfm_ops.val_transform, static_argnums=1)
    if name == 'aug_samples':
        return jax.jit(tfm_ops.aug_samples, static_argnums=(2, 3))
    raise ValueError(f'no jitted transform {name!r}; use augment, augment_seeded, '
                     f'val_transform or aug_samples')


class TfmDataLoader(DataLoader):
    """A DataLoader with the transform its fastai view applies.

    Args:
      x, y, and the keywords: as :class:`~jaxcls.data.loader.DataLoader`.
      tfm: the TfmConfig the fastai view applies (None: ``x`` is the uint8 images).
      augment: True for training transforms (random, `augment`), False for
        validation ones (`val_transform`).

    >>> from jaxcls.data.tfm_config import tfms_from_stats
    >>> trn, val = tfms_from_stats(((0.,) * 3, (1.,) * 3), 4)
    >>> dl = TfmDataLoader(np.full((5, 6, 6, 3), 255, np.uint8), np.arange(5), bs=2, tfm=val)
    >>> x, y = next(iter(dl))
    >>> x.shape, float(x.max()), y.tolist(), [b.shape[0] for b, _ in dl]
    ((2, 4, 4, 3), 1.0, [0, 1], [2, 2, 1])
    """

    def __init__(self, x: Any, y: Any = None, bs: int = 64, *, tfm: Any = None,
                 augment: bool = False, **kw: Any):
        super().__init__(x, y, bs, **kw)
        if tfm is not None and not hasattr(tfm, 'sz'):
            raise TypeError(f'tfm must be a transform config from tfms_from_model(arch, sz); '
                            f'got {tfm!r}')
        self.tfm, self.augment = tfm, bool(augment)

    def __iter__(self) -> Iterator[tuple[jax.Array, jax.Array]]:   # type: ignore[override]
        epoch = self.epoch
        self.epoch += 1
        return self.iter_xy(epoch)

    def iter_xy(self, epoch: int) -> Iterator[tuple[jax.Array, jax.Array]]:
        """fastai's (x, y) pairs of `epoch`: transformed images and their targets."""
        whole = self.process_count == 1
        for batch in self.iter_epoch(epoch):
            x = batch['image']
            if self.tfm is not None and self.augment:
                x = jitted('augment_seeded')(np.int32(np.random.randint(2 ** 31 - 1)), x, self.tfm)
            elif self.tfm is not None:
                x = jitted('val_transform')(x, self.tfm)
            y = batch['label']
            n = int(np.asarray(batch['mask']).sum()) if whole else self.bs
            yield (x, y) if n == self.bs else (x[:n], y[:n])
