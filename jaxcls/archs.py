"""Per-architecture facts in one table: block layout, input statistics, cut points, weight files.

Everything the rest of jaxcls needs to know about an architecture lives here,
so that adding one is adding one row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

# ImageNet channel statistics, in 0..1 pixel units: torchvision's (and fastai's)
# normalisation for every ImageNet-pretrained ResNet.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class WeightFile:
    """One downloadable weight file: its file name, URL and the SHA-256 prefix in its name."""

    fname: str
    url: str
    sha256_prefix: str


@dataclass(frozen=True)
class ArchSpec:
    """Facts about one architecture.

    Attributes:
      name: 'resnet34' etc.
      block: 'basic' or 'bottleneck'.
      stage_sizes: blocks per stage (torchvision's `layers`).
      num_features: channels of the body's output feature map.
      cut: number of torchvision top-level children kept in the body
        (conv1, bn1, relu, maxpool, layer1..layer4 = 8; avgpool and fc dropped).
      lr_cut: fastai 0.7's layer-group split inside the body: children[:lr_cut]
        form group 0 (stem, layer1, layer2), children[lr_cut:] group 1 (layer3,
        layer4); the head is the last group.
      mean, std: input normalisation, 0..1 pixel units.
      weights: known weight files, the default first.
    """

    name: str
    block: str
    stage_sizes: tuple[int, ...]
    num_features: int
    cut: int = 8
    lr_cut: int = 6
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights: tuple[WeightFile, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        """Plain JSON values (the weight-file list left out): what a checkpoint records."""
        return {'name': self.name, 'block': self.block, 'stage_sizes': list(self.stage_sizes),
                'num_features': self.num_features, 'cut': self.cut, 'lr_cut': self.lr_cut,
                'mean': list(self.mean), 'std': list(self.std)}

    @classmethod
    def from_json(cls, d: dict) -> 'ArchSpec':
        """The spec `to_json` wrote (a known arch gets its weight files back).

        >>> ArchSpec.from_json(ARCHS['resnet34'].to_json()) == ARCHS['resnet34']
        True
        """
        return cls(d['name'], d['block'], tuple(d['stage_sizes']), d['num_features'], d['cut'],
                   d['lr_cut'], tuple(d['mean']), tuple(d['std']),
                   ARCHS[d['name']].weights if d['name'] in ARCHS else ())

    @property
    def layer_groups(self) -> tuple[tuple[str, ...], ...]:
        """Top-level parameter names of the body in each layer group (head excluded)."""
        children = ['conv1', 'bn1', 'relu', 'maxpool'] + [
            f'layer{i + 1}' for i in range(len(self.stage_sizes))]
        return (tuple(children[:self.lr_cut]), tuple(children[self.lr_cut:self.cut]))


def _tv(fname: str) -> WeightFile:
    return WeightFile(fname, f'https://download.pytorch.org/models/{fname}',
                      fname.rsplit('-', 1)[1].split('.')[0])


ARCHS: dict[str, ArchSpec] = {
    'resnet18': ArchSpec('resnet18', 'basic', (2, 2, 2, 2), 512,
                         weights=(_tv('resnet18-f37072fd.pth'),)),
    'resnet34': ArchSpec('resnet34', 'basic', (3, 4, 6, 3), 512,
                         weights=(_tv('resnet34-b627a593.pth'),)),
    # IMAGENET1K_V1 (0676ba61) is what fastai 0.7 and the lesson used; V2 (11ad3fa6)
    # is torchvision's newer recipe, accepted by name or path.
    'resnet50': ArchSpec('resnet50', 'bottleneck', (3, 4, 6, 3), 2048,
                         weights=(_tv('resnet50-0676ba61.pth'), _tv('resnet50-11ad3fa6.pth'))),
}


def get_arch(arch: Any) -> ArchSpec:
    """The ArchSpec of `arch`: a spec, a name ('resnet34') or a constructor (`resnet34`).

    >>> get_arch('resnet34').lr_cut
    6
    """
    if isinstance(arch, ArchSpec):
        return arch
    name = arch if isinstance(arch, str) else getattr(arch, 'arch_name', None)
    if name in ARCHS:
        return ARCHS[name]
    raise ValueError(
        f'unknown arch {arch!r}; use one of {sorted(ARCHS)} '
        f'(a name string or the constructor, e.g. jaxcls.resnet34)')


def arch_constructor(name: str) -> Callable[[Callable], Callable]:
    """Decorator tagging a constructor with the arch it builds, so `get_arch(resnet34)` works."""
    def tag(fn: Callable) -> Callable:
        fn.arch_name = name
        return fn
    return tag
