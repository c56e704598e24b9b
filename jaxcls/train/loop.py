"""The training loop, in fastai 2's shape: fit -> epoch -> batch, each a few lines, with events.

    loop = Loop(step, state, batch_fn, schedule, batches_per_epoch, callbacks=[...])
    state = loop.fit(epochs)

`step` is a jitted `train_step(state, batch, hparams) -> (state, metrics)`
(`jaxcls.train.steps.make_train_step`); `batch_fn(epoch, start)` yields the batches of a data
epoch from batch `start` on (`DataLoader.iter_epoch`); `schedule` is an `HParams` table, one
row per iteration (`schedules.hparams_table`). Everything else -- the progress bar, the
loss EMA and `learn.sched`, the divergence guard, validation and the epoch table, resume
checkpoints, CSV and TensorBoard logs, lr_find's stop rule -- is a callback on these events:

    before_fit
      before_epoch
        before_batch, (the step), after_batch      once per batch
      after_train                                  the epoch's batches are done
      (the position moves to the next epoch)
      after_epoch                                  validation, logs, checkpoints
    after_fit                                      (on_abort(error) instead, on any exception)

Callbacks run in `order` (lower first) and see the loop: `loop.state` (after the latest
step), `loop.metrics` (that step's, as device arrays: reading one waits for the step),
`loop.iteration` (steps of this fit done), `loop.step` (the global optimizer step, a host
int), `loop.epoch` (the data epoch: it fixes the batch order), `loop.fit_epoch` (epochs of
this fit done), `loop.batch` (batches of the current epoch done, of `loop.batches`),
`loop.logs` (the epoch's logs, filled in by callbacks), `loop.hist` (this fit's epoch logs),
`loop.resumed` (the fit continues from a checkpoint, inside it), `loop.learner` (the
ConvLearner running it, or None). A callback sets `loop.stop = True` to end the fit after
the current epoch, `loop.stop_epoch = True` to end the epoch (and the fit) after the
current batch.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from .optim import HParams

EVENTS = ('before_fit', 'before_epoch', 'before_batch', 'after_batch', 'after_train',
          'after_epoch', 'after_fit')


def hparams_at(table: HParams, i: int) -> HParams:
    """Row i of an HParams table (arrays with a leading iteration axis)."""
    return HParams(*(np.asarray(a[i], np.float32) for a in table))


class Loop:
    """One fit: epochs of batches through a step, events for the callbacks (see the module doc).

    Args:
      step: `(state, batch, hparams) -> (state, metrics)`, jitted, state donated.
      state: the state the first step takes (a TrainState).
      batch_fn: `(epoch, start) -> iterable of batches` of data epoch `epoch` from batch `start`.
      schedule: HParams whose arrays have one row per iteration of the fit; the last row is
        reused past the end.
      batches: batches per epoch.
      callbacks: objects with any of the event methods (`jaxcls.train.callbacks.Callback`).
      epoch: the data epoch the fit starts at.
      step_count: the global step of `state` as a host int (default: read once from state).
      learner: the ConvLearner this loop trains for, handed to callbacks (or None).
      desc: the fit's description (what a checkpoint records about how it was called).
    """

    def __init__(self, step: Callable, state: Any, batch_fn: Callable[[int, int], Iterable],
                 schedule: HParams, batches: int, callbacks: Sequence[Any] = (), *,
                 epoch: int = 0, step_count: Optional[int] = None, learner: Any = None,
                 desc: Optional[dict] = None):
        self.step_fn, self.state, self.batch_fn, self.schedule = step, state, batch_fn, schedule
        self.batches, self.learner, self.desc = int(batches), learner, dict(desc or {})
        self.callbacks = sorted(callbacks, key=lambda cb: getattr(cb, 'order', 50))
        self.n_iterations = len(schedule.lr)
        self.step = int(state.step) if step_count is None else int(step_count)
        self.epoch, self.fit_epoch, self.batch, self.iteration = int(epoch), 0, 0, 0
        self.epochs, self.metrics, self.logs, self.hist = 0, None, {}, []
        self.stop = self.stop_epoch = self.done = self.resumed = False

    def __call__(self, event: str) -> None:
        for cb in self.callbacks:
            hook = getattr(cb, event, None)
            if hook is not None and hook(self) and event != 'after_fit':
                self.stop = True
                if event == 'after_batch':
                    self.stop_epoch = True

    @property
    def finished(self) -> bool:
        """Every iteration of the schedule has run."""
        return self.iteration >= self.n_iterations

    def fit(self, epochs: int, *, fit_epoch: int = 0, batch: int = 0, iteration: int = 0,
            hist: Sequence[dict] = ()) -> Any:
        """Run epochs `fit_epoch`.. of `epochs` (a resumed fit starts inside one, at `batch` and
        `iteration`); returns the last state."""
        self.epochs, self.fit_epoch, self.batch, self.iteration = int(epochs), fit_epoch, batch, iteration
        self.hist = list(hist)
        self.resumed = bool(fit_epoch or batch or iteration or self.hist)
        try:
            self('before_fit')
            while self.fit_epoch < self.epochs and not self.stop and not self.finished:
                self.one_epoch()
            self.done = True
            self('after_fit')
        except BaseException as err:
            for cb in self.callbacks:
                if hasattr(cb, 'on_abort'):
                    cb.on_abort(self, err)
            raise
        return self.state

    def one_epoch(self) -> None:
        self.logs = {}
        self('before_epoch')
        for batch in self.batch_fn(self.epoch, self.batch):
            self.one_batch(batch)
            if self.stop_epoch or self.finished:
                break
        self('after_train')
        self.fit_epoch, self.epoch, self.batch = self.fit_epoch + 1, self.epoch + 1, 0
        self.done = self.fit_epoch == self.epochs
        self.logs['epoch'] = self.epoch - 1
        self('after_epoch')

    def one_batch(self, batch: Any) -> None:
        self('before_batch')
        i = min(self.iteration, self.n_iterations - 1)
        self.state, self.metrics = self.step_fn(self.state, batch, hparams_at(self.schedule, i))
        self.iteration, self.step, self.batch = self.iteration + 1, self.step + 1, self.batch + 1
        self('after_batch')

    @property
    def last_iteration(self) -> int:
        """The schedule row the latest step used."""
        return min(self.iteration, self.n_iterations) - 1
