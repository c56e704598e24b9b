"""Learning-rate schedules as optax-style pure functions of the step: SGDR, one-cycle, LR range.

Each returns `schedule(step) -> value` built from jnp, so it runs under `jit` or is
evaluated once per fit into a table. SGDR and the range test return a *factor*
that multiplies the per-layer-group rates, as fastai's schedulers did.

`fit_schedule`, `one_cycle_schedule` and `lr_find_schedule` lay a whole fit out as an
`HParams` table (one row of per-group rate, momentum and weight decay per iteration): the
tables `learn.fit`, `fit_one_cycle` and `lr_find` run, for a loop of your own.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from .optim import MOMENTUM as MOMENTUM_DEFAULT, HParams

Schedule = Callable[[jnp.ndarray], jnp.ndarray]

# fastai 0.7 CosAnneal: the first 1/20 of the first cycle runs at lr/100 (a warm start).
WARMUP_FRACTION = 1 / 20
WARMUP_FACTOR = 1 / 100
# fastai 2 fit_one_cycle defaults.
PCT_START, DIV, DIV_FINAL = 0.25, 25.0, 1e5
MOMS = (0.95, 0.85, 0.95)


def sgdr(nb: int, cycle_mult: int = 1, n_cycle: int = 64) -> Schedule:
    """fastai 0.7's CosAnneal (SGDR) as a factor of the initial rates.

    Args:
      nb: iterations in the first cycle (`cycle_len * batches per epoch`).
      cycle_mult: each cycle is this many times longer than the one before.
      n_cycle: cycles to lay out (steps beyond them stay in the last one).

    Step t in cycle k at position p of a cycle of length L gets
    `(cos(pi * p / L) + 1) / 2`, except t < nb / 20, which gets 1/100.

    >>> [round(float(sgdr(4)(t)), 3) for t in range(5)]
    [0.01, 0.854, 0.5, 0.146, 1.0]
    """
    if nb < 1:
        raise ValueError(f'nb={nb}: a cycle needs at least one iteration')
    if cycle_mult < 1:
        raise ValueError(f'cycle_mult={cycle_mult}: cycles cannot shrink; use 1 or more')
    lengths = [nb * cycle_mult ** k for k in range(n_cycle)]
    # Stop laying out cycles once they pass any step count a run could reach.
    while len(lengths) > 1 and sum(lengths[:-1]) > 2 ** 31:
        lengths.pop()
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.float64)
    starts_j, lengths_j = jnp.asarray(starts, jnp.float32), jnp.asarray(lengths, jnp.float32)

    def schedule(step):
        t = jnp.asarray(step, jnp.float32)
        k = jnp.clip(jnp.searchsorted(starts_j, t, side='right') - 1, 0, len(lengths) - 1)
        pos, length = t - starts_j[k], lengths_j[k]
        # (cos(pi p / L) + 1) / 2 = cos^2(pi p / 2L) = sin^2(pi (L - p) / 2L): taking the
        # sine near the cycle's end keeps float32's full relative precision there.
        half = jnp.where(pos < length / 2, jnp.cos(jnp.pi * pos / (2 * length)),
                         jnp.sin(jnp.pi * (length - pos) / (2 * length)))
        cos = half * half
        return jnp.where(t < nb * WARMUP_FRACTION, WARMUP_FACTOR, cos)

    return schedule


def sgdr_epochs(n_cycle: int, cycle_len: int, cycle_mult: int = 1) -> int:
    """Epochs that `fit(lr, n_cycle, cycle_len, cycle_mult)` runs: the geometric sum."""
    return sum(cycle_len * cycle_mult ** i for i in range(n_cycle))


def cos_between(start: float, end: float, pos):
    """fastai 2 SchedCos: from start (pos 0) to end (pos 1) along half a cosine.

    start + (1 + cos(pi (1 - pos))) (end - start) / 2, written as a sum of two
    non-negative terms so that no cancellation loses precision near either end.
    """
    a = jnp.pi * pos / 2
    return start * jnp.cos(a) ** 2 + end * jnp.sin(a) ** 2


def one_cycle(total_steps: int, lr_max: float = 1.0, pct_start: float = PCT_START,
              div: float = DIV, div_final: float = DIV_FINAL) -> Schedule:
    """fastai 2's fit_one_cycle rate: cosine up from lr_max/div to lr_max over pct_start
    of the steps, then cosine down to lr_max/div_final. With lr_max=1 it is a factor.

    >>> s = one_cycle(100, 1.0)
    >>> round(float(s(0)), 6), float(s(25)), round(float(s(100)), 8)
    (0.04, 1.0, 1e-05)
    """
    return _combined_cos(total_steps, pct_start, lr_max / div, lr_max, lr_max / div_final)


def one_cycle_momentum(total_steps: int, pct_start: float = PCT_START,
                       moms: tuple[float, float, float] = MOMS) -> Schedule:
    """fastai 2's momentum during one-cycle: 0.95 -> 0.85 -> 0.95, mirroring the rate."""
    return _combined_cos(total_steps, pct_start, *moms)


def _combined_cos(total_steps, pct, start, middle, end) -> Schedule:
    if not 0 < pct < 1:
        raise ValueError(f'pct_start={pct} must be between 0 and 1 (fastai uses 0.25)')
    if total_steps < 1:
        raise ValueError(f'total_steps={total_steps}: need at least one step')

    def schedule(step):
        pos = jnp.asarray(step, jnp.float32) / total_steps
        up = cos_between(start, middle, pos / pct)
        down = cos_between(middle, end, (pos - pct) / (1 - pct))
        return jnp.where(pos < pct, up, jnp.where(pos >= 1, end, down))

    return schedule


