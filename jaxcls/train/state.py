"""TrainState: everything a training step reads and writes, as one pytree."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """Step counter, parameters, BatchNorm statistics, optimizer state and the run's PRNG key.

    `apply_fn` (the model's `apply`) and `tx` (the optax transformation) are static:
    they are part of the compiled step, not data.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

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
