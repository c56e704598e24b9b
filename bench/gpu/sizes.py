"""Everything that differs between bench_gpu.sh's full run and --tiny; the code path is the same.

Why each full-run size is what it is, with the numbers behind it: bench/README.md, "bench_gpu.sh:
its sizes".
"""
from __future__ import annotations

import dataclasses

# The full run must fit a device session: 8 minutes on one H100, all compiles included.
FULL_BUDGET_S = 480


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The sizes of one kind of run."""

    name: str
    stages: tuple[int, ...]  # blocks per ResNet stage: (3, 4, 6, 3) is ResNet34
    sz: int                  # training image size
    cache: int               # side of the uint8 cache images of section 2 and 3
    bs: int                  # training batch, sections 1 and 2 (and torch's)
    warmup: int              # untimed steps after the first (compiling) one
    steps: int               # steps per timed repeat
    repeats: int             # timed repeats; the median is reported
    aug_batches: int         # training batches per epoch in section 2
    aug_epochs: int          # timed epochs in section 2 (after one warm-up epoch)
    fwd_bs: int              # batch of the frozen-body forward, section 3
    fwd_steps: int           # forward batches per timed repeat
    n_jpegs: int             # images in the lesson's folder tree, section 4
    jpeg_wh: tuple[int, int]
    fit_epochs: int          # learn.fit(0.01, fit_epochs)
    torch_compile: bool      # default of --torch-compile


FULL = Sizes(
    name='full',
    stages=(3, 4, 6, 3), sz=224,
    # ImageNet's 'resize to 256, crop 224'; from_arrays keeps squares in [sz, round(1.15 sz)].
    cache=256,
    bs=256,
    # Autotuning settles in 3 steps; 20 steps at the target are a ~0.6 s repeat (jitter < 1 %).
    warmup=3, steps=20, repeats=5,
    # A ~0.7 s epoch at the target, so the loader's unoverlapped first batch costs < 4 %.
    aug_batches=24, aug_epochs=3,
    # Fills an H100 in inference, and leaves room for torch (200 MB of uint8 input).
    fwd_bs=1024, fwd_steps=10,
    # The brief's dataset: 20,000 JPEGs of 500x375 (the dogs-vs-cats photos' usual size).
    n_jpegs=20000, jpeg_wh=(500, 375),
    fit_epochs=3,
    torch_compile=True,
)

TINY = Sizes(
    name='tiny',
    stages=(1, 1, 1, 1), sz=32,
    cache=36,  # between sz=32 and round(1.15 * 32) = 37: from_arrays keeps it as is
    bs=8,
    warmup=1, steps=2, repeats=2,
    aug_batches=4, aug_epochs=2,
    fwd_bs=32, fwd_steps=2,
    n_jpegs=200, jpeg_wh=(50, 38),
    fit_epochs=1,
    # torch.compile of even this tiny ResNet takes ~40 s on a 2-core CPU: eager by default.
    torch_compile=False,
)
