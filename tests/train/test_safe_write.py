"""Nothing saved is lost: a save killed at any moment leaves the old or the new model under its
name; a second writer of a model or checkpoint folder gets an error naming the first; a disk
too full is refused before writing (or cleaned up after), and training resumes once there is
room. Disk-full cases run on a small tmpfs (root only: skipped elsewhere, with the reason)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from jaxcls.train import checkpoint as ck
from jaxcls.train import safe_write as sw
from jaxcls.train.integrity import FolderBusyError, NotEnoughSpaceError
from jaxcls.train.resume import ModelCheckpoint

from helpers import learner, square_data

# Saves model 'm' again and again, version k holding arrays full of k (8 MiB: each save takes
# long enough to be killed inside), its description {'k': k}.
SAVER = textwrap.dedent('''
    import sys, numpy as np
    from jaxcls.train import checkpoint as ck
    folder, k = sys.argv[1], 0
    while True:
        k += 1
        tree = {'a': np.full((1024, 1024), k, np.float32), 'b': np.full((1024, 1024), k, np.int32)}
        print(f'SAVING {k}', flush=True)
        ck.save_checkpoint(folder, tree, {'k': k})
        print(f'SAVED {k}', flush=True)
''')


def saved_version(folder):
    """k of the model under `folder`, after checking its arrays and description agree."""
    meta, tree = ck.load_meta(folder), ck.load_checkpoint(folder)
    k = meta['k']
    assert np.all(tree['a'] == k) and np.all(tree['b'] == k), (k, tree['a'][0, 0])
    return k


def test_a_save_killed_at_any_moment_leaves_the_old_or_the_new_model(tmp_path):
    folder = str(tmp_path / 'models' / 'm')
    ck.save_checkpoint(folder, {'a': np.zeros((1024, 1024), np.float32),
                                'b': np.zeros((1024, 1024), np.int32)}, {'k': 0})
    inside = 0
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2):
        p = subprocess.Popen([sys.executable, '-c', SAVER, folder], stdout=subprocess.PIPE,
                             text=True)
        p.stdout.readline()                       # SAVING 1 ...
        assert p.stdout.readline().startswith('SAVED 1')
        lines = [p.stdout.readline()]             # ... SAVING 2: kill inside that save (or
        time.sleep(delay)                         # a later one, on a fast machine)
        p.send_signal(signal.SIGKILL)
        p.wait()
        lines += p.stdout.read().splitlines()
        last = max(int(x.split()[1]) for x in ['SAVED 1'] + lines if x.startswith('SAVED'))
        k = saved_version(folder)                 # readable, arrays and description agree
        inside += lines[-1].startswith('SAVING')  # killed between SAVING k and SAVED k
        assert k in (last, last + 1), (k, lines[-3:])
    assert inside >= 1, 'no kill landed inside a save'
    # what killed saves left (temporary folders of dead processes) goes with the next save
    ck.save_checkpoint(folder, {'a': np.ones(3)}, {'k': 9})
    left = [n for n in os.listdir(tmp_path / 'models') if n != 'm']
    assert left == [] and ck.load_meta(folder) == {'k': 9}


def test_replace_folder_swaps_in_one_step(tmp_path):
    (tmp_path / 'old').mkdir()
    (tmp_path / 'old' / 'f').write_text('old')
    (tmp_path / 'new').mkdir()
    (tmp_path / 'new' / 'f').write_text('new')
    sw.replace_folder(str(tmp_path / 'new'), str(tmp_path / 'old'))
    assert sorted(os.listdir(tmp_path)) == ['old'] and (tmp_path / 'old' / 'f').read_text() == 'new'
    # a two-rename replacement killed between its renames: the reader puts the old one back
    os.rename(tmp_path / 'old', tmp_path / '.old.999999999.0123abcd.old')
    assert sw.recover(str(tmp_path / 'old')) and (tmp_path / 'old' / 'f').read_text() == 'new'


HOLDER = textwrap.dedent('''
    import sys, time
    from jaxcls.train.safe_write import FolderLock
    with FolderLock(sys.argv[1]):
        print('LOCKED', flush=True)
        time.sleep(60)
''')


def test_a_second_writer_is_told_who_holds_the_folder(tmp_path):
    data = square_data(tmp_path / 'd', 30, 20, seed=3)
    learn = learner(data, precompute=True)
    model, ckdir = os.path.join(data.path, 'models', 'm'), str(tmp_path / 'ck')
    holders = [subprocess.Popen([sys.executable, '-c', HOLDER, f], stdout=subprocess.PIPE,
                                text=True) for f in (model, ckdir)]
    try:
        assert [h.stdout.readline().strip() for h in holders] == ['LOCKED', 'LOCKED']
        with pytest.raises(FolderBusyError, match=rf'{model} is being written by another process '
                                                  rf'\(pid {holders[0].pid} on .*wait for it'):
            learn.save('m')
        with pytest.raises(FolderBusyError, match=rf'pid {holders[1].pid} on '):
            learn.fit(0.05, 1, checkpoint=ModelCheckpoint(ckdir))
        assert not os.path.exists(model) and not os.path.exists(ckdir)
        assert int(learn.state.step) == 0                 # refused before any step
    finally:
        for h in holders:
            h.kill()
            h.wait()
    learn.fit(0.05, 1, checkpoint=ModelCheckpoint(ckdir))  # the lock died with its holder
    assert learn.save('m') == model and os.listdir(ckdir) == ['2']     # 2 steps an epoch


def test_check_space_names_what_is_needed_and_where(tmp_path):
    free = __import__('shutil').disk_usage(tmp_path).free
    with pytest.raises(NotEnoughSpaceError, match=rf'to save the model to {tmp_path}/m: it needs '
                                                  r'about [0-9.]+ MiB, and [0-9.]+ MiB are free'):
        sw.check_space(str(tmp_path / 'm'), free + 2**40, 'the model')
    sw.check_space(str(tmp_path / 'not' / 'yet' / 'm'), 1, 'the model')


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 8 MiB and 60 inodes at tmp_path/small; yields a function that resizes it."""
    mnt = tmp_path / 'small'
    mnt.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=8m,nr_inodes=60', 'tmpfs', str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f'a small disk needs a tmpfs mount (root): {r.stderr.strip()}')

    def resize(opts):
        subprocess.run(['mount', '-o', f'remount,{opts}', str(mnt)], check=True)
    yield mnt, resize
    subprocess.run(['umount', '-l', str(mnt)])


