"""Resumable training: Orbax CheckpointManager callbacks, and the record that lets a killed fit
continue to the very parameters an uninterrupted one ends with.

    >>> ck = ModelCheckpoint('ckpts', every_steps=100)                        # doctest: +SKIP
    >>> learn.fit(1e-2, 3, cycle_len=1, checkpoint=ck)                          # doctest: +SKIP
    ... # killed; in a new process, the same script with resume=True:
    >>> learn.fit(1e-2, 3, cycle_len=1, checkpoint=ck, resume=True)             # doctest: +SKIP

Each checkpoint is one step folder `{directory}/{step}` (the global optimizer step) with
four Orbax items:

* 'state': the TrainState arrays -- params, batch_stats, opt_state (momentum buffers and
  injected rates), step, rng;
* 'meta': the model description `learn.save` writes (so `Predictor.load('{directory}/{step}')`
  classifies files with it);
* 'progress': JSON -- the fit's description (kind, rates, cycles, weight decay, which fit
  of the learner's sequence, batches per epoch, bs, trainable groups, precompute), the
  fit's iteration (index into its rate table), the data epoch and the batch within it, the
  raw losses of the unfinished epoch and the loss-EMA state, the epoch logs, the
  learner's history and `learn.sched`'s record, and the run's id;
* 'digest': the XXH3 hash of every array and of both JSON items (jaxcls.train.integrity), checked
  when a checkpoint is read: a damaged one is skipped for the newest intact one, with a
  warning naming it.

Writes are asynchronous (the arrays are copied to host memory before `save` returns; the
files are written by a background thread while training goes on) and atomic: Orbax
writes into `{step}.orbax-checkpoint-tmp*` and renames it when complete, so a process
killed mid-write leaves the previous checkpoints intact; the unfinished folder is
deleted the next time a manager opens the directory. A new save first waits for the one
in flight, and a fit waits for the last one before it returns (or raises). A fit holds a
lock on the folder (jaxcls.train.safe_write.FolderLock), so a second process checkpointing
into it gets a clear error naming the first; each save first checks the disk has room for
it, and a write the disk could not hold leaves nothing behind.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from . import safe_write as sw
from .callbacks import Callback
from .checkpoint import reading, saved_size
from .integrity import NotEnoughSpaceError, digest_item, verify_json, verify_tree

__all__ = ['ModelCheckpoint', 'SaveBest', 'ResumeMismatch', 'STATE_KEYS']

RECORD_VERSION = 1
STATE_KEYS = ('params', 'batch_stats', 'opt_state', 'step', 'rng')
# Fit-description keys shown first in a mismatch message (the ones a user typed).
_ARG_KEYS = ('kind', 'lrs', 'n_cycle', 'cycle_len', 'cycle_mult', 'wds', 'epochs', 'lr_max',
             'pct_start', 'div', 'div_final', 'moms')


class ResumeMismatch(ValueError):
    """`resume=True` on a fit whose arguments or setup differ from the checkpointed fit's."""


def _handlers() -> dict:
    return {'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler(),
            'progress': ocp.JsonCheckpointHandler(), 'digest': ocp.JsonCheckpointHandler()}


def state_arrays(state: Any) -> dict:
    """The arrays of a TrainState that a checkpoint holds (and its weights' moving average,
    when it keeps one: jaxcls.train.recipe)."""
    ema = {} if getattr(state, 'ema', None) is None else {'ema': state.ema}
    return {**{k: getattr(state, k) for k in STATE_KEYS}, **ema}


def abstract_target(tree: Any) -> Any:
    """Shapes, dtypes and shardings of a pytree of arrays: Orbax restores each leaf straight
    onto that sharding (any device count: saved on one device, restored replicated on 8)."""
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, 'sharding', None)),
        tree)


def describe_mismatch(saved: dict, now: dict) -> str:
    """'key: checkpoint X, this call Y' for every differing key of two fit descriptions."""
    keys = [k for k in _ARG_KEYS if k in saved or k in now]
    keys += sorted(k for k in set(saved) | set(now) if k not in keys)
    return '; '.join(f'{k}: checkpoint {saved.get(k)!r}, this call {now.get(k)!r}'
                     for k in keys if saved.get(k) != now.get(k))


def _fmt_fit(d: dict) -> str:
    return ', '.join(f'{k}={d[k]!r}' for k in _ARG_KEYS if d.get(k) is not None)


