"""Host-side observers of training, and the Recorder behind `learn.sched`.

Callbacks never run inside `jit` and never reach into a step: they see the
learner and plain Python numbers. Any hook may return True to stop training
after the current batch (on_batch_end) or epoch (on_epoch_end).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

# fastai 0.7 `fit`: avg_loss = 0.98 * avg_loss + 0.02 * loss, debiased by 1 - 0.98^n.
LOSS_EMA = 0.98


class Callback:
    """Base class: override the hooks you need. `logs` is a dict of plain numbers."""

    def on_train_begin(self, learner) -> Optional[bool]: ...
    def on_epoch_begin(self, learner, epoch: int) -> Optional[bool]: ...
    def on_batch_end(self, learner, iteration: int, logs: dict) -> Optional[bool]: ...
    def on_epoch_end(self, learner, epoch: int, logs: dict) -> Optional[bool]: ...
    def on_train_end(self, learner) -> Optional[bool]: ...


def smooth(losses: Sequence[float], beta: float = LOSS_EMA, start: tuple[float, int] = (0.0, 0)
           ) -> tuple[np.ndarray, tuple[float, int]]:
    """fastai's debiased exponential moving average of raw losses.

    Returns the smoothed values and the running (average, count) to continue from.

    >>> smooth([1.0, 1.0])[0].tolist()
    [1.0, 1.0]
    """
    avg, n = start
    out = np.empty(len(losses), np.float64)
    for i, loss in enumerate(losses):
        n += 1
        avg = beta * avg + (1 - beta) * float(loss)
        out[i] = avg / (1 - beta ** n)
    return out, (avg, n)


class Recorder:
    """What the last fit or lr_find did, per iteration: rates and smoothed losses.

    `learn.sched` in fastai 0.7. `plot_lr()`, `plot()` and `plot_loss()` draw it
    (matplotlib, through jaxcls.plots) and return the figure.

    Attributes:
      lrs: learning rate of the last layer group at each iteration.
      losses: smoothed (EMA 0.98, debiased) training loss at each iteration.
      moms: momentum at each iteration (one-cycle varies it).
      suggestions: lr_find's suggested rates ({} after a fit).
      epochs: per-epoch logs (dicts) of a fit.
    """

    def __init__(self, kind: str = 'fit'):
        self.kind = kind
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.moms: list[float] = []
        self.iterations: list[int] = []
        self.epochs: list[dict] = []
        self.suggestions: dict[str, float] = {}

    def record(self, lrs: Sequence[float], losses: Sequence[float], moms: Sequence[float]):
        start = len(self.iterations)
        self.lrs += [float(v) for v in lrs]
        self.losses += [float(v) for v in losses]
        self.moms += [float(v) for v in moms]
        self.iterations += list(range(start, start + len(losses)))

    def plot_lr(self, show_moms: bool = False, fname: Any = None):
        """Learning rate (and momentum) against iteration."""
        from jaxcls import plots
        return plots.plot_lr(self, show_moms=show_moms, fname=fname)

    def plot(self, n_skip: int = 10, n_skip_end: int = 5, fname: Any = None):
        """Smoothed loss against learning rate on a log axis, lr_find's suggestion marked."""
        from jaxcls import plots
        return plots.plot_lr_find(self, n_skip=n_skip, n_skip_end=n_skip_end, fname=fname)

    def plot_loss(self, n_skip: int = 10, n_skip_end: int = 5, fname: Any = None):
        """Smoothed loss against iteration."""
        from jaxcls import plots
        return plots.plot_loss(self, n_skip=n_skip, n_skip_end=n_skip_end, fname=fname)

    def __repr__(self) -> str:
        return f'Recorder({self.kind}, {len(self.losses)} iterations)'
