"""The learning-rate range test's bookkeeping: when to stop and which rate to suggest.

The loop itself lives in `ConvLearner.lr_find` (it runs the learner's own jitted
step on a copy of its state); these are the pure pieces.
"""
from __future__ import annotations

import math

import numpy as np

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