def lr_range(start_lr: float, end_lr: float, num_it: int, linear: bool = False) -> Schedule:
    """The LR range test's rate at step k: exponential `start * (end/start)^(k/num_it)`
    (fastai 0.7's LR_Finder) or linear `start + (end - start) * k / num_it` (fastai 2).

    >>> round(float(lr_range(1e-5, 10, 100)(50)), 7)
    0.01
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f'start_lr={start_lr}, end_lr={end_lr}: need 0 < start_lr < end_lr')
    if num_it < 1:
        raise ValueError(f'num_it={num_it}: need at least one iteration')

    def schedule(step):
        pos = jnp.asarray(step, jnp.float32) / num_it
        if linear:
            return start_lr + (end_lr - start_lr) * pos
        return start_lr * (end_lr / start_lr) ** pos

    return schedule


def table(schedule: Schedule, n: int) -> np.ndarray:
    """The schedule's first n values as a float32 numpy array, evaluated once by one jitted
    program. (Run op by op, the dozen jnp operations of a schedule each compiled on their
    own for every new n: 0.9 s for a fit's three tables, against 0.2 s jitted.)"""
    import jax
    return np.asarray(jax.jit(jax.vmap(schedule))(jnp.arange(n)), np.float32)


def hparams_table(lr: np.ndarray, momentum=MOMENTUM_DEFAULT, weight_decay=0.0) -> HParams:
    """An HParams table, one row per iteration, one column per layer group (float32): what
    `jaxcls.train.loop.Loop` feeds a train step row by row.

    Args:
      lr: (iterations, groups) rates.
      momentum: one value, one per iteration (iterations,), or (iterations, groups).
      weight_decay: one value, or one per group (groups,).

    >>> hparams_table(np.ones((4, 3)) * 1e-2, weight_decay=[0, 0, 1e-4]).weight_decay.shape
    (4, 3)
    """
    lr = np.asarray(lr, np.float32)
    if lr.ndim != 2:
        raise ValueError(f'lr must be (iterations, layer groups); got shape {lr.shape}')
    mom = np.asarray(momentum, np.float32)
    mom = mom[:, None] if mom.ndim == 1 else mom
    wd = np.asarray(weight_decay, np.float32)
    return HParams(lr, np.broadcast_to(mom, lr.shape).copy(), np.broadcast_to(wd, lr.shape).copy())


def fit_schedule(lrs, n_cycle: int, batches_per_epoch: int, cycle_len: int | None = None,
                 cycle_mult: int = 1, wds=0.0) -> tuple[int, HParams]:
    """(epochs, HParams table) of fastai 0.7's `fit(lrs, n_cycle, wds, cycle_len, cycle_mult)`:
    constant rates for n_cycle epochs, or SGDR cycles of cycle_len epochs (`sgdr`), momentum
    0.9 throughout. `lrs` and `wds` hold one value per layer group.

    >>> epochs, hp = fit_schedule([1e-4, 1e-3, 1e-2], 3, 5, cycle_len=1, cycle_mult=2)
    >>> epochs, hp.lr.shape
    (7, (35, 3))
    """
    lrs = np.atleast_1d(np.asarray(lrs, np.float64))
    nb = int(batches_per_epoch)
    if cycle_len:
        epochs = sgdr_epochs(n_cycle, cycle_len, cycle_mult)
        factor = table(sgdr(int(cycle_len) * nb, int(cycle_mult)), epochs * nb)
    else:
        epochs = int(n_cycle)
        factor = np.ones(epochs * nb, np.float32)
    return epochs, hparams_table(factor[:, None].astype(np.float64) * lrs[None, :],
                                 MOMENTUM_DEFAULT, np.broadcast_to(np.asarray(wds, np.float32), lrs.shape))


def one_cycle_schedule(epochs: int, batches_per_epoch: int, lr_max, pct_start: float = PCT_START,
                       div: float = DIV, div_final: float = DIV_FINAL, moms=MOMS,
                       wds=0.0) -> HParams:
    """The HParams table of fastai 2's `fit_one_cycle(epochs, lr_max, ...)`: `one_cycle` rates
    per layer group and `one_cycle_momentum`."""
    lr_max = np.atleast_1d(np.asarray(lr_max, np.float64))
    total = int(epochs) * int(batches_per_epoch)
    f = table(one_cycle(total, 1.0, pct_start, div, div_final), total)
    m = table(one_cycle_momentum(total, pct_start, moms), total)
    return hparams_table(f[:, None].astype(np.float64) * lr_max[None, :], m,
                         np.broadcast_to(np.asarray(wds, np.float32), lr_max.shape))


def lr_find_schedule(start_lr, end_lr: float, num_it: int, linear: bool = False,
                     wds=0.0) -> HParams:
    """The HParams table of the LR range test: every group's rate grows from its start_lr by
    the same factor, the last group's reaching end_lr after num_it iterations."""
    start = np.atleast_1d(np.asarray(start_lr, np.float64))
    factor = table(lr_range(1.0, end_lr / start[-1], num_it, linear), num_it)
    return hparams_table(factor[:, None].astype(np.float64) * start[None, :], MOMENTUM_DEFAULT,
                         np.broadcast_to(np.asarray(wds, np.float32), start.shape))
