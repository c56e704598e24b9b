"""Tests for jaxcls.data.tfm_ops: exact crops/flips/turns, fastai 0.7's frequencies and formulas, jit."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.ndimage import map_coordinates

from jaxcls.data.tfm_config import (CropType, TfmConfig, tfms_from_model, tfms_from_stats,
                                    transforms_basic, transforms_side_on)
from jaxcls.data.tfm_ops import (AugParams, affine_matrix, apply_affine, aug_samples, augment,
                                 center_crop, denorm, lighting, sample_params, val_transform)

STATS = ((0.5, 0.4, 0.3), (0.25, 0.2, 0.3))  # distinct per channel so a channel mix-up shows
N_FREQ = 2000
# Binomial(2000, 0.5) has sd 0.011; 0.04 is ~3.6 sd, and the keys are fixed anyway.
FREQ_TOL = 0.04


# Jitted once per module: each distinct (cfg, shape) compiles once (~1 s on 2 CPU cores).
_augment = jax.jit(augment, static_argnums=2)
_val = jax.jit(val_transform, static_argnums=1)
_sample = jax.jit(sample_params, static_argnums=(1, 2, 3))


def _rng_images(shape, seed=0, lo=0, hi=256):
    return np.random.default_rng(seed).integers(lo, hi, shape, dtype=np.uint8)


def _np_norm(x_uint8, stats=STATS):
    mean, std = (np.asarray(s, np.float32) for s in stats)
    return (x_uint8.astype(np.float32) / 255 - mean) / std


def _params(offset=(0, 0), window=(16, 16), angle=0.0, k=0, flip=False):
    return AugParams(jnp.asarray(offset, jnp.float32), jnp.asarray(window, jnp.float32),
                     jnp.asarray(angle, jnp.float32), jnp.asarray(k, jnp.int32),
                     jnp.asarray(flip), jnp.zeros(()), jnp.ones(()))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _warp_jit(img, params, frame_hw, sz):
    return apply_affine(img, affine_matrix(params, frame_hw, sz), sz)


def _warp(img, sz, frame_hw=None, **kw):
    """One explicit warp: apply_affine(img, affine_matrix(params(**kw))) as numpy."""
    return np.asarray(_warp_jit(jnp.asarray(img), _params(**kw), frame_hw or img.shape[:2], sz))


# ---------------------------------------------------------------- validation path

@pytest.mark.parametrize('hw', [(21, 21), (21, 24), (16, 16)])
def test_val_transform_is_exact_numpy_centre_crop(hw):
    imgs = _rng_images((3, *hw, 3))
    _, val = tfms_from_stats(STATS, 16)
    top, left = -(-(hw[0] - 16) // 2), -(-(hw[1] - 16) // 2)  # fastai: ceil((r - sz) / 2)
    expect = _np_norm(imgs[:, top:top + 16, left:left + 16])
    got = np.asarray(jax.jit(val_transform, static_argnums=1)(imgs, val))
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-6)
    assert np.array_equal(np.asarray(center_crop(imgs, val)), imgs[:, top:top + 16, left:left + 16])


def test_denorm_inverts_normalisation_exactly_in_uint8():
    imgs = _rng_images((2, 20, 20, 3))
    _, val = tfms_from_stats(STATS, 16)
    x = _val(imgs, val)
    assert np.array_equal(denorm(x, val, as_uint8=True), center_crop(imgs, 16))
    f = denorm(x, STATS)
    assert f.dtype == np.float32 and f.min() >= 0 and f.max() <= 1
    np.testing.assert_allclose(f, center_crop(imgs, 16) / 255, atol=1e-6)


def test_no_crop_resizes_whole_image_area_aware():
    # A ramp along columns: an area-aware 2x shrink lands on the mean of each pixel
    # pair, f(2j + 0.5); edges differ (the kernel is renormalised there), so test inside.
    ramp = np.broadcast_to((np.arange(32) * 7)[None, :, None], (32, 32, 3)).astype(np.uint8)
    _, val = tfms_from_stats(STATS, 16, crop_type=CropType.NO)
    got = denorm(val_transform(ramp[None], val), val)[0, :, :, 0] * 255
    np.testing.assert_allclose(got[:, 1:-1], np.broadcast_to(7 * (2 * np.arange(1, 15) + 0.5),
                                                              (16, 14)), atol=1e-3)
    # Without augmentation, training with NO gives the validation output.
    trn = TfmConfig(16, *STATS, crop_type=CropType.NO)
    imgs = _rng_images((2, 32, 32, 3))
    np.testing.assert_allclose(_augment(jax.random.key(0), imgs, trn), _val(imgs, val),
                               atol=1e-5)
    # With pad, the reflection-padded frame is squashed to sz: for a 16 px image and
    # pad 2, output column j samples input column q = (j + 0.5) * 20/16 - 0.5 - 2.
    _, valp = tfms_from_stats(STATS, 16, pad=2, crop_type=CropType.NO)
    ramp16 = np.ascontiguousarray(ramp[:16, :16])
    got = denorm(_val(ramp16[None], valp), valp)[0, 0, :, 0] * 255
    q = (np.arange(16) + 0.5) * 1.25 - 2.5
    np.testing.assert_allclose(got[2:14], 7 * q[2:14], atol=1e-3)  # inside the image
    # q = -0.625 and 15.625 fall between an edge pixel and its reflection (the same
    # pixel, BORDER_REFLECT), so they read the edge value itself.
    np.testing.assert_allclose(got[[1, 14]], [0, 7 * 15], atol=1e-3)


# ---------------------------------------------------------------- exact geometry

def test_zoom_1_without_rotation_equals_centre_crop_exactly():
    imgs = _rng_images((4, 21, 21, 3))
    cfg = TfmConfig(16, *STATS, crop_type=CropType.CENTER)  # no random draw at all
    _, val = tfms_from_stats(STATS, 16)
    out = np.asarray(_augment(jax.random.key(3), imgs, cfg))
    np.testing.assert_allclose(out, _val(imgs, val), rtol=0, atol=1e-6)
    np.testing.assert_allclose(out, _np_norm(center_crop(imgs, 16)), rtol=0, atol=1e-6)
    assert np.array_equal(denorm(out, cfg, as_uint8=True), center_crop(imgs, 16))


def test_forced_flip_is_the_exact_mirror():
    imgs = _rng_images((3, 20, 20, 3))
    cfg = TfmConfig(16, *STATS, crop_type=CropType.CENTER, flip='horizontal', flip_p=1.0)
    out = np.asarray(_augment(jax.random.key(0), imgs, cfg))
    mirror = center_crop(imgs, 16)[:, :, ::-1]
    assert np.array_equal(denorm(out, cfg, as_uint8=True), mirror)
    np.testing.assert_allclose(out, _np_norm(mirror), rtol=0, atol=1e-6)


def test_quarter_turns_and_mirror_matrices_are_exact():
    img = _rng_images((16, 16, 3), seed=1)
    for k in range(4):
        for flip in (False, True):
            want = np.rot90(img, k)
            want = want[:, ::-1] if flip else want
            assert np.array_equal(_warp(img, 16, k=k, flip=flip), want), (k, flip)


@pytest.mark.parametrize('angle,k', [(90, 1), (-90, 3), (180, 2)])
def test_forced_rotation_matches_np_rot90(angle, k):
    img = _rng_images((20, 20, 3), seed=2)
    got = _warp(img, 16, offset=(2, 2), angle=angle)  # centred window: rotation is about it
    want = np.rot90(img, k)[2:18, 2:18]
    # cos(90 deg) = -4.4e-8 in float32 rounds to 0 in apply_affine's 16.16 fixed point.
    assert np.array_equal(got, want)


def test_rotation_is_about_the_image_centre_and_counter_clockwise():
    img = _rng_images((15, 15, 3), seed=3)
    got = _warp(img, 15, window=(15, 15), angle=37.0)
    # Matrix rounded to 1/65536: the centre moves <= 1.2e-4 px, values <= 0.03.
    np.testing.assert_allclose(got[7, 7], img[7, 7], atol=0.05)
    # A 10-degree turn of a ramp along columns: counter-clockwise (cv2's sign) makes the
    # output rise going up the image, i.e. out[r, c] = f(col_in) with col_in = -sin*r + cos*c.
    ramp = np.broadcast_to((np.arange(33) * 7)[None, :, None], (33, 33, 3)).astype(np.uint8)
    got = _warp(ramp, 9, frame_hw=(33, 33), offset=(12, 12), window=(9, 9), angle=10.0)
    r, c = np.mgrid[0:9, 0:9] + 12.0 - 16.0
    t = np.deg2rad(10.0)
    want = 7 * (-np.sin(t) * r + np.cos(t) * c + 16.0)
    # Matrix rounded to 1/65536: <= 8e-6 * 17 px off, times a slope of 7 per px.
    np.testing.assert_allclose(got[..., 0], want, atol=2e-3)


def test_zoom_maps_pixel_centres_about_the_window_centre():
    # Bilinear reproduces a linear ramp exactly, so each output pixel shows the input
    # coordinate it sampled: (i + 0.5) * window / sz - 0.5 + offset.
    r, c = np.mgrid[0:16, 0:16]
    ramp = np.repeat((3 * r + 5 * c)[..., None], 3, axis=2).astype(np.uint8)
    got = _warp(ramp, 16, offset=(4, 4), window=(8, 8))
    q = (np.arange(16) + 0.5) * 0.5 - 0.5 + 4
    np.testing.assert_allclose(got[..., 0], 3 * q[:, None] + 5 * q[None, :], atol=1e-4)


def test_reflection_is_cv2_border_reflect():
    img = _rng_images((10, 12, 3), seed=4)
    # Integer shift outside the image == numpy 'symmetric' pad (cv2 BORDER_REFLECT).
    padded = np.pad(img, ((5, 5), (5, 5), (0, 0)), mode='symmetric')
    got = _warp(img, 8, offset=(-3, 7), window=(8, 8))
    assert np.array_equal(got, padded[2:10, 12:20])
    # Fractional positions == jax.scipy.ndimage.map_coordinates(order=1, mode='reflect').
    # Entries are multiples of 1/16, so apply_affine's 16.16 fixed point holds them exactly.
    m = np.array([[0.875, 0.3125, -4.25], [-0.1875, 1.125, 3.6875]], np.float32)
    got = np.asarray(jax.jit(apply_affine, static_argnums=2)(jnp.asarray(img), m, 12))
    rr, cc = np.mgrid[0:12, 0:12].astype(np.float32)
    yx = jnp.asarray([m[0, 0] * rr + m[0, 1] * cc + m[0, 2], m[1, 0] * rr + m[1, 1] * cc + m[1, 2]])
    ref = jax.jit(jax.vmap(lambda ch: map_coordinates(ch, list(yx), order=1, mode='reflect')))
    want = ref(jnp.moveaxis(jnp.asarray(img, jnp.float32), -1, 0))
    np.testing.assert_allclose(got, np.moveaxis(np.asarray(want), 0, -1), atol=1e-3)


# ---------------------------------------------------------------- sampling

def test_random_crop_covers_every_offset_and_is_exact():
    imgs = np.broadcast_to(_rng_images((20, 20, 3), seed=5), (N_FREQ, 20, 20, 3))
    cfg = TfmConfig(16, *STATS, crop_type=CropType.RANDOM)
    key = jax.random.key(7)
    out = denorm(_augment(key, imgs, cfg), cfg, as_uint8=True)
    p = _sample(key, cfg, (20, 20), N_FREQ)  # the draws augment used
    off = np.asarray(p.offset).astype(int)
    assert sorted(set(map(tuple, off))) == [(i, j) for i in range(5) for j in range(5)]
    for i in range(0, N_FREQ, 97):
        r, c = off[i]
        assert np.array_equal(out[i], imgs[i, r:r + 16, c:c + 16])
    # pad widens the range by pad on each side: -2 .. 6
    cfgp = TfmConfig(16, *STATS, crop_type=CropType.RANDOM, pad=2)
    p = _sample(key, cfgp, (20, 20), N_FREQ)
    assert sorted(set(np.asarray(p.offset).ravel().astype(int))) == list(range(-2, 7))


def test_flip_frequency_is_half_and_outputs_are_crop_or_mirror():
    imgs = np.broadcast_to(_rng_images((16, 16, 3), seed=6), (N_FREQ, 16, 16, 3))
    _, val = tfms_from_stats(STATS, 16)
    cfg = TfmConfig(16, *STATS, crop_type=CropType.CENTER, flip='horizontal')
    out = denorm(_augment(jax.random.key(11), imgs, cfg), cfg, as_uint8=True)
    same = (out == imgs).all(axis=(1, 2, 3))
    mirrored = (out == imgs[:, :, ::-1]).all(axis=(1, 2, 3))
    assert (same ^ mirrored).all()
    assert abs(mirrored.mean() - 0.5) < FREQ_TOL


def test_dihedral_gives_all_8_variants_uniformly():
    n = 800
    img = _rng_images((16, 16, 3), seed=8)
    variants = [np.rot90(img, k)[:, ::-1] if f else np.rot90(img, k)
                for f in (False, True) for k in range(4)]
    cfg = TfmConfig(16, *STATS, crop_type=CropType.CENTER, flip='dihedral')
    out = denorm(_augment(jax.random.key(2), np.broadcast_to(img, (n, 16, 16, 3)), cfg),
                 cfg, as_uint8=True)
    which = np.array([[np.array_equal(o, v) for v in variants] for o in out])
    assert (which.sum(axis=1) == 1).all()
    # Each has chance 1/8; sd over 800 draws is 0.012, so 0.05 is ~4 sd.
    np.testing.assert_allclose(which.mean(axis=0), 1 / 8, atol=0.05)


def test_rotation_and_zoom_follow_fastai_probabilities_and_ranges():
    trn, _ = tfms_from_model('resnet34', 16, transforms_basic, max_zoom=1.1)
    p = _sample(jax.random.key(5), trn, (20, 20), N_FREQ)
    angle, window = np.asarray(p.angle), np.asarray(p.window)
    assert abs((angle != 0).mean() - 0.75) < FREQ_TOL
    assert angle.min() >= -10 and angle.max() <= 10 and angle.min() < -9.5 and angle.max() > 9.5
    assert (window[:, 0] == window[:, 1]).all()
    zoom = 16 / window[:, 0]
    assert abs((zoom != 1).mean() - 0.75) < FREQ_TOL
    assert zoom.min() >= 1 and zoom.max() <= 1.1 + 1e-6 and zoom.max() > 1.095
    assert (np.asarray(p.k) == 0).all() and not np.asarray(p.flip).any()
    # Zoomed windows stay inside the padded frame: -pad <= offset, offset + window <= 20 + pad.
    cfg = _full_cfg()  # pad=2, max_zoom=1.2
    p = _sample(jax.random.key(6), cfg, (20, 20), N_FREQ)
    off, win = np.asarray(p.offset), np.asarray(p.window)
    assert off.min() == -2 and (off + win).max() <= 22 + 1e-4 and (off == np.floor(off)).all()


def test_lighting_is_fastai_formula():
    x = np.random.default_rng(9).uniform(0, 1, (8, 8, 3)).astype(np.float32)
    for b, c in [(0.05, 1.05), (-0.05, 1 / 1.05), (0.4, 3.0)]:
        mu = x.mean()
        want = np.clip((x - mu) * c + mu + b, 0, 1)
        np.testing.assert_allclose(lighting(jnp.asarray(x), b, c), want, atol=1e-6)


def test_lighting_changes_mean_and_contrast_within_bounds():
    # Pixels in 0.3..0.7 so that +-5% brightness and contrast never clip.
    imgs = _rng_images((N_FREQ, 16, 16, 3), seed=10, lo=77, hi=179)
    cfg = TfmConfig(16, *STATS, crop_type=CropType.CENTER, lighting_b=0.05, lighting_c=0.05)
    out = denorm(_augment(jax.random.key(4), imgs, cfg), cfg)
    x = imgs / 255.0
    shift = out.mean(axis=(1, 2, 3)) - x.mean(axis=(1, 2, 3))
    ratio = out.std(axis=(1, 2, 3)) / x.std(axis=(1, 2, 3))
    tol = 1e-5  # float32 rounding of the mean over 768 values
    assert shift.min() >= -0.05 - tol and shift.max() <= 0.05 + tol
    assert ratio.min() >= 1 / 1.05 - tol and ratio.max() <= 1.05 + tol
    assert shift.min() < -0.045 and shift.max() > 0.045  # the whole range is used
    assert ratio.min() < 1 / 1.045 and ratio.max() > 1.045
    assert abs((ratio > 1).mean() - 0.5) < FREQ_TOL


# ---------------------------------------------------------------- the whole function

def _full_cfg():
    return tfms_from_stats(STATS, 16, transforms_side_on, max_zoom=1.2, pad=2)[0]


def test_augment_is_sample_params_then_one_warp_lighting_and_norm():
    imgs = _rng_images((6, 20, 20, 3), seed=12)
    cfg, key = _full_cfg(), jax.random.key(9)
    out = np.asarray(_augment(key, imgs, cfg))
    params = _sample(key, cfg, (20, 20), 6)

    @jax.jit
    def by_hand(img, p):
        x = apply_affine(img, affine_matrix(p, (20, 20), 16), 16) / 255
        return lighting(x, p.brightness, p.contrast)

    want = _np_norm(np.asarray(jax.vmap(by_hand)(jnp.asarray(imgs), params)) * 255)
    np.testing.assert_allclose(out, want, atol=1e-4)
    assert len(set(np.asarray(params.angle).tolist())) > 1  # the draws differ per image


def test_augment_is_deterministic_per_key_and_differs_across_keys():
    imgs = _rng_images((6, 20, 20, 3), seed=13)  # shapes shared with other tests: one compile
    cfg = _full_cfg()
    a = np.asarray(_augment(jax.random.key(0), imgs, cfg))
    b = np.asarray(_augment(jax.random.key(0), imgs, cfg))
    c = np.asarray(_augment(jax.random.key(1), imgs, cfg))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == (6, 16, 16, 3) and a.dtype == np.float32
    # Legacy uint32 keys work too.
    assert _augment(jax.random.PRNGKey(0), imgs, cfg).shape == (6, 16, 16, 3)


def test_jit_compiles_once_for_repeated_calls():
    imgs = jnp.asarray(_rng_images((4, 20, 20, 3), seed=14))

    def aug(key, images, cfg):  # a fresh function: its own jit cache
        return augment(key, images, cfg)

    jitted = jax.jit(aug, static_argnums=2)
    for i in range(3):
        jitted(jax.random.key(i), imgs, _full_cfg()).block_until_ready()  # equal, new cfg
    assert jitted._cache_size() == 1

    def val(images, cfg):
        return val_transform(images, cfg)

    jval = jax.jit(val, static_argnums=1)
    for _ in range(2):
        jval(imgs + 1, tfms_from_stats(STATS, 16)[1])
    assert jval._cache_size() == 1


def test_aug_samples_are_augment_of_copies():
    img = _rng_images((20, 20, 3), seed=15)
    cfg, key = _full_cfg(), jax.random.key(6)
    s = jax.jit(aug_samples, static_argnums=(2, 3))(key, img, cfg, 6)
    assert s.shape == (6, 16, 16, 3)
    want = _augment(key, np.broadcast_to(img, (6, 20, 20, 3)), cfg)
    np.testing.assert_allclose(s, want, rtol=0, atol=1e-5)  # separate compiles: fusion differs


def test_bad_inputs_raise_clear_errors():
    cfg = _full_cfg()
    with pytest.raises(ValueError, match=r'\(B, H, W, 3\).*image\[None\] or aug_samples'):
        _augment(jax.random.key(0), _rng_images((20, 20, 3)), cfg)
    with pytest.raises(TypeError, match='uint8 pixels.*float32'):
        _augment(jax.random.key(0), np.zeros((1, 20, 20, 3), np.float32), cfg)
    with pytest.raises(ValueError, match='12x12, smaller than sz=16.*CropType.NO'):
        val_transform(_rng_images((1, 12, 12, 3)), cfg)
    with pytest.raises(TypeError, match='needs a TfmConfig'):
        _augment(jax.random.key(0), _rng_images((1, 20, 20, 3)), STATS)
