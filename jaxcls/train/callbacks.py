"""Host-side observers of training, and the Recorder behind `learn.sched`.

Callbacks never run inside `jit` and never reach into a step: they see the
learner and plain Python numbers. Any hook may return True to stop training
after the current batch (on_batch_end) or epoch (on_epoch_end). During a fit
`learner.state` is the state after the latest step and `learner.progress`
(jaxcls.train.resume.Progress) says where the fit is (step, iteration, data
epoch, batch); both are updated every step without waiting for the device.
The checkpoint callbacks (ModelCheckpoint, SaveBest) live in jaxcls.train.resume.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

# fastai 0.7 `fit`: avg_loss = 0.98 * avg_loss + 0.02 * loss, debiased by 1 - 0.98^n.
LOSS_EMA = 0.98


class Callback:
    """Base class: override the hooks you need. Returning True from a hook stops the fit.

    `on_epoch_end` gets plain numbers (epoch, trn_loss, val_loss, metrics, time). In
    `on_batch_end`, logs['loss'] is the step's loss as a device array, not yet synchronised:
    calling float() on it waits for that step, so read it only when you need it.
    """

    def on_train_begin(self, learner) -> Optional[bool]: ...
    def on_epoch_begin(self, learner, epoch: int) -> Optional[bool]: ...
    def on_batch_end(self, learner, iteration: int, logs: dict) -> Optional[bool]: ...
    def on_epoch_end(self, learner, epoch: int, logs: dict) -> Optional[bool]: ...
    def on_train_end(self, learner) -> Optional[bool]: ...
    def on_train_abort(self, learner, error: BaseException) -> None:
        """The fit is leaving through `error` (divergence, out of memory, Ctrl-C): finish
        anything in flight (ModelCheckpoint waits for its write). The error is re-raised."""


def smooth(losses: Sequence[float], beta: float = LOSS_EMA, start: tuple[float, int] = (0.0, 0)
           ) -> tuple[np.ndarray, tuple[float, int]]:
    """fastai's debiased exponential moving average of raw losses.

    Returns the smoothed values and the running (average, count) to continue from.

    >>> smooth([1.0, 1.0])[0].round(12).tolist()
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


class CSVLogger(Callback):
    """Write one CSV row per epoch (epoch, trn_loss, val_loss, metrics..., time) to `fname`.

    Rows are flushed as each epoch ends, so a killed run keeps every finished epoch.
    `append=True` continues an existing file (its header is kept).

    >>> learn.fit(1e-2, 3, callbacks=[CSVLogger('history.csv')])  # doctest: +SKIP
    """

    def __init__(self, fname: str, append: bool = False):
        self.fname, self.append = str(fname), append
        self._fields: Optional[list[str]] = None

    def on_train_begin(self, learner):
        import os
        exists = self.append and os.path.exists(self.fname) and os.path.getsize(self.fname) > 0
        if exists:
            with open(self.fname, newline='') as f:
                self._fields = f.readline().strip().split(',')
        else:
            self._fields = None
            open(self.fname, 'w').close()

    def on_epoch_end(self, learner, epoch, logs):
        import csv
        if self._fields is None:
            self._fields = list(logs)
            with open(self.fname, 'a', newline='') as f:
                csv.writer(f).writerow(self._fields)
        with open(self.fname, 'a', newline='') as f:
            csv.writer(f).writerow([_csv_value(logs.get(k, '')) for k in self._fields])


def _csv_value(v):
    return f'{v:.6g}' if isinstance(v, float) else v


class TensorBoardLogger(Callback):
    """TensorBoard event files in `logdir`: per-epoch logs and, per iteration, the loss and rate.

    Uses tensorboardX when installed, else the pure-Python writer that ships with the
    `tensorboard` package; with neither, the error says what to install. TensorFlow is
    never needed.
    """

    def __init__(self, logdir: str, every: int = 1):
        self.logdir, self.every = str(logdir), max(1, int(every))
        self._writer = _summary_writer(self.logdir)
        self._it = 0

    def on_batch_end(self, learner, iteration, logs):
        self._it += 1
        if self._it % self.every == 0:
            self._writer.add_scalar('train/loss_raw', float(logs['loss']), self._it)

    def on_epoch_end(self, learner, epoch, logs):
        for k, v in logs.items():
            if k != 'epoch' and isinstance(v, (int, float)):
                self._writer.add_scalar(f'epoch/{k}', float(v), epoch)
        rec = learner.sched
        if rec is not None and rec.lrs:
            self._writer.add_scalar('train/lr', rec.lrs[-1], self._it)
        self._writer.flush()

    def on_train_end(self, learner):
        self._writer.flush()

    def close(self):
        self._writer.close()


def _summary_writer(logdir: str):
    try:
        from tensorboardX import SummaryWriter
        return SummaryWriter(logdir)
    except ImportError:
        pass
    try:
        return _TensorBoardWriter(logdir)
    except ImportError:
        raise ImportError('TensorBoardLogger needs tensorboardX or tensorboard: '
                          'pip install tensorboardX') from None


class _TensorBoardWriter:
    """Scalars through tensorboard's own EventFileWriter (no TensorFlow)."""

    def __init__(self, logdir: str):
        import time as _time
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        self._Event, self._Summary, self._time = Event, Summary, _time
        self._w = EventFileWriter(logdir)

    def add_scalar(self, tag: str, value: float, step: int):
        s = self._Summary(value=[self._Summary.Value(tag=tag, simple_value=float(value))])
        self._w.add_event(self._Event(summary=s, wall_time=self._time.time(), step=int(step)))

    def flush(self):
        self._w.flush()

    def close(self):
        self._w.close()
