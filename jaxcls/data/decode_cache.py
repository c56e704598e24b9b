"""The on-disk decode cache: its size, file names, manifest, loading, atomic and background writes.

``S`` (the *cache size*) defaults to :func:`default_cache_size`: ``round(1.15 * sz)``
(224 -> 258). The margin is what on-device augmentation needs: a 10-degree rotation
of a ``sz`` crop touches a square of ``sz * (cos 10 + sin 10) = 1.16 sz``, and
shifts/random crops get 15 % of slack instead of reflection padding, while the
cache is 1.3x (not fastai's 1.7x for ``sz*1.3``) the bytes of an ``sz`` cache.

A decoded split is saved as ``{cache_dir}/{name}-{S}px-{key}.npy`` next to a JSON
manifest (format version, jaxcls version, cache size, decode settings, every
source path with its size and mtime_ns, the skipped files). A later build with
the same sources only stats the files and compares with the manifest (no
decoding, no hashing of file contents), then loads the array: into memory when
it is at most ``mmap_bytes`` (default 256 MiB), memory-mapped read-only
otherwise. A changed (size or mtime), added or removed file gives a different
manifest and the cache is rebuilt; ``key`` hashes the list of names, so
different subsets of one folder (e.g. CSV splits) get different files. File
names that are not valid UTF-8 (``b'bad\\xff.png'``) are handled as
``os.listdir`` returns them (``'bad\\udcff.png'``) and round-trip through the
manifest.

A cache is published atomically (the array under a temporary name, renamed, then
the manifest, which readers check first), so a reader never sees a partial one. A
large cache decoded into RAM is written by a background thread
(:func:`save_later`); Python waits for it at exit, :func:`wait_for_cache_writes`
before. :func:`ram_budget` says how much decoded cache may be held in RAM.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import uuid
import warnings
from typing import Sequence

import numpy as np

from jaxcls.atomic_file import replaced

__all__ = [
    'FORMAT_VERSION', 'CACHE_MARGIN', 'MMAP_BYTES', 'RAM_FRACTION', 'default_cache_size',
    'jaxcls_version', 'manifest_fingerprint', 'array_fingerprint', 'stat_sources', 'cache_base',
    'load_cache', 'ram_budget', 'tmp_npy', 'write_cache', 'save_later', 'wait_for_cache_writes',
]

#: Bump when the decoded pixels for the same inputs change; old caches are then rebuilt.
FORMAT_VERSION = 1
#: Cache size = round(CACHE_MARGIN * sz); see the module docstring.
CACHE_MARGIN = 1.15
#: Caches above 256 MiB (~1300 images at 258 px) are memory-mapped: reuse costs a stat per file.
MMAP_BYTES = 1 << 28
#: Share of the available RAM a decode may fill; half leaves room for the model and the batches.
RAM_FRACTION = 0.5


def default_cache_size(sz: int) -> int:
    """Side of the cached square for training at `sz`: ``round(1.15 * sz)``.

    >>> default_cache_size(224)
    258
    """
    return int(round(CACHE_MARGIN * int(sz)))


def jaxcls_version() -> str:
    """The installed jaxcls version, recorded in manifests; 'unknown' from a checkout."""
    try:
        from importlib.metadata import version
        return version('jaxcls')
    except Exception:  # not installed (running from a checkout)
        return 'unknown'


# ----------------------------------------------------------------------------- identity

def manifest_fingerprint(manifest: dict) -> str:
    """Hash of the content-defining part of a manifest (not the jaxcls version or paths on disk)."""
    keys = ('format', 'cache_size', 'settings', 'kind', 'sources', 'skipped')
    blob = json.dumps({k: manifest.get(k) for k in keys}, sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def array_fingerprint(x: np.ndarray) -> str:
    """Stable hex hash of an image array's shape and bytes (for in-memory datasets)."""
    h = hashlib.blake2b(digest_size=10)
    h.update(json.dumps([FORMAT_VERSION, list(x.shape), str(x.dtype)]).encode())
    for s in range(0, len(x), 4096):
        h.update(np.ascontiguousarray(x[s:s + 4096]).data)
    return h.hexdigest()