class ModelCheckpoint(Callback):
    """Checkpoint the training state with Orbax every `every_steps` steps and/or every epoch.

    Args:
      directory: folder of step checkpoints (default `{data.path}/models/checkpoints`).
      every_steps: save when the global step is a multiple of this (None: never mid-epoch).
      every_epoch: save at the end of every epoch (after validation).
      keep: keep the newest `keep` checkpoints (None: all).
      async_write: write in a background thread (False: `save` returns when written).

    The final state of every fit is saved too, so a later `resume=True` knows the fit is
    complete. Pass it as `fit(..., checkpoint=ck)` (or in `callbacks`); a fit with
    `resume=True` continues from its newest readable checkpoint.

    >>> learn.fit(1e-2, 3, checkpoint=ModelCheckpoint(every_steps=50))   # doctest: +SKIP
    """

    resume_source = True  # a fit with resume=True may continue from this folder
    default_subdir = 'checkpoints'

    def __init__(self, directory: Optional[str] = None, every_steps: Optional[int] = None,
                 every_epoch: bool = True, keep: Optional[int] = 3, async_write: bool = True):
        if every_steps is not None and int(every_steps) < 1:
            raise ValueError(f'every_steps={every_steps}; use a positive number of steps, or None '
                             'to save only at epoch ends')
        if keep is not None and int(keep) < 1:
            raise ValueError(f'keep={keep}; keep at least 1 checkpoint (None keeps all)')
        self.directory = None if directory is None else os.path.abspath(os.fspath(directory))
        self.every_steps = None if every_steps is None else int(every_steps)
        self.every_epoch = bool(every_epoch)
        self.keep = None if keep is None else int(keep)
        self.async_write = bool(async_write)
        self.saved: list[int] = []       # steps this object wrote (this process)
        self._done: dict[int, bool] = {}
        self._mngr: Optional[ocp.CheckpointManager] = None
        self._lock: Optional[sw.FolderLock] = None

    # -------------------------------------------------------------- the manager

    def _options(self) -> ocp.CheckpointManagerOptions:
        return ocp.CheckpointManagerOptions(max_to_keep=self.keep, cleanup_tmp_directories=True,
                                            enable_async_checkpointing=self.async_write)

    def bind(self, learner) -> 'ModelCheckpoint':
        """Fix the folder (the learner's default when none was given)."""
        if self.directory is None:
            self.directory = os.path.abspath(os.path.join(learner._models_dir(),
                                                          self.default_subdir))
        return self

    @property
    def manager(self) -> ocp.CheckpointManager:
        if self.directory is None:
            raise ValueError(f'{type(self).__name__} has no folder yet: pass directory=..., or '
                             'use it in a fit first')
        if self._mngr is None:
            self._mngr = ocp.CheckpointManager(self.directory, options=self._options(),
                                               item_handlers=_handlers())
        return self._mngr

    def steps(self) -> list[int]:
        """The steps with a complete checkpoint, oldest first."""
        if self.directory is None or not os.path.isdir(self.directory):
            return []
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def wait(self) -> None:
        """Block until the write in flight (if any) is on disk. A write that failed leaves
        nothing behind: its temporary folder is removed and its error raised (a full disk as
        NotEnoughSpaceError)."""
        if self._mngr is None:
            return
        try:
            self._mngr.wait_until_finished()
        except Exception as e:  # noqa: BLE001 -- Orbax's async writer raises plain Exception
            self._mngr = None            # its state is unknown after a failed write: reopen
            from jaxcls.interrupts import remove_partial, sweep_until_quiet
            # Orbax raises the first failed part of the write while the others' threads may
            # still be creating files in its temporary folder: wait for them, then sweep.
            sw.join_orbax_threads()
            sweep_until_quiet(lambda: remove_partial(self.directory), sw.REMOVE_S)
            if sw.is_out_of_space(e):
                raise NotEnoughSpaceError(
                    f'the disk filled up while writing a checkpoint to {self.directory}; the '
                    'unfinished one was removed and the earlier ones are intact. Free some space, '
                    'then continue with resume=True') from e
            raise

    def close(self) -> None:
        """Wait for the last write, release the manager (a later use opens a new one) and the
        folder's lock."""
        try:
            if self._mngr is not None:
                self.wait()
                self._mngr.close()
                self._mngr = None
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _digest(self, step: int) -> Optional[dict]:
        """The digest item of a step, or None for a checkpoint written before digests."""
        if not os.path.isdir(os.path.join(self.directory, str(step), 'digest')):
            return None
        with reading(self._where(step), 'digest', _FIX):
            return self.manager.restore(step, args=ocp.args.Composite(
                digest=ocp.args.JsonRestore()))['digest']

    def _where(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    # -------------------------------------------------------------- reading

    def _read_json(self, step: int, item: str, what: str) -> Any:
        """A JSON item of one checkpoint, checked against its digest."""
        with reading(self._where(step), what, _FIX):
            value = self.manager.restore(step, args=ocp.args.Composite(
                **{item: ocp.args.JsonRestore()}))[item]
        verify_json(value, self._digest(step), self._where(step), item, _FIX)
        return value

    def read_record(self, step: int) -> dict:
        """The 'progress' JSON of one checkpoint, checked against its digest."""
        return self._read_json(step, 'progress', 'progress record')

    def read_meta(self, step: int) -> dict:
        """The model description ('meta') of one checkpoint, checked against its digest."""
        return self._read_json(step, 'meta', 'description (meta)')

    def read_state(self, step: int, target: Any) -> dict:
        """The state arrays of one checkpoint, restored onto `target`'s shapes and shardings
        and checked against its digest."""
        with reading(self._where(step), 'arrays (state)', _FIX):
            state = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_target(target))))['state']
        verify_tree(state, self._digest(step), self._where(step), 'state', _FIX)
        return state

    def state_metadata(self, step: int) -> Any:
        """The saved state's tree of array metadata (shapes, dtypes)."""
        md = self.manager.item_metadata(step)['state']
        return getattr(md, 'tree', md)

    def latest(self) -> Optional[tuple[int, dict]]:
        """(step, record) of the newest checkpoint whose record reads, or None."""
        for step in reversed(self.steps()):
            try:
                return step, self.read_record(step)
            except Exception as e:  # a damaged folder: fall back to the one before
                warnings.warn(f'checkpoint {self._where(step)} cannot be read ({e}); trying '
                              'an earlier one')
        return None

    def restore(self, learner, step: Optional[int] = None) -> dict:
        """Load checkpoint `step` (default: the newest) into `learner` outside a fit: its
        parameters, statistics, step, key, data epoch and history (and optimizer state when
        the same layer groups are trainable). Returns the checkpoint's record."""
        self.bind(learner)
        if step is None:
            found = self.latest()
            if found is None:
                raise FileNotFoundError(f'no checkpoint in {self.directory}')
            step = found[0]
        return learner.restore_checkpoint(self, int(step))

    # -------------------------------------------------------------- writing

    def save(self, learner, metrics: Optional[dict] = None) -> bool:
        """Start writing the learner's state and progress at its current step; False when a
        checkpoint of this step exists already (it holds the same values)."""
        p = learner.progress
        if p is None:
            raise ValueError('ModelCheckpoint.save runs during a fit (it reads learner.progress, '
                             'the running loop); '
                             'use learn.save(name) to save a model outside one')
        step = int(p.step)
        if p.metrics is not None and not math.isfinite(float(p.metrics['loss'])):
            return False  # a diverged step: the guard rolls the fit back at the next batch
        self.wait()
        mngr = self.manager
        if step in mngr.all_steps():
            if self._done.get(step, True) or not p.done:
                return False
            mngr.delete(step)  # the fit was stopped early here: re-save it marked complete
        rec, arrays, meta = record(learner), state_arrays(learner.state), learner.describe()
        sw.check_space(self.directory, saved_size(arrays), 'a checkpoint')
        digest = digest_item({'state': arrays}, {'meta': meta, 'progress': rec})
        mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta),
            progress=ocp.args.JsonSave(rec), digest=ocp.args.JsonSave(digest)),
            metrics=metrics, force=True)
        self.saved.append(step)
        self._done[step] = bool(rec['done'])
        return True

    # -------------------------------------------------------------- hooks

    def on_train_begin(self, learner):
        self.bind(learner)
        if self._lock is None:  # one writer of the folder at a time, until the fit ends
            self._lock = sw.FolderLock(self.directory, 'checkpoint folder').acquire()
        found = self.latest()
        if found is not None and found[1].get('run') != learner.run_id:
            step, rec = found
            self._unlock()
            raise ValueError(
                f'{self.directory} holds checkpoints of another training run (newest: step {step}, '
                f"fit #{rec['fit'].get('fit_index')} with {_fmt_fit(rec['fit'])}). Pass "
                'resume=True to continue that run, or give an empty (or new) folder to start '
                'a new one.')

    def on_batch_end(self, learner, iteration, logs):
        p = learner.progress
        if self.every_steps and p.step % self.every_steps == 0 and not (
                self.every_epoch and p.batch == p.batches):  # the epoch-end save comes next
            self.save(learner)

    def on_epoch_end(self, learner, epoch, logs):
        if self.every_epoch:
            self.save(learner)

    def on_train_end(self, learner):
        try:
            self.save(learner)
            self.wait()
        finally:
            self._unlock()

    def on_train_abort(self, learner, error):
        try:
            self.wait()
        except Exception as e:  # noqa: BLE001 -- the fit's own error is the one to raise
            warnings.warn(f'the last checkpoint write to {self.directory} failed too: {e}')
        finally:
            self._unlock()

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({self.directory!r}, every_steps={self.every_steps}, '
                f'every_epoch={self.every_epoch}, keep={self.keep})')


