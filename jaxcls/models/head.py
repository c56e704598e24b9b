"""fastai's classifier head and the body + head network used for transfer learning.

fastai 0.7's ConvnetBuilder: body -> AdaptiveConcatPool2d (max and average, max
first) -> Flatten -> per extra layer [BatchNorm, Dropout(p), Linear, ReLU] ->
[BatchNorm, Dropout(p), Linear(c)]. The final activation (log-softmax or sigmoid)
belongs to the loss, so the head returns logits.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import jax.numpy as jnp
from flax import linen as nn

from .resnet import BatchNorm, ResNet

# fastai 0.7 `apply_init(fc_model, kaiming_normal)`: torch's kaiming_normal_ (fan_in,
# gain sqrt(2)) on Linear weights, biases filled with 0.
head_dense_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')

# fastai 0.7 defaults: one extra 512-unit layer; dropout 0.25 before it, 0.5 before the last.
XTRA_FC = (512,)


def default_ps(xtra_fc: Sequence[int]) -> tuple[float, ...]:
    """fastai 0.7's dropout default: 0.25 for each extra layer, 0.5 before the output layer."""
    return (0.25,) * len(xtra_fc) + (0.5,)


def concat_pool(x: jnp.ndarray) -> jnp.ndarray:
    """AdaptiveConcatPool2d + Flatten on NHWC: [max over H, W ; mean over H, W] -> (B, 2C)."""
    return jnp.concatenate([x.max(axis=(1, 2)), x.mean(axis=(1, 2))], axis=-1)


class Head(nn.Module):
    """[BatchNorm, Dropout, Dense, ReLU] per extra layer, then [BatchNorm, Dropout, Dense(c)].

    Takes pooled features (B, F), returns logits (B, c). `kernels` as in ResNet (how the
    BatchNorms sum their batch statistics).
    """

    num_classes: int
    xtra_fc: Sequence[int] = XTRA_FC
    ps: Optional[Sequence[float]] = None
    dtype: Any = jnp.float32
    kernels: str = 'xla'

    @nn.compact
    def __call__(self, x, train: bool = False):
        ps = tuple(self.ps) if self.ps is not None else default_ps(self.xtra_fc)
        if len(ps) != len(self.xtra_fc) + 1:
            raise ValueError(f'ps={list(ps)} has {len(ps)} values but the head has '
                             f'{len(self.xtra_fc) + 1} layers (xtra_fc={list(self.xtra_fc)}); '
                             'give one dropout probability per layer')
        sizes = tuple(self.xtra_fc) + (self.num_classes,)
        for i, (p, n) in enumerate(zip(ps, sizes)):
            x = BatchNorm(not train, dtype=self.dtype, kernels=self.kernels, name=f'bn{i}')(x)
            if p:
                x = nn.Dropout(p, deterministic=not train)(x)
            x = nn.Dense(n, kernel_init=head_dense_init, bias_init=nn.initializers.zeros,
                         dtype=self.dtype, name=f'fc{i}')(x)
            if i < len(sizes) - 1:
                x = nn.relu(x)
        return x


class ConvNet(nn.Module):
    """A ResNet body (no pooling, no fc) + concat pooling + a head: the learner's network.

    Parameters live under 'body' and 'head', so the body's tree is exactly the
    pretrained ResNet's (minus 'fc'). With `custom_head`, the head receives the
    body's feature map instead of pooled features, as in fastai.
    """

    body: ResNet
    head: nn.Module
    pool: bool = True

    def feature_map(self, x, train: bool = False, bn_eval: Sequence[str] = ()):
        """The body's last feature map (B, h, w, C), before pooling (what CAM looks at)."""
        return self.body(x, train, bn_eval)

    def from_feature_map(self, f, train: bool = False):
        """Logits from a body feature map: pooling (unless custom head) and the head."""
        return self.head(concat_pool(f) if self.pool else f, train)

    def features(self, x, train: bool = False, bn_eval: Sequence[str] = ()):
        """What precompute stores: pooled body features (B, 2 * channels), or the map."""
        f = self.body(x, train, bn_eval)
        return concat_pool(f) if self.pool else f

    def __call__(self, x, train: bool = False, bn_eval: Sequence[str] = ()):
        return self.head(self.features(x, train, bn_eval), train)

    def head_only(self, features, train: bool = False):
        """The head on precomputed features: the whole network when precompute=True."""
        return self.head(features, train)
