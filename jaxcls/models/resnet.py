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
        conv = partial(nn.Conv, use_bias=False, kernel_init=conv_init, dtype=self.dtype)
        norm = partial(BatchNorm, not train, dtype=self.dtype)
        y = conv(self.features, (3, 3), (self.stride, self.stride), ((1, 1), (1, 1)),
                 name='conv1')(x)
        y = nn.relu(norm(name='bn1')(y))
        y = conv(self.features, (3, 3), (1, 1), ((1, 1), (1, 1)), name='conv2')(y)
        y = norm(name='bn2')(y)
        if self.downsample:
            x = conv(self.features, (1, 1), (self.stride, self.stride), ((0, 0), (0, 0)),
                     name='downsample_0')(x)
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
        conv = partial(nn.Conv, use_bias=False, kernel_init=conv_init, dtype=self.dtype)
        norm = partial(BatchNorm, not train, dtype=self.dtype)
        y = conv(self.features, (1, 1), (1, 1), ((0, 0), (0, 0)), name='conv1')(x)
        y = nn.relu(norm(name='bn1')(y))
        y = conv(self.features, (3, 3), (self.stride, self.stride), ((1, 1), (1, 1)),
                 name='conv2')(y)
        y = nn.relu(norm(name='bn2')(y))
        y = conv(self.features * 4, (1, 1), (1, 1), ((0, 0), (0, 0)), name='conv3')(y)
        y = norm(name='bn3')(y)
        if self.downsample:
            x = conv(self.features * 4, (1, 1), (self.stride, self.stride), ((0, 0), (0, 0)),
                     name='downsample_0')(x)
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
        x = nn.Conv(64, (7, 7), (2, 2), ((3, 3), (3, 3)), use_bias=False,
                    kernel_init=conv_init, dtype=self.dtype, name='conv1')(x)
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
