"""Class activation maps: where in the image the network found its evidence for a class.

Grad-CAM (Selvaraju et al. 2017): the gradient of a class's logit with respect to
the body's last feature map, averaged over space, weights each channel; the
heatmap is the ReLU of the weighted sum of channels. For a head that is linear in
average-pooled features this is exactly CAM (Zhou et al. 2016), the form `cam`
computes directly from the final layer's weights. Everything is pure and jitted;
the batch is vmapped, and any class can be asked for, not only the predicted one.

    >>> low, up = class_activation_map(learn.model, learn.state.variables, x, classes)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcls import xla
from jaxcls.models.head import ConvNet


def _normalise(h: jax.Array) -> jax.Array:
    # Per map to [0, 1]; an all-zero map (no positive evidence, e.g. a constant image whose
    # features carry none) stays zero instead of dividing by zero.
    top = jnp.max(h, axis=(-2, -1), keepdims=True)
    return jnp.where(top > 0, h / jnp.where(top > 0, top, 1.0), 0.0)


def feature_stride(in_size: int, out_size: int) -> int:
    """The power-of-two stride that turns `in_size` input pixels into `out_size` cells.

    Every downsampling layer of the ResNet body (7x7/2 stem, 3x3/2 max pool, 3x3/2 and
    1x1/2 convolutions, all padded symmetrically as torchvision does) halves the map with
    ceil, so out_size == ceil(in_size / stride) for the total stride.
    """
    s = 1
    while -(-in_size // s) > out_size:
        s *= 2
    if -(-in_size // s) != out_size:
        raise ValueError(f'a {out_size}-cell map is not a power-of-two downsampling of '
                         f'{in_size} pixels; pass the stride explicitly')
    return s


def upsample_map(maps: jax.Array, size: tuple[int, int], stride: tuple[int, int] | None = None) -> jax.Array:
    """Bilinear upsampling of (B, h, w) maps to (B, H, W) with each cell on its receptive field.

    Cell i of a stride-s feature map is centred on input pixel s*i (each stride-2 layer
    centres output i on input 2i), not on pixel s*i + (s - 1)/2 as a plain half-pixel
    `jax.image.resize` assumes. The plain resize puts the heatmap (s - 1)/2 pixels right
    of and below the evidence: 3.5 px at stride 8, 15.5 px at ResNet34's stride 32.
    """
    b, h, w = maps.shape
    H, W = size
    sy, sx = stride or (feature_stride(H, h), feature_stride(W, w))
    scale = jnp.array([sy, sx], jnp.float32)
    # Continuous coordinates: cell centre i + 0.5 maps to (i + 0.5) * s + t = s*i + 0.5.
    shift = jnp.array([(1 - sy) / 2, (1 - sx) / 2], jnp.float32)
    return jax.image.scale_and_translate(maps, (b, H, W), (1, 2), scale, shift, method='linear')


def gradcam_weights(net: ConvNet, variables: dict, fmap: jax.Array, class_idx: jax.Array) -> jax.Array:
    """Grad-CAM channel weights (B, C): spatial mean of d logit[class] / d feature map."""
    def score(f, c):
        logits = net.apply(variables, f[None], method=ConvNet.from_feature_map)[0]
        return logits[c].astype(jnp.float32)
    grads = jax.vmap(jax.grad(score))(fmap, class_idx)
    return grads.mean(axis=(1, 2))


@xla.jit(static_argnums=(0,), static_argnames=('upsample',))
def class_activation_map(net: ConvNet, variables: dict, images: jax.Array, class_idx: Any,
                         upsample: bool = True) -> tuple[jax.Array, jax.Array]:
    """Grad-CAM heatmaps for `class_idx` (an int, or one per image) on normalised images.

    Args:
      net: the learner's ConvNet (`learn.model`).
      variables: {'params', 'batch_stats'} (`learn.state.variables`).
      images: normalised float images (B, H, W, 3), e.g. `val_transform(x, cfg)`.
      class_idx: the class to explain, for all images or per image (B,).
      upsample: also return the maps resized (bilinear, each cell centred on its
        receptive field; see `upsample_map`) to H x W.

    Returns:
      (maps at the feature-map resolution (B, h, w), maps at (B, H, W) or None), each
      normalised to [0, 1] per image.
    """
    images = jnp.asarray(images, jnp.float32)
    b, hgt, wid = images.shape[:3]
    cls = jnp.broadcast_to(jnp.asarray(class_idx, jnp.int32), (b,))
    fmap = net.apply(variables, images, method=ConvNet.feature_map).astype(jnp.float32)
    w = gradcam_weights(net, variables, fmap, cls)
    low = _normalise(jax.nn.relu(jnp.einsum('bhwc,bc->bhw', fmap, w)))
    if not upsample:
        return low, None
    up = upsample_map(low, (hgt, wid))
    return low, _normalise(jnp.clip(up, 0, None))


def cam(fmap: jax.Array, weights: jax.Array, class_idx: Any) -> jax.Array:
    """Plain CAM for a head that is linear in average-pooled features: ReLU(sum_c W[c, k] f_c),
    normalised to [0, 1]. `weights` is the (C, classes) kernel of that linear layer."""
    cls = jnp.broadcast_to(jnp.asarray(class_idx, jnp.int32), fmap.shape[:1])
    w = jnp.take(weights, cls, axis=1).T  # (B, C)
    return _normalise(jax.nn.relu(jnp.einsum('bhwc,bc->bhw', fmap, w)))


def learner_heatmaps(learn: Any, images: Any, classes: Any) -> Any:
    """Grad-CAM maps (n, sz, sz) of a ConvLearner for uint8 cache images and class indices.

    The images go through the validation transform (centre crop, normalise) first, as the
    learner sees them; the maps are returned as numpy, upsampled to sz.
    """
    import numpy as np
    from jaxcls.data.transforms import val_transform
    x = val_transform(jnp.asarray(np.asarray(images)), learn.data.tfms[1])
    variables = learn.steps.model_state(images=True).variables  # what the learner predicts with
    _, up = class_activation_map(learn.model, variables, x,
                                 jnp.asarray(np.asarray(classes), jnp.int32))
    return np.asarray(up)
