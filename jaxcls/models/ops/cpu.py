"""kernels='cpu': rewrites of the ResNet's layers that one CPU device runs faster.

On a CPU, XLA spends as much time around a ResNet's convolutions as in them. Each function
here computes what its `plain` counterpart computes, to float rounding (outputs and gradients
agree to 1e-5; tests/models/test_ops.py):

* `conv`: tiny maps as matmuls (`conv_taps` to train, `conv_patches` for a forward pass
  alone), 3x3 stride-1 convolutions on the maps `winograd.applies` names by Winograd
  F(2x2, 3x3), XLA's own convolution elsewhere.
* `batch_norm`: every per-channel sum (two forward, two backward) as a GEMM (`channel_sum`);
  XLA:CPU's reductions run at about 1 GB/s.
* `max_pool`: the maximum of the k*k strided slices, with a hand-written gradient; the
  reduce-window's gradient carries four index arrays.
* `block_output`: the residual stream stored once (`fusion_barrier`) for a backward pass, so
  XLA does not recompute it inside each kernel gradient's transpose.

Measured, whole ResNet34 steps: `python bench/bench_step.py`; the per-rewrite A/B numbers
are in bench/README.md ("Notes on the model and the kernels").
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from . import winograd
from .kernels import Kernels
from .plain import lax_conv
from .tiny import conv_patches, conv_taps, is_tiny, taps


def conv(x: jax.Array, kernel: jax.Array, stride: int, pad: int, inference: bool) -> jax.Array:
    k = kernel.shape[0]
    ho = (x.shape[1] + 2 * pad - k) // stride + 1
    wo = (x.shape[2] + 2 * pad - k) // stride + 1
    if is_tiny(ho, wo):
        return (conv_patches if inference else conv_taps)(x, kernel, stride, pad)
    if (k, stride, pad) == (3, 1, 1) and x.dtype == jnp.float32 \
            and winograd.applies(ho, wo, x.shape[-1], inference):
        return winograd.conv3x3(x, kernel)
    return lax_conv(x, kernel, stride, pad)


def channel_sum(v: jax.Array) -> jax.Array:
    """Sum over every axis but the last, as one matrix product (float32 sums).

    The ones are two rows, not one: XLA:CPU compiles each vector-matrix product into an LLVM
    kernel of its own, never shared between dots, but hands a matrix product to its GEMM
    library (a ResNet34 step compiles 0.8-1.4 s faster; bench/README.md).
    """
    v = v.reshape(-1, v.shape[-1])
    ones = jnp.ones((2, v.shape[0]), v.dtype)
    return jnp.dot(ones, v, precision=jax.lax.Precision.HIGHEST)[0]


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float):
    """(y, mean, biased var): float32 x normalised with its own per-channel statistics.

    `plain.batch_norm` with every per-channel sum a `channel_sum`. mean and var are
    statistics only: no gradient flows back through them.
    """
    return _bn_fwd(x, scale, bias, eps)[0]


def _bn_fwd(x, scale, bias, eps):
    n = x.size // x.shape[-1]
    mean = channel_sum(x) / n
    xc = x - mean
    var = channel_sum(xc * xc) / n
    rstd = jax.lax.rsqrt(var + eps)
    return (xc * rstd * scale + bias, mean, var), (x, mean, rstd, scale)


def _bn_bwd(eps, res, cotangents):
    g = cotangents[0]
    x, mean, rstd, scale = res
    n = x.size // x.shape[-1]
    xhat = (x - mean) * rstd
    dbias = channel_sum(g)
    dscale = channel_sum(g * xhat)
    dx = (scale * rstd / n) * (n * g - dbias - xhat * dscale)
    return dx, dscale, dbias


batch_norm.defvjp(_bn_fwd, _bn_bwd)


def _pool_pad(x, pad):
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-jnp.inf)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jax.Array, k: int, stride: int, pad: int) -> jax.Array:
    """`nn.max_pool(x, (k, k), (stride, stride), ((pad, pad), (pad, pad)))` as the maximum
    of k*k strided slices. Its gradient goes to the first maximum of each window in
    row-major order, as the reduce-window's and torch's do."""
    return _pool_fwd(x, k, stride, pad)[0]


def _pool_fwd(x, k, stride, pad):
    xp = _pool_pad(x, pad)
    ho = (xp.shape[1] - k) // stride + 1
    wo = (xp.shape[2] - k) // stride + 1
    views = taps(xp, k, k, stride, ho, wo)
    y = views[0]
    for t in views[1:]:
        y = jnp.maximum(y, t)
    return y, (x, y)


def _pool_bwd(k, stride, pad, res, g):
    x, y = res
    xp = _pool_pad(x, pad)
    hp, wp = xp.shape[1], xp.shape[2]
    ho, wo = y.shape[1], y.shape[2]
    zero = jnp.zeros((), g.dtype)
    taken = jnp.zeros(y.shape, bool)
    dxp = None
    for t, xs in enumerate(taps(xp, k, k, stride, ho, wo)):
        i, j = divmod(t, k)
        hit = (xs == y) & ~taken
        taken = taken | hit
        # Tap (i, j) of window (a, b) is padded-input pixel (i + stride*a, j + stride*b):
        # interior padding spreads the window grid out to the input's.
        part = jax.lax.pad(jnp.where(hit, g, zero), zero,
                           ((0, 0, 0), (i, hp - i - stride * (ho - 1) - 1, stride - 1),
                            (j, wp - j - stride * (wo - 1) - 1, stride - 1), (0, 0, 0)))
        dxp = part if dxp is None else dxp + part
    return (dxp[:, pad:hp - pad, pad:wp - pad, :],)


max_pool.defvjp(_pool_fwd, _pool_bwd)


@jax.custom_jvp
def fusion_barrier(x: jax.Array) -> jax.Array:
    """x, stored once: XLA may not recompute it from its producers inside a later fusion.

    XLA:CPU removes `lax.optimization_barrier` before fusion, so the barrier is a
    conditional whose branches both return x, one as `x * 1` so that XLA does not merge
    them (tests/models/test_ops.py checks the conditional survives compilation). The
    predicate (is x's first element NaN) only has to be unknown when compiling. Costs
    one copy of x. Differentiates as the identity.
    """
    first = x.reshape(-1)[0]
    return jax.lax.cond(first != first, lambda v: v * jnp.ones((), v.dtype), lambda v: v, x)


@fusion_barrier.defjvp
def _barrier_jvp(primals, tangents):
    return fusion_barrier(primals[0]), tangents[0]


def block_output(x: jax.Array, train: bool) -> jax.Array:
    # A forward pass alone never recomputes the residual stream, so it is not copied there.
    return fusion_barrier(x) if train else x


KERNELS = Kernels('cpu', conv, batch_norm, max_pool, block_output)
