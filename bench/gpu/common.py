"""What bench_gpu.py's sections share: its two kinds of message, the arch of a run's sizes,
and the epoch timer of sections 2 and 4."""
from __future__ import annotations

import sys
import time

from gpu.sizes import Sizes


def fail(msg: str) -> None:
    """An error the user can fix: one message, exit status 2."""
    print(f'bench_gpu: error: {msg}', file=sys.stderr, flush=True)
    sys.exit(2)


def say(msg: str = '') -> None:
    """A line of the run's log, flushed (the run is long; its log is read as it goes)."""
    print(msg, flush=True)


def arch_spec(S: Sizes):
    """The ArchSpec of a run: ResNet34 for the full run, a tiny ResNet for --tiny."""
    from jaxcls.archs import ArchSpec, get_arch
    if S.stages == (3, 4, 6, 3):
        return get_arch('resnet34')
    # The tests' tiny ResNet: one basic block per stage, ResNet34's channels.
    return ArchSpec('resnet_tiny', 'basic', S.stages, 512)


def epoch_timer():
    """A Callback timing each training epoch (without the validation fit runs after it):
    from on_epoch_begin to the end of the epoch's last step, the state synchronised."""
    import jax
    from jaxcls.train.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self):
            self.times: list[float] = []
            self.t0 = 0.0

        def on_epoch_begin(self, learner, epoch):
            self.t0 = time.perf_counter()

        def on_batch_end(self, learner, iteration, logs):
            p = learner.progress
            if p.batch == p.batches:
                jax.block_until_ready(learner.state)
                self.times.append(time.perf_counter() - self.t0)
    return EpochTimer()

