"""A KeyboardInterrupt (a notebook's interrupt button) inside fit, lr_find, predict, TTA or
precompute leaves the learner usable: its state is the last completed step (or the state
before the call), the exception says so, and the next call works without a restart."""
import jax
import numpy as np
import pytest

from jaxcls import ImageClassifierData, tfms_from_model, transforms_side_on
from jaxcls.data.tfm_loader import TfmDataLoader
from jaxcls.train.callbacks import Callback

from helpers import SZ, TINY, learner, make_folder, params_copy, trees_equal


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    # 4 batches an epoch, at the batch size and transforms of tests/train/test_learner.py's
    # data: the same steps, so the suite's XLA cache compiles them once for both files.
    path = make_folder(tmp_path_factory.mktemp('dogscats'), n_train=20, n_valid=10)
    tfms = tfms_from_model(TINY, SZ, aug_tfms=transforms_side_on, max_zoom=1.1)
    return ImageClassifierData.from_paths(path, bs=10, tfms=tfms, quiet=True)


class Snapshots(Callback):
    """Copies of the state after every step, and an interrupt at one event."""

    order = 99

    def __init__(self, event, iteration):
        self.event, self.iteration, self.after = event, iteration, []

    def _maybe(self, loop):
        if loop.iteration == self.iteration:
            raise KeyboardInterrupt

    def before_batch(self, loop):
        if self.event == 'before_batch':
            self._maybe(loop)

    def after_batch(self, loop):
        self.after.append(jax.tree_util.tree_map(np.array, (loop.state.params,
                                                            loop.state.batch_stats)))
        if self.event == 'after_batch':
            self._maybe(loop)

    def after_epoch(self, loop):
        if self.event == 'after_epoch':
            self._maybe(loop)


@pytest.mark.parametrize('event,iteration,done', [('before_batch', 3, 3), ('after_batch', 2, 2),
                                                  ('after_epoch', 4, 4)])
def test_fit_keeps_the_last_completed_step(data, event, iteration, done):
    learn = learner(data)
    cb = Snapshots(event, iteration)
    with pytest.raises(KeyboardInterrupt) as e:
        learn.fit(0.05, 3, callbacks=[cb])
    assert int(learn.state.step) == done and len(cb.after) == done     # 4 batches an epoch
    kept = jax.tree_util.tree_map(np.array, (learn.state.params, learn.state.batch_stats))
    assert trees_equal(kept, cb.after[-1])
    note = '\n'.join(e.value.__notes__)
    assert f'optimizer step {done}' in note and 'learn.fit(...) goes on from them' in note
    learn.fit(0.05, 1)                                      # the next fit needs no restart
    assert int(learn.state.step) == done + 4


class Interrupting(TfmDataLoader):
    """A loader whose epoch stops with a KeyboardInterrupt after its first batch."""

    def iter_epoch(self, epoch, start=0):
        it = super().iter_epoch(epoch, start)
        yield next(it)
        raise KeyboardInterrupt


def interrupting(dl):
    return Interrupting(dl.x, dl.y, dl.bs, tfm=dl.tfm, augment=dl.augment, shuffle=dl.shuffle,
                        key=dl.key)


class InterruptingImages:
    """A training split whose images raise KeyboardInterrupt when the second batch is read."""

    def __init__(self, ds):
        self.ds, self.x = ds, Rows(ds.x)

    def __getattr__(self, name):
        return getattr(self.ds, name)

    def __len__(self):
        return len(self.ds)


class Rows:
    def __init__(self, x):
        self.x, self.reads, self.shape, self.dtype = x, 0, x.shape, x.dtype

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == 2:
            raise KeyboardInterrupt
        return self.x[i]


def test_lr_find_predict_tta_and_precompute_leave_the_learner_as_it_was(data):
    learn = learner(data)
    learn.fit(0.05, 1)
    before, sched = params_copy(learn), learn.sched
    d = learn.data
    trn, val = d.trn_dl, d.val_dl

    d.trn_dl = interrupting(trn)
    with pytest.raises(KeyboardInterrupt) as e:
        learn.lr_find(num_it=8, stop_div=False)
    assert 'interrupted in lr_find; the learner is as it was' in '\n'.join(e.value.__notes__)
    assert trees_equal(before, params_copy(learn)) and learn.sched is sched
    d.trn_dl = trn

    d.val_dl = interrupting(val)
    for call in (learn.predict, learn.TTA):     # TTA's plain pass is a predict: the same note
        with pytest.raises(KeyboardInterrupt) as e:
            call()
        assert 'interrupted predicting; the learner is as it was' in '\n'.join(e.value.__notes__)
    d.val_dl = val
    assert trees_equal(before, params_copy(learn))
    assert learn.predict().shape == (20, 2)                 # and the next call works

    ds = d.trn_ds
    d.trn_ds = InterruptingImages(ds)
    with pytest.raises(KeyboardInterrupt) as e:
        learn.precompute = True
    assert 'precomputing the activations' in '\n'.join(e.value.__notes__)
    assert learn.precompute is False
    d.trn_ds = ds
    learn.precompute = True
    learn.fit(0.05, 1)
    assert learn.precompute is True