def stat_sources(root: str, fnames: Sequence[str]) -> list[list]:
    """[name, size, mtime_ns] of each file under `root` ([name, -1, -1] when it cannot be read)."""
    out = []
    for f in fnames:
        try:
            st = os.stat(os.path.join(root, f))
            out.append([f, st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([f, -1, -1])
    return out


def cache_base(cache_dir: str, name: str, size: int, kind: str, names: Sequence[str]) -> str:
    """The cache's path without extension: ``{cache_dir}/{name}-{size}px-{hash of the names}``."""
    # File names are str as os.listdir gives them: bytes that are not UTF-8 come back as lone
    # surrogates ('bad\udcff.png'), which encode back to the same bytes with surrogateescape.
    h = hashlib.sha1('\n'.join([kind, *names]).encode('utf-8', 'surrogateescape')).hexdigest()[:12]
    safe = ''.join(c if c.isalnum() or c in '-_' else '_' for c in name)
    return os.path.join(cache_dir, f'{safe}-{size}px-{h}')


# ----------------------------------------------------------------------------- reading

def load_cache(base: str, expect: dict, mmap_bytes: int) -> tuple[np.ndarray, dict] | None:
    """(array, manifest) of the cache at `base` when its manifest matches `expect`, else None."""
    try:
        with open(base + '.json') as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    for k in ('format', 'cache_size', 'settings', 'kind', 'sources'):
        if m.get(k) != expect[k]:
            return None
    try:
        shape = tuple(m['shape'])
        nbytes = int(np.prod(shape))
        x = np.load(base + '.npy', mmap_mode='r' if nbytes > mmap_bytes else None)
    except (OSError, ValueError, KeyError):
        return None
    if x.shape != shape or x.dtype != np.uint8:
        return None
    return x, m


def ram_budget() -> int:
    """Bytes of decode cache that may be held in RAM: RAM_FRACTION of the memory available
    now (Linux's MemAvailable; elsewhere the free physical pages), 0 when unknown."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(RAM_FRACTION * int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(RAM_FRACTION * os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE'))
    except (ValueError, OSError, AttributeError):
        return 0


# ----------------------------------------------------------------------------- writing

def tmp_npy(base: str) -> str:
    """A temporary file name next to the cache `base`, unique to this process and call."""
    return f'{base}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npy'


def write_cache(base: str, manifest: dict, x: np.ndarray | None = None,
                tmp: str | None = None) -> str:
    """Publish a decode cache: `x` saved under a temporary name (or `tmp`, already written),
    renamed to ``base.npy``, then the manifest, which readers check first, written last; so
    a reader never sees a partial cache. Returns the .npy path; raises OSError (a temporary
    this call wrote is removed first)."""
    written = tmp is None
    tmp = tmp_npy(base) if written else tmp
    try:
        if written:
            np.save(tmp, x)
        os.replace(tmp, base + '.npy')
        _atomic_json(base + '.json', manifest)
    except OSError:
        if written:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        raise
    return base + '.npy'


_pending_saves: list[threading.Thread] = []
_pending_lock = threading.Lock()


def save_later(x: np.ndarray, base: str, manifest: dict) -> str:
    """Write `x` as ``base.npy`` (then its manifest) in a background thread; returns the path.

    The thread is not a daemon: Python waits for it before the interpreter exits, so a
    script that ends right after decoding still leaves a complete cache (`write_cache`
    publishes it the same way as a foreground write).
    """
    def save() -> None:
        try:
            write_cache(base, manifest, x)  # np.save releases the GIL: the caller goes on
        except OSError as e:
            warnings.warn(f'jaxcls could not write the decode cache {base!r}.npy ({e}); the '
                          f'images stay in memory for this run and are decoded again next run.')

    t = threading.Thread(target=save, name='jaxcls-cache-writer')
    with _pending_lock:
        _pending_saves[:] = [p for p in _pending_saves if p.is_alive()] + [t]
    t.start()
    return base + '.npy'


def wait_for_cache_writes(timeout: float | None = None) -> bool:
    """Wait until the decode caches being written in the background are on disk; True when
    none is left. Python also waits for them at exit.

    >>> wait_for_cache_writes()
    True
    """
    with _pending_lock:
        pending = list(_pending_saves)
    for t in pending:
        t.join(timeout)
    with _pending_lock:
        _pending_saves[:] = [p for p in _pending_saves if p.is_alive()]
        return not _pending_saves


def _atomic_json(path: str, obj: dict) -> None:
    with replaced(path) as f:
        json.dump(obj, f)
