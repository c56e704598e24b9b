"""TrainState: everything a training step reads and writes, as one pytree; ModelState: what an
inference step reads; and the head's own state for training on precomputed features."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """Step counter, parameters, BatchNorm statistics, optimizer state and the run's PRNG key.

    `apply_fn` (the model's `apply`) and `tx` (the optax transformation) are static:
    they are part of the compiled step, not data. `ema` is None, or the moving average of
    the weights ({'params', 'batch_stats'}) a step with `ema=` keeps (jaxcls.train.recipe).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    ema: Any = None

    @property
    def variables(self) -> dict:
        """{'params', 'batch_stats'}: what `apply_fn` takes."""
        return {'params': self.params, 'batch_stats': self.batch_stats}

    def apply_gradients(self, grads: Any, batch_stats: Any) -> 'TrainState':
        """One optimizer update; BatchNorm statistics replaced by the step's new ones."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                            batch_stats=batch_stats, opt_state=opt_state)

    def with_tx(self, tx: optax.GradientTransformation) -> 'TrainState':
        """The same model with a new optimizer (fresh optimizer state), as fastai 0.7 made per fit."""
        return self.replace(tx=tx, opt_state=tx.init(self.params))


class ModelState(struct.PyTreeNode):
    """A model's `apply` (static) and its variables: what the eval, predict, TTA and feature
    steps read. A TrainState works there too; this one leaves the optimizer out, so changing
    which layer groups train never recompiles a prediction.
    """

    params: Any
    batch_stats: Any
    apply_fn: Callable = struct.field(pytree_node=False)

    @property
    def variables(self) -> dict:
        return {'params': self.params, 'batch_stats': self.batch_stats}


def model_state(state: Any, part: str | None = None, ema: bool = False) -> ModelState:
    """The ModelState of a TrainState (or ModelState): all of its variables, or only the
    subtree `part` of them (e.g. 'head'), still under that key. `ema`: the moving average
    of the weights (`state.ema`) instead of the weights."""
    params, stats = (state.ema['params'], state.ema['batch_stats']) if ema else (
        state.params, state.batch_stats)
    if part is not None:
        params, stats = _part(params, stats, part)
    return ModelState(params=params, batch_stats=stats, apply_fn=state.apply_fn)


def _part(params: Any, stats: Any, part: str) -> tuple[dict, dict]:
    return {part: params[part]}, ({part: stats[part]} if part in stats else {})


def head_state(state: TrainState, tx: optax.GradientTransformation, part: str = 'head'
               ) -> TrainState:
    """The network's state without its body, for training the head on precomputed features.

    Its params and statistics are `state`'s subtree `part`, still under that key, so the
    same `apply_fn` runs it (with `method=ConvNet.head_only`, the features as input) and
    the head meets the very dropout keys it meets in the whole network. `tx` is an optimizer
    over those parameters (`layer_group_sgd({part: labels[part]}, trainable)`). Step
    counter and PRNG key are `state`'s, and so is the part's moving average of the weights
    (`state.ema`), if any. The optimizer state is `state`'s own, converted
    (`optim.transplant`) when `state`'s optimizer covers the whole network with only the head
    trainable, so momentum carries over; `with_head` is the inverse.

    >>> hs = head_state(state, layer_group_sgd({'head': labels['head']}, (False, False, True)))  # doctest: +SKIP
    """
    from .optim import transplant
    part_state = model_state(state, part)
    like = jax.eval_shape(tx.init, part_state.params)
    ema = None if state.ema is None else model_state(state, part, ema=True).variables
    return TrainState(step=state.step, params=part_state.params,
                      batch_stats=part_state.batch_stats,
                      opt_state=transplant(state.opt_state, like), rng=state.rng,
                      apply_fn=state.apply_fn, tx=tx, ema=ema)


def with_head(state: TrainState, head: TrainState) -> TrainState:
    """`state` with the part trained in `head` (see `head_state`) put back: its params,
    statistics, step counter, PRNG key, optimizer state (converted to `state`'s) and the
    part's moving average of the weights, if any."""
    from .optim import transplant
    ema = state.ema
    if head.ema is not None:
        ema = {k: {**state.ema[k], **head.ema[k]} for k in ('params', 'batch_stats')}
    return state.replace(step=head.step, params={**state.params, **head.params},
                         batch_stats={**state.batch_stats, **head.batch_stats}, rng=head.rng,
                         opt_state=transplant(head.opt_state, state.opt_state), ema=ema)


def create_train_state(apply_fn: Callable, variables: dict, tx: optax.GradientTransformation,
                       rng: jax.Array | int = 0) -> TrainState:
    """A TrainState at step 0 from a model's `apply`, its variables and an optimizer.

    Args:
      apply_fn: `module.apply`.
      variables: {'params': ..., 'batch_stats': ...} (batch_stats may be absent).
      tx: an optax transformation, e.g. `jaxcls.train.optim.sgd(0.01)`.
      rng: a PRNG key or an int seed; dropout and augmentation keys are folded from it per step.

    >>> from jaxcls.models import resnet18
    >>> from jaxcls.train.optim import sgd
    >>> module, variables = resnet18(num_classes=10)
    >>> state = create_train_state(module.apply, variables, sgd(0.01))
    >>> int(state.step)
    0
    """
    if isinstance(rng, int):
        rng = jax.random.PRNGKey(rng)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                      rng=rng, apply_fn=apply_fn, tx=tx)
