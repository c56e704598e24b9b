"""fastai 0.7's ``fastai.transforms`` under jaxcls: the transform vocabulary and the device ops.

    from jaxcls.transforms import *        # was: from fastai.transforms import *

tfms_from_model / tfms_from_stats, the presets transforms_basic / transforms_side_on /
transforms_top_down, the Random* descriptors and CropType; each returned transform is a hashable
TfmConfig that the jitted step applies on the device (see jaxcls.data.transforms).

A thin re-export for porting notebooks: no logic of its own, and nothing in jaxcls imports it.
"""
from jaxcls.data.transforms import (
    AugParams, CropType, RandomDihedral, RandomFlip, RandomLighting, RandomRotate, RandomZoom,
    TfmConfig, affine_matrix, apply_affine, aug_samples, augment, center_crop, denorm, lighting,
    sample_params, tfms_from_model, tfms_from_stats, transforms_basic, transforms_side_on,
    transforms_top_down, val_transform
)

__all__ = [
    'AugParams', 'CropType', 'RandomDihedral', 'RandomFlip', 'RandomLighting', 'RandomRotate',
    'RandomZoom', 'TfmConfig', 'affine_matrix', 'apply_affine', 'aug_samples', 'augment',
    'center_crop', 'denorm', 'lighting', 'sample_params', 'tfms_from_model', 'tfms_from_stats',
    'transforms_basic', 'transforms_side_on', 'transforms_top_down', 'val_transform',
]
