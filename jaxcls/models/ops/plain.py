"""kernels='xla': the plain ops, as XLA compiles them on any backend (GPU, TPU, CPU meshes).

Convolutions are `lax.conv_general_dilated` (tiny maps as one matmul over patches, which is
faster on every backend tried; see `tiny.py`), BatchNorm's statistics are mean/variance
reductions, max pooling is a reduce-window. This is torchvision's arithmetic, written the
way a reader expects.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from .kernels import Kernels
from .tiny import conv_patches, is_tiny


def lax_conv(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
    """XLA's convolution, NHWC input, HWIO kernel, symmetric zero padding `pad`."""
    p = (pad, pad)
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), (p, p),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def conv(x: jax.Array, kernel: jax.Array, stride: int, pad: int, inference: bool) -> jax.Array:
    k = kernel.shape[0]
    ho = (x.shape[1] + 2 * pad - k) // stride + 1
    wo = (x.shape[2] + 2 * pad - k) // stride + 1
    if is_tiny(ho, wo):
        return conv_patches(x, kernel, stride, pad)
    return lax_conv(x, kernel, stride, pad)


def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float):
    """(y, mean, biased var) of float32 x normalised with its own per-channel statistics."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axes)
    var = jnp.square(x - mean).mean(axes)
    mul = scale * jax.lax.rsqrt(var + eps)
    return x * mul + (bias - mean * mul), mean, var


def max_pool(x: jax.Array, k: int, stride: int, pad: int) -> jax.Array:
    return nn.max_pool(x, (k, k), (stride, stride), ((pad, pad), (pad, pad)))


def block_output(x: jax.Array, train: bool) -> jax.Array:
    return x


KERNELS = Kernels('xla', conv, batch_norm, max_pool, block_output)
