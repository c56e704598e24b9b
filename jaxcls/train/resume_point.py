"""Resuming a fit: which checkpoint to continue from, and the record that makes it exact.

A ModelCheckpoint step holds the state arrays, the model description and a JSON record
(`jaxcls.train.resume.record`): the running fit's description and position, the loss-EMA state and the
raw losses of the unfinished epoch, the epoch logs, the learner's history and `learn.sched`,
and the run's id. `find_resume_point` decides what a fit with `resume=True` does with it;
`restore_checkpoint` loads a checkpoint into a learner outside a fit.
"""
from __future__ import annotations

import warnings
from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from .integrity import ModelFileError
from .modelfile import check_same_network
from .resume import RECORD_VERSION, ModelCheckpoint, ResumeMismatch, SaveBest, _fmt_fit, \
    describe_mismatch, state_arrays


def restore_recorder(loss, rec: dict) -> None:
    """Put a checkpoint record's loss-EMA state and `learn.sched` back into a LossRecorder."""
    loss.ema = (float(rec['ema'][0]), int(rec['ema'][1]))
    loss.losses = [np.float32(v) for v in rec['losses']]
    loss.its = [int(v) for v in rec['its']]
    sched = rec['sched']
    loss.rec.lrs, loss.rec.losses = list(sched['lrs']), list(sched['losses'])
    loss.rec.moms, loss.rec.iterations = list(sched['moms']), list(sched['iterations'])
    loss.rec.epochs = list(rec['hist'])


def restore_checkpoint(learner, source: Any, step: Optional[int] = None) -> dict:
    """Load a ModelCheckpoint/SaveBest checkpoint (a callback or its folder; default the
    newest step, or SaveBest's best) into `learner` outside a fit; returns its record.
    See `ConvLearner.restore_checkpoint`."""
    ck = source if isinstance(source, ModelCheckpoint) else ModelCheckpoint(source)
    ck.bind(learner)
    if step is None:
        if isinstance(ck, SaveBest):
            step = ck.best_step()
        else:
            found = ck.latest()
            step = None if found is None else found[0]
        if step is None:
            raise FileNotFoundError(f'no checkpoint in {ck.directory}')
    rec = ck.read_record(step)
    check_same_network(ck.read_meta(step), learner.describe(), f'{ck.directory}/{step}')
    if list(rec['fit']['trainable']) == list(learner.trainable):
        fresh = learner.steps.fresh_state()
        state = fresh.replace(**ck.read_state(step, state_arrays(fresh)))
    else:  # another optimizer structure: everything but the optimizer state
        rep = NamedSharding(learner.data.trn_dl.mesh, P())
        target = jax.tree_util.tree_map(
            lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=rep),
            ck.state_metadata(step))
        arrays = ck.read_state(step, target)
        keys = ('params', 'batch_stats', 'step', 'rng') + (
            ('ema',) if 'ema' in arrays and learner.state.ema is not None else ())
        state = learner.state.replace(**{k: arrays[k] for k in keys})
    learner.state = learner._place(state)
    learner.epoch = int(rec['epoch'])
    learner.history = list(rec['history']) + list(rec['hist'])
    learner.run_id = rec['run']
    if learner.precompute:
        learner._features.ensure()
    return rec


def resume_source(checkpoint: Any, callbacks: list) -> Optional[ModelCheckpoint]:
    """The ModelCheckpoint a resumed fit continues from: `checkpoint`, else the first resumable
    ModelCheckpoint among the callbacks."""
    if checkpoint is not None and getattr(checkpoint, 'resume_source', False):
        return checkpoint
    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.resume_source:
            return cb
    return None


def find_resume_point(ck: ModelCheckpoint, fit_index: int, desc: dict, target: Any
                      ) -> tuple[str, Optional[int], Optional[dict], Optional[dict]]:
    """What a fit with resume=True does: ('fresh' | 'skip' | 'restore', step, record, state).

    'skip': the checkpointed run got past this fit (it is complete); 'restore': the newest
    readable checkpoint belongs to this fit, and its state arrays are restored onto
    `target` (a TrainState-like dict of arrays with the shardings to restore onto); 'fresh':
    there is no checkpoint, or it predates this fit (the learner already holds its state).
    Raises ResumeMismatch when the checkpoint is this fit's but the fit is described differently.
    """
    steps = ck.steps()
    errors, state_errors = [], []
    for step in reversed(steps):
        try:
            record = ck.read_record(step)
        except Exception as e:
            errors.append(f'step {step}: {e}')
            continue
        if record.get('version') != RECORD_VERSION or 'fit' not in record:
            raise ResumeMismatch(f'{ck.directory}/{step} was not written by ModelCheckpoint '
                                 f'(record version {record.get("version")}); use another folder')
        saved_index = int(record['fit']['fit_index'])
        if saved_index != fit_index and state_errors:
            raise ModelFileError(f'the checkpoints of fit #{fit_index} in {ck.directory} cannot be '
                                 'restored: ' + '; '.join(state_errors))
        if saved_index > fit_index:
            return 'skip', step, record, None
        if saved_index < fit_index:
            return 'fresh', step, record, None
        if record['fit'] != desc:
            raise ResumeMismatch(
                f"cannot resume fit #{fit_index} from {ck.directory}/{step}: it was written by a fit "
                f"with {_fmt_fit(record['fit'])}, and this call differs ({describe_mismatch(record['fit'], desc)}). "
                'Call fit with the arguments (and the data, bs and trainable layer groups) of the '
                'interrupted run to continue it, or resume=False with an empty checkpoint folder '
                'to start over.')
        try:
            return 'restore', step, record, ck.read_state(step, target)
        except Exception as e:  # arrays unreadable: an earlier checkpoint of this fit will do
            errors.append(f'step {step}: {e}')
            state_errors.append(f'step {step}: {e}')
            warnings.warn(f'checkpoint {ck.directory}/{step} cannot be restored ({e}); '
                          'trying an earlier one')
    if state_errors or (steps and len(errors) == len(steps)):
        raise ModelFileError(f'no checkpoint in {ck.directory} can be read: ' + '; '.join(errors)
                             + '. Delete the folder to start over, or restore a copy of it')
    return 'fresh', None, None, None
