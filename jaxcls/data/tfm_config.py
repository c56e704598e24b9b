"""fastai 0.7's transform configuration: descriptors, presets and one hashable TfmConfig.

This half mirrors fastai 0.7 (`old/fastai/transforms.py`): the descriptors
`RandomRotate`, `RandomLighting`, `RandomFlip`, `RandomDihedral`, `RandomZoom`,
the presets `transforms_basic` / `transforms_side_on` / `transforms_top_down`,
`CropType`, and `tfms_from_model` / `tfms_from_stats`, which return a
`(train, validation)` pair of `TfmConfig`s instead of fastai's callable
pipelines. Everything here is plain Python (no jax): the configs are checked
when built and are hashable, so they can be static arguments of the jitted
device ops in :mod:`jaxcls.data.tfm_ops` (`augment`, `val_transform`, ...).
"""
from __future__ import annotations

import enum
import math
import numbers
from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np

from jaxcls.archs import IMAGENET_MEAN, IMAGENET_STD, get_arch

__all__ = [
    'CropType', 'RandomRotate', 'RandomLighting', 'RandomFlip', 'RandomDihedral', 'RandomZoom',
    'transforms_basic', 'transforms_side_on', 'transforms_top_down',
    'TfmConfig', 'tfms_from_model', 'tfms_from_stats', 'rgb_triple',
]

_FLIP_MODES = ('none', 'horizontal', 'dihedral')


# --------------------------------------------------------------------------------------
# Descriptors and presets (fastai 0.7 names and defaults)
# --------------------------------------------------------------------------------------

class CropType(enum.IntEnum):
    """How the `sz` square is taken from the cached image; the values are fastai 0.7's.

    RANDOM: training takes a random `sz` window (a random shift), validation the centre.
    CENTER: the centre `sz` window, in training too.
    NO: the whole image resized (squashed) to `sz`, no cropping.
    fastai's GOOGLENET (4) and NOOP (5) are not provided.
    """

    RANDOM = 1
    CENTER = 2
    NO = 3


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_prob(name: str, p: Any) -> None:
    if not (_is_real(p) and 0.0 <= p <= 1.0):
        raise ValueError(f'{name} must be a probability in [0, 1], got {p!r}')


def _check_nonneg(name: str, v: Any) -> None:
    if not (_is_real(v) and v >= 0 and math.isfinite(v)):
        raise ValueError(f'{name} must be a finite number >= 0, got {v!r}')


@dataclass(frozen=True)
class RandomRotate:
    """Rotate by an angle drawn uniformly from [-deg, deg] degrees, with probability p.

    fastai 0.7's `RandomRotate(deg, p=0.75)`, reflection outside the image.

    >>> RandomRotate(10)
    RandomRotate(deg=10, p=0.75)
    """

    deg: float = 10
    p: float = 0.75  # fastai 0.7's default

    def __post_init__(self):
        _check_nonneg('RandomRotate.deg', self.deg)
        _check_prob('RandomRotate.p', self.p)


@dataclass(frozen=True)
class RandomLighting:
    """Random brightness b ~ U[-b, b] and contrast c ~ U[-c, c] (fastai 0.7, always applied).

    On 0..1 pixels, x -> clip((x - mu) * C + mu + B, 0, 1), mu the image mean,
    C = c + 1 for c >= 0 and 1 / (1 - c) for c < 0, so contrast is symmetric in ratio.

    >>> RandomLighting(0.05, 0.05)
    RandomLighting(b=0.05, c=0.05)
    """

    b: float = 0.05
    c: float = 0.05

    def __post_init__(self):
        _check_nonneg('RandomLighting.b', self.b)
        _check_nonneg('RandomLighting.c', self.c)
        if self.c >= 1:
            # c ~ U[-c, c] and c < 0 maps to 1/(1 - c): c >= 1 would allow a zero or
            # negative contrast factor on the positive side's mirror; fastai never uses it.
            raise ValueError(f'RandomLighting.c must be < 1 (a contrast change of at most '
                             f'100%), got {self.c!r}; fastai uses 0.05')


