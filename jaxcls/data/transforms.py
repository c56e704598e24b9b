"""fastai 0.7's image transforms: the configuration and the jittable device ops, under one name.

Two modules do the work, and this one hands their names on (``from jaxcls.data
import transforms as T`` then ``T.tfms_from_model``, ``T.augment``...):

- :mod:`jaxcls.data.tfm_config`: the fastai-style configuration, plain Python --
  the descriptors `RandomRotate`, `RandomLighting`, `RandomFlip`,
  `RandomDihedral`, `RandomZoom`, the presets `transforms_basic` /
  `transforms_side_on` / `transforms_top_down`, `CropType`, and
  `tfms_from_model` / `tfms_from_stats`, which return a `(train, validation)`
  pair of hashable `TfmConfig`s instead of fastai's callable pipelines;
- :mod:`jaxcls.data.tfm_ops`: what runs on the device, inside `jit`, with a
  `TfmConfig` as static argument -- `augment` (one affine warp per image,
  lighting, normalisation), `val_transform`, `center_crop`, `aug_samples`,
  `denorm`, and their pieces `sample_params`, `affine_matrix`, `apply_affine`,
  `lighting`, `AugParams`.

Example:
    >>> import jax, numpy as np
    >>> trn, val = tfms_from_stats(((0.5,) * 3, (0.25,) * 3), 16,
    ...                            aug_tfms=transforms_side_on, max_zoom=1.1)
    >>> imgs = np.zeros((2, 20, 20, 3), np.uint8)
    >>> x = jax.jit(augment, static_argnums=2)(jax.random.key(0), imgs, trn)
    >>> x.shape, x.dtype
    ((2, 16, 16, 3), dtype('float32'))
    >>> float(val_transform(imgs, val)[0, 0, 0, 0])
    -2.0
"""
from __future__ import annotations

from jaxcls.data.tfm_config import (CropType, RandomDihedral, RandomFlip, RandomLighting,
                                    RandomRotate, RandomZoom, TfmConfig, tfms_from_model,
                                    tfms_from_stats, transforms_basic, transforms_side_on,
                                    transforms_top_down)
from jaxcls.data.tfm_ops import (AugParams, affine_matrix, apply_affine, aug_samples, augment,
                                 center_crop, denorm, lighting, sample_params, val_transform)

__all__ = [
    'CropType', 'RandomRotate', 'RandomLighting', 'RandomFlip', 'RandomDihedral', 'RandomZoom',
    'transforms_basic', 'transforms_side_on', 'transforms_top_down',
    'TfmConfig', 'tfms_from_model', 'tfms_from_stats',
    'AugParams', 'sample_params', 'affine_matrix', 'apply_affine', 'lighting',
    'augment', 'center_crop', 'val_transform', 'denorm', 'aug_samples',
]
