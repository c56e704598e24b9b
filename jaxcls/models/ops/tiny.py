"""Convolutions on tiny feature maps as matrix products (both kernel sets use them).

XLA:CPU runs a 3x3 convolution on a 2x2 map many times slower than the same arithmetic as
matmuls; from 4x4 on its own convolution is as fast. Outputs of at most SMALL_MAP_PIXELS
pixels therefore go through `conv_patches` (one matmul over patches, no kernel copy: the
fastest forward pass, and what the 'xla' set uses on every backend) or `conv_taps` (matmuls
per group of kernel taps over the pixels each tap meets: the fastest to train on a CPU).
Both are the sums `lax.conv_general_dilated` computes (tests/models/test_ops.py, to 1e-5).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Output maps up to this many pixels (2x2) run as matmuls; measured by
# `python bench/bench_step.py` (see bench/README.md, "Notes on the model and the kernels").
SMALL_MAP_PIXELS = 4


def taps(xp: jax.Array, kh: int, kw: int, stride: int, ho: int, wo: int) -> list:
    """The kh*kw strided [n, ho, wo, c] views of a padded NHWC input, in (kh, kw) order:
    what a kh x kw window with this stride sees at each of its positions."""
    return [xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
            for i in range(kh) for j in range(kw)]


def conv_patches(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
    """A convolution (NHWC, HWIO, symmetric zero padding) as one matmul over patches.

    The patches are strided slices of the padded input, concatenated on the channel axis in
    (kh, kw, cin) order, the kernel's own memory order: the kernel is read in place, never
    copied. Its input gradient is a 9-way scatter, so `conv_taps` trains faster.
    """
    kh, kw, cin, cout = kernel.shape
    if pad:
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho = (x.shape[1] - kh) // stride + 1
    wo = (x.shape[2] - kw) // stride + 1
    cols = taps(x, kh, kw, stride, ho, wo)
    patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
    return patches @ kernel.reshape(kh * kw * cin, cout)


def _valid_outputs(size: int, out: int, tap: int, stride: int, pad: int) -> tuple:
    """[lo, hi): the output positions along one axis whose window puts kernel tap `tap` on
    a real input pixel (0 <= a * stride + tap - pad < size), not on padding."""
    lo = max(0, -((tap - pad) // stride))
    hi = min(out, (size - 1 + pad - tap) // stride + 1)
    return lo, max(lo, hi)


def conv_taps(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
    """A convolution (NHWC, HWIO, symmetric zero padding) as matmuls per kernel tap, each
    over only the output pixels where that tap lands on the input, not on padding.

    On a 2x2 map with a 3x3 kernel, 16 of the 36 (tap, output pixel) pairs are real. Tap
    (i, j) multiplies `x[its strided window]` by `kernel[i, j]` and adds the product into its
    output rectangle. Taps with as many valid pixels share one batched matmul (three on a
    2x2 map: corners, edges, centre), because on a CPU each XLA kernel costs tens of
    microseconds however small. Autodiff gives batched matmuls of the same shapes for both
    gradients. The products are summed in float32 and cast once, as one convolution would.
    """
    kh, kw, cin, cout = kernel.shape
    n, h, w, _ = x.shape
    ho = (h + 2 * pad - kh) // stride + 1
    wo = (w + 2 * pad - kw) // stride + 1
    groups = {}                        # valid output pixels per image -> taps
    for i in range(kh):
        a0, a1 = _valid_outputs(h, ho, i, stride, pad)
        for j in range(kw):
            b0, b1 = _valid_outputs(w, wo, j, stride, pad)
            if a0 < a1 and b0 < b1:    # else this tap sees only padding
                groups.setdefault((a1 - a0) * (b1 - b0), []).append((i, j, a0, a1, b0, b1))

    def window(i, j, a0, a1, b0, b1):  # the input pixels tap (i, j) meets, as [n, a1-a0, b1-b0, cin]
        r, c = a0 * stride + i - pad, b0 * stride + j - pad
        return x[:, r:r + stride * (a1 - a0 - 1) + 1:stride, c:c + stride * (b1 - b0 - 1) + 1:stride, :]

    y = jnp.zeros((n, ho, wo, cout), jnp.float32)
    for m, group in groups.items():
        lhs = jnp.stack([window(*tap).reshape(n * m, cin) for tap in group])
        rhs = jnp.stack([kernel[i, j] for i, j, *_ in group])
        out = jax.lax.dot_general(lhs, rhs, (((2,), (1,)), ((0,), (0,))),
                                  preferred_element_type=jnp.float32)
        for part, (i, j, a0, a1, b0, b1) in zip(out, group):
            part = part.reshape(n, a1 - a0, b1 - b0, cout)
            y = y + jnp.pad(part, ((0, 0), (a0, ho - a1), (b0, wo - b1), (0, 0)))
    return y.astype(jnp.result_type(x, kernel))


def is_tiny(ho: int, wo: int) -> bool:
    """Whether an ho x wo output map runs as matmuls rather than as a convolution."""
    return ho * wo <= SMALL_MAP_PIXELS
