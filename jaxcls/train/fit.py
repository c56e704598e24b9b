"""How `ConvLearner.fit`, `fit_one_cycle` and `fine_tune` run: the loop, its callbacks, resume.

`run(learn, epochs, table, ...)` builds the fit's state (a fresh optimizer, as fastai 0.7 made
per fit; after precompute, the head's own state), the learner's compiled public step, and a
`jaxcls.train.loop.Loop` with the loop's callbacks (divergence guard, loss EMA, progress bar,
validation and the epoch table) in front of the user's. With `resume=True` it first looks
up the checkpointed run: a fit that was completed returns its logs, the interrupted one
continues from its newest checkpoint at the exact step, and a fit after it runs as usual.
"""
from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import numpy as np

from . import memory as mem
from . import resume as rs
from . import resume_point as rp
from .callbacks import Callback, DivergenceGuard, LossRecorder, ProgressBar
from .loop import Loop
from .optim import HParams
from .resume import ModelCheckpoint


class Validate(Callback):
    """At each epoch's end: the validation loss and metrics, the epoch's time, this fit's history."""

    order = 30

    def before_epoch(self, loop):
        self.t0 = time.time()

    def after_epoch(self, loop):
        loop.logs.update(loop.learner.validate())
        loop.logs['time'] = time.time() - self.t0
        loop.hist.append(loop.logs)


class EpochTable(Callback):
    """fastai's table: a header when the fit starts, a row per epoch."""

    order = 40

    def __init__(self, names: Sequence[str], out):
        self.names, self.out = list(names), out

    def before_fit(self, loop):
        self.out('  '.join(f'{n:>10}' for n in self.names))

    def after_epoch(self, loop):
        self.out('  '.join(_fmt(loop.logs.get(n)) for n in self.names))


def _fmt(v: Any) -> str:
    if isinstance(v, (int, np.integer)):
        return f'{v:>10d}'
    if isinstance(v, (float, np.floating)):
        return f'{v:>10.6f}' if abs(v) < 1e4 else f'{v:>10.3e}'
    return f'{str(v):>10}'


def _checkpoint_callbacks(callbacks, checkpoint) -> list:
    callbacks = list(callbacks or [])
    if checkpoint is not None:
        if not isinstance(checkpoint, ModelCheckpoint):
            checkpoint = ModelCheckpoint(checkpoint)
        if checkpoint not in callbacks:
            callbacks.append(checkpoint)
    return callbacks


def run(learn, epochs: int, table: HParams, callbacks: Optional[Sequence[Callback]], desc: dict,
        checkpoint: Any = None, resume: bool = False) -> list[dict]:
    """Run one fit of `learn` for `epochs` epochs with `table` (one HParams row per iteration);
    returns its epoch logs (see `ConvLearner.fit`)."""
    mem.check_budget(learn, 'training')      # before anything of the learner changes
    callbacks = _checkpoint_callbacks(callbacks, checkpoint)
    # Which fit of the sequence this is; counted once it trains (or is found complete), so a
    # refused call (a mismatch, a folder of another run) does not shift the later ones.
    fit_index = learn._fits
    nb = len(learn._train_loader(learn.epoch))
    desc = dict(desc, fit_index=fit_index, iterations=int(len(table.lr)), fit_epochs=int(epochs),
                batches_per_epoch=int(nb), bs=int(learn.data.bs),
                n_train=int(getattr(learn.data.trn_dl, 'n_total', len(learn.data.trn_ds))),
                trainable=list(learn.trainable), precompute=learn.precompute,
                **learn.recipe.describe())  # the recipe's options that are on
    full = learn.steps.fresh_state()
    recorder, start = LossRecorder(), dict(fit_epoch=0, batch=0, iteration=0, hist=())
    if resume:
        found = _resume(learn, callbacks, checkpoint, fit_index, desc, full, recorder, epochs, nb)
        if isinstance(found, list):
            return found
        if found is not None:
            full, start = found
    state = learn.steps.fit_view(full)
    step = learn.steps.get('train')
    internal = [DivergenceGuard(), recorder, Validate(),
                EpochTable(['epoch', 'trn_loss', 'val_loss'] + [_name(m) for m in learn.metrics]
                           + ['time'], learn._print), _Count(learn, fit_index)]
    if not learn.quiet:
        internal.append(ProgressBar())
    loop = Loop(step, state, learn._batches, table, nb, internal + callbacks, epoch=learn.epoch,
                learner=learn, desc=desc)
    learn.sched, learn._fit_base = recorder.rec, full if learn.precompute else None
    learn.progress = loop
    try:
        loop.fit(epochs, **start)
    except BaseException as err:
        _finish(learn, loop)
        if isinstance(err, KeyboardInterrupt):
            err.add_note(_interrupted_note(learn, loop))
        if mem.is_out_of_memory(err):
            raise mem.OutOfDeviceMemory(*mem.oom_message(learn, 'training', err)) from err
        raise
    _finish(learn, loop)
    learn.history += loop.hist
    learn._history_fits += [fit_index] * len(loop.hist)
    return loop.hist


