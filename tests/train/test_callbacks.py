"""Metric loggers: a CSV row per epoch, TensorBoard event files readable back, the EMA."""
import csv
import glob
import struct

import numpy as np
import pytest

from jaxcls.train.callbacks import Recorder, smooth
from jaxcls.train.loggers import CSVLogger, TensorBoardLogger


class FakeLearner:
    def __init__(self):
        self.sched = Recorder()
        self.sched.record([0.1, 0.2], [1.0, 0.9], [0.9, 0.9])


def _epochs(cb, n=3):
    learn = FakeLearner()
    cb.on_train_begin(learn)
    for e in range(n):
        cb.on_batch_end(learn, e + 1, {'loss': 1.0 / (e + 1)})
        cb.on_epoch_end(learn, e, {'epoch': e, 'trn_loss': 1.0 / (e + 1), 'val_loss': 2.0 / (e + 1),
                                   'accuracy': 0.5 + 0.1 * e, 'time': 1.25})
    cb.on_train_end(learn)


def test_smooth_is_fastais_debiased_ema():
    out, state = smooth([2.0, 1.0, 0.0])
    avg = 0.0
    for n, loss in enumerate([2.0, 1.0, 0.0], 1):
        avg = 0.98 * avg + 0.02 * loss
        assert out[n - 1] == pytest.approx(avg / (1 - 0.98 ** n))
    cont, _ = smooth([5.0], start=state)
    full, _ = smooth([2.0, 1.0, 0.0, 5.0])
    assert cont[0] == pytest.approx(full[-1])


def test_csv_logger_writes_a_row_per_epoch(tmp_path):
    f = tmp_path / 'h.csv'
    _epochs(CSVLogger(f))
    rows = list(csv.DictReader(open(f)))
    assert [r['epoch'] for r in rows] == ['0', '1', '2']
    assert float(rows[1]['val_loss']) == pytest.approx(1.0)
    assert float(rows[2]['accuracy']) == pytest.approx(0.7)
    _epochs(CSVLogger(f, append=True), n=1)
    assert len(list(csv.DictReader(open(f)))) == 4


def _read_events(folder):
    from tensorboardX.proto import event_pb2
    out = []
    for path in glob.glob(str(folder / '*tfevents*')):
        data = open(path, 'rb').read()
        i = 0
        while i < len(data):
            (n,) = struct.unpack('<Q', data[i:i + 8])
            ev = event_pb2.Event()
            ev.ParseFromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in ev.summary.value:
                out.append((v.tag, ev.step, v.simple_value))
    return out


def test_tensorboard_logger_event_files(tmp_path):
    pytest.importorskip('tensorboardX')
    cb = TensorBoardLogger(tmp_path / 'tb')
    _epochs(cb)
    cb.close()
    ev = _read_events(tmp_path / 'tb')
    val = sorted((s, v) for t, s, v in ev if t == 'epoch/val_loss')
    np.testing.assert_allclose([v for _, v in val], [2.0, 1.0, 2.0 / 3], rtol=1e-6)
    assert [s for _, s, _ in sorted(e for e in ev if e[0] == 'train/loss_raw')] == [1, 2, 3]
