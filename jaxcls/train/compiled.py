"""A learner's compiled steps and the states they take: the public factories of
jaxcls.train.steps, jitted once per configuration.

One train step exists per (trainable layer groups, precompute, BatchNorm mode, dtype,
transforms, recipe); learning rates, momentum and weight decay are its `HParams` argument, so
lr_find, any fit and SGDR reuse it. After precompute the step trains the network's state
without its body (`state.head_state`) on stored features, `make_train_step` with
`method=ConvNet.head_only`: a JAX user rebuilds either with the same calls
(examples/functional_fit.py).
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from jaxcls import xla
from jaxcls.data import transforms as T
from jaxcls.models.head import ConvNet

from .optim import layer_group_sgd
from .recipe import check_features
from .state import ModelState, TrainState, head_state, model_state
from .steps import make_features_step, make_predict_step, make_train_step, make_tta_step

KINDS = ('train', 'predict', 'predict_uint8', 'predict_float', 'features', 'aug_features', 'tta')

# Steps and optimizers are pure functions of the network and the configuration, so learners
# built the same way share them (the lesson builds its learner twice; a notebook rebuilds
# one often): the second finds its steps traced and compiled. Keyed by the network (a Flax
# module compares by its fields), its first layer group, and the configuration.
_SHARED_STEPS: dict = {}
_SHARED_TXS: dict = {}
_NETWORKS: dict = {}


def canonical(net: ConvNet) -> ConvNet:
    """The one instance of networks equal to `net`: a TrainState's `apply_fn` (a bound method)
    compares by its instance, so equal networks must be one object for jit to share steps."""
    return _NETWORKS.setdefault(net, net)


class LearnerSteps:
    """`learn.steps`: `get(kind)` is the learner's compiled step of `kind` (see KINDS);
    `compiled` maps each configuration key (kind, trainable, precompute, BatchNorm mode,
    dtype, transforms, recipe) to its jitted function."""

    # How the network runs on stored features: its head alone (ConvNet.head_only).
    HEAD = {'method': ConvNet.head_only}

    def __init__(self, learn):
        self.learn = learn
        self.compiled: dict = {}

    def _network(self) -> tuple:
        learn = self.learn
        return (learn.model, learn.spec.layer_groups, learn.loss)

    def tx(self, head: bool = False):
        """`layer_group_sgd` over the network's layer groups (or the head's alone)."""
        learn = self.learn
        key = self._network() + (learn.trainable, head)
        if key not in _SHARED_TXS:
            labels = {'head': learn.labels['head']} if head else learn.labels
            _SHARED_TXS[key] = layer_group_sgd(labels, learn.trainable)
        return _SHARED_TXS[key]

    def bn_eval(self) -> tuple[str, ...]:
        """The body's children whose BatchNorms use running statistics in training (the frozen
        groups', unless bn_frozen='train')."""
        learn = self.learn
        if learn.bn_frozen == 'train':
            return ()
        return tuple(n for g, t in enumerate(learn.trainable[:-1]) if not t
                     for n in learn.spec.layer_groups[g])

    def get(self, kind: str):
        learn = self.learn
        if kind not in KINDS:
            raise ValueError(f'no step {kind!r}; the learner has {KINDS}')
        if kind == 'train' and learn.precompute:
            check_features(learn.recipe)  # MixUp and CutMix need images
        # Steps on stored features (and on ready float images) read no transform: one step
        # serves every image size (progressive resizing with precompute compiles nothing new).
        on_features = kind in ('train', 'predict') and learn.precompute
        tfms = None if on_features or kind == 'predict_float' else learn.data.tfms
        key = (kind, learn.trainable if kind == 'train' else None,
               learn.precompute if kind in ('train', 'predict') else None,
               learn.bn_frozen, jnp.dtype(learn.dtype).name, tfms,
               learn.recipe if kind == 'train' else None)
        if key not in self.compiled:
            shared = self._network() + key
            if shared not in _SHARED_STEPS:
                _SHARED_STEPS[shared] = self._build(kind)
            self.compiled[key] = _SHARED_STEPS[shared]
        return self.compiled[key]

    def clear(self) -> None:
        self.compiled.clear()

    def _build(self, kind: str):
        learn = self.learn
        trn, val = learn.data.tfms
        augment = functools.partial(T.augment, cfg=trn)
        valid = functools.partial(T.val_transform, cfg=val)
        features = {'method': ConvNet.features}
        if kind == 'train':
            # No skip_nonfinite: a non-finite loss makes the fit roll back to its last good
            # snapshot (callbacks.DivergenceGuard), and the in-step check cost a ResNet34 step
            # 10% at 64 px (0.36 against 0.33 s) and its compile 0.7 s (bench/README.md).
            recipe = learn.recipe.options()
            if learn.precompute:  # the head alone, on stored features (see head_state)
                return xla.jit(make_train_step(learn.loss, None, None, self.HEAD, **recipe),
                               donate_argnums=0)
            # Everything trainable: no frozen mask, no BatchNorm in eval mode (the step a JAX
            # user writes for the whole network, examples/functional_fit.py).
            frozen = None if all(learn.trainable) else jax.tree_util.tree_map(
                lambda g: not learn.trainable[g], learn.labels)
            bn_eval = self.bn_eval()
            return xla.jit(make_train_step(learn.loss, augment, frozen,
                                           {'bn_eval': bn_eval} if bn_eval else None, **recipe),
                           donate_argnums=0)
        makers = {
            'predict': lambda: (make_predict_step(learn.loss, None, self.HEAD) if learn.precompute
                                else make_predict_step(learn.loss, valid)),
            'predict_uint8': lambda: make_predict_step(learn.loss, valid),
            'predict_float': lambda: make_predict_step(learn.loss, lambda x: x.astype(jnp.float32)),
            'features': lambda: make_features_step(valid, features),
            'aug_features': lambda: make_features_step(model_kwargs=features, augment=augment),
            'tta': lambda: make_tta_step(augment, learn.loss)}
        return xla.jit(makers[kind]())

    def model_state(self, images: Optional[bool] = None, raw: bool = False) -> ModelState:
        """What the inference steps read: the whole network, or after precompute (unless
        `images`) the head alone, which takes stored features; the moving average of the
        weights when the recipe keeps one (`raw`: the weights themselves)."""
        learn = self.learn
        state = learn.state
        ema = bool(learn.recipe.ema) and state.ema is not None and not raw
        if images or (images is None and not learn.precompute):
            return model_state(state, ema=ema)
        return model_state(state, 'head', ema=ema)

    def fresh_state(self) -> TrainState:
        """The whole network with a fresh optimizer (fastai 0.7 made one per fit), placed."""
        return self.learn._place(self.learn.state.with_tx(self.tx()))

    def fit_view(self, full: TrainState) -> TrainState:
        """The state a fit's step trains: `full`, or after precompute the head's own state."""
        learn = self.learn
        return head_state(full, self.tx(head=True)) if learn.precompute else full
