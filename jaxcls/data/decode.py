"""Decode once: image files, encoded bytes or arrays -> one uint8 (N, S, S, 3) cache with a manifest.

Every image of a split is decoded by Pillow exactly once (:mod:`jaxcls.data.decode_one`:
EXIF, any mode to RGB, JPEG draft, centre square of side ``S``): in worker
processes for 2,000 files and more (:mod:`jaxcls.data.decode_procs`; a GIL each),
else in a thread pool (Pillow releases the GIL while decoding and resizing). The
result is kept, and reused by later runs, as an on-disk cache with a manifest
(:mod:`jaxcls.data.decode_cache`: file names, staleness check, memory maps,
atomic and background writes).

Bad files never stop a build (``on_bad='skip'``): every file that
:func:`~jaxcls.data.decode_one.decode_image` refuses is left out and listed as
``(path, reason)`` with one summary :class:`SkippedImagesWarning`;
``decoded + skipped = found`` always. ``on_bad='raise'`` raises
:class:`BadImageError` naming every bad file instead. ``tests/e2e/test_hostile.py``
holds the whole corpus. Pillow's own warnings filters are not changed, except
that DecompressionBombWarning and other ``PIL`` warnings are silenced while a
build runs (the bad-file report replaces them).

The names of the two lower modules that callers used from here before it was split
(``decode_image``, ``BadImageError``, ``default_cache_size``, ``ram_budget``,
``wait_for_cache_writes``...) are still importable from this module.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import mmap
import os
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from jaxcls.data import decode_cache, decode_one, decode_procs
# Re-exported: importable from here as before the split (bench/, train/ and cli use them).
from jaxcls.data.decode_cache import (CACHE_MARGIN, FORMAT_VERSION, MMAP_BYTES, RAM_FRACTION,
                                      array_fingerprint, default_cache_size,
                                      manifest_fingerprint, ram_budget, wait_for_cache_writes)
from jaxcls.data.decode_one import BadImageError, decode_image, square_resize, to_rgb

__all__ = [
    'FORMAT_VERSION', 'CACHE_MARGIN', 'MMAP_BYTES', 'RAM_FRACTION', 'BadImageError',
    'SkippedImagesWarning', 'Decoded', 'default_cache_size', 'to_rgb', 'decode_image',
    'square_resize', 'decode_files', 'decode_records', 'decode_arrays', 'report_skipped',
    'progress_bar', 'pillow_quiet', 'manifest_fingerprint', 'array_fingerprint', 'ram_budget',
    'wait_for_cache_writes',
]

#: Worker processes from this many images up: fewer do not win back their ~0.2 s start.
PROCESS_MIN_IMAGES = 2000
#: ... and from this many workers up (threads vs processes: python bench/bench_decode.py).
PROCESS_MIN_WORKERS = 2
#: Show a progress bar from this many images up.
PROGRESS_MIN = 500


class SkippedImagesWarning(UserWarning):
    """Some files were left out of a decode cache; ``skipped`` lists them with reasons."""


@dataclass
class Decoded:
    """The decoded images of one split.

    Attributes:
      x: uint8 (n, S, S, 3), in RAM or a read-only memory map.
      fnames: names of the decoded images, in order (a subset of the input names).
      kept: int64 indices of the decoded images among the inputs (for labels).
      skipped: (name, reason) for every input that was not decoded.
      fingerprint: stable hex string identifying the decoded content.
      cache_size: S.
      cache_file: path of the .npy cache, or None when kept only in memory.
      from_cache: True when loaded from an existing cache without decoding.
    """

    x: np.ndarray
    fnames: tuple[str, ...]
    kept: np.ndarray
    skipped: list[tuple[str, str]]
    fingerprint: str
    cache_size: int
    cache_file: str | None = None
    from_cache: bool = False
    manifest: dict = field(default_factory=dict, repr=False)


def _shared_buffer(nbytes: int) -> tuple[str, mmap.mmap] | None:
    """A file of `nbytes` in RAM-backed /dev/shm, mapped here, for worker processes to write
    into; None when there is no /dev/shm or it has too little room (e.g. Docker's 64 MB)."""
    folder = '/dev/shm'
    try:
        st = os.statvfs(folder)
        if st.f_bavail * st.f_frsize < nbytes + (64 << 20) or nbytes == 0:
            return None
        path = os.path.join(folder, f'jaxcls-decode-{os.getpid()}-{uuid.uuid4().hex[:8]}')
        with open(path, 'w+b') as f:
            f.truncate(nbytes)
            return path, mmap.mmap(f.fileno(), nbytes)
    except (OSError, ValueError, AttributeError):
        return None


def report_skipped(bad: list[tuple[str, str]], n: int, name: str, on_bad: str,
                   from_cache: bool = False) -> None:
    """BadImageError naming the files of `bad` with on_bad='raise', else one SkippedImagesWarning
    (stacklevel: the caller's caller's caller, the user's line through a constructor)."""
    if not bad:
        return
    listing = '; '.join(f'{p!r} ({r})' for p, r in bad[:5]) + (' ...' if len(bad) > 5 else '')
    if on_bad == 'raise':
        raise BadImageError(
            f'{len(bad)} of {n} files in {name} could not be decoded: {listing}. Remove or '
            f"replace them, or pass on_bad='skip' to leave them out.")
    warnings.warn(
        f'jaxcls skipped {len(bad)} of {n} files in {name} that could not be decoded'
        f'{" (as recorded in the cache)" if from_cache else ""}: {listing}. '
        f"The dataset's .skipped lists them all; on_bad='raise' makes this an error.",
        SkippedImagesWarning, stacklevel=4)


class _NoBar:
    def update(self, n: int = 1) -> None: ...


def progress_bar(total: int, desc: str, disable: bool):
    """A tqdm bar, or a do-nothing one; tqdm is only imported when a bar is shown."""
    if disable:
        return contextlib.nullcontext(_NoBar())
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit='img', leave=False)


