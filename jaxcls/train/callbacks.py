"""Host-side observers of the training loop (jaxcls.train.loop), and the Recorder behind `learn.sched`.

Callbacks never run inside `jit` and never reach into a step: they see the loop (its
state, metrics and position) and plain Python numbers. The loop's own machinery is made
of them: `LossRecorder` (the loss EMA and `learn.sched`), `ProgressBar`, `DivergenceGuard`;
the checkpoint callbacks (ModelCheckpoint, SaveBest) live in jaxcls.train.resume, the CSV
and TensorBoard loggers in jaxcls.train.loggers, the learner's validation and epoch table
in jaxcls.train.fit.

A callback overrides loop events (`before_fit(loop)`, `before_epoch`, `before_batch`,
`after_batch`, `after_train`, `after_epoch`, `after_fit`, `on_abort(loop, error)`), or
fastai 0.7's learner hooks below, which the events call by default. Returning True from a
hook stops the fit after the current batch (`on_batch_end`) or epoch (the others).
"""
from __future__ import annotations

import math
import sys
from typing import Any, Optional, Sequence

import numpy as np

# fastai 0.7 `fit`: avg_loss = 0.98 * avg_loss + 0.02 * loss, debiased by 1 - 0.98^n.
LOSS_EMA = 0.98


class TrainingDiverged(FloatingPointError):
    """The training loss stopped being a finite number."""


class Callback:
    """Base class: override the events or hooks you need. Returning True from one stops the fit.

    During a fit `learner.state` is the state after the latest step and `learner.progress`
    is the running loop (its step, iteration, data epoch, batch); both are current at every
    hook without waiting for the device. `on_epoch_end` gets plain numbers (epoch, trn_loss,
    val_loss, metrics, time). In `on_batch_end`, logs['loss'] is the step's loss as a device
    array, not yet synchronised: calling float() on it waits for that step.

    `order` places a callback among the others (lower runs first; the loop's own run below 50).
    """

    order = 50

    # ---- loop events (jaxcls.train.loop): by default they call the learner hooks below
    def before_fit(self, loop) -> Optional[bool]:
        return self.on_train_begin(loop.learner)

    def before_epoch(self, loop) -> Optional[bool]:
        return self.on_epoch_begin(loop.learner, loop.epoch)

    def after_batch(self, loop) -> Optional[bool]:
        return self.on_batch_end(loop.learner, loop.iteration, {'loss': loop.metrics['loss']})

    def after_epoch(self, loop) -> Optional[bool]:
        return self.on_epoch_end(loop.learner, loop.logs['epoch'], loop.logs)

    def after_fit(self, loop) -> None:
        self.on_train_end(loop.learner)

    def on_abort(self, loop, error: BaseException) -> None:
        self.on_train_abort(loop.learner, error)

    # ---- fastai 0.7-style hooks on the learner
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


class LossRecorder(Callback):
    """The fit's loss EMA and `learn.sched`: raw losses are kept on the device during an epoch
    and smoothed at its end (nothing waits for a step), then recorded with the rates.

    Attributes: rec (the Recorder), ema (average, count) at the start of the unfinished
    epoch, losses / its (raw losses and schedule rows of the unfinished epoch).
    """

    order = 10

    def __init__(self, rec: Optional['Recorder'] = None, ema: tuple = (0.0, 0),
                 losses: Sequence = (), its: Sequence[int] = ()):
        self.rec = Recorder('fit') if rec is None else rec
        self.ema, self.losses, self.its = ema, list(losses), list(its)

    def before_fit(self, loop):
        loop.recorder = self

    def after_batch(self, loop):
        self.losses.append(loop.metrics['loss'])
        self.its.append(loop.last_iteration)

    def after_train(self, loop):
        import jax
        # one transfer of the epoch's device scalars (jnp.stack compiled anew per length)
        raw = np.asarray(jax.device_get(self.losses), np.float32).reshape(-1)
        smoothed, self.ema = smooth(raw, start=self.ema)
        its = np.asarray(self.its, np.int64)
        self.rec.record(loop.schedule.lr[its, -1], smoothed, loop.schedule.momentum[its, -1])
        loop.logs['trn_loss'] = float(smoothed[-1]) if len(smoothed) else math.nan
        self.losses, self.its = [], []

    def after_epoch(self, loop):
        self.rec.epochs = loop.hist