def _interrupted_note(learn, loop) -> str:
    """What an interrupted fit leaves: the state of its last completed step, or (when the
    interrupt landed inside a step, which had been handed the learner's arrays) nothing."""
    import jax
    where = (f'epoch {loop.fit_epoch + 1} of {loop.epochs}, batch {loop.batch} of '
             f'{loop.batches}, optimizer step {loop.step}')
    leaves = jax.tree_util.tree_leaves(learn.state)
    if any(getattr(x, 'is_deleted', lambda: False)() for x in leaves):
        return (f'jaxcls: the fit was interrupted inside a training step ({where}), which '
                f'held the learner\'s arrays: its weights are gone. learn.load(name) or '
                f'learn.restore_checkpoint(folder) brings saved ones back')
    return (f'jaxcls: fit interrupted at {where}; the learner keeps the weights, BatchNorm '
            f'statistics and optimizer state of that step, so learn.fit(...) goes on from them '
            f'(a fit with checkpoint= and resume=True continues the interrupted schedule)')


def _finish(learn, loop) -> None:
    """The learner after a fit (or its abort): the whole network's state from the loop's last
    state (a bad step changed nothing, so it is finite), the data epoch reached."""
    learn.state, learn.epoch = learn._merge(loop.state), loop.epoch
    learn.progress = learn._fit_base = None


class _Count(Callback):
    """The fit counts as the learner's next once every callback let it start (after theirs:
    a ModelCheckpoint refusing another run's folder leaves the count alone)."""

    order = 60

    def __init__(self, learn, fit_index: int):
        self.learn, self.fit_index = learn, fit_index

    def before_fit(self, loop):
        self.learn._fits = self.fit_index + 1


def _resume(learn, callbacks, checkpoint, fit_index, desc, full, recorder, epochs, nb):
    """None (nothing to resume: train as usual), the completed fit's logs (a list), or the
    restored (full state, loop start) of the interrupted fit."""
    src = rp.resume_source(checkpoint, callbacks)
    if src is None:
        raise ValueError('resume=True needs the checkpoints to resume from: pass '
                         'checkpoint=ModelCheckpoint(folder) (or a folder) as in the '
                         'interrupted run')
    action, step, record, arrays = rp.find_resume_point(src.bind(learn), fit_index, desc,
                                                        rs.state_arrays(full))
    if record is not None:
        learn.run_id = record['run']  # this process continues that run
    if action == 'skip':
        learn._fits = fit_index + 1
        learn._print(f'fit #{fit_index} was completed by the checkpointed run '
                     f'({src.directory}); skipped')
        return [h for h, f in zip(record['history'], record['history_fits']) if f == fit_index]
    if action != 'restore':
        return None
    full = learn._place(full.replace(**arrays))
    learn.epoch = int(record['epoch'])
    learn.history = list(record['history'])
    learn._history_fits = [int(v) for v in record['history_fits']]
    rp.restore_recorder(recorder, record)
    hist = list(record['hist'])
    if learn.precompute:
        learn.state = full
        learn._features.ensure()  # features of the restored body
    learn._print(f'resuming fit #{fit_index} from {src.directory}/{step}: epoch '
                 f'{int(record["fit_epoch"]) + 1}/{epochs}, batch {record["batch"]}/{nb}, '
                 f'iteration {record["iteration"]}')
    if record['done']:
        learn._fits = fit_index + 1
        learn.state, learn.sched = full, recorder.rec
        learn.history += hist
        learn._history_fits += [fit_index] * len(hist)
        return hist
    return full, dict(fit_epoch=int(record['fit_epoch']), batch=int(record['batch']),
                      iteration=int(record['iteration']), hist=hist)


def _name(metric) -> str:
    return getattr(metric, '__name__', type(metric).__name__)
