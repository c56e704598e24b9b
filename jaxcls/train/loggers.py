"""Metric logs that survive a kill and a resume exactly: a CSV row per epoch, TensorBoard
event files.

A fit that resumes from a checkpoint (or starts again after a kill that came before the
first one) repeats the steps and epochs after that point, and their logs with them. Each
logger therefore starts a fit by removing what its file or folder holds beyond the fit's
starting position -- CSV rows of data epochs >= the fit's, TensorBoard events of later
global steps or epochs -- so the logs of a killed and resumed run equal an uninterrupted
run's, row for row and event for event (TensorBoard's own `purge_step` convention, applied
to the files). Keep one file or log folder per run to keep several runs.

    >>> learn.fit(1e-2, 3, callbacks=[CSVLogger('history.csv'), TensorBoardLogger('tb')])  # doctest: +SKIP
"""
from __future__ import annotations

import csv
import glob
import os
from typing import Optional

from jaxcls.atomic_file import replaced

from .callbacks import Callback
from .event_file import EventFileWriter, decode_scalars, read_records

__all__ = ['CSVLogger', 'TensorBoardLogger', 'purge_events']


def _replace_text(fname: str, rows: list[list[str]]) -> None:
    """Write CSV rows to `fname` through a temporary file and one rename."""
    with replaced(fname, newline='') as f:
        csv.writer(f).writerows(rows)


class CSVLogger(Callback):
    """Write one CSV row per epoch (epoch, trn_loss, val_loss, metrics..., time) to `fname`.

    Rows are flushed as each epoch ends, so a killed run keeps every finished epoch.
    `append=True` continues an existing file (its header is kept); a resumed fit always
    continues it. Either way rows of the epochs the fit is about to train (again) are
    dropped first (see the module docstring).

    >>> learn.fit(1e-2, 3, callbacks=[CSVLogger('history.csv')])  # doctest: +SKIP
    """

    def __init__(self, fname: str, append: bool = False):
        self.fname, self.append = str(fname), append
        self._fields: Optional[list[str]] = None

    def before_fit(self, loop):
        self._start(self.append or loop.resumed, loop.epoch)

    def on_train_begin(self, learner):  # used through the hooks alone (no loop): no position
        self._start(self.append, None)

    def _start(self, keep: bool, epoch: Optional[int]) -> None:
        self._fields = None
        if not (keep and os.path.exists(self.fname) and os.path.getsize(self.fname) > 0):
            open(self.fname, 'w').close()
            return
        with open(self.fname, newline='') as f:
            rows = list(csv.reader(f))
        self._fields = rows[0]
        if epoch is not None and 'epoch' in self._fields:
            col = self._fields.index('epoch')
            kept = [r for r in rows[1:] if not _is_int(r[col]) or int(r[col]) < epoch]
            if len(kept) < len(rows) - 1:
                _replace_text(self.fname, [self._fields] + kept)

    def on_epoch_end(self, learner, epoch, logs):
        if self._fields is None:
            self._fields = list(logs)
            with open(self.fname, 'a', newline='') as f:
                csv.writer(f).writerow(self._fields)
        with open(self.fname, 'a', newline='') as f:
            csv.writer(f).writerow([_csv_value(logs.get(k, '')) for k in self._fields])


def _is_int(text: str) -> bool:
    return text.strip().lstrip('-').isdigit()


def _csv_value(v):
    return f'{v:.6g}' if isinstance(v, float) else v


class TensorBoardLogger(Callback):
    """TensorBoard event files in `logdir`: per-epoch logs ('epoch/<name>' at the epoch) and,
    every `every` steps, the raw loss and the rate ('train/loss_raw', 'train/lr' at the
    global optimizer step).

    Written by jaxcls itself (jaxcls.train.event_file), a record at a time straight to the
    OS: neither TensorFlow, tensorboard nor tensorboardX is needed (`pip install tensorboard`
    to look at them), and a killed run loses no event it wrote. Each fit writes a new event
    file, after removing the events the folder holds beyond the fit's starting step and epoch
    (see the module docstring).
    """

    def __init__(self, logdir: str, every: int = 1):
        self.logdir, self.every = str(logdir), max(1, int(every))
        self._writer: Optional[EventFileWriter] = None
        self._it = 0                        # the global step, when used without a loop

    @property
    def writer(self) -> EventFileWriter:
        if self._writer is None:
            self._writer = EventFileWriter(self.logdir)
        return self._writer

    def before_fit(self, loop):
        self.close()
        purge_events(self.logdir, loop.step, loop.epoch)
        self._it = loop.step

    def after_batch(self, loop):
        self._it = loop.step
        if self._it % self.every == 0:
            self.writer.add_scalar('train/loss_raw', float(loop.metrics['loss']), self._it)

    def on_batch_end(self, learner, iteration, logs):  # used through the hooks alone
        self._it += 1
        if self._it % self.every == 0:
            self.writer.add_scalar('train/loss_raw', float(logs['loss']), self._it)

    def on_epoch_end(self, learner, epoch, logs):
        for k, v in logs.items():
            if k != 'epoch' and isinstance(v, (int, float)):
                self.writer.add_scalar(f'epoch/{k}', float(v), epoch)
        rec = learner.sched
        if rec is not None and rec.lrs:
            self.writer.add_scalar('train/lr', rec.lrs[-1], self._it)

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def purge_events(logdir: str, step: int, epoch: int) -> int:
    """Remove from the event files in `logdir` every scalar of a later position than (`step`,
    `epoch`): 'epoch/*' tags at epoch >= `epoch`, others at step > `step`. Kept records are
    copied byte for byte; a file left with no scalars is removed. Returns the events removed."""
    removed = 0
    for path in sorted(glob.glob(os.path.join(glob.escape(logdir), '*tfevents*'))):
        with open(path, 'rb') as f:
            data = f.read()
        kept, scalars, dropped, size = [], 0, 0, 0
        for start, end, payload in read_records(data):
            found = decode_scalars(payload)
            if any(v.step >= epoch if v.tag.startswith('epoch/') else v.step > step
                   for v in found):
                dropped += 1
                continue
            scalars += bool(found)
            kept.append(data[start:end])
            size += end - start
        if size == len(data):
            continue                          # nothing to remove, no torn record
        removed += dropped
        if scalars == 0:
            os.remove(path)
            continue
        with replaced(path, 'wb') as f:
            f.write(b''.join(kept))
    return removed