def test_a_failed_checkpoint_waits_for_orbax_s_other_writers_then_leaves_nothing(tmp_path):
    """Orbax raises the first failed part of a write while another part's thread may still be
    creating files in the temporary folder (CI saw '4.orbax-checkpoint-tmp' left behind): the
    sweep waits for that thread, however long a loaded machine holds it back."""
    folder = tmp_path / 'ck'
    part = folder / '4.orbax-checkpoint-tmp'
    part.mkdir(parents=True)

    def other_part():   # writes on for 0.4 s, 50 ms apart: longer than any sweep's quiet passes
        for i in range(8):
            time.sleep(0.05)
            part.mkdir(exist_ok=True)
            (part / f'array{i}').write_bytes(b'x')
    writer = type('Writer', (threading.Thread,), {'__module__': 'orbax.checkpoint.stand_in'})(
        target=other_part)

    class Manager:      # the async write whose first part failed on a full disk
        def wait_until_finished(self):
            writer.start()
            raise ValueError('RESOURCE_EXHAUSTED: No space left on device [os_error_code=28]')
    chk = ModelCheckpoint(str(folder))
    chk._mngr = Manager()
    with pytest.raises(NotEnoughSpaceError, match='filled up while writing a checkpoint'):
        chk.wait()
    done = not writer.is_alive()
    writer.join()
    assert done and os.listdir(folder) == []


def test_a_full_disk_is_refused_cleaned_up_and_resumed_from(tmp_path, small_disk):
    mnt, resize = small_disk
    data = square_data(tmp_path / 'd', 30, 20, seed=3)
    learn = learner(data, precompute=True)
    need = ck.saved_size({'s': learn.state.params, 'b': learn.state.batch_stats,
                          'o': learn.state.opt_state})
    assert need > 8 * 2**20                    # the TINY net's arrays do not fit in 8 MiB
    # 1. refused before writing: nothing on the disk, the learner as it was
    with pytest.raises(NotEnoughSpaceError, match=rf'save the model to {mnt}/m: it needs about'):
        ck.save_checkpoint(str(mnt / 'm'), learn.state.params, {'k': 1})
    ckdir = str(mnt / 'ck')
    with pytest.raises(NotEnoughSpaceError, match=rf'save a checkpoint to {ckdir}'):
        learn.fit(0.05, 2, checkpoint=ModelCheckpoint(ckdir))
    assert [n for n in os.listdir(mnt) if not n.startswith('.')] == ['ck']
    assert os.listdir(ckdir) == []
    # 2. room for the bytes but not for the files (inodes): the write fails half way
    resize('size=256m')
    with pytest.raises(NotEnoughSpaceError, match='filled up while writing a checkpoint'):
        learner(data, precompute=True).fit(0.05, 2, checkpoint=ModelCheckpoint(ckdir))
    assert os.listdir(ckdir) == [] or all(n.isdigit() for n in os.listdir(ckdir))
    with pytest.raises(NotEnoughSpaceError, match=rf'filled up while writing the model to {mnt}/m;'):
        ck.save_checkpoint(str(mnt / 'm'), learn.state.params, {'k': 1})   # a model, likewise
    assert [n for n in os.listdir(mnt) if not n.startswith('.ck')] == ['ck']
    # 3. once there is room, the same call with resume=True trains to the end
    resize('size=256m,nr_inodes=10000')
    again = learner(data, precompute=True)
    again.fit(0.05, 2, checkpoint=ModelCheckpoint(ckdir), resume=True)
    assert int(again.state.step) == 4 and sorted(os.listdir(ckdir)) == ['2', '4']
    assert json.loads(json.dumps(again.history))[-1]['epoch'] == 1
