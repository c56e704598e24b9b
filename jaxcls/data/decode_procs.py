"""Decoding image files in worker processes, for machines with many cores (and writing the
resized copies of ``data.resize``, :mod:`jaxcls.data.resize`, the same way).

Pillow releases the GIL while it decodes and resizes, but opening a file, parsing its
headers and wrapping the result hold it: about 0.2 ms of a JPEG's 2-3 ms. With many
threads that part serialises them, so threads stop scaling past about 8 cores (the
numbers are in bench/README.md, notes on the data pipeline). Worker processes have a GIL
each.

The workers are plain ``python`` processes running this file as a script. They load
``decode_one.py`` by its path, so they import numpy and Pillow but neither jax nor the
jaxcls package (0.15 s to start instead of 1.7 s), and unlike ``multiprocessing``'s spawn and
forkserver they never re-import the user's ``__main__`` (a notebook, or a script without
an ``if __name__ == '__main__'`` guard, is safe). Each worker maps the output array (a file
in RAM-backed ``/dev/shm``, or the memory-mapped cache file) and writes its rows into it;
the parent sends chunks of (row, path) as JSON lines and reads back each row's error
(None when decoded). A worker that dies has its chunk decoded by the parent instead.
"""
from __future__ import annotations

import os
import sys

if __name__ == '__main__' and sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
    # Run as a worker script: this folder's modules (loader.py, items.py...) must not
    # shadow the standard library's or numpy's imports.
    sys.path.pop(0)

import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from typing import Callable, Iterator, Optional, Sequence  # noqa: E402

import numpy as np  # noqa: E402

#: Rows per message: ~0.1 s of work, so the JSON round trip (~0.1 ms) is noise; loads balance.
CHUNK = 32


def start_workers(count: int, buffer: Optional[str], offset: int, shape: Sequence[int],
                  max_pixels: Optional[int], resize_to: Optional[int] = None
                  ) -> list[subprocess.Popen]:
    """`count` worker processes writing rows of the uint8 array of `shape` stored at byte
    `offset` of the file `buffer`; or, with `resize_to` (and no buffer), writing resized
    copies of files, an item's path being [source, destination] (`decode_one.resize_file`).
    Raises OSError when they cannot be started."""
    decode_one_py = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'decode_one.py')
    args = json.dumps({'decode_one_py': decode_one_py, 'buffer': buffer, 'offset': int(offset),
                       'shape': [int(s) for s in shape], 'max_pixels': max_pixels,
                       'resize_to': resize_to})
    env = dict(os.environ)
    # One thread per worker process: they are as many as the cores.
    for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
        env.setdefault(var, '1')
    procs = []
    try:
        for _ in range(count):
            err = tempfile.TemporaryFile()  # read back if the worker dies
            p = subprocess.Popen([sys.executable, os.path.abspath(__file__), args],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                 text=True, bufsize=1, env=env)
            p.error_file = err
            procs.append(p)
        # Each worker says 'ready' once it has mapped the output: after that the caller may
        # remove the buffer's name, so a run killed midway leaves no file in /dev/shm.
        for p in procs:
            try:
                p.ready = p.stdout.readline() == 'ready\n'
            except (OSError, ValueError):
                p.ready = False
    except OSError:
        stop_workers(procs)
        raise
    return procs


def last_words(proc: subprocess.Popen) -> str:
    """The end of what a (dead) worker wrote to stderr, on one line."""
    f = getattr(proc, 'error_file', None)
    if f is None:
        return ''
    try:
        f.seek(0)
        return ' '.join(f.read().decode(errors='replace').strip().splitlines()[-2:])[-300:]
    except (OSError, ValueError):
        return ''


def stop_workers(procs: Sequence[subprocess.Popen]) -> None:
    for p in procs:
        try:
            p.stdin.close()
        except OSError:
            pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        for f in (p.stdout, getattr(p, 'error_file', None)):
            if f is not None:
                f.close()


def run(procs: Sequence[subprocess.Popen], items: Sequence[tuple[int, str]],
        fallback: Callable[[int, str], Optional[str]], done: Callable[[int], None]
        ) -> tuple[dict[int, Optional[str]], list[str]]:
    """Decode `items` (row, path) on the workers; returns ({row: error or None}, deaths).

    One feeding thread per worker takes the next chunk, sends it and waits for the answer.
    A chunk whose worker died is decoded with `fallback(row, path) -> error or None` in
    that thread, and so are the chunks that thread takes after it; `deaths` describes each
    worker that died (for a warning). `done(k)` reports k more finished rows.
    """
    chunks: Iterator[list] = iter([list(items[s:s + CHUNK]) for s in range(0, len(items), CHUNK)])
    lock = threading.Lock()
    results: dict[int, Optional[str]] = {}
    failures: list[BaseException] = []
    deaths: list[str] = []

    def feed(proc: subprocess.Popen) -> None:
        alive = getattr(proc, 'ready', True)
        if not alive:
            code = proc.poll()
            words = last_words(proc)
            with lock:
                deaths.append(f'did not start (exit code {code})' + (f': {words}' if words else ''))
        try:
            while True:
                with lock:
                    chunk = next(chunks, None)
                if chunk is None:
                    return
                answer = None
                if alive:
                    try:
                        proc.stdin.write(json.dumps(chunk) + '\n')
                        proc.stdin.flush()
                        line = proc.stdout.readline()
                        answer = json.loads(line) if line else None
                    except (OSError, ValueError):
                        answer = None
                    alive = answer is not None
                    if not alive:
                        code = proc.poll()
                        with lock:
                            words = last_words(proc)
                            deaths.append((f'exit code {code}' if code is not None else 'no answer')
                                          + (f': {words}' if words else ''))
                if answer is None:  # the worker is gone: decode here
                    answer = [[i, fallback(i, path)] for i, path in chunk]
                with lock:
                    for i, err in answer:
                        results[int(i)] = err
                done(len(chunk))
        except BaseException as e:  # re-raised by the caller
            failures.append(e)

    threads = [threading.Thread(target=feed, args=(p,), name='jaxcls-decode-feed', daemon=True)
               for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return results, deaths


def _worker() -> None:
    """The worker's loop: chunks of [row, path] in, [[row, error or None], ...] out."""
    import importlib.util
    cfg = json.loads(sys.argv[1])
    spec = importlib.util.spec_from_file_location('_jaxcls_decode_worker', cfg['decode_one_py'])
    dec = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = dec  # registered as an import would (classes look their module up)
    spec.loader.exec_module(dec)
    resize_to = cfg.get('resize_to')
    out = None if resize_to else np.memmap(cfg['buffer'], np.uint8, 'r+', offset=cfg['offset'],
                                           shape=tuple(cfg['shape']))
    sys.stdout.write('ready\n')
    sys.stdout.flush()
    size = cfg['shape'][1]
    import warnings
    from PIL import Image
    warnings.simplefilter('ignore', Image.DecompressionBombWarning)
    warnings.filterwarnings('ignore', module=r'PIL(\.|$)')
    for line in sys.stdin:
        answer = []
        for i, path in json.loads(line):
            try:
                if resize_to:
                    dec.resize_file(path[0], path[1], resize_to, max_pixels=cfg['max_pixels'])
                else:
                    out[i] = dec.decode_image(path, size, max_pixels=cfg['max_pixels'])
                answer.append([i, None])
            except dec.BadImageError as e:
                answer.append([i, str(e)])
        sys.stdout.write(json.dumps(answer) + '\n')
        sys.stdout.flush()


if __name__ == '__main__':
    _worker()
