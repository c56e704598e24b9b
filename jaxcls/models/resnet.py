"""Flax Linen ResNet18/34/50 that reproduce torchvision's numbers given torchvision's weights.

Parameter names mirror torchvision's state-dict keys, so `layer1.0.conv1.weight`
is `params['layer1']['0']['conv1']['kernel']` and conversion is mechanical.
Paddings are explicit because 'SAME' pads stride-2 convolutions on even sizes
asymmetrically, which torch never does.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

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
        if self.use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            xf = x.astype(jnp.float32)
            mean = xf.mean(axes)
            var = jnp.square(xf - mean).mean(axes)
            if not self.is_initializing():
                n = x.size // c
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1 - m) * mean
                ra_var.value = m * ra_var.value + (1 - m) * var * (n / max(n - 1, 1))
        mul = scale * jax.lax.rsqrt(var + self.epsilon)
        y = x.astype(jnp.float32) * mul + (bias - mean * mul)
        return y.astype(self.dtype)


# XLA:CPU runs a 3x3 convolution on a 2x2 feature map 20-50x slower than the same
# arithmetic as one matrix product over patches (measured: 512->512 channels, batch 32,
# forward + both gradients, 861 ms vs 20 ms). From 4x4 on, XLA's own convolution is as
# fast or faster, so patches are used only when the output has at most this many pixels.
SMALL_MAP_PIXELS = 4


def conv_patches(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
    """A convolution (NHWC, HWIO, symmetric zero padding) as one matmul over patches.

    The patches are strided slices of the padded input, concatenated on the channel axis in
    (kh, kw, cin) order, which is the kernel's own memory order: no gather, no transpose.
    Numerically the same sums as `lax.conv_general_dilated` (tested to 1e-5 relative).
    """
    kh, kw, cin, cout = kernel.shape
    if pad:
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho = (x.shape[1] - kh) // stride + 1
    wo = (x.shape[2] - kw) // stride + 1
    cols = [x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
            for i in range(kh) for j in range(kw)]
    patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
    return patches @ kernel.reshape(kh * kw * cin, cout)


# XLA:CPU computes a convolution's weight gradient over a large map 2-3.5x slower in one
# piece than as a sum of the gradients of small groups of images (measured, batch 32,
# 7x7/2 stem at 224 px: 295 ms vs 89 ms; 3x3 64->64 on 56x56: 192 ms vs 81 ms; from
# 28x28 down the gain is under 1.4x and from 16x16 none). Each group is one more
# convolution to compile (~0.04 s), so the split is made only for maps of at least this
# many output pixels, in groups of WGRAD_GROUP images, and only on a single CPU device.
WGRAD_SPLIT_MIN_PIXELS = 56 * 56
WGRAD_GROUP = 2


def _conv(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
    p = (pad, pad)
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), (p, p),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_split_wgrad(x: jax.Array, kernel: jax.Array, stride: int, pad: int,
                     group: int) -> jax.Array:
    """XLA's convolution, with the kernel's gradient summed over groups of `group` images.

    The forward pass and the input gradient are XLA's own; the kernel gradient is the
    same sum over images, added up group by group (equal to 1e-5 relative, tested).
    """
    return _conv(x, kernel, stride, pad)


def _split_fwd(x, kernel, stride, pad, group):
    return _conv(x, kernel, stride, pad), (x, kernel)


def _split_bwd(stride, pad, group, res, g):
    x, kernel = res
    _, dx_fn = jax.vjp(lambda x_: _conv(x_, kernel, stride, pad), x)
    (dx,) = dx_fn(g)
    dk = None
    for i in range(0, x.shape[0], group):
        _, dk_fn = jax.vjp(lambda k_: _conv(x[i:i + group], k_, stride, pad), kernel)
        (part,) = dk_fn(g[i:i + group])
        dk = part if dk is None else dk + part
    return dx, dk


conv_split_wgrad.defvjp(_split_fwd, _split_bwd)


class Conv(nn.Module):
    """A bias-free 2-D convolution with torch's symmetric padding; `kernel` is HWIO as in nn.Conv.

    Picks the faster implementation for the static shape: XLA's convolution, a matmul
    over patches for tiny output maps (see SMALL_MAP_PIXELS), or on the CPU for large
    maps XLA's convolution with its kernel gradient split over groups of images (see
    WGRAD_SPLIT_MIN_PIXELS). Same parameters and the same function either way.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param('kernel', conv_init, (k, k, x.shape[-1], self.features), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        ho = (x.shape[1] + 2 * self.padding - k) // self.stride + 1
        wo = (x.shape[2] + 2 * self.padding - k) // self.stride + 1
        if ho * wo <= SMALL_MAP_PIXELS:
            return conv_patches(x, kernel, self.stride, self.padding)
        # One CPU device only: with the batch sharded over several, the slices cut across
        # shards and the partitioner adds an all-reduce per group (3x slower, measured).
        if (ho * wo >= WGRAD_SPLIT_MIN_PIXELS and x.shape[0] > WGRAD_GROUP
                and jax.default_backend() == 'cpu' and jax.device_count() == 1):
            return conv_split_wgrad(x, kernel, self.stride, self.padding, WGRAD_GROUP)
        return _conv(x, kernel, self.stride, self.padding)


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
        conv = partial(Conv, dtype=self.dtype)
        norm = partial(BatchNorm, not train, dtype=self.dtype)
        y = conv(self.features, 3, self.stride, 1, name='conv1')(x)
        y = nn.relu(norm(name='bn1')(y))
        y = conv(self.features, 3, 1, 1, name='conv2')(y)
        y = norm(name='bn2')(y)
        if self.downsample:
            x = conv(self.features, 1, self.stride, 0, name='downsample_0')(x)
            x = norm(name='downsample_1')(x)
        return nn.relu(y + x)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 with the stride in the 3x3 conv (ResNet v1.5, torchvision's ResNet50)."""

    features: int
    stride: int = 1
    downsample: bool = False
    dtype: Any = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = partial(Conv, dtype=self.dtype)
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
        return nn.relu(y + x)


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
        x = Conv(64, 7, 2, 3, dtype=self.dtype, name='conv1')(x)
        x = BatchNorm(not train or 'bn1' in bn_eval, dtype=self.dtype, name='bn1')(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
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


def out_channels(stage_sizes: Sequence[int], block: str = 'basic') -> int:
    """Channels of the body's feature map (what the head's pooling sees).

    >>> out_channels((3, 4, 6, 3)), out_channels((3, 4, 6, 3), 'bottleneck'), out_channels((3, 4, 6))
    (512, 2048, 256)
    """
    return 64 * 2 ** (len(stage_sizes) - 1) * (1 if block == 'basic' else 4)
