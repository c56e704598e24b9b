"""Flax Linen ResNet18/34/50 that reproduce torchvision's numbers given torchvision's weights.

Parameter names mirror torchvision's state-dict keys, so `layer1.0.conv1.weight`
is `params['layer1']['0']['conv1']['kernel']` and conversion is mechanical.
Paddings are explicit because 'SAME' pads stride-2 convolutions on even sizes
asymmetrically, which torch never does.
"""
from __future__ import annotations

import zlib
from functools import partial
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from . import winograd

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu') for convs.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# torch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
dense_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')

# BatchNorm as torch: eps 1e-5, running = 0.9 * running + 0.1 * batch.
BN_EPS = 1e-5
BN_MOMENTUM = 0.9


class BatchNorm(nn.Module):
    """torch's BatchNorm: normalise with the biased batch variance, but update the running
    variance with the unbiased one (x n/(n-1)), which flax's nn.BatchNorm does not.

    Parameters 'scale'/'bias' and statistics 'mean'/'var' are named as in flax, so
    weight conversion is the same. Statistics are computed in float32 (two-pass) even
    when `dtype` is bfloat16. Under `jit` with the batch sharded over devices, the
    means are over the global batch (XLA inserts the all-reduce).

    Attributes:
      use_running_average: normalise with the stored statistics (inference, frozen layers).
      momentum: weight of the old running value (torch's momentum 0.1 is 0.9 here).
      epsilon: added to the variance (torch's default 1e-5).
    """

    use_running_average: bool = False
    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
        bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32))
        if not self.use_running_average and cpu_rewrites():
            y, mean, var = batch_norm_train(x.astype(jnp.float32), scale, bias, self.epsilon)
            self._update(ra_mean, ra_var, mean, var, x.size // c)
            return y.astype(self.dtype)
        if self.use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            xf = x.astype(jnp.float32)
            mean = xf.mean(axes)
            var = jnp.square(xf - mean).mean(axes)
            self._update(ra_mean, ra_var, mean, var, x.size // c)
        mul = scale * jax.lax.rsqrt(var + self.epsilon)
        y = x.astype(jnp.float32) * mul + (bias - mean * mul)
        return y.astype(self.dtype)

    def _update(self, ra_mean, ra_var, mean, var, n):
        if not self.is_initializing():
            m = self.momentum
            ra_mean.value = m * ra_mean.value + (1 - m) * mean
            ra_var.value = m * ra_var.value + (1 - m) * var * (n / max(n - 1, 1))


# XLA:CPU runs a 3x3 convolution on a 2x2 feature map 20-50x slower than the same
# arithmetic as matrix products (measured: 512->512 channels, batch 32, forward + both
# gradients, 861 ms vs 20 ms as one matmul over patches, ~9 ms by `conv_taps`). From 4x4
# on, XLA's own convolution (or Winograd's) is as fast or faster, so `conv_taps` (in
# training) and `conv_patches` (inference) are used only for outputs of at most this
# many pixels.
SMALL_MAP_PIXELS = 4


def _taps(xp: jax.Array, kh: int, kw: int, stride: int, ho: int, wo: int) -> list:
    """The kh*kw strided [n, ho, wo, c] views of a padded NHWC input, in (kh, kw) order:
    what a kh x kw window with this stride sees at each of its positions."""
    return [xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
            for i in range(kh) for j in range(kw)]


def conv_patches(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
    """A convolution (NHWC, HWIO, symmetric zero padding) as one matmul over patches.

    The patches are strided slices of the padded input, concatenated on the channel axis in
    (kh, kw, cin) order, which is the kernel's own memory order: the kernel is read in
    place, never copied. On a 2x2 map 20 of its 36 (tap, pixel) products are with padding,
    and its input gradient is a 9-way scatter, so `conv_taps` is faster to train; for a
    forward pass alone this is (frozen ResNet34 body at 64 px, A/B: 102 vs 108 ms), as the
    taps' grouped kernel copies cost more memory traffic than the zeros cost arithmetic.
    Numerically the same sums as `lax.conv_general_dilated` (tested to 1e-5 relative).
    """
    kh, kw, cin, cout = kernel.shape
    if pad:
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho = (x.shape[1] - kh) // stride + 1
    wo = (x.shape[2] - kw) // stride + 1
    cols = _taps(x, kh, kw, stride, ho, wo)
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

    On a 2x2 map with a 3x3 kernel, 16 of the 36 (tap, output pixel) pairs are real: a
    matmul over padded patches does 2.25x the multiply-adds, mostly of zeros, and its
    input gradient goes through a 9-way scatter of the patch gradient. Here tap (i, j)
    multiplies `x[its strided window]` by `kernel[i, j]` and adds the product into its
    output rectangle. Taps with as many valid pixels share one batched matmul (three on a
    2x2 map: corners, edges, centre), because on a CPU each XLA kernel costs tens of
    microseconds however small, and nine kernel slices copied one by one cost more than
    the matmuls. Autodiff gives batched matmuls of the same shapes for both gradients.
    Measured, 512->512 channels, batch 32, forward + both gradients: 9.1-9.6 ms against
    16.3-16.7 ms over patches and ~16 ms for torch; a ResNet34 step at 64 px, 419 -> 362 ms. The
    products are summed in float32 and cast once, as one convolution would. Numerically
    the same sums as `lax.conv_general_dilated` (tested to 1e-5 relative).
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
    for m, taps in groups.items():
        lhs = jnp.stack([window(*tap).reshape(n * m, cin) for tap in taps])
        rhs = jnp.stack([kernel[i, j] for i, j, *_ in taps])
        out = jax.lax.dot_general(lhs, rhs, (((2,), (1,)), ((0,), (0,))),
                                  preferred_element_type=jnp.float32)
        for part, (i, j, a0, a1, b0, b1) in zip(out, taps):
            part = part.reshape(n, a1 - a0, b1 - b0, cout)
            y = y + jnp.pad(part, ((0, 0), (a0, ho - a1), (b0, wo - b1), (0, 0)))
    return y.astype(jnp.result_type(x, kernel))


def _conv(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
    p = (pad, pad)
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), (p, p),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


# On a CPU, XLA spends as much time around the convolutions of a ResNet training step
# as in them, in three places that the functions below rewrite (measured with the
# profiler on ResNet34, batch 32, 128 px, 2 cores; `python bench/bench_step.py`):
# - BatchNorm's per-channel sums are XLA reductions that run at about 1 GB/s; the same
#   sums as a matrix product are 4-7x faster (`channel_sum`).
# - Max pooling's gradient goes through a reduce-window that carries four index arrays
#   (about 180 ms of thread time per step); comparing the nine taps costs about 40.
# - Each kernel gradient reads its input transposed, and XLA recomputes that input, the
#   residual stream, from every earlier block's outputs inside the transpose: 120 ms for
#   one 8 MB tensor. `fusion_barrier` makes XLA store the block output once instead.
# Together with XLA's own convolutions (jaxcls.xla.compiler_options) they take a step
# from 1.99 to 1.54 s. The 3x3 stride-1 convolutions on maps up to 28x28 then run by
# Winograd's algorithm when they have 128+ channels (jaxcls.models.winograd, 2.25x fewer
# multiply-adds): in A/B runs, 0.58 -> 0.50 s at 64 px, 1.51 -> 1.26 s at 128 px,
# 4.93 -> 4.01 s at 224 px (a forward pass alone: on every map, 64 channels included).
# Convolutions on 2x2 maps train as matmuls per group of kernel taps (`conv_taps`):
# 0.42 -> 0.36 s at 64 px.
# They are used on a single CPU device; elsewhere, and when CPU_REWRITES is False, the
# model is the plain one. Outputs and gradients agree to 1e-5.
CPU_REWRITES = True


def cpu_rewrites() -> bool:
    """Whether this trace uses the CPU rewrites (one CPU device, CPU_REWRITES set)."""
    return CPU_REWRITES and jax.default_backend() == 'cpu' and jax.device_count() == 1


def channel_sum(v: jax.Array) -> jax.Array:
    """Sum over every axis but the last, as one matrix product (float32 sums).

    The ones are two rows, not one: XLA:CPU compiles a vector-matrix product into an LLVM
    kernel of its own for every shape, never shared between dots, but hands a matrix
    product to its GEMM library. A ResNet34 step has 144 of these sums; as GEMMs they
    compile 0.8-1.4 s faster (7.0-7.9 s against 8.4-8.7 s at 64-224 px on a 2-core AVX2
    CPU, in one process), and the step runs as fast (437 / 441 ms at 64 px, 1512 / 1504 ms
    at 128 px, 4678 / 4665 ms at 224 px).
    """
    v = v.reshape(-1, v.shape[-1])
    ones = jnp.ones((2, v.shape[0]), v.dtype)
    return jnp.dot(ones, v, precision=jax.lax.Precision.HIGHEST)[0]


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float):
    """(y, mean, biased var): x normalised with its own per-channel statistics, float32.

    The same function as BatchNorm's plain path, with every per-channel sum (two forward,
    two backward) a `channel_sum`. mean and var are statistics only: no gradient flows
    back through them.
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


batch_norm_train.defvjp(_bn_fwd, _bn_bwd)


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
    taps = _taps(xp, k, k, stride, ho, wo)
    y = taps[0]
    for t in taps[1:]:
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
    for t, xs in enumerate(_taps(xp, k, k, stride, ho, wo)):
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
    them (tests/test_resnet.py checks the conditional survives compilation). The
    predicate (is x's first element NaN) only has to be unknown when compiling. Costs
    one copy of x. Differentiates as the identity.
    """
    first = x.reshape(-1)[0]
    return jax.lax.cond(first != first, lambda v: v * jnp.ones((), v.dtype), lambda v: v, x)


@fusion_barrier.defjvp
def _barrier_jvp(primals, tangents):
    return fusion_barrier(primals[0]), tangents[0]


class Conv(nn.Module):
    """A bias-free 2-D convolution with torch's symmetric padding; `kernel` is HWIO as in nn.Conv.

    How it is computed (the same parameters and the same function, to rounding):
    - output maps of at most SMALL_MAP_PIXELS: matmuls, `conv_taps` to train under the
      CPU rewrites, `conv_patches` otherwise;
    - under the CPU rewrites, float32 3x3 stride-1 convolutions on the maps
      `winograd.applies` names: Winograd's algorithm (jaxcls.models.winograd);
    - otherwise XLA's convolution.
    `inference` (the model applied with train=False) says that no backward pass is
    expected; it changes which of these is fastest, never the result.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    dtype: Any = jnp.float32
    inference: bool = False

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param('kernel', conv_init, (k, k, x.shape[-1], self.features), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        ho = (x.shape[1] + 2 * self.padding - k) // self.stride + 1
        wo = (x.shape[2] + 2 * self.padding - k) // self.stride + 1
        rewrites = cpu_rewrites()
        if ho * wo <= SMALL_MAP_PIXELS:
            tiny = conv_taps if rewrites and not self.inference else conv_patches
            return tiny(x, kernel, self.stride, self.padding)
        if (k, self.stride, self.padding) == (3, 1, 1) and x.dtype == jnp.float32 and rewrites \
                and winograd.applies(ho, wo, x.shape[-1], self.inference):
            return winograd.conv3x3(x, kernel)
        return _conv(x, kernel, self.stride, self.padding)


def _block_output(x, train):
    # The residual stream, stored once (see fusion_barrier) for a backward pass under the
    # CPU rewrites. A forward pass alone never recomputes it, so it is not copied there.
    return fusion_barrier(x) if train and cpu_rewrites() else x


def _torch_bias_init(fan_in: int):
    bound = 1.0 / fan_in ** 0.5
    return lambda key, shape, dtype=jnp.float32: nn.initializers.uniform(2 * bound)(
        key, shape, dtype) - bound


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet18/34)."""

    features: int
    stride: int = 1
    downsample: bool = False
    dtype: Any = jnp.float32
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = partial(Conv, dtype=self.dtype, inference=not train)
        norm = partial(BatchNorm, not train, dtype=self.dtype)
        y = conv(self.features, 3, self.stride, 1, name='conv1')(x)
        y = nn.relu(norm(name='bn1')(y))
        y = conv(self.features, 3, 1, 1, name='conv2')(y)
        y = norm(name='bn2')(y)
        if self.downsample:
            x = conv(self.features, 1, self.stride, 0, name='downsample_0')(x)
            x = norm(name='downsample_1')(x)
        return _block_output(nn.relu(y + x), train)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 with the stride in the 3x3 conv (ResNet v1.5, torchvision's ResNet50)."""

    features: int
    stride: int = 1
    downsample: bool = False
    dtype: Any = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = partial(Conv, dtype=self.dtype, inference=not train)
        norm = partial(BatchNorm, not train, dtype=self.dtype)
        y = conv(self.features, 1, 1, 0, name='conv1')(x)
        y = nn.relu(norm(name='bn1')(y))
        y = conv(self.features, 3, self.stride, 1, name='conv2')(y)
        y = nn.relu(norm(name='bn2')(y))
        y = conv(self.features * 4, 1, 1, 0, name='conv3')(y)
        y = norm(name='bn3')(y)
        if self.downsample:
            x = conv(self.features * 4, 1, self.stride, 0, name='downsample_0')(x)
            x = norm(name='downsample_1')(x)
        return _block_output(nn.relu(y + x), train)


class Stage(nn.Module):
    """One torchvision `layerN`: its blocks are named '0', '1', ... as in the state dict."""

    block: str
    features: int
    num_blocks: int
    stride: int
    in_features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        cls = BasicBlock if self.block == 'basic' else Bottleneck
        for j in range(self.num_blocks):
            stride = self.stride if j == 0 else 1
            downsample = j == 0 and (stride != 1 or self.in_features != self.features * cls.expansion)
            x = cls(self.features, stride, downsample, self.dtype, name=str(j))(x, train)
        return x


class ResNet(nn.Module):
    """torchvision's ResNet in NHWC.

    Attributes:
      stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet34.
      block: 'basic' or 'bottleneck'.
      num_classes: size of the final `fc`; None returns the body's feature map
        (everything before average pooling), for transfer learning.
      dtype: computation dtype (bfloat16 for mixed precision); params stay float32.

    Call: `module.apply(variables, x, train=False, bn_eval=())` with x float NHWC,
    normalised. `bn_eval` names top-level children ('bn1', 'layer1', ...) whose
    BatchNorms use their running statistics even when `train=True`: fastai's
    frozen layer groups. Truncating `stage_sizes` (e.g. to 3 stages) cuts the body
    earlier, as fastai's `xtra_cut` does.
    """

    stage_sizes: Sequence[int]
    block: str = 'basic'
    num_classes: Optional[int] = 1000
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, bn_eval: Sequence[str] = ()):
        x = jnp.asarray(x, self.dtype)
        x = Conv(64, 7, 2, 3, dtype=self.dtype, inference=not train, name='conv1')(x)
        x = BatchNorm(not train or 'bn1' in bn_eval, dtype=self.dtype, name='bn1')(x)
        x = nn.relu(x)
        x = (max_pool(x, 3, 2, 1) if cpu_rewrites()
             else nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1))))
        expansion = 1 if self.block == 'basic' else 4
        in_features = 64
        for i, n in enumerate(self.stage_sizes):
            features = 64 * 2 ** i
            name = f'layer{i + 1}'
            x = Stage(self.block, features, n, 1 if i == 0 else 2, in_features, self.dtype,
                      name=name)(x, train and name not in bn_eval)
            in_features = features * expansion
        if self.num_classes is None:
            return x
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=dense_init,
                        bias_init=_torch_bias_init(in_features), name='fc')(x)