@dataclass(frozen=True)
class RandomFlip:
    """Mirror left-right with probability p (fastai 0.7's `RandomFlip`, for side-on photos).

    >>> RandomFlip()
    RandomFlip(p=0.5)
    """

    p: float = 0.5

    def __post_init__(self):
        _check_prob('RandomFlip.p', self.p)


@dataclass(frozen=True)
class RandomDihedral:
    """One of the 8 symmetries of the square, uniformly (fastai 0.7, for top-down images).

    rot90 by k ~ {0, 1, 2, 3}, then a left-right mirror with probability 0.5.

    >>> RandomDihedral()
    RandomDihedral()
    """


@dataclass(frozen=True)
class RandomZoom:
    """Zoom in by a factor drawn uniformly from [1, max_zoom], with probability p.

    This is fastai 0.7's `max_zoom=` argument (its `RandomScale`: scale up by the
    factor, then crop `sz`), not fastai's rarely used `RandomZoom(zoom_max)`
    class, whose factor is 1 + zoom_max. `tfms_from_model(..., max_zoom=1.1)`
    and `aug_tfms=[..., RandomZoom(1.1)]` are the same.

    >>> RandomZoom(1.1)
    RandomZoom(max_zoom=1.1, p=0.75)
    """

    max_zoom: float
    p: float = 0.75  # fastai 0.7's RandomScale default

    def __post_init__(self):
        if not (_is_real(self.max_zoom) and math.isfinite(self.max_zoom)
                and self.max_zoom >= 1):
            raise ValueError(
                f'RandomZoom.max_zoom is the largest magnification and must be >= 1, got '
                f'{self.max_zoom!r}; for 10% zoom use 1.1 (fastai\'s RandomZoom(0.1) means 1.1)')
        _check_prob('RandomZoom.p', self.p)


# fastai 0.7's presets, as lists so that `transforms_side_on + [RandomZoom(1.1)]` works.
transforms_basic = [RandomRotate(10), RandomLighting(0.05, 0.05)]
transforms_side_on = transforms_basic + [RandomFlip()]
transforms_top_down = transforms_basic + [RandomDihedral()]

_SUPPORTED = (RandomRotate, RandomLighting, RandomFlip, RandomDihedral, RandomZoom)


# --------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------

