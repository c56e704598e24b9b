"""A saved model, ready to classify images without the training data: `Predictor.load(path)`
of a model folder (`learn.save`, `jaxcls train`) or a one-file export (`learn.export`), also
called `load_learner(path)` as in fastai 2.

    >>> p = Predictor.load('data/dogscats/models/224_all')          # doctest: +SKIP
    >>> probs, names, skipped = p.predict_files(['a.jpg', 'b.jpg']) # doctest: +SKIP
    >>> p.classes[probs[0].argmax()]                                  # doctest: +SKIP
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcls import xla
from jaxcls.data import transforms as T
from jaxcls.data.decode import BadImageError, decode_image
from jaxcls.archs import ArchSpec
from jaxcls.models import ops
from jaxcls.models.head import ConvNet, Head
from jaxcls.models.resnet import ResNet

from . import checkpoint as ckpt
from . import export
from . import modelfile
from .integrity import tree_shapes, verify_shapes


class Predictor:
    """Network + variables + validation transform of a model saved by `ConvLearner.save`.

    Attributes: classes, is_multi, arch (ArchSpec), tfm (the validation TfmConfig),
    cache_size (side images are decoded to before the centre crop), model, variables.
    """

    def __init__(self, model: ConvNet, variables: dict, meta: dict):
        self.model, self.variables, self.meta = model, variables, meta
        self.classes = list(meta['classes'])
        self.is_multi = bool(meta['is_multi'])
        self.tfm = modelfile.tfm_from_json(meta['val_tfms'])
        self.cache_size = int(meta['cache_size'])
        final = jax.nn.sigmoid if self.is_multi else jax.nn.softmax
        self._fn = xla.jit(lambda var, x: final(
            model.apply(var, T.val_transform(x, self.tfm)).astype(jnp.float32)))

    @classmethod
    def load(cls, folder: str, kernels: str = 'auto') -> 'Predictor':
        """Rebuild the network described by a saved model -- a folder, or a file from
        `learn.export` -- and restore its weights, each checked against its digest (`kernels`
        as in `jaxcls.models.build`)."""
        folder = os.fspath(folder)
        meta = modelfile.read(folder)
        modelfile.check_standard_head(meta, folder, 'rebuild the learner with it and use '
                                      'learn.load(name) instead')
        head = meta['head']
        spec = ArchSpec.from_json(meta['arch_spec'])
        kernels = ops.resolve(kernels)
        body = ResNet(tuple(meta['stages']), spec.block, None, kernels=kernels)
        net = ConvNet(body, Head(meta['c'], tuple(head['xtra_fc']),
                                 None if head['ps'] is None else tuple(head['ps']), kernels=kernels))
        shapes = jax.eval_shape(lambda: net.init({'params': jax.random.PRNGKey(0),
                                                  'dropout': jax.random.PRNGKey(0)},
                                                 jnp.zeros((1, 64, 64, 3))))
        target = {'params': shapes['params'], 'batch_stats': shapes['batch_stats']}
        restored = export.read_export(folder)[1] if os.path.isfile(folder) else \
            ckpt.load_checkpoint(folder)
        verify_shapes(target, {'arrays': {'state': tree_shapes(
            {k: restored[k] for k in target})}}, folder)
        variables = {k: jax.tree_util.tree_map(lambda t, a: jnp.asarray(a, t.dtype), target[k],
                                               restored[k]) for k in target}
        return cls(net, variables, meta)

    def predict_images(self, images: Any) -> np.ndarray:
        """Probabilities (softmax, or sigmoid for multi-label) for uint8 images (N, S, S, 3), S >= sz."""
        return np.asarray(self._fn(self.variables, jnp.asarray(images, jnp.uint8)))

    def heatmaps(self, images: Any, classes: Any) -> np.ndarray:
        """Grad-CAM maps (n, sz, sz) in [0, 1] for uint8 images (N, S, S, 3) and class indices."""
        from jaxcls.cam import class_activation_map
        x = T.val_transform(jnp.asarray(images, jnp.uint8), self.tfm)
        _, up = class_activation_map(self.model, self.variables, x,
                                     jnp.asarray(np.asarray(classes), jnp.int32))
        return np.asarray(up)

    def predict_files(self, paths: Sequence[str], bs: int = 64
                      ) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
        """(probabilities, the paths that decoded, [(path, reason)] of those that did not)."""
        imgs, kept, skipped = [], [], []
        for p in paths:
            try:
                imgs.append(decode_image(p, self.cache_size))
                kept.append(os.fspath(p))
            except (BadImageError, OSError) as e:
                skipped.append((os.fspath(p), str(e)))
        if not imgs:
            return np.zeros((0, len(self.classes)), np.float32), kept, skipped
        x = np.stack(imgs)
        out = []
        for s in range(0, len(x), bs):
            chunk = x[s:s + bs]
            pad = bs - len(chunk) if len(x) > bs else 0  # one compiled shape for every chunk
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[:1], pad, 0)])
            out.append(self.predict_images(chunk)[:bs - pad])
        return np.concatenate(out), kept, skipped


def load_learner(fname: str, kernels: str = 'auto') -> Predictor:
    """fastai 2's name for `Predictor.load`: a model saved by `learn.export(fname)` (or a model
    folder), ready for `predict_files` / `predict_images`, without its training data."""
    return Predictor.load(fname, kernels)