def variable_shapes(stage_sizes: Sequence[int], block: str = 'basic',
                    num_classes: Optional[int] = 1000) -> dict:
    """`{'params', 'batch_stats'}` of `ResNet(stage_sizes, block, num_classes)` as
    ShapeDtypeStructs, written down from the layer list above instead of traced: what
    `jax.eval_shape(model.init, ...)` gives (tests/test_resnet.py checks every arch), without
    its ~0.4 s trace, which the weight loader and the learner paid on every run.

    >>> variable_shapes((1, 1, 1, 1), num_classes=None)['params']['conv1']['kernel'].shape
    (7, 7, 3, 64)
    """
    f32 = jnp.float32
    s = lambda *shape: jax.ShapeDtypeStruct(tuple(shape), f32)
    conv = lambda k, cin, cout: {'kernel': s(k, k, cin, cout)}
    params, stats = {}, {}

    def norm(p, b, name, c):
        p[name] = {'scale': s(c), 'bias': s(c)}
        b[name] = {'mean': s(c), 'var': s(c)}

    params['conv1'] = conv(7, 3, 64)
    norm(params, stats, 'bn1', 64)
    expansion = 1 if block == 'basic' else 4
    cin = 64
    for i, n in enumerate(stage_sizes):
        width = 64 * 2 ** i
        lp, lb = params[f'layer{i + 1}'], stats[f'layer{i + 1}'] = {}, {}
        for j in range(n):
            bp, bb = lp[str(j)], lb[str(j)] = {}, {}
            stride = (1 if i == 0 else 2) if j == 0 else 1
            if block == 'basic':
                layers = [(3, cin, width), (3, width, width)]
            else:
                layers = [(1, cin, width), (3, width, width), (1, width, width * 4)]
            for k, (ks, a, b) in enumerate(layers, 1):
                bp[f'conv{k}'] = conv(ks, a, b)
                norm(bp, bb, f'bn{k}', b)
            if j == 0 and (stride != 1 or cin != width * expansion):
                bp['downsample_0'] = conv(1, cin, width * expansion)
                norm(bp, bb, 'downsample_1', width * expansion)
            cin = width * expansion
    if num_classes is not None:
        params['fc'] = {'kernel': s(cin, num_classes), 'bias': s(num_classes)}
    return {'params': params, 'batch_stats': stats}


