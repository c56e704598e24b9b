"""Optimizers whose learning rate and weight decay live in optimizer state.

The learning rate is an `optax.inject_hyperparams` value, so changing it (lr_find,
SGDR, one-cycle) swaps an array in the state and never recompiles the step.
Layer groups get one SGD each through `optax.multi_transform`; frozen groups get
`set_to_zero`, so their parameters and momentum stay exactly where they are.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

# fastai 0.7 trains with torch.optim.SGD(momentum=0.9); pinned here, never optax's default.
MOMENTUM = 0.9
FROZEN = 'frozen'


def _sgd(learning_rate, momentum, weight_decay):
    # torch.optim.SGD order: g += wd * p; buf = momentum * buf + g; p -= lr * buf.
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.trace(decay=momentum, nesterov=False),
                       optax.scale_by_learning_rate(learning_rate))


def sgd(learning_rate: float = 0.01, momentum: float = MOMENTUM,
        weight_decay: float = 0.0) -> optax.GradientTransformation:
    """torch-style SGD with momentum and L2 weight decay, all three as injected hyperparameters.

    >>> tx = sgd(0.01); state = tx.init({'w': jnp.zeros(3)})
    >>> float(get_hyperparam(state, 'learning_rate'))
    0.01
    """
    return optax.inject_hyperparams(_sgd, hyperparam_dtype=jnp.float32)(
        learning_rate=float(learning_rate), momentum=float(momentum),
        weight_decay=float(weight_decay))


def group_name(i: int) -> str:
    return f'group{i}'


def layer_group_sgd(labels: Any, trainable: Sequence[bool],
                    momentum: float = MOMENTUM) -> optax.GradientTransformation:
    """One SGD per layer group, `set_to_zero` for frozen ones.

    Args:
      labels: a pytree like the params whose leaves are group indices (ints).
      trainable: one bool per group; False freezes that group.
      momentum: SGD momentum for every group.

    Set the rates afterwards with `set_group_hyperparams(opt_state, 'learning_rate', lrs)`.
    """
    n = len(trainable)
    names = jax.tree_util.tree_map(
        lambda g: group_name(int(g)) if trainable[int(g)] else FROZEN, labels)
    transforms = {group_name(i): sgd(0.0, momentum) for i in range(n) if trainable[i]}
    transforms[FROZEN] = optax.set_to_zero()
    return optax.multi_transform(transforms, names)


# optax has two state classes for injected hyperparameters (older and newer API).
_INJECT_STATES = tuple(c for c in (getattr(optax, 'InjectHyperparamsState', None),
                                   getattr(optax, 'InjectStatefulHyperparamsState', None)) if c)


def _is_inject(x) -> bool:
    return isinstance(x, _INJECT_STATES)


def _as_f32(value) -> jax.Array:
    # Always a strong float32 scalar: a weak-typed Python float here would change the
    # step's signature and recompile it. A float32 jax array is kept as it is, so a
    # caller can place it (e.g. replicated over a device mesh) first.
    if isinstance(value, jax.Array) and value.dtype == jnp.float32 and not value.weak_type:
        return value
    return jnp.asarray(np.float32(value))


def set_hyperparam(opt_state: Any, name: str, value: float) -> Any:
    """Return opt_state with hyperparameter `name` set to `value` in every injected optimizer."""
    return _map_hyperparam(opt_state, name, lambda old: _as_f32(value))


def _map_hyperparam(opt_state: Any, name: str, new: Callable[[jax.Array], jax.Array]) -> Any:
    """opt_state with hyperparameter `name` replaced by new(old) in every injected optimizer."""
    def put(s):
        if _is_inject(s) and name in s.hyperparams:
            return s._replace(hyperparams={**s.hyperparams, name: new(s.hyperparams[name])})
        return s
    return jax.tree_util.tree_map(put, opt_state, is_leaf=_is_inject)


def get_hyperparam(opt_state: Any, name: str) -> jax.Array:
    """The first injected value of hyperparameter `name` found in opt_state."""
    for s in jax.tree_util.tree_leaves(opt_state, is_leaf=_is_inject):
        if _is_inject(s) and name in s.hyperparams:
            return s.hyperparams[name]
    raise KeyError(f'no injected hyperparameter {name!r} in this optimizer state')


def set_group_hyperparams(opt_state: Any, name: str, values: Sequence[float]) -> Any:
    """Set hyperparameter `name` per layer group in a `layer_group_sgd` state.

    `values[i]` goes to group i; values for frozen groups are ignored.
    """
    if not isinstance(opt_state, optax.MultiTransformState):
        if len(values) != 1:
            raise ValueError(f'{len(values)} values for {name!r} given, but this optimizer has '
                             'no layer groups; pass one value')
        return set_hyperparam(opt_state, name, values[0])
    inner = dict(opt_state.inner_states)
    for key, sub in inner.items():
        if key == FROZEN:
            continue
        i = int(key[len('group'):])
        if i >= len(values):
            raise ValueError(f'{len(values)} values for {name!r} given but layer group {i} exists; '
                             'pass one value per layer group')
        inner[key] = set_hyperparam(sub, name, values[i])
    return opt_state._replace(inner_states=inner)


def set_hyperparam_unless_nan(opt_state: Any, name: str, value: jax.Array) -> Any:
    """Set hyperparameter `name` to `value` in every injected optimizer, except where `value`
    is NaN: there the current value stays. Traceable, so a jitted step can take "no change"
    as an ordinary float32 argument instead of a second signature."""
    value = jnp.asarray(value, jnp.float32)
    return _map_hyperparam(opt_state, name,
                           lambda old: jnp.where(jnp.isnan(value), old, value).astype(jnp.float32))


def get_group_hyperparams(opt_state: Any, name: str) -> dict[int, float]:
    """{group index: value} of hyperparameter `name` for the trainable groups."""
    if not isinstance(opt_state, optax.MultiTransformState):
        return {0: float(get_hyperparam(opt_state, name))}
    return {int(k[len('group'):]): float(get_hyperparam(s, name))
            for k, s in opt_state.inner_states.items() if k != FROZEN}
