"""The interface of a kernel set: what a ResNet layer asks its backend for."""
from __future__ import annotations

from typing import Callable, NamedTuple


class Kernels(NamedTuple):
    """One backend's implementations of the layers a ResNet needs.

    Attributes:
      name: 'xla' or 'cpu'.
      conv: `(x, kernel, stride, pad, inference) -> y`, NHWC input, HWIO kernel, symmetric
        zero padding; `inference` says no backward pass will follow (it may change which
        algorithm is fastest, never the result).
      batch_norm: `(x, scale, bias, eps) -> (y, mean, var)`, float32 x normalised with its own
        per-channel statistics (biased variance); mean and var are statistics only.
      max_pool: `(x, k, stride, pad) -> y`, torch's MaxPool2d with -inf padding.
      block_output: `(x, train) -> x`, what a residual block hands to the next one.
    """

    name: str
    conv: Callable
    batch_norm: Callable
    max_pool: Callable
    block_output: Callable