class ProgressBar(Callback):
    """A tqdm bar per epoch (`total=None`), or one bar of `total` steps over the whole fit."""

    order = 20

    def __init__(self, total: Optional[int] = None, desc: str = 'epoch'):
        self.total, self.desc, self.bar = total, desc, None

    def _open(self, total: int, desc: str):
        if total > 0:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=desc, leave=False, file=sys.stdout)

    def before_fit(self, loop):
        if self.total is not None:
            self._open(self.total, self.desc)

    def before_epoch(self, loop):
        if self.total is None:
            self._open(loop.batches - loop.batch, f'{self.desc} {loop.fit_epoch + 1}/{loop.epochs}')

    def after_batch(self, loop):
        if self.bar is not None:
            self.bar.update(1)

    def after_train(self, loop):
        if self.total is None:
            self._close()


    def after_fit(self, loop):
        self._close()

    def on_abort(self, loop, error):
        self._close()

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class DivergenceGuard(Callback):
    """Raise TrainingDiverged when a step's loss is not finite, with the fit back at its last
    good snapshot.

    Each loss is read one step late, while the next step runs, so no step waits for it. By
    then the weights are NaN, and the steps before have usually driven them to finite yet
    useless values anyway (1e14 and more, which no lower rate recovers from; the in-step
    `skip_nonfinite` guard only stopped the NaN). So the guard keeps a host copy of the state at
    the start of the fit and at the end of every epoch whose losses were all finite, and puts
    that snapshot (parameters, BatchNorm statistics, optimizer state, step, data epoch) back
    before it raises: a new fit at a sane rate trains as from there. Copying a ResNet34's
    state (170 MB with its momentum) to the host takes about 0.1 s once an epoch.
    """

    order = 0

    def __init__(self):
        self.pending = None
        self.snapshot = None   # (host copy of the state, its step, data epoch, where)

    def before_fit(self, loop):
        self.pending = None
        self._take(loop, 'the start of this fit')

    def after_batch(self, loop):
        prev, self.pending = self.pending, (loop.metrics['loss'], loop.last_iteration)
        self._check(loop, prev)

    def after_train(self, loop):
        prev, self.pending = self.pending, None
        self._check(loop, prev)

    def after_epoch(self, loop):
        self._take(loop, f'the end of epoch {loop.epoch - 1} (data epoch), the last whose '
                         'training losses were all finite')

    def _take(self, loop, where: str) -> None:
        import jax
        host = jax.tree_util.tree_map(lambda x: np.array(x, copy=True), loop.state)
        self.snapshot = (host, loop.step, loop.epoch, where)

    def _restore(self, loop) -> str:
        import jax
        host, step, epoch, where = self.snapshot
        loop.state = jax.tree_util.tree_map(lambda a, now: jax.device_put(a, now.sharding),
                                            host, loop.state)
        loop.step, loop.epoch = step, epoch
        return where

    def _check(self, loop, prev):
        if prev is None or math.isfinite(float(prev[0])):
            return
        lrs = ', '.join(f'{v:.3g}' for v in np.asarray(loop.schedule.lr[prev[1]], np.float64))
        epoch, where = loop.epoch, self._restore(loop)
        raise TrainingDiverged(
            f'the training loss became {float(prev[0])} at iteration {prev[1]} (epoch '
            f'{epoch}, learning rates [{lrs}]); the model is back at its state of {where} '
            '(weights, BatchNorm statistics and optimizer state), so it predicts as it did then '
            'and a new fit goes on from there. Run learn.lr_find() and pick a lower rate.')
