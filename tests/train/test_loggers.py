"""CSV and TensorBoard logs of a run stopped at any moment and resumed (in a fresh learner, as
a new process would) equal an uninterrupted run's, row for row and event for event. The stop
is an exception raised from a callback at the chosen moment, leaving the files as a kill
would; tests/train/test_resume.py checks the same after real SIGKILLs."""
import glob
import os

import numpy as np
import pytest

from jaxcls.train.callbacks import Callback
from jaxcls.train.loggers import CSVLogger, TensorBoardLogger, purge_events
from jaxcls.train.resume import ModelCheckpoint

from helpers import learner, read_csv, read_events, square_data

pytest.importorskip('tensorboardX')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return square_data(tmp_path_factory.mktemp('log_data'), 45, 30, seed=2)


class Stop(Exception):
    pass


class StopAt(Callback):
    """Raise at one moment: after global step `step`, or at the end of data epoch `epoch`
    once the loggers (listed before it) have written that epoch and before the checkpoint
    (listed after it) saves it."""

    def __init__(self, step=None, epoch=None):
        self.step, self.epoch = step, epoch

    def after_batch(self, loop):
        if loop.step == self.step:
            raise Stop

    def after_epoch(self, loop):
        if loop.logs['epoch'] == self.epoch:
            raise Stop


def two_fits(data, folder, stop=None, resume=False):
    """The lesson's shape on a head-only learner: fit(0.05, 2) then fit(0.02, 2, cycle_len=1),
    logged to folder/log.csv and folder/tb, checkpointed every 2 steps (3 steps an epoch)."""
    learn = learner(data, precompute=True)
    ck = ModelCheckpoint(os.path.join(folder, 'ck'), every_steps=2, keep=2, async_write=False)
    cbs = [CSVLogger(os.path.join(folder, 'log.csv'), append=True),
           TensorBoardLogger(os.path.join(folder, 'tb'))] + ([stop] if stop else []) + [ck]
    learn.fit(0.05, 2, checkpoint=ck, callbacks=cbs, resume=resume)
    learn.fit(0.02, 2, cycle_len=1, checkpoint=ck, callbacks=cbs, resume=resume)
    for cb in cbs[:2]:
        if hasattr(cb, 'close'):
            cb.close()
    return learn


@pytest.fixture(scope='module')
def reference(data, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('ref'))
    two_fits(data, folder)
    return read_csv(os.path.join(folder, 'log.csv')), read_events(os.path.join(folder, 'tb'))


@pytest.mark.parametrize('stop', [dict(step=1),       # before the first checkpoint: starts over
                                  dict(step=5),       # mid-epoch, the step-4 checkpoint newest
                                  dict(epoch=1),      # epoch 1 logged, its checkpoint not written
                                  dict(step=8)])      # in the second fit, logs of both present
def test_logs_after_a_stop_and_resume_equal_an_uninterrupted_runs(data, tmp_path, reference, stop):
    ref_csv, ref_events = reference
    col = ref_csv[0].index('epoch')
    assert [r[col] for r in ref_csv[1:]] == ['0', '1', '2', '3']
    assert len([e for e in ref_events if e[0] == 'train/loss_raw']) == 12
    with pytest.raises(Stop):
        two_fits(data, str(tmp_path), StopAt(**stop))
    two_fits(data, str(tmp_path), resume=True)
    assert read_csv(tmp_path / 'log.csv') == ref_csv
    assert read_events(str(tmp_path / 'tb')) == ref_events


def test_purge_events_keeps_the_past_byte_for_byte(tmp_path):
    from tensorboardX import SummaryWriter
    w = SummaryWriter(str(tmp_path))
    for step in range(1, 7):
        w.add_scalar('train/loss_raw', 1.0 / step, step)
    for epoch in range(3):
        w.add_scalar('epoch/val_loss', 2.0 + epoch, epoch)
    w.close()
    (path,) = glob.glob(str(tmp_path / '*tfevents*'))
    with open(path, 'ab') as f:
        f.write(b'\x05\x00\x00')                      # a torn last record: a killed writer
    assert purge_events(str(tmp_path), step=4, epoch=1) == 4      # steps 5, 6; epochs 1, 2
    assert read_events(str(tmp_path)) == [('epoch/val_loss', 0, 2.0)] + [
        ('train/loss_raw', s, np.float32(1.0 / s)) for s in range(1, 5)]
    assert purge_events(str(tmp_path), step=4, epoch=1) == 0
    purge_events(str(tmp_path), step=0, epoch=0)
    assert not glob.glob(str(tmp_path / '*tfevents*'))  # nothing left to show: the file goes
