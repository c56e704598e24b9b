"""The learning-rate range test: the training loop (jaxcls.train.loop) with rising rates, on a
copy of the learner's state, stopped by the `LRFinder` callback; and which rate to suggest.

`run(learn, ...)` is `ConvLearner.lr_find`: the learner's own compiled train step, the
schedule `schedules.lr_find_schedule`, fastai 0.7's stop rule. Afterwards the learner is
exactly as before.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from .callbacks import Callback, ProgressBar, Recorder, smooth
from .optim import MOMENTUM, per_group

# fastai 0.7 LR_Finder: stop once the smoothed loss exceeds 4x the best seen, and only
# start tracking the best after 10 iterations (the first losses are noisy).
STOP_FACTOR = 4.0
BEST_AFTER = 10


def should_stop(loss: float, best: float) -> bool:
    """True when the smoothed loss diverged: not finite, or above 4x the best so far."""
    return not math.isfinite(loss) or loss > STOP_FACTOR * best


def suggestions(lrs, losses) -> dict[str, float]:
    """fastai 2's suggested rates from a range test.

    Returns {'valley': ..., 'steep': ..., 'minimum': ...}: the rate two thirds along
    the longest descending stretch (fastai 2's default), the rate of steepest
    descent (per log-lr), and a tenth of the rate at the minimum loss. The first
    tenth and the last 5 points are left out, as fastai 2 does, when there are
    enough of them.

    >>> lrs = np.logspace(-5, 1, 60); losses = np.r_[np.linspace(2, 0.5, 45), np.linspace(0.6, 5, 15)]
    >>> s = suggestions(lrs, losses); bool(s['valley'] < lrs[44] and s['minimum'] == lrs[44] / 10)
    True
    """
    lrs, losses = np.asarray(lrs, np.float64), np.asarray(losses, np.float64)
    ok = np.isfinite(losses)
    lrs, losses = lrs[ok], losses[ok]
    if len(lrs) < 2:
        raise ValueError(f'lr_find recorded {len(lrs)} finite losses; it needs at least 2. Use more '
                         'batches (num_it) or a lower start_lr.')
    skip, end = len(lrs) // 10, 5
    if len(lrs) - skip - end >= 4:
        lrs, losses = lrs[skip:len(lrs) - end], losses[skip:len(losses) - end]
    grads = np.diff(losses) / np.diff(np.log(lrs))
    return {'valley': _valley(lrs, losses), 'steep': float(lrs[int(np.argmin(grads))]),
            'minimum': float(lrs[int(np.argmin(losses))] / 10)}


def _valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    # Longest decreasing subsequence of the losses; pick the point 2/3 of the way along it.
    n = len(losses)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return float(lrs[max_start + int(sections) + int(sections / 2)])


class LRFinder(Callback):
    """Records each step's smoothed loss against its rate (`learn.sched`), and stops the test
    when the loss diverges (`should_stop`): the loss is read every step."""

    order = 10

    def __init__(self, stop_div: bool = True):
        self.rec, self.stop_div = Recorder('lr_find'), stop_div
        self.best, self.ema = math.inf, (0.0, 0)

    def after_batch(self, loop):
        sm, self.ema = smooth([float(loop.metrics['loss'])], start=self.ema)
        loss = float(sm[0])
        self.rec.record([loop.schedule.lr[loop.last_iteration, -1]], [loss], [MOMENTUM])
        stop = self.stop_div and should_stop(loss, self.best)
        if loss < self.best and loop.iteration > BEST_AFTER:
            self.best = loss
        return stop


def run(learn, start_lr: Any = 1e-5, end_lr: float = 10, wds: Any = None, linear: bool = False,
        num_it: Optional[int] = None, stop_div: bool = True) -> dict[str, float]:
    """`ConvLearner.lr_find`: rates from start_lr to end_lr over one epoch (or num_it batches)
    on a copy of the learner's state; returns the suggestions and leaves them in learn.sched."""
    import jax
    from . import memory as mem
    from .loop import Loop
    from .schedules import lr_find_schedule
    mem.check_budget(learn, 'in lr_find')
    start = per_group(start_lr, learn.n_groups, 'start_lr')
    nb = int(num_it or len(learn._train_loader(learn.epoch)))
    table = lr_find_schedule(start, end_lr, nb, linear,
                             per_group(0.0 if wds is None else wds, learn.n_groups, 'wds'))
    # A copy: the step donates its input, and the learner's own arrays stay as they are.
    state = learn.steps.fit_view(learn._place(jax.device_put(learn.steps.fresh_state(), may_alias=False)))
    finder = LRFinder(stop_div)
    per_epoch = len(learn._train_loader(learn.epoch))
    callbacks = [finder] + ([] if learn.quiet else [ProgressBar(nb, 'lr_find')])
    loop = Loop(learn.steps.get('train'), state, learn._batches, table, per_epoch, callbacks,
                epoch=learn.epoch)
    with mem.guard(learn, 'in lr_find'):
        loop.fit(math.ceil(nb / max(per_epoch, 1)))
    rec = finder.rec
    finite = [(lr, loss) for lr, loss in zip(rec.lrs, rec.losses) if math.isfinite(loss)]
    rec.suggestions = suggestions(*zip(*finite)) if len(finite) >= 2 else {}
    learn.sched = rec
    if rec.suggestions:
        learn._print('lr_find: suggested learning rate {valley:.2e} (valley), steepest '
                     '{steep:.2e}, minimum/10 {minimum:.2e}; see learn.sched.plot()'
                     .format(**rec.suggestions))
    return rec.suggestions