class SaveBest(ModelCheckpoint):
    """Keep the `keep` best epoch-end checkpoints by a logged metric (Orbax's best-N policy).

    Args:
      directory: folder (default `{data.path}/models/best`).
      monitor: a key of the epoch logs: 'val_loss', 'trn_loss', 'accuracy', or a metric's name.
      mode: 'min' (lower is better) or 'max'.
      keep: how many of the best to keep.

    An epoch whose value is not finite is not saved. `best_step()` names the best one and
    `restore(learner)` loads it.

    >>> best = SaveBest(monitor='val_loss', keep=2)                       # doctest: +SKIP
    >>> learn.fit(1e-2, 5, callbacks=[best]); best.restore(learn)        # doctest: +SKIP
    """

    resume_source = False
    default_subdir = 'best'

    def __init__(self, directory: Optional[str] = None, monitor: str = 'val_loss',
                 mode: str = 'min', keep: int = 1, async_write: bool = True):
        if mode not in ('min', 'max'):
            raise ValueError(f"mode={mode!r}; use 'min' (lower {monitor} is better) or 'max'")
        if keep is None:
            raise ValueError('keep=None; SaveBest keeps a number of best checkpoints (>= 1)')
        super().__init__(directory, every_steps=None, every_epoch=True, keep=keep,
                         async_write=async_write)
        self.monitor, self.mode = monitor, mode

    def _options(self) -> ocp.CheckpointManagerOptions:
        monitor = self.monitor
        return ocp.CheckpointManagerOptions(
            max_to_keep=self.keep, cleanup_tmp_directories=True,
            enable_async_checkpointing=self.async_write, best_fn=lambda m: float(m[monitor]),
            best_mode=self.mode, keep_checkpoints_without_metrics=False)

    def on_batch_end(self, learner, iteration, logs):
        pass

    def on_epoch_end(self, learner, epoch, logs):
        if self.monitor not in logs:
            raise KeyError(f'SaveBest(monitor={self.monitor!r}): the epoch logs have '
                           f'{sorted(logs)}; monitor one of them')
        value = float(logs[self.monitor])
        if math.isfinite(value):
            self.save(learner, metrics={self.monitor: value})

    def on_train_end(self, learner):
        try:
            self.wait()
        finally:
            self._unlock()

    def best_step(self) -> Optional[int]:
        """The step of the best kept checkpoint (None when there is none)."""
        if not self.steps():
            return None
        return self.manager.best_step()

    def best_values(self) -> dict[int, float]:
        """{step: monitored value} of the kept checkpoints."""
        out = {}
        for step in self.steps():
            m = self.manager.metrics(step) if hasattr(self.manager, 'metrics') else None
            if m is None:
                m = {self.monitor: self.read_record(step)['hist'][-1][self.monitor]}
            out[step] = float(m[self.monitor])
        return out

    def restore(self, learner, step: Optional[int] = None) -> dict:
        """Load the best checkpoint (or `step`) into `learner`; returns its record."""
        self.bind(learner)
        if step is None:
            step = self.best_step()
            if step is None:
                raise FileNotFoundError(f'no checkpoint in {self.directory}')
        return learner.restore_checkpoint(self, int(step))


