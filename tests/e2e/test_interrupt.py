"""Ctrl-C in a real `jaxcls train` subprocess: exit status 130 within 2 s at every moment tried,
one line saying what was saved, no partial file left, and `--resume` ends where an
uninterrupted run ends, bit for bit."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from jaxcls.interrupts import EXIT_INTERRUPTED, GRACE_S, Guard, complete_steps, remove_partial

from helpers import make_folder

FLAGS = ['--arch', 'resnet18', '--sz', '32', '--bs', '8', '--no-pretrained', '--unfreeze',
         '--epochs', '3', '--lr', '0.02']
# The 2 s a user waits for, with room for a loaded CI machine: the watchdog exits GRACE_S after
# the signal; the rest is sweeping and printing.
EXIT_LIMIT_S = 2.0


def jaxcls_cmd():
    exe = os.path.join(os.path.dirname(sys.executable), 'jaxcls')
    return [exe] if os.path.exists(exe) else [sys.executable, '-m', 'jaxcls.cli']


class Run:
    """`jaxcls train PATH FLAGS...` in the background, its output (stdout and stderr, the
    progress bar included) collected as it comes."""

    def __init__(self, path, *extra):
        self.p = subprocess.Popen(jaxcls_cmd() + ['train', path, *FLAGS, *extra],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.err = b''
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for chunk in iter(lambda: self.p.stdout.read1(4096), b''):
            self.err += chunk

    def wait_for(self, cond, timeout=240):
        t0 = time.time()
        while not cond():
            assert self.p.poll() is None, f'the run ended first: {self.err.decode()[-800:]}'
            assert time.time() - t0 < timeout, 'timed out waiting'
            time.sleep(0.05)

    def interrupt(self):
        self.p.send_signal(signal.SIGINT)
        t0 = time.time()
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise AssertionError(f'no exit 60 s after SIGINT: {self.err.decode()[-800:]}')
        took = time.time() - t0
        self.t.join(5)
        return self.p.returncode, took, self.err.decode()

    def finish(self):
        self.p.wait(timeout=600)
        self.t.join(5)
        assert self.p.returncode == 0, self.err.decode()[-2000:]
        return self.err.decode()


def no_partial_files(path):
    left = [os.path.join(d, n) for d, dirs, files in os.walk(path) for n in dirs + files
            if 'orbax-checkpoint-tmp' in n or n.endswith('.tmp') or n.endswith('.tmp.npy')]
    assert not left, left


def variables(folder):
    from jaxcls.train.inference import Predictor
    return jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.asarray,
                                                            Predictor.load(folder).variables))


@pytest.mark.slow
def test_sigint_at_several_moments_then_resume(tmp_path):
    path = make_folder(tmp_path / 'data', n_train=16, n_valid=8)    # 4 batches an epoch
    ck_dir = os.path.join(path, 'models', 'resnet18_32-checkpoints')
    Run(path, '--name', 'reference').finish()

    # 1. while starting (importing jax, decoding): nothing saved, the same command starts over
    r = Run(path)
    time.sleep(0.5)
    rc, took, err = r.interrupt()
    assert rc == EXIT_INTERRUPTED and took < EXIT_LIMIT_S, (rc, took, err[-800:])
    assert err.rstrip().endswith('nothing was saved') or 'no checkpoint was complete' in err
    assert err.count('jaxcls: interrupted') == 1 and 'Traceback' not in err, err[-2000:]
    no_partial_files(path)

    # 2. once the first epoch has begun (compiling or training): no checkpoint yet
    r = Run(path)
    r.wait_for(lambda: b'epoch 1/' in r.err)
    rc, took, err = r.interrupt()
    assert rc == EXIT_INTERRUPTED and took < EXIT_LIMIT_S, (rc, took, err[-800:])
    assert 'Traceback' not in err, err[-2000:]
    no_partial_files(path)
    steps = complete_steps(ck_dir)
    if steps:   # the run got as far as a checkpoint before the signal: resume it instead
        assert f'the last complete checkpoint is step {steps[-1]}' in err
        Run(path, '--resume').finish()
    else:
        assert 'no checkpoint was complete yet' in err

    # 3. after the first epoch's checkpoint: the line names it and the command that resumes
    r = Run(path, '--name', 'resumed')
    ck_resumed = os.path.join(path, 'models', 'resumed-checkpoints')
    r.wait_for(lambda: complete_steps(ck_resumed))
    rc, took, err = r.interrupt()
    assert rc == EXIT_INTERRUPTED and took < EXIT_LIMIT_S, (rc, took, err[-800:])
    last = err.strip().splitlines()[-1]
    steps = complete_steps(ck_resumed)
    assert last.startswith(f'jaxcls: interrupted; the last complete checkpoint is step '
                           f'{steps[-1]} in {ck_resumed}; resume with: jaxcls train {path}')
    assert last.endswith('--name resumed --resume'), last
    no_partial_files(path)
    # a fresh run does not silently start over on top of it
    p = subprocess.run(jaxcls_cmd() + ['train', path, *FLAGS, '--name', 'resumed'],
                       capture_output=True, text=True)
    assert p.returncode == 2 and 'holds the checkpoints of an interrupted run' in p.stderr

    Run(path, '--name', 'resumed', '--resume').finish()
    assert not os.path.exists(ck_resumed)          # a completed run removes its checkpoints
    a = variables(os.path.join(path, 'models', 'reference'))
    b = variables(os.path.join(path, 'models', 'resumed'))
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_the_guard_sweeps_partial_writes_and_says_what_was_saved(tmp_path):
    """In-process: the watchdog's exit, with the exit replaced by a record of the status."""
    ck = tmp_path / 'ck'
    (ck / '12').mkdir(parents=True)
    (ck / '24.orbax-checkpoint-tmp-1712').mkdir()
    (ck / '36.orbax-checkpoint-tmp').mkdir()            # Orbax 0.12's name: no number
    (tmp_path / f'train-18px.{os.getpid()}.ab12cd34.tmp.npy').write_bytes(b'partial')
    (tmp_path / 'someone-else.99999999.ab.tmp').write_bytes(b'not ours')
    (tmp_path / f'.m.{os.getpid()}.0123abcd.tmp' / 'state').mkdir(parents=True)  # learn.save's
    (tmp_path / '.m.lock').write_text(json.dumps({'pid': os.getpid()}))         # its lock
    (tmp_path / '.n.lock').write_text(json.dumps({'pid': 99999999}))            # another's
    exits = []
    g = Guard(grace_s=0.2, exit_fn=exits.append)
    g.sweep = [str(ck), str(tmp_path)]
    g.message = lambda: f'the last complete checkpoint is step {complete_steps(str(ck))[-1]}'
    with g:
        t0 = time.time()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)             # the main thread is busy: the KeyboardInterrupt comes here
        except KeyboardInterrupt:
            pass
        while not exits and time.time() - t0 < 5:
            time.sleep(0.01)          # the watchdog exits after its grace period
    assert exits == [EXIT_INTERRUPTED] and 0.15 < time.time() - t0 < 0.2 + GRACE_S
    assert sorted(os.listdir(ck)) == ['12']
    assert sorted(os.listdir(tmp_path)) == ['.n.lock', 'ck', 'someone-else.99999999.ab.tmp']
    assert remove_partial(str(tmp_path / 'missing')) == []
    assert g.say() == 'jaxcls: interrupted; the last complete checkpoint is step 12'
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
