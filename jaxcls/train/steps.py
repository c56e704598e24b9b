"""Pure training, evaluation and prediction steps: `train_step(state, batch, hparams) -> (state, metrics)`.

A batch is a dict: 'image' (NHWC; float and normalised, or uint8 when the step has
a `preprocess`), 'label' (int class indices, or float one-hot/multi-hot targets for
multi-label), and optionally 'mask' (1.0 for real rows, 0.0 for padding, so a padded
last batch is counted exactly once and never compiles a second shape).

These factories are what `ConvLearner` runs: `fit`, `fit_one_cycle`, `fine_tune` and
`lr_find` call a `make_train_step` step (on the whole network, or on the head alone
after precompute, see `jaxcls.train.state.head_state`), prediction and `TTA` call
`make_predict_step` and `make_tta_step`, precompute `make_features_step`. Each returns a
plain function; jit it yourself (`jaxcls.xla.jit` adds the XLA options jaxcls's models run
fastest under on a CPU). `train_step`, `eval_step` and `predict_step` are ready-made
jitted versions for the common case. Inference steps take anything with `apply_fn` and
`variables`: a TrainState, or a `ModelState` without the optimizer.

    >>> step = jaxcls.xla.jit(make_train_step(preprocess=partial(augment, cfg=trn_tfms)),
    ...                       donate_argnums=0)                                  # doctest: +SKIP
    >>> state, metrics = step(state, batch, optim.hparams([1e-4, 1e-3, 1e-2]))  # doctest: +SKIP
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from jaxcls import xla

from . import recipe
from .optim import HParams, set_hparams
from .state import TrainState

Preprocess = Callable[[jax.Array], jax.Array]            # images -> float images
Augment = Callable[[jax.Array, jax.Array], jax.Array]    # (key, images) -> float images

# Salt folded into the per-step key to derive independent dropout and augmentation keys.
_DROPOUT, _AUGMENT, _MIX = 0, 1, 2


def _check_batch(batch: Any) -> None:
    """A step takes a loader's dict batch; a fastai-style (x, y) pair is the common mistake."""
    if not (hasattr(batch, 'keys') and 'image' in batch):
        got = (f'a {type(batch).__name__} of {len(batch)}' if isinstance(batch, (tuple, list))
               else type(batch).__name__)
        raise TypeError(f"a step takes a batch dict {{'image', 'label', 'mask'}} as "
                        f"dl.iter_epoch(epoch) yields it; got {got}. Iterating data.trn_dl "
                        f"itself gives fastai's (x, y) pairs of transformed images, for looking "
                        f"at: loop over data.trn_dl.iter_epoch(epoch) instead")


def _mask(batch: dict) -> jax.Array:
    _check_batch(batch)
    n = batch['image'].shape[0]
    return batch['mask'].astype(jnp.float32) if 'mask' in batch else jnp.ones((n,), jnp.float32)


def softmax_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy for integer labels (single-label classification)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def sigmoid_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example binary cross-entropy, averaged over classes (multi-label classification)."""
    return optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                              labels.astype(jnp.float32)).mean(-1)


def softmax_correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1.0 where the arg-max class is the label."""
    return (jnp.argmax(logits, -1) == labels).astype(jnp.float32)


def sigmoid_correct(logits: jax.Array, labels: jax.Array, thresh: float = 0.5) -> jax.Array:
    """Per-example fraction of labels right when each sigmoid output is thresholded at 0.5."""
    pred = jax.nn.sigmoid(logits.astype(jnp.float32)) > thresh
    return (pred == (labels > 0.5)).astype(jnp.float32).mean(-1)


LOSSES = {'softmax': (softmax_loss, softmax_correct), 'sigmoid': (sigmoid_loss, sigmoid_correct)}
# What prediction returns: log-probabilities (softmax) or probabilities (multi-label).
OUTPUTS = {'softmax': jax.nn.log_softmax, 'sigmoid': jax.nn.sigmoid}


