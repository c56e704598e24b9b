"""The transfer-learning network: a (pretrained) ResNet body, concat pooling and fastai's head.

`convnet(arch, num_classes)` is what `ConvLearner.pretrained` builds, as a pure function a
JAX user can call: the Flax `ConvNet`, its variables ({'params', 'batch_stats'}, body under
'body', head under 'head') and a JSON description of the head (what a saved model records).

    >>> net, variables, head = convnet('resnet18', 2, pretrained=False)
    >>> sorted(variables['params']), head['xtra_fc']
    (['body', 'head'], [512])
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcls import xla
from jaxcls.archs import get_arch

from . import ops
from .head import XTRA_FC, ConvNet, Head
from .resnet import ResNet, out_channels, random_variables, variable_shapes
from .zoo import merge_variables

# A custom head's input shape is traced on a 64 px image: the body's shapes do not depend
# on the size, and 64 px keeps the trace small.
_TRACE_SIZE = 64


class Network(NamedTuple):
    """What `convnet` returns; unpacks as `net, variables, head`."""

    net: ConvNet
    variables: dict
    head: dict


def convnet(arch: Any, num_classes: int, *, ps: Optional[Sequence[float]] = None,
            xtra_fc: Optional[Sequence[int]] = None, xtra_cut: int = 0, custom_head: Any = None,
            pretrained: bool = True, weights: Any = None, key: Any = 0,
            kernels: str = 'auto', devices: Optional[Sequence[jax.Device]] = None) -> Network:
    """The learner's network for `num_classes` classes.

    Args:
      arch: `resnet34` (the constructor), 'resnet34', or an ArchSpec.
      num_classes: outputs of the head.
      ps, xtra_fc: fastai's head: dropout before each layer (default [0.25, 0.5]; one number:
        the same before every layer, as fastai's ps=0.5) and the extra layers' sizes
        (default [512]).
      xtra_cut: cut this many more stages off the end of the body.
      custom_head: a Flax module taking the body's feature map and returning logits.
      pretrained: the body's ImageNet weights from a local file (`weights`, or the lookup
        of jaxcls.models.weights); False draws a random body on the host.
      key: PRNG key or int seed of the head's (and a random body's) initialisation.
      kernels: 'auto', 'xla' or 'cpu' (jaxcls.models.ops), resolved for `devices`.

    The head's values are those a whole-network `net.init(key)` would give (Flax derives
    each module's key from its path); the body's are never run through Flax's init.
    """
    spec = get_arch(arch)
    n_stages = len(spec.stage_sizes) - int(xtra_cut)
    if not 1 <= n_stages <= len(spec.stage_sizes):
        raise ValueError(f'xtra_cut={xtra_cut}: {spec.name} has {len(spec.stage_sizes)} stages; '
                         f'use 0 to {len(spec.stage_sizes) - 1}')
    kernels = ops.resolve(kernels, devices)
    body = ResNet(tuple(spec.stage_sizes[:n_stages]), spec.block, None, kernels=kernels)
    if custom_head is None:
        xtra = tuple(XTRA_FC if xtra_fc is None else xtra_fc)
        if ps is not None and not isinstance(ps, (list, tuple, np.ndarray)):
            ps = [float(ps)] * (len(xtra) + 1)   # fastai 0.7's ps=0.5: every layer's dropout
        head = Head(int(num_classes), xtra, None if ps is None else tuple(ps), kernels=kernels)
        desc = {'xtra_fc': list(xtra), 'ps': None if ps is None else list(ps)}
    else:
        head, desc = custom_head, {'custom_head': type(custom_head).__name__}
    net = ConvNet(body, head, pool=custom_head is None)
    key = jax.random.PRNGKey(key) if isinstance(key, int) else key
    if pretrained or weights is not None:
        from .weights import load_pretrained  # file parsing, imported when needed
        loaded = load_pretrained(spec, weights, include_fc=False)
    else:  # drawn on the host: jitting net.init for a random body compiles for seconds
        loaded = random_variables(body.stage_sizes, body.block, None, key)
    variables = _with_head(net, key, loaded)
    if variables is None:  # the file did not cover the whole body: initialise everything
        variables = xla.jit(lambda k: net.init(
            {'params': k, 'dropout': k}, jnp.zeros((1, _TRACE_SIZE, _TRACE_SIZE, 3))))(key)
        variables = {'params': variables['params'], 'batch_stats': variables['batch_stats']}
    desc.update(xtra_cut=int(xtra_cut))
    return Network(net, variables, desc)


def compute_dtype(dtype: Any) -> Any:
    """`dtype` as a jnp dtype, checked to be float32 or bfloat16 (the network's compute
    dtypes; parameters and BatchNorm statistics stay float32 either way)."""
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
        raise ValueError(f"dtype={dtype!r}; use 'float32' or 'bfloat16' (parameters and "
                         'BatchNorm statistics stay float32 either way)')
    return dt


def with_dtype(net: ConvNet, dtype: Any) -> ConvNet:
    """`net` computing in `dtype` (body, and the head when it has a dtype)."""
    head = net.head.clone(dtype=dtype) if hasattr(net.head, 'dtype') else net.head
    return net.clone(body=net.body.clone(dtype=dtype), head=head)


def _with_head(net: ConvNet, key: jax.Array, loaded: dict) -> Optional[dict]:
    """The net's variables: the body from `loaded`, a freshly initialised head. The body's
    shapes come from `variable_shapes` (untraced); only the head is initialised by Flax.
    None when `loaded` does not cover the whole body."""
    stages, block = tuple(net.body.stage_sizes), net.body.block
    shapes = variable_shapes(stages, block, None)
    if net.pool:  # concat pooling: max and mean of every channel
        feats = jax.ShapeDtypeStruct((1, 2 * out_channels(stages, block)), jnp.float32)
    else:  # a custom head sees the feature map: trace the body for its shape
        feats = jax.eval_shape(lambda k: net.init_with_output(
            {'params': k, 'dropout': k}, jnp.zeros((1, _TRACE_SIZE, _TRACE_SIZE, 3)),
            method=ConvNet.features)[0], key)
    body = {c: merge_variables(shapes[c], loaded[c]) for c in ('params', 'batch_stats')}
    if any(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree_util.tree_leaves(body)):
        return None
    head = xla.jit(lambda k: net.init({'params': k, 'dropout': k},
                                      jnp.zeros(feats.shape, feats.dtype),
                                      method=ConvNet.head_only))(key)
    return {c: {**head.get(c, {}), 'body': body.get(c, {})} for c in ('params', 'batch_stats')}
