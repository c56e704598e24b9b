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

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from jaxcls.models.head import ConvNet


def _normalise(h: jax.Array) -> jax.Array:
    # Per map to [0, 1]; an all-zero map (no positive evidence, e.g. a constant image whose
    # features carry none) stays zero instead of dividing by zero.
    top = jnp.max(h, axis=(-2, -1), keepdims=True)
    return jnp.where(top > 0, h / jnp.where(top > 0, top, 1.0), 0.0)


def gradcam_weights(net: ConvNet, variables: dict, fmap: jax.Array, class_idx: jax.Array) -> jax.Array:
    """Grad-CAM channel weights (B, C): spatial mean of d logit[class] / d feature map."""
    def score(f, c):
        logits = net.apply(variables, f[None], method=ConvNet.from_feature_map)[0]
        return logits[c].astype(jnp.float32)
    grads = jax.vmap(jax.grad(score))(fmap, class_idx)
    return grads.mean(axis=(1, 2))


@partial(jax.jit, static_argnums=(0,), static_argnames=('upsample',))
def class_activation_map(net: ConvNet, variables: dict, images: jax.Array, class_idx: Any,
                         upsample: bool = True) -> tuple[jax.Array, jax.Array]:
    """Grad-CAM heatmaps for `class_idx` (an int, or one per image) on normalised images.

    Args:
      net: the learner's ConvNet (`learn.model`).
      variables: {'params', 'batch_stats'} (`learn.state.variables`).
      images: normalised float images (B, H, W, 3), e.g. `val_transform(x, cfg)`.
      class_idx: the class to explain, for all images or per image (B,).
      upsample: also return the maps resized (bilinear) to H x W.

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
    up = jax.image.resize(low, (b, hgt, wid), method='linear')
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
    _, up = class_activation_map(learn.model, learn.state.variables, x,
                                 jnp.asarray(np.asarray(classes), jnp.int32))
    return np.asarray(up)
