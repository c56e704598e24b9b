"""The jittable device half of the transforms: one affine warp per image, lighting, normalisation.

A whole batch runs inside `jit`: `augment(key, images, cfg)` turns uint8
`(B, H, W, 3)` into normalised float32 `(B, sz, sz, 3)`. Per image it samples
the parameters (`sample_params`), composes crop/shift, zoom, rotation and
flip/dihedral into ONE 2x3 matrix (`affine_matrix`), resamples once,
bilinearly, with reflection outside the image (`apply_affine`), then adjusts
lighting and normalises. `val_transform` is the validation path: an exact
centre crop (no interpolation) and normalisation. The `cfg` is a
:class:`~jaxcls.data.tfm_config.TfmConfig` (hashable: a static argument).

Coordinates. Pixel (r, c) is the sample at the *centre* of its cell, so
continuous coordinate r covers the cell [r - 0.5, r + 0.5). A window whose top
left cell edge is `offset` and whose size is `window` input pixels is mapped to
`sz` output pixels by `in = (out + 0.5) * window / sz - 0.5 + offset`; with
`window == sz` and an integer offset this is `in = out + offset`, an exact crop.
Matrices act on (row, col, 1) column vectors and map OUTPUT coordinates to
INPUT coordinates (the direction a gather needs; cv2's `WARP_INVERSE_MAP`).
`apply_affine` evaluates them in 16.16 fixed point (see there), so integer
and half-integer matrices (crops, flips, quarter turns) sample exactly.

Reflection is cv2's BORDER_REFLECT, which fastai 0.7 passes to
`copyMakeBorder` (pad) and `warpAffine` (rotate): `fedcba|abcdefgh|hgfedcb`,
the edge pixel repeated. That is scipy's / `jax.scipy.ndimage`'s
`mode='reflect'` and numpy's `np.pad(mode='symmetric')`, NOT their
`mode='mirror'` (cv2's BORDER_REFLECT_101, edge not repeated).

Where this follows fastai 0.7 in distribution but not step by step (each
chosen so that one warp per image is possible, and documented at its use):
rotation is about the exact image centre ((W-1)/2, (H-1)/2), not cv2's
(W//2, H//2); flip and dihedral act on the crop rather than on the whole image
before cropping (same distribution of outputs); lighting uses the mean of the
output crop rather than of the whole image; a random crop picks every valid
integer offset with equal chance (fastai's `floor(u * (r - sz))` never picks
the last one); and reflection beyond `pad` reflects the original image once
more instead of the padded one.

Two choices differ from fastai 0.7 on purpose. (1) The `sz` window is cut from
the cached image at the cache's resolution; fastai first scales the short side
to `sz` (`Scale`), so a cache larger than `sz` shows a tighter field of view
than fastai (sz/cache of it) in training and validation alike; a cache
decoded at `sz` frames images as fastai does. (2) With CropType.NO, `max_zoom`
takes a random window of the squashed image; in fastai `NoCrop` resizes the
zoomed image back whole, which cancels the zoom.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcls.data.tfm_config import CropType, TfmConfig, rgb_triple

__all__ = [
    'AugParams', 'sample_params', 'affine_matrix', 'apply_affine', 'lighting',
    'augment', 'center_crop', 'val_transform', 'denorm', 'aug_samples',
]

# uint8 pixels are 0..255; fastai 0.7 works on float 0..1 (open_image divides by 255).
_PIXEL_MAX = 255.0


# --------------------------------------------------------------------------------------
# Pure per-image pieces: parameters, matrix, resample, lighting
# --------------------------------------------------------------------------------------

class AugParams(NamedTuple):
    """The random draws for one image (a pytree); `sample_params` gives a batch of them.

    offset: f32[2] (row, col) of the window's top-left cell edge, input pixels.
    window: f32[2] (height, width) of the window in input pixels (sz / zoom).
    angle: f32[] rotation in degrees, counter-clockwise as displayed (cv2's sign).
    k: i32[] quarter turns, as `np.rot90(x, k)`.
    flip: bool[] left-right mirror, applied after the quarter turns.
    brightness: f32[] lighting B, added to 0..1 pixels.
    contrast: f32[] lighting C, the factor on deviations from the mean.
    """

    offset: jax.Array
    window: jax.Array
    angle: jax.Array
    k: jax.Array
    flip: jax.Array
    brightness: jax.Array
    contrast: jax.Array


def _frame_hw(image_hw: tuple[int, int], cfg: TfmConfig) -> tuple[int, int]:
    """Size of the frame the geometry refers to: CropType.NO resizes to sz x sz first."""
    return (cfg.sz, cfg.sz) if cfg.crop_type == CropType.NO else tuple(image_hw)


# Slots in sample_params' vector of uniform draws (two for the (row, col) offset).
_ZOOM_P, _ZOOM, _OFFSET, _ROTATE_P, _ANGLE = 0, 1, 2, 4, 5
_FLIP, _K, _BRIGHT, _CONTRAST = 6, 7, 8, 9
_N_DRAWS = 10


def sample_params(key: jax.Array, cfg: TfmConfig, frame_hw: tuple[int, int], n: int
                  ) -> AugParams:
    """Draw n images' augmentation from `key`: AugParams with a leading axis n (pure).

    `cfg`, `frame_hw` and `n` are static. `frame_hw` is the (H, W) of the image
    the window is cut from: the cached image, or (sz, sz) for CropType.NO.
    `augment(key, images, cfg)` uses exactly `sample_params(key, cfg, frame_hw, B)`.
    Each draw has a fixed slot in one vector of uniforms, so enabling one
    transform never changes another's draw.

    >>> p = sample_params(jax.random.key(0), TfmConfig(16, crop_type=CropType.RANDOM), (20, 20), 3)
    >>> p.offset.shape, p.window[0].tolist(), p.angle.tolist(), p.flip.tolist()
    ((3, 2), [16.0, 16.0], [0.0, 0.0, 0.0], [False, False, False])
    """
    # One 1-D threefry draw for the whole batch: a 2-D shape or one key per image
    # (split + vmap) compiles ~5x slower on XLA:CPU (bench/README.md, the data pipeline).
    u = jax.random.uniform(key, (n * _N_DRAWS,), jnp.float32).reshape(n, _N_DRAWS)
    return jax.vmap(lambda row: _params_from_uniforms(row, cfg, frame_hw))(u)


def _params_from_uniforms(u: jax.Array, cfg: TfmConfig, frame_hw: tuple[int, int]) -> AugParams:
    """One image's AugParams from its _N_DRAWS uniforms in [0, 1)."""
    H, W = frame_hw
    sz, pad = cfg.sz, cfg.pad
    f32 = jnp.float32
    between = lambda i, lo, hi: lo + u[i] * (hi - lo)  # noqa: E731  U[lo, hi)

    zoom = jnp.ones((), f32)
    if cfg.max_zoom > 1 and cfg.zoom_p > 0:
        zoom = jnp.where(u[_ZOOM_P] < cfg.zoom_p, between(_ZOOM, 1.0, cfg.max_zoom), zoom)
    # RANDOM/CENTER cut `sz` cached pixels; NO squashes the whole (padded) frame.
    base = jnp.asarray([sz, sz] if cfg.crop_type != CropType.NO else [sz + 2 * pad] * 2, f32)
    window = base / zoom  # zoom == 1 keeps window == base exactly
    hw = jnp.asarray([H, W], f32)
    if cfg.crop_type == CropType.CENTER:
        # fastai's center_crop starts at ceil((r - sz) / 2); integer, so no interpolation.
        offset = jnp.ceil((hw - window) / 2)
    else:
        # Every integer start from -pad to the last one that keeps the window inside
        # the padded frame, equally likely; the min guards u * n rounding up to n.
        n_pos = jnp.floor(hw + 2 * pad - window) + 1
        offset = jnp.minimum(jnp.floor(u[_OFFSET:_OFFSET + 2] * n_pos), n_pos - 1) - pad

    angle = jnp.zeros((), f32)
    if cfg.rotate_deg > 0 and cfg.rotate_p > 0:
        a = between(_ANGLE, -cfg.rotate_deg, cfg.rotate_deg)
        angle = jnp.where(u[_ROTATE_P] < cfg.rotate_p, a, angle)

    k = jnp.zeros((), jnp.int32)
    flip = jnp.zeros((), bool)
    if cfg.flip != 'none':
        flip = u[_FLIP] < cfg.flip_p
    if cfg.flip == 'dihedral':
        k = jnp.minimum(jnp.floor(u[_K] * 4), 3).astype(jnp.int32)  # 0..3 uniformly

    b = jnp.zeros((), f32)
    c = jnp.ones((), f32)
    if cfg.lighting_b > 0:
        b = between(_BRIGHT, -cfg.lighting_b, cfg.lighting_b)
    if cfg.lighting_c > 0:
        c0 = between(_CONTRAST, -cfg.lighting_c, cfg.lighting_c)
        c = jnp.where(c0 < 0, -1.0 / (c0 - 1.0), c0 + 1.0)  # fastai: 1/(1+|c|) .. 1+c
    return AugParams(offset, window, angle, k, flip, b, c)


# Exact integer matrices (row, col) for np.rot90(x, k): out[p] = x[_ROT90[k] @ p] about
# the centre. Looked up rather than computed with cos/sin so quarter turns stay exact.
_ROT90 = np.array([[[1, 0], [0, 1]], [[0, 1], [-1, 0]],
                   [[-1, 0], [0, -1]], [[0, -1], [1, 0]]], np.float32)


def _mat3(a: jax.Array, t: jax.Array) -> jax.Array:
    """3x3 homogeneous matrix from a 2x2 linear part and a translation."""
    top = jnp.concatenate([a, t[:, None]], axis=1)
    return jnp.concatenate([top, jnp.asarray([[0.0, 0.0, 1.0]], jnp.float32)], axis=0)


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    # Elementwise products and sums instead of `@`: a GPU f32 matmul may run in TF32
    # (10-bit mantissa), ~0.1 px off at 224 px; this stays exact for exact inputs.
    return (a[:, :, None] * b[None, :, :]).sum(axis=1)


def _about(a: jax.Array, centre: jax.Array) -> jax.Array:
    """3x3 matrix applying linear map `a` about `centre`: p -> a (p - centre) + centre."""
    return _mat3(a, centre - (a * centre[None, :]).sum(axis=1))


def affine_matrix(params: AugParams, frame_hw: tuple[int, int], sz: int) -> jax.Array:
    """The 2x3 matrix taking output (row, col, 1) to input (row, col) for one image.

    Composition, output to input: undo the quarter turns and mirror about the
    output centre ((sz-1)/2); map the output grid onto the window
    (`(p + 0.5) * window / sz - 0.5 + offset`); undo the rotation about the
    frame centre ((H-1)/2, (W-1)/2), as fastai rotates the whole image before
    cropping. With angle 0, no zoom and an integer offset every entry is an
    integer or half-integer, so the matrix and the sample positions are exact.

    >>> p = AugParams(jnp.array([2., 3.]), jnp.array([16., 16.]), jnp.array(0.),
    ...               jnp.array(0), jnp.array(False), jnp.array(0.), jnp.array(1.))
    >>> affine_matrix(p, (20, 20), 16).tolist()
    [[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]]
    """
    H, W = frame_hw
    f32 = jnp.float32
    c_out = jnp.full((2,), (sz - 1) / 2, f32)
    mirror = jnp.where(params.flip, jnp.asarray([[1, 0], [0, -1]], f32), jnp.eye(2, dtype=f32))
    # out = fliplr(rot90(crop, k)) means out[p] = crop[R90[k] @ F @ p] (centred coordinates).
    dihedral = _about(_matmul(jnp.asarray(_ROT90)[params.k % 4], mirror), c_out)
    scale = params.window.astype(f32) / sz
    to_window = _mat3(jnp.diag(scale), params.offset.astype(f32) + 0.5 * scale - 0.5)
    theta = jnp.deg2rad(params.angle.astype(f32))
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    # cv2.getRotationMatrix2D(angle) maps source (x, y) to destination with
    # [[cos, sin], [-sin, cos]]; its inverse in (row, col) order is this matrix.
    unrotate = _about(jnp.stack([jnp.stack([cos, sin]), jnp.stack([-sin, cos])]),
                      jnp.asarray([(H - 1) / 2, (W - 1) / 2], f32))
    return _matmul(_matmul(unrotate, to_window), dihedral)[:2]


def _reflect(i: jax.Array, n: int) -> jax.Array:
    """Integer index reflected into [0, n) as cv2 BORDER_REFLECT: 1 0 | 0 1 .. n-1 | n-1 n-2."""
    m = jnp.mod(i, 2 * n)  # non-negative for negative i (floor modulo)
    return jnp.where(m >= n, 2 * n - 1 - m, m)


# Fractional bits of apply_affine's fixed-point sample positions (cv2's warpAffine uses
# 5). 16 leaves 15 integer bits in int32: every term and the sum must stay under
# 2^15 = 32768 px, far beyond any image; _FIXED_LIMIT keeps the float->int cast in range.
_FRAC_BITS = 16
_FIXED_LIMIT = float(2 ** 30)


def apply_affine(image: jax.Array, matrix: jax.Array, sz: int) -> jax.Array:
    """Resample one (H, W, C) image onto an sz x sz grid: out[p] = image[matrix @ (p, 1)].

    Bilinear, with cv2 BORDER_REFLECT outside the image (see the module notes).
    Positions are computed in 16.16 fixed point (the matrix is rounded to
    1/65536), so identical in every XLA fusion. Returns float32 in the input's
    units (0..255 for uint8). Integer sample positions return the input pixel
    exactly (the neighbour's weight is 0), including quarter turns by `angle`
    (cos 90 deg = -4e-8 rounds to 0).

    >>> img = jnp.arange(16, dtype=jnp.uint8).reshape(4, 4, 1)
    >>> m = jnp.array([[1., 0., -1.], [0., 1., 0.]])   # shift up one row: row -1 reflects row 0
    >>> apply_affine(img, m, 2)[..., 0].tolist()
    [[0.0, 1.0], [0.0, 1.0]]
    """
    H, W, C = image.shape
    # Sample positions in 16.16 fixed point, integer arithmetic. XLA recomputes cheap
    # elementwise values inside each consumer fusion and may contract a*b+c into an FMA
    # in some and not others; with float coordinates the gather's floor(y) and the
    # weight y - floor(y) then disagreed by a whole pixel near integers (seen on CPU,
    # and an optimization_barrier is removed by XLA). Integers are the same in every
    # fusion. The matrix is rounded to 1/65536: at most 8e-6 * (2 sz + 1) px off.
    one = 1 << _FRAC_BITS
    m = jnp.asarray(matrix, jnp.float32) * one
    m = jnp.round(jnp.clip(m, -_FIXED_LIMIT, _FIXED_LIMIT)).astype(jnp.int32)
    grid = jnp.arange(sz, dtype=jnp.int32)
    r, c = grid[:, None], grid[None, :]
    y = m[0, 0] * r + m[0, 1] * c + m[0, 2]
    x = m[1, 0] * r + m[1, 1] * c + m[1, 2]
    y0, x0 = y >> _FRAC_BITS, x >> _FRAC_BITS  # arithmetic shift: floor, negatives too
    wy = (y & (one - 1)).astype(jnp.float32) / one  # exact: 16-bit integer / 2^16
    wx = (x & (one - 1)).astype(jnp.float32) / one
    rows = (_reflect(y0, H), _reflect(y0 + 1, H))
    cols = (_reflect(x0, W), _reflect(x0 + 1, W))
    flat = image.reshape(H * W, C)

    def at(rr, cc):
        return jnp.take(flat, (rr * W + cc).reshape(-1), axis=0).reshape(sz, sz, C).astype(
            jnp.float32)

    wy, wx = wy[..., None], wx[..., None]
    top = at(rows[0], cols[0]) * (1 - wx) + at(rows[0], cols[1]) * wx
    bottom = at(rows[1], cols[0]) * (1 - wx) + at(rows[1], cols[1]) * wx
    return top * (1 - wy) + bottom * wy


def lighting(x: jax.Array, b: jax.Array | float, c: jax.Array | float) -> jax.Array:
    """fastai 0.7's `lighting` on 0..1 pixels: clip((x - mu) * c + mu + b, 0, 1), mu = mean(x).

    Before clipping the mean moves by exactly b and deviations from it scale by c.

    >>> lighting(jnp.array([0.25, 0.75]), 0.125, 2.0).tolist()   # mean 0.5; 1.125 clips
    [0.125, 1.0]
    """
    mu = jnp.mean(x)
    return jnp.clip((x - mu) * c + mu + b, 0.0, 1.0)


# --------------------------------------------------------------------------------------
# Batch functions
# --------------------------------------------------------------------------------------

def _check_batch(images: Any, cfg: Any, fn: str) -> None:
    if not isinstance(cfg, TfmConfig):
        raise TypeError(f'{fn} needs a TfmConfig (from tfms_from_model), got {type(cfg).__name__}')
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[-1] != 3:
        hint = ('; for one image use image[None] or aug_samples'
                if len(shape) == 3 else '')
        raise ValueError(f'{fn} takes a uint8 batch (B, H, W, 3), got shape {shape}{hint}')
    if images.dtype != jnp.uint8:
        raise TypeError(f'{fn} takes uint8 pixels 0..255, got dtype {images.dtype}; '
                        f'pass the decode cache as is (not divided by 255 or normalised)')
    H, W = shape[1:3]
    if cfg.crop_type != CropType.NO and (H < cfg.sz or W < cfg.sz):
        raise ValueError(f'{fn}: images are {H}x{W}, smaller than sz={cfg.sz} for crop_type '
                         f'{cfg.crop_type.name}; decode the cache at >= {cfg.sz} px or use '
                         f'crop_type=CropType.NO (resize)')


def _normalize(x01: jax.Array, cfg: TfmConfig) -> jax.Array:
    return (x01 - jnp.asarray(cfg.mean, jnp.float32)) / jnp.asarray(cfg.std, jnp.float32)


def _resize_to_sz(images: jax.Array, sz: int) -> jax.Array:
    """Area-aware resize of a batch to sz x sz, float32 0..255 (CropType.NO's squash)."""
    B, H, W, C = images.shape
    x = images.astype(jnp.float32)
    if (H, W) == (sz, sz):
        return x
    # 'linear' with antialias widens the triangle kernel by the shrink factor, so every
    # input pixel contributes (the role cv2.INTER_AREA plays in fastai).
    return jax.image.resize(x, (B, sz, sz, C), method='linear', antialias=True)


def augment(key: jax.Array, images: jax.Array, cfg: TfmConfig) -> jax.Array:
    """Training transform of a uint8 batch (B, H, W, 3) -> normalised float32 (B, sz, sz, 3).

    Per image, with `sample_params(key, cfg, frame_hw, B)[i]`: one affine warp (random
    crop/shift, zoom, rotation, flip/dihedral), one bilinear resample with
    reflection, lighting on 0..1 values, then (x - mean) / std. Jittable with
    `cfg` static: `jax.jit(augment, static_argnums=2)`; the same key gives the
    same batch. With a non-random cfg it equals `val_transform` for
    RANDOM/CENTER crops.

    >>> from jaxcls.data.tfm_config import tfms_from_model, transforms_side_on
    >>> trn, _ = tfms_from_model('resnet34', 8, transforms_side_on)
    >>> imgs = jnp.zeros((4, 10, 10, 3), jnp.uint8)
    >>> augment(jax.random.key(1), imgs, trn).shape
    (4, 8, 8, 3)
    """
    _check_batch(images, cfg, 'augment')
    x = _resize_to_sz(images, cfg.sz) if cfg.crop_type == CropType.NO else images
    frame_hw = _frame_hw(images.shape[1:3], cfg)
    use_lighting = cfg.lighting_b > 0 or cfg.lighting_c > 0

    def one(p, img):
        out = apply_affine(img, affine_matrix(p, frame_hw, cfg.sz), cfg.sz) / _PIXEL_MAX
        return lighting(out, p.brightness, p.contrast) if use_lighting else out

    params = sample_params(key, cfg, frame_hw, images.shape[0])
    return _normalize(jax.vmap(one)(params, x), cfg)


def center_crop(images: Any, sz: int | TfmConfig) -> Any:
    """The centre sz x sz of (..., H, W, C) images, by slicing (dtype and array type kept).

    The start is fastai's `ceil((H - sz) / 2)`: one pixel further down/right when
    H - sz is odd. `sz` may be a TfmConfig (its `.sz`).

    >>> center_crop(np.arange(25).reshape(1, 5, 5, 1), 2)[0, ..., 0].tolist()
    [[12, 13], [17, 18]]
    """
    sz = sz.sz if isinstance(sz, TfmConfig) else int(sz)
    H, W = images.shape[-3:-1]
    if H < sz or W < sz:
        raise ValueError(f'center_crop: images are {H}x{W}, smaller than sz={sz}; '
                         f'decode the cache at >= {sz} px')
    top, left = (H - sz + 1) // 2, (W - sz + 1) // 2  # == ceil((H - sz) / 2)
    return images[..., top:top + sz, left:left + sz, :]


def val_transform(images: jax.Array, cfg: TfmConfig) -> jax.Array:
    """Validation transform: uint8 (B, H, W, 3) -> normalised float32 (B, sz, sz, 3), no randomness.

    RANDOM/CENTER: the exact centre crop (no interpolation), then (x/255 - mean) / std.
    NO: an area-aware resize of the whole image to sz (with `pad`, the padded
    frame is squashed back to sz, as fastai does). Augmentation fields of
    `cfg` are ignored, so a training config gives its validation view.

    >>> from jaxcls.data.tfm_config import tfms_from_stats
    >>> _, val = tfms_from_stats(((0.,) * 3, (1.,) * 3), 2)
    >>> val_transform(jnp.full((1, 4, 4, 3), 255, jnp.uint8), val)[0, :, :, 0].tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    _check_batch(images, cfg, 'val_transform')
    if cfg.crop_type != CropType.NO:
        x = center_crop(images, cfg.sz).astype(jnp.float32) / _PIXEL_MAX
        return _normalize(x, cfg)
    x = _resize_to_sz(images, cfg.sz)
    if cfg.pad:
        full = jnp.full((2,), cfg.sz + 2 * cfg.pad, jnp.float32)
        p = AugParams(jnp.full((2,), -cfg.pad, jnp.float32), full, jnp.zeros(()),
                      jnp.zeros((), jnp.int32), jnp.zeros((), bool), jnp.zeros(()), jnp.ones(()))
        m = affine_matrix(p, (cfg.sz, cfg.sz), cfg.sz)
        x = jax.vmap(lambda im: apply_affine(im, m, cfg.sz))(x)
    return _normalize(x / _PIXEL_MAX, cfg)


def aug_samples(key: jax.Array, image: jax.Array, cfg: TfmConfig, n: int) -> jax.Array:
    """n augmented versions of one uint8 (H, W, 3) image -> normalised float32 (n, sz, sz, 3).

    Sample i is what `augment(key, batch_of_n_copies, cfg)[i]` gives; pass the
    result to `denorm` to plot it. Jittable with cfg and n static.

    >>> from jaxcls.data.tfm_config import tfms_from_model, transforms_side_on
    >>> trn, _ = tfms_from_model('resnet34', 8, transforms_side_on)
    >>> aug_samples(jax.random.key(0), jnp.zeros((10, 10, 3), jnp.uint8), trn, 6).shape
    (6, 8, 8, 3)
    """
    if len(image.shape) != 3:
        raise ValueError(f'aug_samples takes one image (H, W, 3), got shape {tuple(image.shape)}; '
                         f'for a batch use augment')
    n = int(n)
    if n < 1:
        raise ValueError(f'aug_samples needs n >= 1, got {n}')
    return augment(key, jnp.broadcast_to(jnp.asarray(image)[None], (n, *image.shape)), cfg)


def denorm(x: Any, cfg_or_stats: TfmConfig | Sequence[Sequence[float]],
           as_uint8: bool = False) -> np.ndarray:
    """Undo normalisation for display: (..., 3) normalised -> numpy 0..1 float32, or uint8.

    Values are clipped to the displayable range; uint8 rounds to nearest. The
    inverse of `val_transform` / `augment`'s last step (fastai's `denorm`).

    >>> from jaxcls.data.tfm_config import tfms_from_stats
    >>> _, val = tfms_from_stats(((0.5,) * 3, (0.25,) * 3), 2)
    >>> denorm(np.full((1, 2, 2, 3), 2.0), val)[0, 0, 0].tolist(), denorm(np.zeros(3), val, True)
    ([1.0, 1.0, 1.0], array([128, 128, 128], dtype=uint8))
    """
    if isinstance(cfg_or_stats, TfmConfig):
        mean, std = cfg_or_stats.mean, cfg_or_stats.std
    else:
        try:
            mean, std = cfg_or_stats
        except (TypeError, ValueError):
            raise ValueError(f'denorm needs a TfmConfig or (mean, std), got {cfg_or_stats!r}'
                             ) from None
        mean, std = rgb_triple('mean', mean), rgb_triple('std', std)
    x = np.asarray(x, np.float32)
    if x.shape[-1:] != (3,):
        raise ValueError(f'denorm takes channels-last (..., 3) images, got shape {x.shape}')
    x01 = np.clip(x * np.asarray(std, np.float32) + np.asarray(mean, np.float32), 0.0, 1.0)
    return np.round(x01 * _PIXEL_MAX).astype(np.uint8) if as_uint8 else x01
