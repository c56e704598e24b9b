"""Decode once: image files, encoded bytes or arrays -> one uint8 (N, S, S, 3) cache with a manifest.

Every image is decoded by Pillow exactly once per dataset, to a square of side
``S`` (the *cache size*): in worker processes for 2,000 files and more
(:mod:`jaxcls.data.decode_procs`; a GIL each), else in a thread pool (Pillow
releases the GIL while decoding and resizing):

1. JPEGs bigger than needed are decoded at 1/2, 1/4 or 1/8 scale
   (``Image.draft('RGB', (S, S))``: the DCT-domain reduction keeps the short
   side >= S).
2. EXIF orientation is applied (``ImageOps.exif_transpose``), so phone photos
   come out upright. A malformed EXIF block leaves the image as stored.
3. Any mode becomes RGB: L, 1, P, CMYK, YCbCr... by Pillow's ``convert``;
   transparency (RGBA, LA, PA, P or L with a transparent colour) is composited
   on **white** (what image viewers and web pages show; a transparent
   background then reads as "no object there" rather than as a black blob);
   16-bit integer images (I;16*, and mode I within 0..65535) are scaled by
   255/65535 and rounded (65535 -> 255, 32768 -> 128), never clipped; mode I
   outside that range and mode F are rescaled from their own min..max (F in
   0..1 is taken as 0..1).
4. The centred square of side min(W, H) is resized to S x S in one bilinear,
   antialiased resample (``Image.resize(box=...)`` with ``reducing_gap=2``):
   exactly "resize the short side to S, then centre-crop", without resampling
   the pixels the crop throws away.

``S`` defaults to :func:`default_cache_size`: ``round(1.15 * sz)`` (224 -> 258).
The margin is what on-device augmentation needs: a 10-degree rotation of a
``sz`` crop touches a square of ``sz * (cos 10 + sin 10) = 1.16 sz``, and
shifts/random crops get 15 % of slack instead of reflection padding, while the
cache is 1.3x (not fastai's 1.7x for ``sz*1.3``) the bytes of an ``sz`` cache.

Caching: the decoded array is saved as ``{cache_dir}/{name}-{S}px-{key}.npy``
(by a background thread when it is large and was decoded into RAM; Python
waits for it at exit, :func:`wait_for_cache_writes` before) next to a JSON manifest (format version, jaxcls version, cache size, decode
settings, every source path with its size and mtime_ns, the skipped files).
A later build with the same sources only stats the files and compares with the
manifest (no decoding, no hashing of file contents), then loads the array:
into memory when it is at most ``mmap_bytes`` (default 256 MiB), memory-mapped
read-only otherwise. A changed (size or mtime), added or removed file gives a
different manifest and the cache is rebuilt; ``key`` hashes the list of names,
so different subsets of one folder (e.g. CSV splits) get different files.

Bad files never stop a build (``on_bad='skip'``): empty, truncated, corrupt,
non-image, unreadable (no permission, a symlink loop or a dangling link) or
over-large files, and anything that is not a regular file (a FIFO would block
``open`` forever), are left out and listed as ``(path, reason)`` with one
summary :class:`SkippedImagesWarning`; ``decoded + skipped = found`` always.
``on_bad='raise'`` raises :class:`BadImageError` naming every bad file instead.
File names that are not valid UTF-8 (``b'bad\\xff.png'``) are handled as
``os.listdir`` returns them (``'bad\\udcff.png'``) and round-trip through the
cache manifest. A JPEG whose scan data ends early but is properly terminated
decodes as libjpeg fills it (grey), as in Pillow; there is no reliable way to
tell it from a real image. ``tests/test_hostile.py`` holds the whole corpus.

Decompression bombs: images whose pixel count *after* JPEG draft exceeds
``max_pixels`` (default: Pillow's ``Image.MAX_IMAGE_PIXELS`` at call time,
about 89.5 M) are skipped with a reason before their pixels are decoded; a
giant JPEG is decoded at 1/8 scale when that brings it under the limit.
Pillow's own global limit and warnings filters are not changed, except that
DecompressionBombWarning and other ``PIL`` warnings are silenced while a build
runs (the bad-file report replaces them).
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import io
import json
import mmap
import os
import stat
import struct
import threading
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    'FORMAT_VERSION', 'CACHE_MARGIN', 'MMAP_BYTES', 'BadImageError', 'SkippedImagesWarning',
    'Decoded', 'default_cache_size', 'to_rgb', 'decode_image', 'square_resize',
    'decode_files', 'decode_records', 'decode_arrays', 'manifest_fingerprint', 'array_fingerprint',
    'ram_budget', 'wait_for_cache_writes',
]

#: Bump when the decoded pixels for the same inputs change; old caches are then rebuilt.
FORMAT_VERSION = 1
#: Cache size = round(CACHE_MARGIN * sz); see the module docstring.
CACHE_MARGIN = 1.15
#: Caches larger than this many bytes (256 MiB, ~1300 images at 258 px) are memory-mapped
#: instead of read into RAM, so reusing a cache costs a stat per file, not a read of the array.
MMAP_BYTES = 1 << 28
#: Decode files in worker processes (not threads) from this many images and this many
#: workers up; below, the ~0.2 s the workers take to start is not won back. Processes beat
#: threads even on 2 cores (3,600 500x375 JPEGs: 850 against 650 img/s measured here) and
#: by far on 16 (see :mod:`jaxcls.data.decode_procs`).
PROCESS_MIN_IMAGES = 2000
PROCESS_MIN_WORKERS = 2
#: Show a progress bar from this many images up.
PROGRESS_MIN = 500
#: Colour that transparent pixels are composited on.
ALPHA_BACKGROUND = (255, 255, 255)
RESAMPLE = Image.Resampling.BILINEAR
REDUCING_GAP = 2.0
_SETTINGS = {'resample': 'bilinear', 'reducing_gap': REDUCING_GAP,
             'alpha_background': list(ALPHA_BACKGROUND), 'exif_transpose': True,
             'crop': 'centre-square'}


class BadImageError(ValueError):
    """A file could not be decoded (raised per image, or for all of them with ``on_bad='raise'``)."""


class SkippedImagesWarning(UserWarning):
    """Some files were left out of a decode cache; ``skipped`` lists them with reasons."""


def default_cache_size(sz: int) -> int:
    """Side of the cached square for training at `sz`: ``round(1.15 * sz)``.

    >>> default_cache_size(224)
    258
    """
    return int(round(CACHE_MARGIN * int(sz)))


def _version() -> str:
    try:
        from importlib.metadata import version
        return version('jaxcls')
    except Exception:  # not installed (running from a checkout)
        return 'unknown'


# ----------------------------------------------------------------------------- one image

def _to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    a = a.astype(np.float64)
    if mode.startswith('I;16') or (mode == 'I' and a.size and a.min() >= 0 and a.max() <= 65535):
        a = a * (255.0 / 65535.0)
    elif mode == 'F' and a.size and a.min() >= 0 and a.max() <= 1:
        a = a * 255.0
    else:
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def to_rgb(im: Image.Image) -> Image.Image:
    """`im` as an RGB image: alpha composited on white, 16-bit scaled to 8-bit.

    >>> to_rgb(Image.new('LA', (1, 1), (0, 0))).getpixel((0, 0))  # fully transparent -> white
    (255, 255, 255)
    """
    mode = im.mode
    if mode == 'RGB' and 'transparency' not in im.info:
        return im
    if (mode in ('RGBA', 'RGBa', 'LA', 'La', 'PA')
            or (mode in ('P', 'L', 'RGB', '1') and 'transparency' in im.info)):
        rgba = im.convert('RGBA')
        bg = Image.new('RGBA', im.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(bg, rgba).convert('RGB')
    if mode.startswith('I') or mode == 'F':
        return Image.fromarray(_to_uint8(np.asarray(im), mode)).convert('RGB')
    return im.convert('RGB')


def square_resize(im: Image.Image, size: int) -> Image.Image:
    """The centred min(W, H) square of `im`, resized to `size` x `size` (bilinear, antialiased)."""
    w, h = im.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    if (w, h) == (size, size):
        return im
    return im.resize((size, size), RESAMPLE, box=box, reducing_gap=REDUCING_GAP)


def _open_unchecked(fp) -> Image.Image:
    """Image.open without Pillow's decompression-bomb check (our own check follows)."""
    Image.preinit()
    fp.seek(0)
    prefix = fp.read(16)
    for loader in (lambda: None, Image.init):
        loader()
        for fmt in list(Image.ID):
            factory, accept = Image.OPEN[fmt]
            ok = accept(prefix) if accept else True
            if ok and not isinstance(ok, str):
                fp.seek(0)
                try:
                    return factory(fp, '')
                except (SyntaxError, IndexError, TypeError, struct.error):
                    continue
    raise Image.UnidentifiedImageError('cannot identify image file')


