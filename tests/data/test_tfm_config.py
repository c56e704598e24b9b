"""Tests for jaxcls.data.tfm_config: fastai 0.7's presets and numbers, the configs and their errors."""
import numpy as np
import pytest

from jaxcls.archs import IMAGENET_MEAN, IMAGENET_STD, get_arch
from jaxcls.data.tfm_config import (
    CropType, RandomDihedral, RandomFlip, RandomLighting, RandomRotate, RandomZoom, TfmConfig,
    tfms_from_model, tfms_from_stats, transforms_basic, transforms_side_on, transforms_top_down)

STATS = ((0.5, 0.4, 0.3), (0.25, 0.2, 0.3))  # distinct per channel so a channel mix-up shows


def test_presets_hold_fastai_numbers():
    assert transforms_basic == [RandomRotate(deg=10, p=0.75), RandomLighting(b=0.05, c=0.05)]
    assert transforms_side_on == transforms_basic + [RandomFlip(p=0.5)]
    assert transforms_top_down == transforms_basic + [RandomDihedral()]
    assert RandomZoom(1.1).p == 0.75
    assert [c.value for c in (CropType.RANDOM, CropType.CENTER, CropType.NO)] == [1, 2, 3]


def test_tfms_from_model_uses_arch_stats():
    def ctor():
        pass
    ctor.arch_name = 'resnet34'
    for arch in ('resnet34', get_arch('resnet50'), ctor):
        trn, val = tfms_from_model(arch, 224)
        assert trn.mean == val.mean == IMAGENET_MEAN
        assert trn.std == val.std == IMAGENET_STD
    trn, val = tfms_from_stats(STATS, 32)
    assert (trn.mean, trn.std, val.mean, val.std) == (STATS[0], STATS[1], STATS[0], STATS[1])


def test_train_config_holds_augmentation_and_val_only_crops():
    trn, val = tfms_from_model('resnet34', 224, aug_tfms=transforms_side_on, max_zoom=1.1, pad=4)
    assert (trn.sz, trn.crop_type, trn.pad) == (224, CropType.RANDOM, 4)
    assert (trn.rotate_deg, trn.rotate_p) == (10.0, 0.75)
    assert (trn.lighting_b, trn.lighting_c) == (0.05, 0.05)
    assert (trn.flip, trn.flip_p) == ('horizontal', 0.5)
    assert (trn.max_zoom, trn.zoom_p) == (1.1, 0.75)
    assert val == TfmConfig(224, IMAGENET_MEAN, IMAGENET_STD, CropType.CENTER, pad=4)
    assert trn.is_random and not val.is_random
    top, _ = tfms_from_model('resnet34', 64, transforms_top_down + [RandomFlip()])
    assert (top.flip, top.flip_p) == ('dihedral', 0.5)  # a flip on top of D8 stays D8
    no_trn, no_val = tfms_from_model('resnet34', 64, crop_type=CropType.NO)
    assert no_trn.crop_type == no_val.crop_type == CropType.NO
    assert tfms_from_model('resnet34', 64, [RandomZoom(1.2, p=1.0)])[0].zoom_p == 1.0


def test_bad_transforms_and_values_raise_clear_errors():
    class RandomBlur:
        pass
    with pytest.raises(ValueError, match=r'RandomBlur.*supported: RandomRotate\(10\)'):
        tfms_from_model('resnet34', 64, [RandomBlur()])
    with pytest.raises(ValueError, match=r'class RandomFlip, not an instance; write RandomFl'):
        tfms_from_model('resnet34', 64, [RandomFlip])
    with pytest.raises(ValueError, match='two RandomRotates'):
        tfms_from_model('resnet34', 64, [RandomRotate(5), RandomRotate(10)])
    with pytest.raises(ValueError, match='two RandomFlips'):
        tfms_from_model('resnet34', 64, transforms_side_on + [RandomFlip()])
    with pytest.raises(ValueError, match='zoom given twice'):
        tfms_from_model('resnet34', 64, [RandomZoom(1.2)], max_zoom=1.1)
    with pytest.raises(ValueError, match=r"must be >= 1, got 0.1.*RandomZoom\(0.1\) means 1.1"):
        tfms_from_model('resnet34', 64, max_zoom=0.1)
    with pytest.raises(ValueError, match='probability in'):
        RandomFlip(p=1.5)
    with pytest.raises(ValueError, match='crop_type must be one of'):
        tfms_from_model('resnet34', 64, crop_type=4)
    with pytest.raises(ValueError, match="flip must be one of"):
        TfmConfig(8, flip='vertical')
    with pytest.raises(ValueError, match='unknown arch'):
        tfms_from_model('vgg16', 64)


def test_config_is_hashable_and_normalises_number_types():
    a = TfmConfig(16, np.array(STATS[0]), list(STATS[1]), rotate_deg=np.float32(10))
    b = TfmConfig(16, STATS[0], STATS[1], rotate_deg=10)
    assert a == b and hash(a) == hash(b)
    assert isinstance(a.rotate_deg, float) and a.mean == STATS[0]
