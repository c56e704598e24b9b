"""The lesson's `arch` values: `resnet18`, `resnet34`, `resnet50` build a model and its variables."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxcls.archs import arch_constructor, get_arch
from . import ops
from .resnet import ResNet, random_variables


class Model(NamedTuple):
    """A Flax module and its variables ({'params', 'batch_stats'}); unpacks as `module, variables`."""

    module: ResNet
    variables: dict


def build(arch: Any, num_classes: Optional[int] = 1000, pretrained: bool = False,
          weights: Any = None, dtype: Any = jnp.float32, key: Optional[jax.Array] = None,
          kernels: str = 'auto') -> Model:
    """Build `arch` with random or pretrained variables.

    Args:
      arch: 'resnet34', a constructor such as `resnet34`, or an ArchSpec.
      num_classes: size of the final layer; None gives the body only (the feature map
        before pooling), as used for transfer learning.
      pretrained: load ImageNet weights through `jaxcls.models.weights` (a local file
        is looked up, then downloaded; offline, the error says where to put it).
      weights: explicit weight file path (implies pretrained).
      dtype: computation dtype, e.g. jnp.bfloat16; parameters are float32.
      key: PRNG key for the random initialisation (default PRNGKey(0)); see
        `resnet.random_variables` for the distributions (torchvision's).
      kernels: 'auto' (default: 'cpu' on a single CPU device, else 'xla'), 'xla' or 'cpu';
        see jaxcls.models.ops. Fixed in the returned module.
    """
    spec = get_arch(arch)
    module = ResNet(spec.stage_sizes, spec.block, num_classes, dtype, ops.resolve(kernels))
    variables = random_variables(spec.stage_sizes, spec.block, num_classes, key)
    if pretrained or weights is not None:
        from .weights import load_pretrained  # numpy-only file parsing, imported when needed
        loaded = load_pretrained(spec, weights, include_fc=num_classes == 1000)
        variables = merge_variables(variables, loaded)
    return Model(module, variables)


def merge_variables(base: dict, loaded: dict) -> dict:
    """`base` with every array that `loaded` has at the same path replaced (as jnp arrays)."""
    def merge(b, l):
        if isinstance(b, dict):
            return {k: merge(v, l[k]) if k in l else v for k, v in b.items()}
        return jnp.asarray(l, dtype=b.dtype)
    return {k: merge(base[k], loaded[k]) if k in loaded else base[k] for k in base}


@arch_constructor('resnet18')
def resnet18(num_classes: Optional[int] = 1000, pretrained: bool = False, **kwargs) -> Model:
    """ResNet18 (torchvision layout). `module, variables = resnet18(num_classes=10)`."""
    return build('resnet18', num_classes, pretrained, **kwargs)


@arch_constructor('resnet34')
def resnet34(num_classes: Optional[int] = 1000, pretrained: bool = False, **kwargs) -> Model:
    """ResNet34 (torchvision layout), the lesson's arch. `module, variables = resnet34(num_classes=2)`."""
    return build('resnet34', num_classes, pretrained, **kwargs)


@arch_constructor('resnet50')
def resnet50(num_classes: Optional[int] = 1000, pretrained: bool = False, **kwargs) -> Model:
    """ResNet50 v1.5 (stride in the 3x3 conv, torchvision layout)."""
    return build('resnet50', num_classes, pretrained, **kwargs)