def _max_pixels(max_pixels: int | None | str) -> int | None:
    return Image.MAX_IMAGE_PIXELS if max_pixels == 'pillow' else max_pixels


def decode_image(src: str | os.PathLike | bytes, size: int, *, max_pixels: int | None | str = 'pillow'
                 ) -> np.ndarray:
    """Decodes one image file (or its encoded bytes) to a uint8 (size, size, 3) array.

    Draft-decodes big JPEGs, applies EXIF orientation, converts to RGB and
    centre-crops/resizes (see the module docstring).

    Args:
      src: a path, or the encoded bytes of an image.
      size: side of the output square.
      max_pixels: skip images with more pixels than this after JPEG draft;
        'pillow' (default) uses ``PIL.Image.MAX_IMAGE_PIXELS``; None disables.

    Raises:
      BadImageError: the reason the image cannot be decoded.

    >>> buf = io.BytesIO(); Image.new('RGB', (40, 20), (255, 0, 0)).save(buf, 'PNG')
    >>> a = decode_image(buf.getvalue(), 8); a.shape, a.dtype, a[0, 0].tolist()
    ((8, 8, 3), dtype('uint8'), [255, 0, 0])
    """
    limit = _max_pixels(max_pixels)
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise BadImageError('empty file (0 bytes)')
        fp = io.BytesIO(src)
    else:
        try:
            st = os.stat(src)
            if not stat.S_ISREG(st.st_mode):  # a FIFO would block open() forever
                raise BadImageError('not a regular file (a FIFO, device or socket)')
            if st.st_size == 0:
                raise BadImageError('empty file (0 bytes)')
            fp = open(src, 'rb')
        except OSError as e:
            raise BadImageError(f'unreadable: {e.strerror or e}') from None
    try:
        try:
            im = Image.open(fp)
        except Image.DecompressionBombError:
            im = _open_unchecked(fp)
        except Image.UnidentifiedImageError:
            raise BadImageError('not an image Pillow can read (unknown or corrupt format)') from None
        w, h = im.size
        if im.format == 'JPEG':
            im.draft('RGB', (size, size))
        dw, dh = im.size
        if limit is not None and dw * dh > limit:
            drafted = f', {dw}x{dh} after JPEG draft' if (dw, dh) != (w, h) else ''
            raise BadImageError(
                f'too large: {w}x{h}{drafted} = {dw * dh} pixels > max_pixels={limit} '
                f'(decompression-bomb guard; pass max_pixels=None to decode it anyway)')
        try:
            im.load()
        except OSError as e:
            msg = str(e)
            kind = 'truncated' if 'truncated' in msg or 'broken data stream' in msg else 'corrupt'
            raise BadImageError(f'{kind}: {msg}') from None
        except (SyntaxError, ValueError, struct.error, EOFError, MemoryError) as e:
            raise BadImageError(f'corrupt: {type(e).__name__}: {e}') from None
        try:
            ImageOps.exif_transpose(im, in_place=True)
        except Exception:  # malformed EXIF: keep the image as stored
            pass
        try:
            return np.asarray(square_resize(to_rgb(im), size), dtype=np.uint8)
        except (OSError, ValueError) as e:
            raise BadImageError(f'corrupt: {type(e).__name__}: {e}') from None
    except BadImageError:
        raise
    except Exception as e:  # anything Pillow throws that we did not foresee
        raise BadImageError(f'corrupt: {type(e).__name__}: {e}') from None
    finally:
        fp.close()


