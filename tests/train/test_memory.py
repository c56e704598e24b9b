"""The memory guard: bs='auto' picks the largest batch whose compiled training step fits a
budget (XLA's memory analysis, before anything of that size is allocated), and an
out-of-memory error during training names the batch size and the smaller one to use."""
import jax
import numpy as np
import pytest

from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model
from jaxcls.train.memory import (BatchSizeChoice, OutOfDeviceMemory, choose_batch_size,
                                 device_budget)

from helpers import CACHE, TINY, cache_use, learner, params_copy, trees_equal


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    x = rng.integers(0, 80, (50, CACHE, CACHE, 3)).astype(np.uint8)
    return ImageClassifierData.from_arrays(str(tmp_path_factory.mktemp('mem')), (x[:40], y[:40]),
                                           (x[40:], y[40:]), bs=16, tfms=tfms_from_model(TINY, 32),
                                           cache_size=CACHE)


def test_halving_chooser():
    need = lambda bs: 1000 + 100 * bs
    c = choose_batch_size(need, start=64, budget=5000)
    assert (c.bs, c.need, c.tried) == (32, 4200, [(64, 7400), (32, 4200)])
    assert choose_batch_size(need, 64, 10 ** 6).bs == 64
    assert choose_batch_size(need, 64, 1500).bs == 4
    # bs stays a multiple of the device count (8 devices: 64 -> 32 -> 16 -> 8, never 4).
    assert choose_batch_size(need, 60, 2000, multiple=8).tried == [(56, 6600), (24, 3400), (8, 1800)]
    with pytest.raises(OutOfDeviceMemory, match=r'even bs=8 needs 0 MiB per device, more than the '
                                                r'budget of 0 MiB; use a smaller image size'):
        choose_batch_size(need, 64, 1500, multiple=8)
    assert 'bs=32 (needs 0 MiB of a 0 MiB budget; tried 64: 0 MiB, 32: 0 MiB)' == str(c)


def test_budget_on_cpu_is_half_the_ram_per_device():
    import os
    ram = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    assert device_budget() == int(ram * 0.5 / jax.device_count())
    assert device_budget(fraction=0.25) == int(ram * 0.25 / jax.device_count())


def test_step_memory_grows_with_bs_and_a_smaller_budget_picks_a_smaller_bs(data):
    learn = learner(data, precompute=True)
    # The current configuration (head only, on stored features): cheap to compile.
    needs = {bs: learn.step_memory(bs, unfrozen=False) for bs in (16, 8, 4)}
    assert needs[16] > needs[8] > needs[4] > 0
    picks = []
    for budget in (needs[16], needs[16] - 1, needs[8] - 1):
        c = learn.auto_bs(start=16, budget=budget, unfrozen=False, apply=False)
        assert isinstance(c, BatchSizeChoice) and c.need <= c.budget == budget
        assert c.need == needs[c.bs]
        picks.append(c.bs)
    assert picks == [16, 8, 4]
    assert learn.data.bs == 16                      # apply=False changed nothing


def test_pretrained_bs_auto_judges_the_unfrozen_step_and_uses_the_choice(data):
    probe = learner(data)
    need16, need8 = probe.step_memory(16), probe.step_memory(8)
    # Every layer group trainable on augmented images costs far more than the head alone.
    assert need16 > need8 > probe.step_memory(16, unfrozen=False)
    learn = ConvLearner.pretrained(TINY, data, pretrained=False, quiet=True, bs='auto',
                                   mem_budget=need8)
    c = learn.bs_choice
    assert (c.bs, c.need, c.budget, c.tried) == (8, need8, need8, [(16, need16), (8, need8)])
    assert learn.data.bs == 8 and len(learn.data.trn_dl) == 5 and learn.data.trn_dl.bs == 8
    assert data.bs == 16 and learn.data is not data          # the caller's data is unchanged
    batch = next(learn.data.trn_dl.iter_epoch(0))
    assert batch['image'].shape == (8, CACHE, CACHE, 3)
    assert ConvLearner.pretrained(TINY, data, pretrained=False, quiet=True, bs=4).data.bs == 4
    with pytest.raises(ValueError, match="bs='big'; use an int, None"):
        ConvLearner.pretrained(TINY, data, pretrained=False, quiet=True, bs='big')


def _failing(learn, message):
    real = learn.steps.get

    def boom(*args, **kwargs):
        raise jax.errors.JaxRuntimeError(message)

    learn.steps.get = lambda kind: boom if kind == 'train' else real(kind)


def test_out_of_memory_names_the_batch_size_and_the_fix(data):
    learn = learner(data, precompute=True)
    before = int(learn.state.step)
    _failing(learn, 'RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1073741824 bytes.')
    with pytest.raises(OutOfDeviceMemory, match=(
            r'out of device memory training with bs=16 \(sz=32, 1 device\(s\), layer groups '
            r'trainable \[False, False, True\], precompute=True\)\. Use a smaller batch: '
            r'learn.set_bs\(8\), or build the data with bs=8 .*bs=\'auto\'.*XLA said: '
            r'RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1073741824 bytes')) as e:
        learn.fit(1e-2, 1)
    assert isinstance(e.value, MemoryError)
    assert isinstance(e.value.__cause__, jax.errors.JaxRuntimeError)
    assert int(learn.state.step) == before and learn.progress is None
    with pytest.raises(OutOfDeviceMemory, match='out of device memory in lr_find with bs=16'):
        learn.lr_find(num_it=3)
    # Any other runtime error passes through as it was.
    _failing(learn, 'INTERNAL: something else')
    with pytest.raises(jax.errors.JaxRuntimeError, match='INTERNAL: something else'):
        learn.fit(1e-2, 1)


def test_a_step_over_mem_budget_is_refused_with_the_batch_size_that_fits(data):
    """CPU never runs out, so learn.mem_budget stands in for a small device: a fit whose step
    needs more is refused before it runs, the message names the bs XLA's analysis says fits,
    and after learn.set_bs(that) the same fit runs, in the same session."""
    learn = learner(data)                                  # bs=16, the head trains
    need = {bs: learn.step_memory(bs, unfrozen=False) for bs in (16, 8)}
    assert need[16] > need[8]       # down to bs=4: test_step_memory_grows_with_bs_...'s check
    learn.mem_budget = (need[8] + need[16]) // 2           # 8 fits, 16 does not
    before = params_copy(learn)
    with pytest.raises(OutOfDeviceMemory, match=(
            r'out of device memory training with bs=16 .*; bs=8 fits \(bs=8 \(needs .* budget; '
            r'tried 8: .*\)\)\. Use a smaller batch: learn.set_bs\(8\).*XLA said: the step needs '
            r'.* MiB per device, over learn.mem_budget = .* \(judged before running it')) as e:
        learn.fit(1e-2, 1)
    assert e.value.bs == 8
    with pytest.raises(OutOfDeviceMemory, match=r'in lr_find with bs=16 .*learn.set_bs\(8\)'):
        learn.lr_find(num_it=2)
    assert trees_equal(before, params_copy(learn)) and learn.progress is None
    learn.set_bs(8)
    with cache_use() as used:
        learn.fit(1e-2, 1)                                 # no restart needed
    # ... without compiling the step again: the program judged at bs=8 is the one it runs
    # (the validation step, not judged, was compiled or served by the cache: the listener works)
    assert ('jit(train_step)', False) not in used and 'jit(predict_step)' in dict(used), used
    assert int(learn.state.step) == 5                      # 40 images, bs 8