def _loss_fns(loss: str):
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is not known; use 'softmax' (one class per image) or "
                         "'sigmoid' (multi-label)")
    return LOSSES[loss]


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def step_keys(rng: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(dropout key, augmentation key) for a step: the same run key and step give the same keys."""
    k = jax.random.fold_in(rng, step)
    return jax.random.fold_in(k, _DROPOUT), jax.random.fold_in(k, _AUGMENT)


def mix_key(rng: jax.Array, step: jax.Array) -> jax.Array:
    """The MixUp/CutMix key of a step, folded like `step_keys` (a resumed run redraws it)."""
    return jax.random.fold_in(jax.random.fold_in(rng, step), _MIX)


def _keep_if_finite(value: jax.Array, state: TrainState, new_state: TrainState
                    ) -> tuple[TrainState, jax.Array]:
    """`new_state` when the loss and every changed parameter and statistic are finite, else
    `state` with only its step counter advanced; also returns that finiteness flag.

    Only the leaves the step changed are checked and pass through the conditional: a leaf
    the step returned as it came in (a frozen parameter, the statistics of layers that did
    not run) is the same either way. A finite loss can still produce an overflowing update,
    so the new parameters and statistics are checked, not only the loss.
    """
    kept = state.replace(step=state.step + 1)
    new_leaves, treedef = jax.tree_util.tree_flatten(new_state)
    old_leaves = jax.tree_util.tree_leaves(kept)
    changed = [i for i, (n, o) in enumerate(zip(new_leaves, old_leaves)) if n is not o]
    inputs = {id(a) for a in jax.tree_util.tree_leaves((state.params, state.batch_stats))}
    checked = [a for a in jax.tree_util.tree_leaves((new_state.params, new_state.batch_stats))
               if id(a) not in inputs]
    ok = jnp.isfinite(value)
    if checked:
        ok = ok & jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in checked]))
    # One conditional over the changed leaves, not a select per leaf: the same result, and
    # it compiles faster (bench/README.md, "Notes on the model and the kernels").
    picked = jax.lax.cond(ok, lambda: [new_leaves[i] for i in changed],
                          lambda: [old_leaves[i] for i in changed])
    for i, a in zip(changed, picked):
        new_leaves[i] = a
    return jax.tree_util.tree_unflatten(treedef, new_leaves), ok


def make_train_step(loss: str = 'softmax', preprocess: Optional[Augment] = None,
                    frozen: Any = None, model_kwargs: Optional[dict] = None,
                    skip_nonfinite: bool = False, *, mixup: float = 0.0, cutmix: float = 0.0,
                    label_smoothing: float = 0.0, ema: float = 0.0, accumulate: int = 1
                    ) -> Callable[..., tuple[TrainState, dict]]:
    """Build a pure `train_step(state, batch, hparams=None) -> (state, metrics)`; jit it yourself.

    Args:
      loss: 'softmax' (integer labels) or 'sigmoid' (multi-label float targets).
      preprocess: `(key, images) -> float images` run inside the step, e.g. on-device
        augmentation of uint8 batches (`functools.partial(transforms.augment, cfg=trn_cfg)`);
        None means images arrive ready.
      frozen: a pytree of bools like the params, True for parameters that get no
        gradient (their backward pass is not computed at all); None trains everything.
      model_kwargs: extra keyword arguments for `apply_fn` in training mode (e.g.
        `{'bn_eval': ('bn1', 'layer1')}`: BatchNorms of frozen layers use running statistics).
      skip_nonfinite: when the loss, or any updated parameter or statistic, is NaN or
        infinite, return the state unchanged (only the step counter advances), so
        parameters never become NaN; the metrics then report a NaN loss for the caller
        to act on.
      mixup, cutmix: MixUp's or CutMix's alpha (`jaxcls.train.recipe`; 0 is off): the
        batch is mixed after `preprocess`, with keys from `mix_key(state.rng, state.step)`,
        and the loss mixed accordingly.
      label_smoothing: eps of label smoothing (0 is off).
      ema: the decay of a moving average of the weights kept in `state.ema` (create it
        with `state.replace(ema=recipe.init_ema(state.variables))`); at step t it moves
        with `recipe.ema_decay(t, ema)`. 0 is off.
      accumulate: the batch (of accumulate * B rows) is N micro-batches of B rows whose
        gradients are summed into one update (`recipe.accumulate_gradients`).

    With every recipe option off the step is exactly the plain one (the same program).

    The step's `hparams` (an `optim.HParams`: per-layer-group learning rate, momentum and
    weight decay, float32 arrays) are written into the optimizer state before the update
    (`optim.set_hparams`), so a new value is a new argument, never a recompile; None keeps
    the rates the optimizer state holds.

    Metrics: 'loss' and 'accuracy' as means over the real (mask 1) rows, 'count' the
    number of real rows (the loss is the mixed and smoothed one the gradient is of; the
    accuracy is against the batch's own labels).
    """
    loss_fn, correct_fn = _loss_fns(loss)
    opts = recipe.Recipe(mixup, cutmix, label_smoothing, ema, accumulate)  # checks them
    kwargs = dict(model_kwargs or {})
    if opts.label_smoothing:
        train_loss = functools.partial(recipe.SMOOTHED[loss], eps=opts.label_smoothing)
    else:
        train_loss = loss_fn
    if opts.mixes:
        train_loss = functools.partial(recipe.mixed_loss, train_loss)
    mix = (functools.partial(recipe.mixup, alpha=opts.mixup) if opts.mixup else
           functools.partial(recipe.cutmix, alpha=opts.cutmix) if opts.cutmix else None)

    def train_step(state: TrainState, batch: dict, hparams: Optional[HParams] = None):
        if hparams is not None:
            state = state.replace(opt_state=set_hparams(state.opt_state, hparams))
        dropout_key, aug_key = step_keys(state.rng, state.step)
        _check_batch(batch)
        images = batch['image']
        if preprocess is not None:
            images = preprocess(aug_key, images)
        mask = _mask(batch)
        targets = batch['label']
        if mix is not None:
            images, targets = mix(mix_key(state.rng, state.step), images, targets)

        def forward(params, batch_stats, images, key):
            if frozen is not None:
                params = jax.tree_util.tree_map(
                    lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
            return state.apply_fn(
                {'params': params, 'batch_stats': batch_stats}, images, train=True,
                rngs={'dropout': key}, mutable=['batch_stats'], **kwargs)

        if opts.accumulate == 1:
            def objective(params):
                logits, updates = forward(params, state.batch_stats, images, dropout_key)
                return _masked_mean(train_loss(logits, targets), mask), (logits, updates)

            (value, (logits, updates)), grads = jax.value_and_grad(objective, has_aux=True)(
                state.params)
            batch_stats = updates.get('batch_stats', state.batch_stats)
        else:
            denom = jnp.maximum(jnp.sum(mask), 1.0)

            def micro_loss(params, batch_stats, micro, key):
                logits, updates = forward(params, batch_stats, micro['image'], key)
                per_row = train_loss(logits, micro['target']) * micro['mask']
                return jnp.sum(per_row) / denom, (logits, updates.get('batch_stats', batch_stats))

            value, logits, batch_stats, grads = recipe.accumulate_gradients(
                jax.value_and_grad(micro_loss, has_aux=True), opts.accumulate, state.params,
                state.batch_stats, {'image': images, 'target': targets, 'mask': mask},
                dropout_key, frozen)
        new_state = state.apply_gradients(grads, batch_stats)
        if frozen is not None:
            # Frozen parameters come back as the very arrays that went in (their update is
            # zero): nothing of them is computed, checked or copied below.
            new_state = new_state.replace(params=jax.tree_util.tree_map(
                lambda n, o, f: o if f else n, new_state.params, state.params, frozen))
        if opts.ema:
            new_state = new_state.replace(ema=_ema_step(state, new_state, opts.ema))
        if skip_nonfinite:
            new_state, ok = _keep_if_finite(value, state, new_state)
            value = jnp.where(ok, value, jnp.nan)
        metrics = {'loss': value, 'accuracy': _masked_mean(correct_fn(logits, batch['label']), mask),
                   'count': jnp.sum(mask)}
        return new_state, metrics

    return train_step


def _ema_step(state: TrainState, new_state: TrainState, decay: float) -> Any:
    """The weights' moving average after a step (parameters and BatchNorm statistics)."""
    if state.ema is None:
        raise ValueError(f'the step keeps a moving average of the weights (ema={decay}) but '
                         'state.ema is None; start one with '
                         'state.replace(ema=jaxcls.train.recipe.init_ema(state.variables))')
    return recipe.ema_update(state.ema, new_state.variables, recipe.ema_decay(state.step, decay),
                             old=state.variables)


def _images(batch: dict, preprocess: Optional[Preprocess]) -> jax.Array:
    _check_batch(batch)
    x = batch['image']
    return x if preprocess is None else preprocess(x)


def make_eval_step(loss: str = 'softmax', preprocess: Optional[Preprocess] = None,
                   model_kwargs: Optional[dict] = None) -> Callable[[Any, dict], dict]:
    """Build a pure `eval_step(state, batch) -> metrics` (inference mode, running BN statistics).

    Metrics are sums over the real rows ('loss_sum', 'correct_sum', 'count') so batches
    add up exactly; divide by 'count' at the end (`summarize`).
    """
    loss_fn, correct_fn = _loss_fns(loss)
    kwargs = dict(model_kwargs or {})

    def eval_step(state, batch: dict) -> dict:
        logits = state.apply_fn(state.variables, _images(batch, preprocess), train=False, **kwargs)
        mask = _mask(batch)
        return {'loss_sum': jnp.sum(loss_fn(logits, batch['label']) * mask),
                'correct_sum': jnp.sum(correct_fn(logits, batch['label']) * mask),
                'count': jnp.sum(mask)}

    return eval_step


def make_predict_step(loss: str = 'softmax', preprocess: Optional[Preprocess] = None,
                      model_kwargs: Optional[dict] = None) -> Callable[[Any, dict], jax.Array]:
    """Build a pure `predict_step(state, batch) -> log-probabilities` (softmax) or
    probabilities (sigmoid), float32, in inference mode."""
    _loss_fns(loss)
    final, kwargs = OUTPUTS[loss], dict(model_kwargs or {})

    def predict_step(state, batch: dict) -> jax.Array:
        logits = state.apply_fn(state.variables, _images(batch, preprocess), train=False, **kwargs)
        return final(logits.astype(jnp.float32))

    return predict_step


def make_tta_step(augment: Augment, loss: str = 'softmax', model_kwargs: Optional[dict] = None
                  ) -> Callable[[Any, dict, jax.Array], jax.Array]:
    """Build `tta_step(state, batch, keys) -> (len(keys), B, classes)`: the predictions of
    `augment(key, images)` for each key, vmapped into one program (fastai's TTA passes)."""
    predict = make_predict_step(loss, None, model_kwargs)

    def tta_step(state, batch: dict, keys: jax.Array) -> jax.Array:
        _check_batch(batch)
        one = lambda k: predict(state, {'image': augment(k, batch['image'])})
        return jax.vmap(one)(keys)

    return tta_step


def make_features_step(preprocess: Optional[Preprocess] = None, model_kwargs: Optional[dict] = None,
                       augment: Optional[Augment] = None) -> Callable[..., jax.Array]:
    """Build `features_step(state, batch) -> float32 features` in inference mode: what
    precompute stores, with model_kwargs={'method': ConvNet.features}. With `augment`
    instead of `preprocess`, `features_step(state, batch, key)` takes a key for it (the
    augmented views of `precompute_aug`)."""
    kwargs = dict(model_kwargs or {})

    def features_step(state, batch: dict, key: Optional[jax.Array] = None) -> jax.Array:
        _check_batch(batch)
        x = batch['image']
        x = augment(key, x) if augment is not None else x if preprocess is None else preprocess(x)
        return state.apply_fn(state.variables, x, train=False, **kwargs).astype(jnp.float32)

    return features_step


train_step = xla.jit(make_train_step(), donate_argnums=0)
train_step.__doc__ = """Jitted softmax `train_step(state, batch, hparams=None) -> (state, metrics)`;
`state` is donated.

>>> state, metrics = train_step(state, {'image': x, 'label': y})  # doctest: +SKIP
"""
eval_step = xla.jit(make_eval_step())
predict_step = xla.jit(make_predict_step())


def summarize(metric_sums: list[dict]) -> dict:
    """Combine eval_step outputs into {'loss', 'accuracy', 'count'} over all real rows."""
    count = float(sum(float(m['count']) for m in metric_sums))
    if count == 0:
        raise ValueError('no rows to summarize: every batch was empty or fully masked')
    return {'loss': sum(float(m['loss_sum']) for m in metric_sums) / count,
            'accuracy': sum(float(m['correct_sum']) for m in metric_sums) / count,
            'count': count}
