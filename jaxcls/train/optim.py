"""Optimizers whose learning rate, momentum and weight decay live in optimizer state.

They are `optax.inject_hyperparams` values, so changing them (lr_find, SGDR, one-cycle)
swaps arrays in the state and never recompiles the step. Layer groups get one SGD each
through `optax.multi_transform`; frozen groups get `set_to_zero`, so their parameters and
momentum stay exactly where they are. `HParams` carries one step's values per layer group;
`jaxcls.train.steps.make_train_step`'s step writes them into the state (`set_hparams`).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence

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


class HParams(NamedTuple):
    """One step's optimizer hyperparameters, one value per layer group (float32 (n_groups,)).

    A pytree: pass it to a jitted train step as an ordinary argument; new values never
    recompile it. Build it with `hparams(...)`.
    """

    lr: Any
    momentum: Any
    weight_decay: Any


def hparams(lr: Any, momentum: Any = MOMENTUM, weight_decay: Any = 0.0,
            n_groups: Optional[int] = None) -> HParams:
    """HParams of float32 numpy arrays, each value broadcast to `n_groups` (default: as many
    as `lr` has).

    >>> hp = hparams([1e-3, 1e-2], weight_decay=1e-4)
    >>> hp.momentum.shape, hp.momentum.dtype, float(hp.weight_decay[1])
    ((2,), dtype('float32'), 9.999999747378752e-05)
    """
    vals = [np.atleast_1d(np.asarray(v, np.float32)) for v in (lr, momentum, weight_decay)]
    n = int(n_groups) if n_groups is not None else len(vals[0])
    out = []
    for name, v in zip(HParams._fields, vals):
        if v.ndim != 1 or len(v) not in (1, n):
            raise ValueError(f'{name}={v.tolist()} has {v.size} values for {n} layer groups; '
                             f'give one value or {n}')
        out.append(np.broadcast_to(v, (n,)).copy())
    return HParams(*out)


def set_hparams(opt_state: Any, hp: HParams) -> Any:
    """opt_state with each layer group's learning rate, momentum and weight decay taken from
    `hp` (group i gets element i; frozen groups are left alone). Traceable: a jitted step
    calls it with `hp` as an argument."""
    for name, values in (('learning_rate', hp.lr), ('momentum', hp.momentum),
                         ('weight_decay', hp.weight_decay)):
        values = jnp.asarray(values, jnp.float32)
        opt_state = set_group_hyperparams(opt_state, name, [values[i] for i in range(len(values))])
    return opt_state


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


def get_group_hyperparams(opt_state: Any, name: str) -> dict[int, float]:
    """{group index: value} of hyperparameter `name` for the trainable groups."""
    if not isinstance(opt_state, optax.MultiTransformState):
        return {0: float(get_hyperparam(opt_state, name))}
    return {int(k[len('group'):]): float(get_hyperparam(s, name))
            for k, s in opt_state.inner_states.items() if k != FROZEN}


def layer_group_labels(params: dict, first_group: Sequence[str], body: str = 'body',
                       head: str = 'head') -> dict:
    """fastai's three layer groups of a {'body', 'head'} network as a label pytree like the
    params: 0 for the body's top-level children named in `first_group` (an ArchSpec's
    `layer_groups[0]`: stem, layer1, layer2), 1 for the rest of the body, 2 for the head."""
    first = set(first_group)
    labels = {body: {k: jax.tree_util.tree_map(lambda _, g=(0 if k in first else 1): g, v)
                     for k, v in params[body].items()}}
    labels[head] = jax.tree_util.tree_map(lambda _: 2, params[head])
    return labels


def transplant(opt_state: Any, like: Any) -> Any:
    """`opt_state`'s arrays in the tree structure of `like` (an optimizer state or its shapes).

    For `layer_group_sgd` over part of the parameters (the head alone, after precompute)
    and the same optimizer over the whole network with the other groups frozen: the frozen
    parameters hold no state, so both have the same arrays in the same order, and this
    converts one into the other either way (momentum kept, nothing copied).
    """
    leaves = jax.tree_util.tree_leaves(opt_state)
    shapes = [np.shape(a) for a in jax.tree_util.tree_leaves(like)]
    if [np.shape(a) for a in leaves] != shapes:
        raise ValueError(f'optimizer states do not correspond: {len(leaves)} arrays '
                         f'{[np.shape(a) for a in leaves][:6]}... against {len(shapes)} '
                         f'{shapes[:6]}...; build both with layer_group_sgd, the same groups '
                         'trainable, over the same trainable parameters')
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), leaves)


def per_group(values: Any, n_groups: int, what: str) -> np.ndarray:
    """One float64 value per layer group: `values` broadcast from one, or checked to be n.

    >>> per_group(0.01, 3, 'lrs').tolist(), per_group([1, 2, 3], 3, 'lrs').tolist()
    ([0.01, 0.01, 0.01], [1.0, 2.0, 3.0])
    """
    arr = np.atleast_1d(np.asarray(values, np.float64))
    if arr.size == 1:
        return np.full(n_groups, float(arr[0]))
    if arr.size != n_groups:
        raise ValueError(f'{what}={arr.tolist()} has {arr.size} values but there are '
                         f'{n_groups} layer groups; give one value or {n_groups}')
    return arr
