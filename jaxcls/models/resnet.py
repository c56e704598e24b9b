"""Flax Linen ResNet18/34/50 that reproduce torchvision's numbers given torchvision's weights.

Parameter names mirror torchvision's state-dict keys, so `layer1.0.conv1.weight`
is `params['layer1']['0']['conv1']['kernel']` and conversion is mechanical.
Paddings are explicit because 'SAME' pads stride-2 convolutions on even sizes
asymmetrically, which torch never does. How each layer is computed (XLA's own ops, or
rewrites for one CPU device) is the `kernels` field's choice: jaxcls.models.ops.
"""
from __future__ import annotations

import zlib
from functools import partial
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from . import ops

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
    weight conversion is the same. Statistics are computed in float32 even when `dtype` is
    bfloat16. Under `jit` with the batch sharded over devices, the means are over the
    global batch (XLA inserts the all-reduce).

    Attributes:
      use_running_average: normalise with the stored statistics (inference, frozen layers).
      momentum: weight of the old running value (torch's momentum 0.1 is 0.9 here).
      epsilon: added to the variance (torch's default 1e-5).
      kernels: 'xla' or 'cpu' (jaxcls.models.ops): how the batch statistics are summed.
    """

    use_running_average: bool = False
    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPS
    dtype: Any = jnp.float32
    kernels: str = 'xla'

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
        bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32))
        if not self.use_running_average:
            y, mean, var = ops.get(self.kernels).batch_norm(x.astype(jnp.float32), scale, bias,
                                                            self.epsilon)
            if not self.is_initializing():
                n, m = x.size // c, self.momentum
                ra_mean.value = m * ra_mean.value + (1 - m) * mean
                ra_var.value = m * ra_var.value + (1 - m) * var * (n / max(n - 1, 1))
            return y.astype(self.dtype)
        mul = scale * jax.lax.rsqrt(ra_var.value + self.epsilon)
        y = x.astype(jnp.float32) * mul + (bias - ra_mean.value * mul)
        return y.astype(self.dtype)


class Conv(nn.Module):
    """A bias-free 2-D convolution with torch's symmetric padding; `kernel` is HWIO as in nn.Conv.

    How it is computed is the `kernels` set's business (jaxcls.models.ops): the same
    parameters and the same function, to rounding. `inference` (the model applied with
    train=False) says that no backward pass is expected; it changes which algorithm is
    fastest, never the result.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    dtype: Any = jnp.float32
    inference: bool = False
    kernels: str = 'xla'

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param('kernel', conv_init, (k, k, x.shape[-1], self.features), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        return ops.get(self.kernels).conv(x, kernel, self.stride, self.padding, self.inference)


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
    kernels: str = 'xla'
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = partial(Conv, dtype=self.dtype, inference=not train, kernels=self.kernels)
        norm = partial(BatchNorm, not train, dtype=self.dtype, kernels=self.kernels)
        y = conv(self.features, 3, self.stride, 1, name='conv1')(x)
        y = nn.relu(norm(name='bn1')(y))
        y = conv(self.features, 3, 1, 1, name='conv2')(y)
        y = norm(name='bn2')(y)
        if self.downsample:
            x = conv(self.features, 1, self.stride, 0, name='downsample_0')(x)
            x = norm(name='downsample_1')(x)
        return ops.get(self.kernels).block_output(nn.relu(y + x), train)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 with the stride in the 3x3 conv (ResNet v1.5, torchvision's ResNet50)."""

    features: int
    stride: int = 1
    downsample: bool = False
    dtype: Any = jnp.float32
    kernels: str = 'xla'
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = partial(Conv, dtype=self.dtype, inference=not train, kernels=self.kernels)
        norm = partial(BatchNorm, not train, dtype=self.dtype, kernels=self.kernels)
        y = conv(self.features, 1, 1, 0, name='conv1')(x)
        y = nn.relu(norm(name='bn1')(y))
        y = conv(self.features, 3, self.stride, 1, name='conv2')(y)
        y = nn.relu(norm(name='bn2')(y))
        y = conv(self.features * 4, 1, 1, 0, name='conv3')(y)
        y = norm(name='bn3')(y)
        if self.downsample:
            x = conv(self.features * 4, 1, self.stride, 0, name='downsample_0')(x)
            x = norm(name='downsample_1')(x)
        return ops.get(self.kernels).block_output(nn.relu(y + x), train)


class Stage(nn.Module):
    """One torchvision `layerN`: its blocks are named '0', '1', ... as in the state dict."""

    block: str
    features: int
    num_blocks: int
    stride: int
    in_features: int
    dtype: Any = jnp.float32
    kernels: str = 'xla'

    @nn.compact
    def __call__(self, x, train: bool = False):
        cls = BasicBlock if self.block == 'basic' else Bottleneck
        for j in range(self.num_blocks):
            stride = self.stride if j == 0 else 1
            downsample = j == 0 and (stride != 1 or self.in_features != self.features * cls.expansion)
            x = cls(self.features, stride, downsample, self.dtype, self.kernels,
                    name=str(j))(x, train)
        return x


class ResNet(nn.Module):
    """torchvision's ResNet in NHWC.

    Attributes:
      stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet34.
      block: 'basic' or 'bottleneck'.
      num_classes: size of the final `fc`; None returns the body's feature map
        (everything before average pooling), for transfer learning.
      dtype: computation dtype (bfloat16 for mixed precision); params stay float32.
      kernels: 'xla' (default: XLA's own ops, any backend) or 'cpu' (rewrites one CPU
        device runs faster), see jaxcls.models.ops; the same function either way. The
        builders (`resnet34()`, `jaxcls.models.build`, `ConvLearner.pretrained`) take
        kernels='auto' and pick one for the machine.

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
    kernels: str = 'xla'

    @nn.compact
    def __call__(self, x, train: bool = False, bn_eval: Sequence[str] = ()):
        x = jnp.asarray(x, self.dtype)
        kernels = self.kernels
        x = Conv(64, 7, 2, 3, dtype=self.dtype, inference=not train, kernels=kernels,
                 name='conv1')(x)
        x = BatchNorm(not train or 'bn1' in bn_eval, dtype=self.dtype, kernels=kernels,
                      name='bn1')(x)
        x = nn.relu(x)
        x = ops.get(kernels).max_pool(x, 3, 2, 1)
        expansion = 1 if self.block == 'basic' else 4
        in_features = 64
        for i, n in enumerate(self.stage_sizes):
            features = 64 * 2 ** i
            name = f'layer{i + 1}'
            x = Stage(self.block, features, n, 1 if i == 0 else 2, in_features, self.dtype,
                      kernels, name=name)(x, train and name not in bn_eval)
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
    `jax.eval_shape(model.init, ...)` gives (tests/models/test_resnet.py checks every arch), without
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
    every parameter, about 500 kernels, and compiles for longer than the train step; this
    compiles nothing (`python bench/bench_build.py` times both). The values are not
    `module.init(key)`'s (another generator); the same key gives the same values.
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