def rgb_triple(name: str, v: Any) -> tuple[float, float, float]:
    """`v` as 3 finite floats (one per RGB channel), or a ValueError naming `name`."""
    try:
        t = tuple(float(a) for a in np.asarray(v, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        t = ()
    if len(t) != 3 or not all(math.isfinite(a) for a in t):
        raise ValueError(f'{name} must be 3 finite numbers (one per RGB channel, 0..1 pixel '
                         f'units), got {v!r}')
    return t  # type: ignore[return-value]


@dataclass(frozen=True)
class TfmConfig:
    """Everything `augment` / `val_transform` need, hashable so it can be a jit static argument.

    Build it with `tfms_from_model` / `tfms_from_stats`; the fields are public
    for inspection and for tests that force one transform.

    Attributes:
      sz: output side in pixels.
      mean, std: per-channel normalisation, 0..1 pixel units.
      crop_type: CropType (see there).
      flip: 'none' | 'horizontal' | 'dihedral'.
      flip_p: probability of the left-right mirror ('dihedral' keeps 0.5 for uniformity).
      rotate_deg, rotate_p: rotation range (degrees, +-) and probability; 0 disables.
      max_zoom, zoom_p: zoom factor U[1, max_zoom] with probability zoom_p; 1 disables.
      lighting_b, lighting_c: RandomLighting's b and c; 0 and 0 disable.
      pad: reflection padding added around the image before cropping, in input
        pixels (fastai's `pad`); widens the random shift by `pad` on each side.

    >>> cfg = TfmConfig(224, flip='horizontal')
    >>> hash(cfg) == hash(TfmConfig(224, flip='horizontal')), cfg.is_random
    (True, True)
    """

    sz: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_type: CropType = CropType.CENTER
    flip: str = 'none'
    flip_p: float = 0.5
    rotate_deg: float = 0.0
    rotate_p: float = 0.75
    max_zoom: float = 1.0
    zoom_p: float = 0.75
    lighting_b: float = 0.0
    lighting_c: float = 0.0
    pad: int = 0

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if isinstance(self.sz, bool) or not isinstance(self.sz, (int, np.integer)) or self.sz < 1:
            raise ValueError(f'sz must be a positive int (output side in pixels), got {self.sz!r}')
        set_('sz', int(self.sz))
        set_('mean', rgb_triple('mean', self.mean))
        set_('std', rgb_triple('std', self.std))
        if min(self.std) <= 0:
            raise ValueError(f'std must be > 0 per channel, got {self.std!r}')
        try:
            set_('crop_type', CropType(int(self.crop_type)))
        except (ValueError, TypeError):
            raise ValueError(f'crop_type must be one of {[c.name for c in CropType]} '
                             f'(jaxcls.CropType), got {self.crop_type!r}') from None
        if self.flip not in _FLIP_MODES:
            raise ValueError(f'flip must be one of {_FLIP_MODES}, got {self.flip!r}')
        for name in ('flip_p', 'rotate_p', 'zoom_p'):
            _check_prob(name, getattr(self, name))
        for name in ('rotate_deg', 'lighting_b', 'lighting_c'):
            _check_nonneg(name, getattr(self, name))
        RandomZoom(self.max_zoom)  # validates max_zoom with its message
        RandomLighting(self.lighting_b, self.lighting_c)
        if (isinstance(self.pad, bool) or not isinstance(self.pad, (int, np.integer))
                or self.pad < 0):
            raise ValueError(f'pad must be an int >= 0 (pixels of reflection), got {self.pad!r}')
        set_('pad', int(self.pad))
        for f in fields(self):  # plain Python floats: equal configs hash equal, numpy or not
            if f.type == 'float':
                set_(f.name, float(getattr(self, f.name)))

    @property
    def is_random(self) -> bool:
        """True when `augment` draws anything from its key (False: it equals `val_transform`)."""
        return bool(self.crop_type == CropType.RANDOM
                    or (self.flip == 'horizontal' and self.flip_p > 0)
                    or self.flip == 'dihedral'
                    or (self.rotate_deg > 0 and self.rotate_p > 0)
                    or (self.max_zoom > 1 and self.zoom_p > 0)
                    or self.lighting_b > 0 or self.lighting_c > 0)


def _config_from_tfms(aug_tfms: Any, max_zoom: Any) -> dict[str, Any]:
    """The TfmConfig fields that `aug_tfms` and `max_zoom` ask for."""
    if aug_tfms is None:
        aug_tfms = []
    elif isinstance(aug_tfms, (type, *_SUPPORTED)) or not hasattr(aug_tfms, '__iter__'):
        aug_tfms = [aug_tfms]  # fastai accepts a single transform too
    out: dict[str, Any] = {}
    seen: dict[type, Any] = {}
    for t in aug_tfms:
        if isinstance(t, type) and t in _SUPPORTED:
            raise ValueError(f'aug_tfms holds the class {t.__name__}, not an instance; '
                             f'write {t.__name__}{_example_args(t)}')
        if not isinstance(t, _SUPPORTED):
            raise ValueError(
                f'aug_tfms holds {t!r} (type {type(t).__module__}.{type(t).__qualname__}), which '
                f'jaxcls cannot run on device; supported: '
                f'{", ".join(c.__name__ + _example_args(c) for c in _SUPPORTED)} from '
                f'jaxcls.data.transforms, plus tfms_from_model(max_zoom=, pad=, crop_type=)')
        if type(t) in seen:
            raise ValueError(f'aug_tfms holds two {type(t).__name__}s ({seen[type(t)]!r} and '
                             f'{t!r}); one augmented warp allows one of each, keep one')
        seen[type(t)] = t
        if isinstance(t, RandomRotate):
            out.update(rotate_deg=t.deg, rotate_p=t.p)
        elif isinstance(t, RandomLighting):
            out.update(lighting_b=t.b, lighting_c=t.c)
        elif isinstance(t, RandomZoom):
            out.update(max_zoom=t.max_zoom, zoom_p=t.p)
        elif isinstance(t, RandomDihedral):
            # A flip composed with a uniform dihedral draw is still uniform over the 8.
            out.update(flip='dihedral', flip_p=0.5)
        elif isinstance(t, RandomFlip) and out.get('flip') != 'dihedral':
            out.update(flip='horizontal', flip_p=t.p)
    if max_zoom is not None:
        if RandomZoom in seen:
            raise ValueError(f'zoom given twice: max_zoom={max_zoom!r} and '
                             f'{seen[RandomZoom]!r} in aug_tfms; keep one')
        out.update(max_zoom=RandomZoom(max_zoom).max_zoom, zoom_p=RandomZoom(max_zoom).p)
    return out


def _example_args(cls: type) -> str:
    return {RandomRotate: '(10)', RandomLighting: '(0.05, 0.05)', RandomFlip: '()',
            RandomDihedral: '()', RandomZoom: '(1.1)'}[cls]


def tfms_from_stats(stats: Sequence[Sequence[float]], sz: int, aug_tfms: Any = None,
                    max_zoom: float | None = None, pad: int = 0,
                    crop_type: CropType = CropType.RANDOM) -> tuple[TfmConfig, TfmConfig]:
    """(train, validation) configs for channel statistics `stats = (mean, std)`, fastai 0.7 style.

    Training gets `aug_tfms`, `max_zoom` and `crop_type`; validation gets only the
    crop (RANDOM becomes CENTER, as in fastai) and normalisation.

    >>> trn, val = tfms_from_stats(((0.5,) * 3, (0.5,) * 3), 64, transforms_top_down)
    >>> trn.flip, trn.rotate_deg, val.flip, val.crop_type.name
    ('dihedral', 10.0, 'none', 'CENTER')
    """
    try:
        mean, std = stats
    except (TypeError, ValueError):
        raise ValueError(f'stats must be (mean, std), each 3 numbers, got {stats!r}') from None
    try:
        crop_type = CropType(int(crop_type))
    except (ValueError, TypeError):
        raise ValueError(f'crop_type must be one of {[c.name for c in CropType]} '
                         f'(jaxcls.CropType), got {crop_type!r}') from None
    aug = _config_from_tfms(aug_tfms, max_zoom)
    val_crop = CropType.CENTER if crop_type == CropType.RANDOM else crop_type
    trn = TfmConfig(sz, mean, std, crop_type=crop_type, pad=pad, **aug)
    val = TfmConfig(sz, mean, std, crop_type=val_crop, pad=pad)
    return trn, val


def tfms_from_model(arch: Any, sz: int, aug_tfms: Any = None, max_zoom: float | None = None,
                    pad: int = 0, crop_type: CropType = CropType.RANDOM
                    ) -> tuple[TfmConfig, TfmConfig]:
    """(train, validation) configs using `arch`'s input statistics (see `tfms_from_stats`).

    `arch` is a name ('resnet34'), an ArchSpec or a tagged constructor (`jaxcls.resnet34`).
    Positional order is fastai 0.7's: aug_tfms, max_zoom, pad, crop_type.

    >>> trn, val = tfms_from_model('resnet34', 224, aug_tfms=transforms_side_on, max_zoom=1.1)
    >>> trn.mean, trn.flip, trn.max_zoom, val.max_zoom
    ((0.485, 0.456, 0.406), 'horizontal', 1.1, 1.0)
    """
    spec = get_arch(arch)
    return tfms_from_stats((spec.mean, spec.std), sz, aug_tfms, max_zoom, pad, crop_type)
