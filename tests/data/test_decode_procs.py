"""Decoding files in worker processes gives exactly what threads give, bad files included,
into RAM or into the memory-mapped cache, and survives a worker that dies."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from jaxcls.data import decode_cache
from jaxcls.data import decode_procs
from jaxcls.data.decode import decode_files


def make_files(root, n=12):
    """JPEGs and PNGs of different sizes and modes, a truncated JPEG and an empty file."""
    os.makedirs(os.path.join(root, 'imgs'), exist_ok=True)
    names = []
    rng = np.random.default_rng(0)
    for i in range(n):
        a = rng.integers(0, 256, (20 + 3 * i, 31 - i, 3), dtype=np.uint8)
        im = Image.fromarray(a) if i % 3 else Image.fromarray(a[..., 0])  # some greyscale
        name = f'imgs/{i}.' + ('jpg' if i % 2 else 'png')
        im.save(os.path.join(root, name))
        names.append(name)
    with open(os.path.join(root, 'imgs/1.jpg'), 'rb') as f:
        data = f.read()
    with open(os.path.join(root, 'imgs/cut.jpg'), 'wb') as f:
        f.write(data[:len(data) // 3])
    open(os.path.join(root, 'imgs/empty.png'), 'wb').close()
    # A name that is not valid UTF-8, as os.listdir returns it (crosses to the workers as JSON).
    odd = 'imgs/' + os.fsdecode(b'odd\xff.png')
    Image.new('RGB', (9, 7), (1, 2, 3)).save(os.path.join(root, odd), 'PNG')
    return names[:5] + ['imgs/cut.jpg'] + names[5:] + ['imgs/empty.png', odd]


@pytest.mark.filterwarnings('ignore::jaxcls.data.decode.SkippedImagesWarning')
def test_processes_decode_exactly_what_threads_decode(tmp_path):
    names = make_files(tmp_path)
    threads = decode_files(names, str(tmp_path), 16, quiet=True, processes=False)
    with warnings.catch_warnings():
        # A worker that died would have its images decoded here, with this warning.
        warnings.simplefilter('error', RuntimeWarning)
        procs = decode_files(names, str(tmp_path), 16, quiet=True, processes=True, num_workers=3)
    np.testing.assert_array_equal(procs.x, threads.x)
    assert procs.fnames == threads.fnames and procs.kept.tolist() == threads.kept.tolist()
    assert procs.skipped == threads.skipped
    assert [n for n, _ in procs.skipped] == ['imgs/cut.jpg', 'imgs/empty.png']
    assert procs.x[-1, 0, 0].tolist() == [1, 2, 3]  # the odd name was decoded
    assert procs.fingerprint == threads.fingerprint
    assert not [f for f in os.listdir('/dev/shm') if f.startswith(f'jaxcls-decode-{os.getpid()}-')] \
        if os.path.isdir('/dev/shm') else True


@pytest.mark.filterwarnings('ignore::jaxcls.data.decode.SkippedImagesWarning')
def test_processes_write_into_the_memory_mapped_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(decode_cache, 'ram_budget', lambda: 0)  # does not fit in RAM: straight to disk
    names = make_files(tmp_path)
    ref = decode_files(names, str(tmp_path), 16, quiet=True, processes=False)
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        d = decode_files(names, str(tmp_path), 16, quiet=True, processes=True, num_workers=2,
                         cache_dir=str(tmp_path / 'c'), mmap_bytes=0)
    assert isinstance(d.x, np.memmap)
    np.testing.assert_array_equal(np.asarray(d.x), ref.x)
    again = decode_files(names, str(tmp_path), 16, quiet=True, cache_dir=str(tmp_path / 'c'),
                         mmap_bytes=0)
    assert again.from_cache and again.skipped == ref.skipped


def test_a_dead_worker_leaves_its_chunks_to_the_parent(tmp_path):
    buf = np.zeros((3, 2), np.uint8)
    # A "worker" that exits at once: every chunk it is sent comes back to the fallback.
    dead = subprocess.Popen([sys.executable, '-c', 'raise SystemExit(3)'], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    dead.wait()
    calls = []

    def fallback(i, path):
        calls.append(i)
        buf[i] = 7
        return None if i != 1 else 'corrupt: test'

    done = []
    out, deaths = decode_procs.run([dead], [(0, 'a'), (1, 'b'), (2, 'c')], fallback, done.append)
    decode_procs.stop_workers([dead])
    assert out == {0: None, 1: 'corrupt: test', 2: None} and sorted(calls) == [0, 1, 2]
    assert deaths == ['exit code 3']
    assert sum(done) == 3 and buf.min() == 7


def test_workers_do_not_import_jax_or_the_package(tmp_path):
    # They load decode_one.py by path: numpy and Pillow only, and never the user's __main__.
    probe = ('import json, sys, runpy\n'
             'sys.argv = ["w", json.dumps(dict(decode_one_py=%r, buffer=%r, offset=0, shape=[1, 4, 4, 3],'
             ' max_pixels=None))]\n'
             'sys.stdin = open(%r)\n'
             'runpy.run_path(%r, run_name="__main__")\n'
             'print(sorted(m for m in sys.modules if m.startswith(("jax", "flax", "jaxcls"))))\n')
    (tmp_path / 'buf').write_bytes(bytes(48))
    (tmp_path / 'in').write_text('')
    here = os.path.dirname(decode_procs.__file__)
    code = probe % (os.path.join(here, 'decode_one.py'), str(tmp_path / 'buf'), str(tmp_path / 'in'),
                    os.path.join(here, 'decode_procs.py'))
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == '[]'


@pytest.mark.filterwarnings('ignore::jaxcls.data.decode.SkippedImagesWarning')
def test_workers_that_cannot_run_are_reported_and_nothing_is_lost(tmp_path, monkeypatch):
    names = make_files(tmp_path)
    ref = decode_files(names, str(tmp_path), 16, quiet=True, processes=False)
    # Workers that stop before their first chunk: the parent decodes it all.
    real = decode_procs.start_workers
    monkeypatch.setattr(decode_procs, 'start_workers', lambda *a: _broken(real, *a))
    with pytest.warns(RuntimeWarning, match='of 2 jaxcls decode worker processes stopped'):
        d = decode_files(names, str(tmp_path), 16, quiet=True, processes=True, num_workers=2)
    np.testing.assert_array_equal(d.x, ref.x)
    assert d.skipped == ref.skipped


def _broken(real, count, buffer, offset, shape, max_pixels):
    procs = real(count, buffer, offset, shape, max_pixels)
    decode_procs.stop_workers(procs)  # stdin closed: they exit before any chunk
    return procs
