"""Resumable training: a run killed with SIGKILL (mid-epoch, and again while a checkpoint is
being written) and resumed in a fresh process ends with bitwise the parameters of an
uninterrupted run; resuming with other arguments is refused; SaveBest keeps the N best;
a checkpoint written on one device restores onto two.

The killed runs are subprocesses (a kill must kill a whole process; the device count is
fixed when jax starts) sharing the suite's XLA compile cache; the rules (refusals, a
completed fit, SaveBest) are checked in-process on a head-only learner."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxcls.train.resume import ModelCheckpoint, ResumeMismatch, SaveBest

from helpers import learner, read_csv, read_events, square_data, trees_equal

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/: helpers.py

# Two fits, as in the lesson: the head on augmented images (4 steps: 40 images, bs 10), then
# everything unfrozen with SGDR (2 epochs, 8 steps). Global steps 1-4 and 5-12; checkpoints
# every 3 steps and at every epoch end, the newest 3 kept.
SCRIPT = textwrap.dedent('''
    import json, os, signal, sys
    import numpy as np, jax
    sys.path.insert(0, {tests!r})
    from helpers import TINY, colour_square_arrays
    from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model, transforms_side_on
    from jaxcls.train.callbacks import Callback
    from jaxcls.train.loggers import CSVLogger, TensorBoardLogger
    from jaxcls.train.resume import ModelCheckpoint
    args = json.loads(sys.argv[1])
    x, y = colour_square_arrays(60)
    tfms = tfms_from_model(TINY, 32, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_arrays(args['data'], (x[:40], y[:40]), (x[40:], y[40:]),
                                           bs=10, tfms=tfms, cache_size=36)
    # The plain kernels on one device as on two: the single-CPU-device rewrites (checked
    # against them in tests/models/test_ops.py) add rounding of their own, which 4 steps of
    # this tiny random net amplify past the two-device bounds below.
    learn = ConvLearner.pretrained(TINY, data, pretrained=False, quiet=True, kernels='xla')
    ck = ModelCheckpoint(args['ckpt'], every_steps=3, keep=3)

    def leaves(state):
        return [np.asarray(a) for a in jax.tree_util.tree_leaves(
            (state.params, state.batch_stats, state.opt_state, state.step, state.rng))]

    class Probe(Callback):
        def on_train_begin(self, learner):
            p = learner.progress
            if args.get('dump_begin') and p.iteration > 0:   # the fit that was restored
                np.savez(args['dump_begin'], *leaves(learner.state))
                shards = {{len(a.sharding.device_set) for a in jax.tree_util.tree_leaves(learner.state.params)}}
                print('RESTORED ' + json.dumps({{'step': p.step, 'iteration': p.iteration,
                                                 'epoch': p.epoch, 'batch': p.batch,
                                                 'devices_per_leaf': sorted(shards)}}), flush=True)

        def on_batch_end(self, learner, iteration, logs):
            step = learner.progress.step
            if step == args.get('dump_step'):
                np.savez(args['dump_step_to'], *leaves(learner.state))
            if step == args.get('kill_at'):
                ck.wait()   # the step-6 write is complete: a plain mid-epoch kill
                print('KILL ' + json.dumps({{'step': step}}), flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            if step == args.get('kill_in_save'):
                # ck (listed before this callback) has just started writing this step.
                names = os.listdir(args['ckpt'])
                print('KILL ' + json.dumps({{'step': step, 'saved': step in ck.saved,
                                             'names': sorted(names)}}), flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    logs = [CSVLogger(args['ckpt'] + '.csv', append=True), TensorBoardLogger(args['ckpt'] + '-tb')]
    cbs = [ck, Probe()] + logs   # ck first: its save has started when Probe runs
    learn.fit(1e-2, 1, checkpoint=ck, callbacks=cbs, resume=args['resume'])
    learn.unfreeze()
    learn.fit(1e-3, 2, cycle_len=1, checkpoint=ck, callbacks=cbs, resume=args['resume'])
    np.savez(args['out'], *leaves(learn.state))
    print('DONE ' + json.dumps({{'step': int(learn.state.step), 'epoch': learn.epoch,
                                 'n_model': len(jax.tree_util.tree_leaves(
                                     (learn.state.params, learn.state.batch_stats))),
                                 'devices': jax.device_count(),
                                 'history': [[h['trn_loss'], h['val_loss']] for h in learn.history],
                                 'sched': learn.sched.losses}}), flush=True)
''')


def _env(ndev):
    env = dict(os.environ, JAX_PLATFORMS='cpu', JAXCLS_OFFLINE='1',
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={ndev}")
    return env


def run(tmp, ckpt, out=None, ndev=1, resume=False, **kw):
    """Run SCRIPT; returns (returncode, {tag: json} of its marker lines, stderr)."""
    args = dict(data=str(tmp / 'data'), ckpt=str(ckpt), out=str(out or tmp / 'unused.npz'),
                resume=resume, **kw)
    code = SCRIPT.format(tests=TESTS)
    p = subprocess.run([sys.executable, '-c', code, json.dumps(args)], env=_env(ndev),
                       capture_output=True, text=True, timeout=300)
    marks = {}
    for line in p.stdout.splitlines():
        tag, _, rest = line.partition(' ')
        if tag in ('KILL', 'DONE', 'RESTORED'):
            marks[tag] = json.loads(rest)
    return p.returncode, marks, p.stderr


def load(npz):
    z = np.load(npz)
    return [z[k] for k in sorted(z.files, key=lambda s: int(s.split('_')[1]))]


def complete_steps(folder):
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def test_killed_runs_resume_to_the_uninterrupted_params_bitwise(tmp_path):
    # The uninterrupted run.
    rc, mref, err = run(tmp_path, tmp_path / 'ref_ckpt', tmp_path / 'ref.npz')
    assert rc == 0, err[-3000:]
    ref = load(tmp_path / 'ref.npz')
    assert mref['DONE']['step'] == 12 and mref['DONE']['epoch'] == 3
    # saved at steps 3, 4 (epoch end), 6, 8 (epoch end), 9, 12 (epoch end); the newest 3 kept
    assert complete_steps(tmp_path / 'ref_ckpt') == [8, 9, 12]

    ck = tmp_path / 'ckpt'
    # 1. SIGKILL mid-epoch: step 7 is the 3rd batch of the unfrozen fit's first epoch.
    rc, m, err = run(tmp_path, ck, kill_at=7)
    assert rc == -signal.SIGKILL, err[-3000:]
    assert m['KILL']['step'] == 7 and 'DONE' not in m
    assert complete_steps(ck) == [3, 4, 6]      # every 3 steps + the first fit's end, newest 3

    # 2. Resume, and SIGKILL again while the step-9 checkpoint is being written.
    rc, m, err = run(tmp_path, ck, resume=True, kill_in_save=9, dump_begin=str(tmp_path / 'b6.npz'))
    assert rc == -signal.SIGKILL, err[-3000:]
    assert m['RESTORED'] == {'step': 6, 'iteration': 2, 'epoch': 1, 'batch': 2,
                             'devices_per_leaf': [1]}
    kill = m['KILL']
    assert kill['step'] == 9 and kill['saved']
    assert '9' not in kill['names'] and any(n.startswith('9.orbax-checkpoint-tmp') for n in
                                            kill['names']), kill['names']  # write in flight
    leftovers = os.listdir(ck)
    assert 8 in complete_steps(ck) and 9 not in complete_steps(ck), leftovers
    half_copy = tmp_path / 'ckpt_at_kill'
    shutil.copytree(ck, half_copy)              # for the two-device restore below

    # 3. Resume from the newest complete checkpoint (the epoch end, step 8) to the end.
    rc, m, err = run(tmp_path, ck, tmp_path / 'resumed.npz', resume=True,
                     dump_begin=str(tmp_path / 'b8.npz'), dump_step=9,
                     dump_step_to=str(tmp_path / 'a9.npz'))
    assert rc == 0, err[-3000:]
    assert m['RESTORED']['step'] == 8 and m['RESTORED']['batch'] == 0
    assert m['DONE']['step'] == 12
    assert not [n for n in os.listdir(ck) if 'tmp' in n]   # the torn write was cleaned up
    got = load(tmp_path / 'resumed.npz')
    assert len(got) == len(ref) > 10
    assert all(np.array_equal(a, b) for a, b in zip(ref, got))
    # ... and so is the host-side record: the epoch table and every smoothed loss.
    assert m['DONE']['history'] == mref['DONE']['history']
    assert m['DONE']['sched'] == mref['DONE']['sched'] and len(mref['DONE']['sched']) == 8
    # ... and the CSV and TensorBoard logs: no epoch or step twice, none missing.
    assert read_csv(f'{ck}.csv') == read_csv(tmp_path / 'ref_ckpt.csv') and len(
        read_csv(f'{ck}.csv')) == 4
    ref_events = read_events(str(tmp_path / 'ref_ckpt-tb'))
    assert read_events(f'{ck}-tb') == ref_events and len(ref_events) > 12

    # 4. The step-8 checkpoint (written on 1 device) restored onto 2 devices.
    rc, m2, err = run(tmp_path, half_copy, ndev=2, resume=True,
                      dump_begin=str(tmp_path / 'b8_two.npz'), dump_step=9,
                      dump_step_to=str(tmp_path / 'a9_two.npz'))
    assert rc == 0, err[-3000:]
    assert m2['DONE']['devices'] == 2 and m2['RESTORED']['devices_per_leaf'] == [2]
    assert m2['DONE']['step'] == 12 and len(m2['DONE']['history']) == len(mref['DONE']['history'])
    one, two = load(tmp_path / 'b8.npz'), load(tmp_path / 'b8_two.npz')
    assert all(np.array_equal(a, b) for a, b in zip(one, two))   # restoring is exact
    # The first step after the restore: the rounding of the 2-device all-reduce, nothing more --
    # not bitwise. Measured: parameters and statistics 2e-6 to 5e-6 relative L2, momentum
    # buffers 9e-6 to 1.2e-5, under the tests' XLA flags and the users'. One step only: this
    # tiny random net with batch statistics over 10 images is chaotic (as in
    # tests/e2e/test_sharding.py); after the epoch's 4 steps that rounding had grown to 1e-5
    # under XLA's level 1 and to 1e-3 under the tests' flags (tests/conftest.py).
    one, two = load(tmp_path / 'a9.npz'), load(tmp_path / 'a9_two.npz')
    rel = [float(np.linalg.norm(a.astype(np.float64) - b) / (np.linalg.norm(a) + 1e-6))
           for a, b in zip(one, two)]
    n_model = m2['DONE']['n_model']
    assert max(rel[:n_model]) < 2e-5 and max(rel) < 1e-4, (max(rel[:n_model]), max(rel))
    assert not all(np.array_equal(a, b) for a, b in zip(load(tmp_path / 'b8.npz'), one))  # a step


# ---------------------------------------------------------------- in-process: the rules

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return square_data(tmp_path_factory.mktemp('resume_data'), 50, 30, seed=1)


def test_resume_with_other_arguments_is_refused_and_a_done_fit_is_not_rerun(data, tmp_path):
    folder = tmp_path / 'ck'
    learn = learner(data, precompute=True)
    hist = learn.fit(0.05, 2, checkpoint=ModelCheckpoint(folder))
    assert complete_steps(folder) == [3, 6]          # 3 batches per epoch, saved per epoch
    # A new learner (a new process, in effect) calling fit with other rates: refused.
    other = learner(data, precompute=True)
    with pytest.raises(ResumeMismatch, match=r"cannot resume fit #0 from .*/6: it was written by a "
                       r"fit with kind='fit', lrs=\[0.05, 0.05, 0.05\], n_cycle=2.*lrs: checkpoint "
                       r"\[0.05, 0.05, 0.05\], this call \[0.01, 0.01, 0.01\].*same arguments|"
                       r"arguments .*of the interrupted run"):
        other.fit(0.01, 2, checkpoint=ModelCheckpoint(folder), resume=True)
    with pytest.raises(ResumeMismatch, match=r"cycle_len: checkpoint None, this call 1"):
        learner(data, precompute=True).fit(0.05, 2, cycle_len=1, checkpoint=ModelCheckpoint(folder),
                                           resume=True)
    # Without resume, a folder of another run is not overwritten.
    with pytest.raises(ValueError, match=r"holds checkpoints of another training run \(newest: "
                                         r"step 6, fit #0.*Pass resume=True"):
        learner(data, precompute=True).fit(0.05, 2, checkpoint=ModelCheckpoint(folder))
    assert ModelCheckpoint().bind(learn).directory == os.path.join(data.path, 'models',
                                                                   'checkpoints')
    with pytest.raises(ValueError, match='resume=True needs the checkpoints'):
        learner(data, precompute=True).fit(0.05, 2, resume=True)
    # The same call: the fit is complete, so it restores and returns without a step (and a
    # refused call before it does not count as a fit of the sequence).
    again = learner(data, precompute=True)
    with pytest.raises(ResumeMismatch):
        again.fit(0.01, 2, checkpoint=ModelCheckpoint(folder), resume=True)
    hist2 = again.fit(0.05, 2, checkpoint=ModelCheckpoint(folder), resume=True)
    assert [h['val_loss'] for h in hist2] == [h['val_loss'] for h in hist]
    assert int(again.state.step) == 6 and again.epoch == 2 and again.history == hist2
    assert trees_equal(jax.tree_util.tree_leaves(again.state.params),
                       jax.tree_util.tree_leaves(learn.state.params))
    assert again.sched.losses == learn.sched.losses
    np.testing.assert_array_equal(again.predict(), learn.predict())
    assert not any(k[0] == 'train' for k in again.steps.compiled)   # no train step, not even built
    # A later fit of the same sequence continues the run in the same folder.
    again.fit(0.05, 1, checkpoint=ModelCheckpoint(folder))
    assert complete_steps(folder) == [3, 6, 9] and int(again.state.step) == 9


def test_save_best_keeps_the_n_best_by_val_loss(data, tmp_path):
    learn = learner(data, precompute=True)
    best = SaveBest(tmp_path / 'best', monitor='val_loss', mode='min', keep=2)
    hist = learn.fit(0.05, 5, callbacks=[best])
    nb = len(data.trn_dl)
    losses = {(h['epoch'] + 1) * nb: h['val_loss'] for h in hist}     # step -> val_loss
    two_best = sorted(sorted(losses, key=losses.get)[:2])
    assert complete_steps(tmp_path / 'best') == two_best
    assert best.best_step() == min(losses, key=losses.get)
    assert best.best_values() == pytest.approx({s: losses[s] for s in two_best}, rel=1e-12)
    # Restoring the best puts its weights back: predictions give its val_loss.
    record = best.restore(learn)
    assert int(learn.state.step) == best.best_step() and record['step'] == best.best_step()
    assert learn.validate()['val_loss'] == pytest.approx(losses[best.best_step()], rel=1e-6)
    # Into a learner with other trainable groups: everything but the optimizer state.
    params = jax.tree_util.tree_map(np.array, learn.state.params)
    other = learner(data, seed=5)
    other.unfreeze()
    opt_before = jax.tree_util.tree_structure(other.state.opt_state)
    other.restore_checkpoint(tmp_path / 'best', step=two_best[0])
    learn.restore_checkpoint(best, step=two_best[0])
    assert trees_equal(jax.tree_util.tree_leaves(other.state.params),
                       jax.tree_util.tree_leaves(learn.state.params))
    assert jax.tree_util.tree_structure(other.state.opt_state) == opt_before
    assert other.epoch == learn.epoch == two_best[0] // nb
    assert two_best[0] == best.best_step() or not trees_equal(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(learn.state.params))
    with pytest.raises(KeyError, match=r"SaveBest\(monitor='f1'\): the epoch logs have "
                                       r"\['accuracy', 'epoch', 'time', 'trn_loss', 'val_loss'\]"):
        learner(data, precompute=True).fit(0.05, 1, callbacks=[SaveBest(tmp_path / 'b2', monitor='f1')])
    with pytest.raises(ValueError, match="mode='low'; use 'min'"):
        SaveBest(mode='low')