def _array_image(a: np.ndarray, size: int) -> np.ndarray:
    """One HWC/HW uint8 array image -> (size, size, 3) uint8."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape == (size, size, 3):
        return a
    try:
        im = Image.fromarray(np.ascontiguousarray(a))
    except (TypeError, ValueError) as e:
        raise BadImageError(f'array of shape {a.shape} and dtype {a.dtype} is not an image: '
                            f'{e}') from None
    return np.asarray(square_resize(to_rgb(im), size), dtype=np.uint8)


# ----------------------------------------------------------------------------- a split

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


def manifest_fingerprint(manifest: dict) -> str:
    """Hash of the content-defining part of a manifest (not the jaxcls version or paths on disk)."""
    keys = ('format', 'cache_size', 'settings', 'kind', 'sources', 'skipped')
    blob = json.dumps({k: manifest.get(k) for k in keys}, sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _stat_sources(root: str, fnames: Sequence[str]) -> list[list]:
    out = []
    for f in fnames:
        try:
            st = os.stat(os.path.join(root, f))
            out.append([f, st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([f, -1, -1])
    return out


def _cache_base(cache_dir: str, name: str, size: int, kind: str, names: Sequence[str]) -> str:
    # File names are str as os.listdir gives them: bytes that are not UTF-8 come back as lone
    # surrogates ('bad\udcff.png'), which encode back to the same bytes with surrogateescape.
    h = hashlib.sha1('\n'.join([kind, *names]).encode('utf-8', 'surrogateescape')).hexdigest()[:12]
    safe = ''.join(c if c.isalnum() or c in '-_' else '_' for c in name)
    return os.path.join(cache_dir, f'{safe}-{size}px-{h}')


def _load_cache(base: str, expect: dict, mmap_bytes: int) -> tuple[np.ndarray, dict] | None:
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


#: Decode caches bigger than this fraction of the available RAM are decoded into a memory
#: map on disk rather than into RAM: half leaves room for the model, the loader's batches and
#: the rest of the machine.
RAM_FRACTION = 0.5


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


def _tmp_npy(base: str) -> str:
    """A temporary file name next to the cache `base`, unique to this process and call."""
    return f'{base}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npy'


def _write_cache(base: str, manifest: dict, x: np.ndarray | None = None,
                 tmp: str | None = None) -> str:
    """Publish a decode cache: `x` saved under a temporary name (or `tmp`, already written),
    renamed to ``base.npy``, then the manifest, which readers check first, written last; so
    a reader never sees a partial cache. Returns the .npy path; raises OSError (a temporary
    this call wrote is removed first)."""
    written = tmp is None
    tmp = _tmp_npy(base) if written else tmp
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


def _save_later(x: np.ndarray, base: str, manifest: dict) -> str:
    """Write `x` as ``base.npy`` (then its manifest) in a background thread; returns the path.

    The thread is not a daemon: Python waits for it before the interpreter exits, so a
    script that ends right after decoding still leaves a complete cache (`_write_cache`
    publishes it the same way as a foreground write).
    """
    def save() -> None:
        try:
            _write_cache(base, manifest, x)  # np.save releases the GIL: the caller goes on
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
    tmp = f'{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _report(bad: list[tuple[str, str]], n: int, name: str, on_bad: str, from_cache: bool) -> None:
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


def _progress(total: int, desc: str, disable: bool):
    """A tqdm bar, or a do-nothing one; tqdm is only imported when a bar is shown."""
    if disable:
        return contextlib.nullcontext(_NoBar())
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit='img', leave=False)


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
    expect = {'format': FORMAT_VERSION, 'cache_size': size, 'settings': _SETTINGS, 'kind': kind,
              'sources': sources}
    base = None
    if cache_dir not in (None, False) and sources is not None:
        base = _cache_base(os.fspath(cache_dir), name, size, kind, names)
        hit = _load_cache(base, expect, mmap_bytes)
        if hit is not None:
            x, m = hit
            skipped = [tuple(s) for s in m['skipped']]
            _report(skipped, n, name, on_bad, True)
            kept = np.asarray(m['kept'], np.int64)
            return Decoded(x, tuple(names[i] for i in kept), kept, skipped,
                           manifest_fingerprint(m), size, base + '.npy', True, m)

    nbytes = n * size * size * 3
    disk = base is not None
    out = tmp_npy = None
    # A large cache that fits in RAM is decoded into RAM and written to disk by a background
    # thread (`_save_later`) while the caller goes on. Decoding straight into a memory-mapped
    # file was much slower: 20,000 JPEGs took 24-34 s that way on a 16-core GPU machine, and
    # 13-14 s into RAM with the same threads (bench/bench_gpu.sh).
    in_ram = nbytes <= ram_budget()
    if disk:
        try:
            os.makedirs(os.path.dirname(base), exist_ok=True)
            if nbytes > mmap_bytes and not in_ram:
                tmp_npy = _tmp_npy(base)
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
        # Imported here: worker processes load this file on its own, outside the package.
        from . import decode_procs
        if out is None:
            shared = _shared_buffer(nbytes)
            if shared is not None:
                out = np.frombuffer(shared[1], np.uint8).reshape(n, size, size, 3)
        if out is not None:
            buffer, offset = (shared[0], 0) if shared else (tmp_npy, out.offset)
            try:
                procs = decode_procs.start_workers(workers, buffer, offset, out.shape,
                                                   _max_pixels(max_pixels))
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
                out[i] = _array_image(src, size)
            else:
                out[i] = decode_image(src, size, max_pixels=max_pixels)
        except BadImageError as e:
            reasons[i] = str(e)

    def fallback(i: int, src: Any) -> str | None:
        job(i, src)
        return reasons[i]

    with warnings.catch_warnings():
        warnings.simplefilter('ignore', Image.DecompressionBombWarning)
        warnings.filterwarnings('ignore', module=r'PIL(\.|$)')
        if procs is not None:
            from . import decode_procs
            try:
                with _progress(n, f'decode {name}', quiet or n < PROGRESS_MIN) as bar:
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
            with _progress(n, f'decode {name}', quiet or n < PROGRESS_MIN) as bar, \
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
        _report(skipped, n, name, on_bad, False)
    manifest = {**expect, 'jaxcls': _version(), 'root': root,
                'skipped': [list(s) for s in skipped], 'kept': kept.tolist(),
                'shape': [len(kept), size, size, 3]}
    if len(kept) < n:
        if tmp_npy:  # compact the memory map into a new file, 1024 rows at a time
            compact = _tmp_npy(base)
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
        cache_file = _save_later(out, base, manifest)
    elif disk:
        try:
            cache_file = _write_cache(base, manifest, out if tmp_npy is None else None, tmp_npy)
            tmp_npy = None
        except OSError as e:
            warnings.warn(f'jaxcls could not write the decode cache {base!r}.npy ({e}); it stays '
                          f'in memory for this run.', stacklevel=3)
    if out is None:  # the decoded rows are on disk only
        path = cache_file or tmp_npy
        out = np.load(path, mmap_mode='r' if len(kept) * size * size * 3 > mmap_bytes else None)
    _report(skipped, n, name, on_bad, False)
    fp = manifest_fingerprint(manifest) if sources is not None else array_fingerprint(out)
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
    sources = _stat_sources(root, names)

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


def _as_uint8_images(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f'image arrays must be (N, H, W, C) with C in 1, 3, 4 (or (N, H, W) '
                         f'grayscale), NHWC; got shape {x.shape}. Transpose NCHW arrays with '
                         f'x.transpose(0, 2, 3, 1).')
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f'float image arrays must hold values in [0, 1]; got {lo:g}..{hi:g}. '
                             f'Pass uint8 0..255 arrays as x.astype(np.uint8), or divide by 255.')
        return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer) and x.size and x.min() >= 0 and x.max() <= 255:
        return x.astype(np.uint8)
    raise ValueError(f'image arrays must be uint8 (0..255) or float (0..1); got {x.dtype}')


def decode_arrays(x: np.ndarray, size: int, *, num_workers: int | None = None) -> np.ndarray:
    """NHWC (or NHW) image arrays of any size -> uint8 (N, size, size, 3), as files would be.

    uint8 arrays are 0..255, float arrays 0..1 (fastai 0.7's convention); one
    channel is repeated to RGB, a fourth (alpha) is composited on white.
    Arrays already (N, size, size, 3) uint8 are returned as they are.

    >>> decode_arrays(np.ones((2, 10, 20, 3), np.float32), 8)[0, 0, 0].tolist()
    [255, 255, 255]
    """
    x = _as_uint8_images(x)
    if x.shape[1:] == (size, size, 3):
        return np.ascontiguousarray(x)
    out = np.empty((len(x), size, size, 3), np.uint8)

    def job(i):
        out[i] = _array_image(x[i], size)

    with cf.ThreadPoolExecutor(num_workers or os.cpu_count() or 1) as ex:
        list(ex.map(job, range(len(x))))
    return out


def array_fingerprint(x: np.ndarray) -> str:
    """Stable hex hash of an image array's shape and bytes (for in-memory datasets)."""
    h = hashlib.blake2b(digest_size=10)
    h.update(json.dumps([FORMAT_VERSION, list(x.shape), str(x.dtype)]).encode())
    for s in range(0, len(x), 4096):
        h.update(np.ascontiguousarray(x[s:s + 4096]).data)
    return h.hexdigest()
