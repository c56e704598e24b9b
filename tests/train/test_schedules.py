"""Schedules against transcriptions of fastai's own stateful schedulers, step by step."""
import math

import numpy as np
import pytest

from jaxcls.train.schedules import (lr_range, one_cycle, one_cycle_momentum, sgdr, sgdr_epochs,
                                    table)

from helpers import FastaiCosAnneal


@pytest.mark.parametrize('batches,cycle_len,cycle_mult,n_cycle', [
    (7, 1, 1, 3), (25, 1, 2, 3), (40, 2, 1, 2), (3, 1, 2, 4), (100, 1, 2, 3)])
def test_sgdr_equals_fastai_cos_anneal_step_by_step(batches, cycle_len, cycle_mult, n_cycle):
    init_lrs = np.array([1e-4, 1e-3, 1e-2])
    n = sgdr_epochs(n_cycle, cycle_len, cycle_mult) * batches
    ref = FastaiCosAnneal(cycle_len * batches, cycle_mult).run(init_lrs, n)
    ours = table(sgdr(cycle_len * batches, cycle_mult), n)[:, None] * init_lrs
    np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=1e-12)


def test_sgdr_restarts_and_warm_start():
    f = table(sgdr(40, 2), 40 + 80)
    assert np.all(f[:2] == np.float32(0.01))       # 40 / 20 = 2 warm-start steps
    assert f[2] > 0.99 and f[39] < 0.01            # cosine down through cycle 1
    assert f[40] == 1.0 and f[119] < 0.001         # restart, second cycle twice as long
    assert sgdr_epochs(3, 1, 2) == 7 and sgdr_epochs(3, 2, 1) == 6


def test_sgdr_rejects_bad_arguments():
    with pytest.raises(ValueError, match='cycle_mult=0'):
        sgdr(10, 0)
    with pytest.raises(ValueError, match='nb=0'):
        sgdr(0)


def _fastai2_combined_cos(pct, start, middle, end, pos):
    """fastai 2 combine_scheds([pct, 1-pct], [SchedCos(start, middle), SchedCos(middle, end)])."""
    def sched_cos(s, e, p):
        return s + (1 + math.cos(math.pi * (1 - p))) * (e - s) / 2
    if int(pos) == 1:
        return sched_cos(middle, end, 1.0)
    pcts = [0.0, pct, 1.0]
    idx = max(i for i in range(2) if pos >= pcts[i])
    actual = (pos - pcts[idx]) / (pcts[idx + 1] - pcts[idx])
    return sched_cos(*((start, middle) if idx == 0 else (middle, end)), actual)


def test_one_cycle_equals_fastai2():
    total = 137
    ours = table(one_cycle(total, 0.1), total + 1)
    ref = [_fastai2_combined_cos(0.25, 0.1 / 25, 0.1, 0.1 / 1e5, t / total) for t in range(total + 1)]
    # float32 schedule vs float64 reference: within float32 resolution of lr_max.
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7 * 0.1)
    moms = table(one_cycle_momentum(total), total)
    ref_m = [_fastai2_combined_cos(0.25, 0.95, 0.85, 0.95, t / total) for t in range(total)]
    np.testing.assert_allclose(moms, ref_m, rtol=1e-6)
    assert ours.argmax() == round(0.25 * total)


def test_lr_range_exponential_and_linear():
    exp = table(lr_range(1e-5, 10, 100), 101)
    np.testing.assert_allclose(exp, 1e-5 * (1e6) ** (np.arange(101) / 100), rtol=1e-5)
    lin = table(lr_range(1e-3, 1.0, 10, linear=True), 11)
    np.testing.assert_allclose(lin, np.linspace(1e-3, 1.0, 11), rtol=1e-5)
    with pytest.raises(ValueError, match='start_lr=1.0, end_lr=0.1'):
        lr_range(1.0, 0.1, 10)