# What a damaged checkpoint's error tells the user to do.
_FIX = ('Its bytes changed after it was written (disk or copy error); a resumed fit uses the '
        'newest intact checkpoint instead, or delete this step folder')


def _jsonable(x: Any) -> Any:
    """Logs as plain JSON values (numpy scalars to Python numbers)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (np.floating, np.ndarray, jax.Array)):
        return np.asarray(x).item() if np.ndim(x) == 0 else np.asarray(x).tolist()
    return x


def record(learner) -> dict:
    """What a checkpoint stores besides the arrays (JSON), read off the running loop
    (`learner.progress`) and its LossRecorder."""
    p = learner.progress
    loss = p.recorder
    rec = loss.rec
    return {'version': RECORD_VERSION, 'run': learner.run_id, 'fit': p.desc, 'step': int(p.step),
            'iteration': int(p.iteration), 'fit_epoch': int(p.fit_epoch),
            'epoch': int(p.epoch), 'batch': int(p.batch), 'batches': int(p.batches),
            'losses': record_floats(loss.losses), 'its': [int(v) for v in loss.its],
            'ema': [float(loss.ema[0]), int(loss.ema[1])], 'hist': _jsonable(p.hist),
            'done': bool(p.done), 'history': _jsonable(learner.history),
            'history_fits': list(learner._history_fits),
            'sched': {'lrs': list(rec.lrs), 'losses': list(rec.losses),
                      'moms': list(rec.moms), 'iterations': list(rec.iterations)}}


def record_floats(values: Any) -> list[float]:
    """Device or numpy scalars as exact Python floats (a float32 round-trips through JSON)."""
    return [float(np.asarray(v)) for v in values]
