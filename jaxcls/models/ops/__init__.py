"""The ResNet's backend kernels, behind one seam chosen when the model is built.

A ResNet layer asks its `Kernels` for four things: a convolution, BatchNorm's
training-mode normalisation (with the batch statistics), max pooling, and what a block does
with its output (the residual stream). Two sets exist; both compute the same function, to
float rounding (tests/models/test_ops.py compares them directly):

* 'xla' (`jaxcls.models.ops.plain`): the plain ops as XLA compiles them on any backend:
  `lax.conv_general_dilated`, mean/variance reductions, a reduce-window max pool. Used on
  GPUs, TPUs and multi-device meshes.
* 'cpu' (`jaxcls.models.ops.cpu`): rewrites that a single CPU device runs faster: Winograd
  F(2x2, 3x3) for 3x3 stride-1 convolutions on small maps, matmuls per kernel tap on tiny
  maps, BatchNorm's channel sums as GEMMs, max pooling as the maximum of strided slices, and
  the residual stream stored once for the backward pass.

`resolve('auto')` picks 'cpu' on a single CPU device and 'xla' elsewhere. The choice is a
field of the Flax modules (`ResNet(..., kernels='cpu')`), fixed when the model is built, never
a global switch: two models with different kernels can live in one process.

    >>> resolve('xla'), get('cpu').name
    ('xla', 'cpu')
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax

from .kernels import Kernels

__all__ = ['KERNELS', 'Kernels', 'get', 'resolve']

KERNELS = ('xla', 'cpu')


def resolve(kernels: str = 'auto', devices: Optional[Sequence[jax.Device]] = None) -> str:
    """The kernel set 'auto' means for `devices` (default: all devices): 'cpu' when that is one
    CPU device, else 'xla'. 'xla' and 'cpu' are returned as they are.

    Raises ValueError for any other value, naming the choices.
    """
    if kernels in KERNELS:
        return kernels
    if kernels != 'auto':
        raise ValueError(f"kernels={kernels!r}; use 'auto' (the fastest for this machine), 'xla' "
                         "(XLA's own ops, any backend) or 'cpu' (rewrites for one CPU device)")
    devices = list(jax.devices() if devices is None else devices)
    return 'cpu' if len(devices) == 1 and devices[0].platform == 'cpu' else 'xla'


def get(name: str) -> Kernels:
    """The Kernels of 'xla' or 'cpu' (resolve 'auto' first, when the model is built)."""
    if name == 'xla':
        from . import plain
        return plain.KERNELS
    if name == 'cpu':
        from . import cpu
        return cpu.KERNELS
    raise ValueError(f"kernels={name!r} in a model; build it with kernels='xla' or 'cpu' "
                     "(jaxcls.models.ops.resolve('auto') picks one for this machine)")