def random_variables(stage_sizes: Sequence[int], block: str = 'basic',
                     num_classes: Optional[int] = 1000, key: Optional[jax.Array] = None) -> dict:
    """Random `{'params', 'batch_stats'}` of `ResNet(stage_sizes, block, num_classes)`, drawn
    on the host by numpy from `key`, with the distributions `module.init` uses (torchvision's):
    conv kernels N(0, 2 / fan_out), BatchNorm scale 1 and bias 0, running mean 0 and var 1,
    fc kernel and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Why not `jax.jit(module.init)`: that program derives a key and runs a threefry chain for
    every parameter, about 500 kernels, and compiles for 9-13 s for ResNet34 on a 2-core CPU,
    longer than the train step. This compiles nothing: `resnet34()` builds in 1.7 s there. The values are
    not `module.init(key)`'s (another generator); the same key gives the same values.
    """
    if key is None:
        key = jax.random.PRNGKey(0)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    words = [int(v) for v in np.asarray(key).ravel()]

    def draw(path, s):
        names = [getattr(p, 'key', str(p)) for p in path]
        name, shape = names[-1], s.shape
        # One generator per parameter, seeded by the key and the parameter's path (as Flax
        # derives a key per module): a body's values do not depend on whether fc exists.
        rng = np.random.default_rng(words + [zlib.crc32('/'.join(names).encode())])
        if names[0] == 'batch_stats':
            return np.full(shape, 1.0 if name == 'var' else 0.0, np.float32)
        if names[1] == 'fc':  # torch's nn.Linear: both bounded by 1/sqrt(fan_in)
            bound = 1.0 / np.sqrt(out_channels(stage_sizes, block))
            return rng.uniform(-bound, bound, shape).astype(np.float32)
        if name == 'kernel':  # conv, HWIO: fan_out = kh * kw * cout
            std = np.sqrt(2.0 / (shape[0] * shape[1] * shape[3]))
            return (rng.standard_normal(shape, np.float32) * np.float32(std))
        return np.full(shape, 1.0 if name == 'scale' else 0.0, np.float32)

    shapes = variable_shapes(stage_sizes, block, num_classes)
    return jax.tree_util.tree_map_with_path(lambda p, s: jnp.asarray(draw(p, s)), shapes)


def out_channels(stage_sizes: Sequence[int], block: str = 'basic') -> int:
    """Channels of the body's feature map (what the head's pooling sees).

    >>> out_channels((3, 4, 6, 3)), out_channels((3, 4, 6, 3), 'bottleneck'), out_channels((3, 4, 6))
    (512, 2048, 256)
    """
    return 64 * 2 ** (len(stage_sizes) - 1) * (1 if block == 'basic' else 4)