@contextlib.contextmanager
def pillow_quiet():
    """Pillow's own warnings (DecompressionBombWarning and the rest) silenced while a build
    runs: its bad-file report replaces them. Pillow's filters are left as they were."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', Image.DecompressionBombWarning)
        warnings.filterwarnings('ignore', module=r'PIL(\.|$)')
        yield


def _build(*, kind: str, names: Sequence[str], sources: Any, size: int,
           chunks: Callable[[], Iterable[list[tuple[int, Any]]]], name: str,
           cache_dir: str | None | bool, root: str | None, num_workers: int | None,
           on_bad: str, quiet: bool, mmap_bytes: int, max_pixels,
           processes: bool | None = False) -> Decoded:
    if on_bad not in ('skip', 'raise'):
        raise ValueError(f"on_bad={on_bad!r}; use 'skip' (leave bad files out, warn) or 'raise'")
    size = int(size)
    if size < 1:
        raise ValueError(f'cache size must be a positive number of pixels; got {size}')
    n = len(names)
    expect = {'format': decode_cache.FORMAT_VERSION, 'cache_size': size,
              'settings': decode_one.SETTINGS, 'kind': kind, 'sources': sources}
    base = None
    if cache_dir not in (None, False) and sources is not None:
        base = decode_cache.cache_base(os.fspath(cache_dir), name, size, kind, names)
        hit = decode_cache.load_cache(base, expect, mmap_bytes)
        if hit is not None:
            x, m = hit
            skipped = [tuple(s) for s in m['skipped']]
            report_skipped(skipped, n, name, on_bad, True)
            kept = np.asarray(m['kept'], np.int64)
            return Decoded(x, tuple(names[i] for i in kept), kept, skipped,
                           decode_cache.manifest_fingerprint(m), size, base + '.npy', True, m)

    nbytes = n * size * size * 3
    disk = base is not None
    out = tmp_npy = None
    # A large cache that fits in RAM is decoded into RAM and written to disk by a background
    # thread (`decode_cache.save_later`) while the caller goes on: decoding straight into a
    # memory-mapped file is about twice as slow (bench/README.md, notes on the data pipeline).
    in_ram = nbytes <= decode_cache.ram_budget()
    if disk:
        try:
            os.makedirs(os.path.dirname(base), exist_ok=True)
            if nbytes > mmap_bytes and not in_ram:
                tmp_npy = decode_cache.tmp_npy(base)
                out = np.lib.format.open_memmap(tmp_npy, 'w+', np.uint8, (n, size, size, 3))
        except OSError as e:
            warnings.warn(f'jaxcls could not write the decode cache in {os.path.dirname(base)!r} '
                          f'({e}); keeping it in memory. Pass cache_dir= a writable folder to '
                          f'reuse it next run.', stacklevel=3)
            disk, base = False, None
    workers = num_workers or os.cpu_count() or 1
    if processes is None:
        processes = n >= PROCESS_MIN_IMAGES and workers >= PROCESS_MIN_WORKERS
    procs, shared = None, None
    if processes and kind == 'files':
        if out is None:
            shared = _shared_buffer(nbytes)
            if shared is not None:
                out = np.frombuffer(shared[1], np.uint8).reshape(n, size, size, 3)
        if out is not None:
            buffer, offset = (shared[0], 0) if shared else (tmp_npy, out.offset)
            try:
                procs = decode_procs.start_workers(workers, buffer, offset, out.shape,
                                                   decode_one.resolve_max_pixels(max_pixels))
            except OSError:
                procs = None  # threads below, into the same array
        if shared is not None:
            # The workers have mapped it (or are not running): the mapping stays, the name
            # goes, so nothing is left in /dev/shm even if this process is killed.
            os.remove(shared[0])
    if out is None:
        out = np.empty((n, size, size, 3), np.uint8)

    reasons: list[str | None] = [None] * n

    def job(i: int, src: Any) -> None:
        try:
            if isinstance(src, np.ndarray):
                out[i] = decode_one.array_image(src, size)
            else:
                out[i] = decode_one.decode_image(src, size, max_pixels=max_pixels)
        except BadImageError as e:
            reasons[i] = str(e)

    def fallback(i: int, src: Any) -> str | None:
        job(i, src)
        return reasons[i]

    with pillow_quiet():
        if procs is not None:
            try:
                with progress_bar(n, f'decode {name}', quiet or n < PROGRESS_MIN) as bar:
                    items = [item for chunk in chunks() for item in chunk]
                    results, deaths = decode_procs.run(procs, items, fallback, bar.update)
                    for i, err in results.items():
                        reasons[i] = err
                if deaths:
                    warnings.warn(f'{len(deaths)} of {len(procs)} jaxcls decode worker processes '
                                  f'stopped ({"; ".join(deaths[:3])}); their images were decoded '
                                  f'in this process instead. Pass processes=False to decode in '
                                  f'threads only.', RuntimeWarning, stacklevel=3)
            finally:
                decode_procs.stop_workers(procs)
        else:
            with progress_bar(n, f'decode {name}', quiet or n < PROGRESS_MIN) as bar, \
                    cf.ThreadPoolExecutor(max_workers=workers,
                                          thread_name_prefix='jaxcls-decode') as ex:
                pending: list[cf.Future] = []
                for chunk in chunks():
                    new = [ex.submit(job, i, src) for i, src in chunk]
                    for f in cf.as_completed(pending):  # previous chunk, while this one decodes
                        f.result()
                        bar.update(1)
                    pending = new
                for f in cf.as_completed(pending):
                    f.result()
                    bar.update(1)

    skipped = [(names[i], r) for i, r in enumerate(reasons) if r is not None]
    kept = np.array([i for i, r in enumerate(reasons) if r is None], np.int64)
    if on_bad == 'raise' and skipped:
        if tmp_npy:
            out = None
            os.remove(tmp_npy)
        report_skipped(skipped, n, name, on_bad, False)
    manifest = {**expect, 'jaxcls': decode_cache.jaxcls_version(), 'root': root,
                'skipped': [list(s) for s in skipped], 'kept': kept.tolist(),
                'shape': [len(kept), size, size, 3]}
    if len(kept) < n:
        if tmp_npy:  # compact the memory map into a new file, 1024 rows at a time
            compact = decode_cache.tmp_npy(base)
            comp = np.lib.format.open_memmap(compact, 'w+', np.uint8, (len(kept), size, size, 3))
            for s in range(0, len(kept), 1024):
                comp[s:s + 1024] = out[kept[s:s + 1024]]
            comp = out = None  # unmapped; the kernel writes the pages back (no msync wait)
            os.remove(tmp_npy)
            tmp_npy = compact
        else:
            out = out[kept]
    elif tmp_npy:
        out = None  # unmapped; the kernel writes the pages back (no msync wait)
    cache_file = None
    if disk and tmp_npy is None and nbytes > mmap_bytes:
        cache_file = decode_cache.save_later(out, base, manifest)
    elif disk:
        try:
            cache_file = decode_cache.write_cache(base, manifest,
                                                  out if tmp_npy is None else None, tmp_npy)
            tmp_npy = None
        except OSError as e:
            warnings.warn(f'jaxcls could not write the decode cache {base!r}.npy ({e}); it stays '
                          f'in memory for this run.', stacklevel=3)
    if out is None:  # the decoded rows are on disk only
        path = cache_file or tmp_npy
        out = np.load(path, mmap_mode='r' if len(kept) * size * size * 3 > mmap_bytes else None)
    report_skipped(skipped, n, name, on_bad, False)
    fp = (decode_cache.manifest_fingerprint(manifest) if sources is not None
          else decode_cache.array_fingerprint(out))
    return Decoded(out, tuple(names[i] for i in kept), kept, skipped, fp, size, cache_file,
                   False, manifest)


def decode_files(fnames: Sequence[str], root: str, size: int, *, name: str = 'images',
                 cache_dir: str | None | bool = None, num_workers: int | None = None,
                 on_bad: str = 'skip', quiet: bool = False, mmap_bytes: int = MMAP_BYTES,
                 max_pixels: int | None | str = 'pillow', processes: bool | None = None
                 ) -> Decoded:
    """Decodes image files into one uint8 (n, size, size, 3) array, reusing a valid cache.

    Args:
      fnames: paths relative to `root` (the names used in the manifest and in
        `skipped`).
      root: folder the names are relative to.
      size: cache size S (see :func:`default_cache_size`).
      name: split name, used in the cache file name and messages.
      cache_dir: folder for ``{name}-{S}px-{key}.npy`` and its ``.json``
        manifest; None or False: decode into memory, no cache.
      num_workers: decode threads or processes (default ``os.cpu_count()``).
      on_bad: 'skip' (default; warn once and list) or 'raise'.
      quiet: no progress bar.
      mmap_bytes: caches bigger than this are memory-mapped.
      max_pixels: see :func:`decode_image`.
      processes: decode in worker processes (:mod:`jaxcls.data.decode_procs`) rather than
        threads; None (default) chooses processes for at least PROCESS_MIN_IMAGES files
        and PROCESS_MIN_WORKERS workers, where the GIL limits threads.

    >>> import tempfile
    >>> d = tempfile.mkdtemp(); Image.new('RGB', (30, 20), (0, 128, 255)).save(f'{d}/a.png')
    >>> dec = decode_files(['a.png'], d, 16, cache_dir=f'{d}/tmp')
    >>> dec.x.shape, dec.x[0, 8, 8].tolist(), dec.from_cache
    ((1, 16, 16, 3), [0, 128, 255], False)
    >>> decode_files(['a.png'], d, 16, cache_dir=f'{d}/tmp').from_cache
    True
    """
    root = os.path.abspath(os.fspath(root))
    names = list(fnames)
    sources = decode_cache.stat_sources(root, names)

    def chunks():
        yield [(i, os.path.join(root, f)) for i, f in enumerate(names)]

    return _build(kind='files', names=names, sources=sources, size=size, chunks=chunks, name=name,
                  cache_dir=cache_dir, root=root, num_workers=num_workers, on_bad=on_bad,
                  quiet=quiet, mmap_bytes=mmap_bytes, max_pixels=max_pixels, processes=processes)


def decode_records(read: Callable[[list[int]], Sequence[Any]], names: Sequence[str], size: int, *,
                   signature: Any = None, name: str = 'images',
                   cache_dir: str | None | bool = None, num_workers: int | None = None,
                   on_bad: str = 'skip', quiet: bool = False, mmap_bytes: int = MMAP_BYTES,
                   max_pixels: int | None | str = 'pillow', chunk: int = 512) -> Decoded:
    """Decodes records read in chunks (encoded image bytes or HWC uint8 arrays), e.g. from TFDS.

    Args:
      read: ``read(indices) -> [bytes or ndarray, ...]``, called from this thread only.
      names: one name per record (used in `fnames` and `skipped`).
      signature: a JSON-able value that changes whenever the records change
        (e.g. sizes and mtimes of the dataset files); None disables the disk cache.
      Others as in :func:`decode_files`.
    """
    names = list(names)

    def chunks():
        for s in range(0, len(names), chunk):
            idx = list(range(s, min(s + chunk, len(names))))
            yield list(zip(idx, read(idx)))

    return _build(kind='records', names=names, sources=signature, size=size, chunks=chunks,
                  name=name, cache_dir=cache_dir, root=None, num_workers=num_workers,
                  on_bad=on_bad, quiet=quiet, mmap_bytes=mmap_bytes, max_pixels=max_pixels)


def decode_arrays(x: np.ndarray, size: int, *, num_workers: int | None = None) -> np.ndarray:
    """NHWC (or NHW) image arrays of any size -> uint8 (N, size, size, 3), as files would be.

    uint8 arrays are 0..255, float arrays 0..1 (fastai 0.7's convention); one
    channel is repeated to RGB, a fourth (alpha) is composited on white.
    Arrays already (N, size, size, 3) uint8 are returned as they are.

    >>> decode_arrays(np.ones((2, 10, 20, 3), np.float32), 8)[0, 0, 0].tolist()
    [255, 255, 255]
    """
    x = decode_one.as_uint8_images(x)
    if x.shape[1:] == (size, size, 3):
        return np.ascontiguousarray(x)
    out = np.empty((len(x), size, size, 3), np.uint8)

    def job(i):
        out[i] = decode_one.array_image(x[i], size)

    with cf.ThreadPoolExecutor(num_workers or os.cpu_count() or 1) as ex:
        list(ex.map(job, range(len(x))))
    return out
