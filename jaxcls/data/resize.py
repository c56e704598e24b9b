"""``data.resize``: a copy of a dataset's image files at a smaller size, written once (fastai 0.7's).

    data = get_data(64)
    data = data.resize(int(64 * 1.3), 'tmp')     # reads PATH/tmp/83/<the same names>

Every training, validation and test file of a data object is written to
``{path}/{new_path}/{targ_sz}/<its name>`` with its shorter side scaled to `targ_sz` (aspect
kept, bilinear, upright RGB: :func:`~jaxcls.data.decode_one.resize_file`), as a JPEG
(quality 90) when its name says JPEG, as lesson 2's files do, else in the format its extension
names, so that every name stays the same. The data object returned reads the copy: the same
classes, splits (the same files in the same order), transforms and batch size. Decoding a
large dataset for small training sizes then reads small files.

- **Once, resumable**: a file whose copy exists and is newer than it is not redone, so an
  interrupted resize continues where it stopped and a second call only checks (``resume=False``
  redoes every file). Each copy is written under a temporary name and renamed into place, so
  a copy is never a partial image.
- **In parallel**: for 2,000 files and more, one worker process per core (one GIL each,
  :mod:`jaxcls.data.decode_procs`), as decoding does; for fewer, threads (Pillow releases the
  GIL while it decodes, resamples and encodes, not while it opens a file), as the processes'
  start is not won back. ``python bench/bench_resize.py`` measures both against one thread.
- **Bad files** are skipped and reported as ``from_paths`` reports them: listed in the
  returned data's ``skipped`` with the reason, one SkippedImagesWarning (``on_bad='raise'``:
  BadImageError naming them all). Files the data object had already skipped are not in it,
  and stay listed.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from jaxcls.data import decode_one, decode_procs
from jaxcls.data.decode import PROGRESS_MIN, pillow_quiet, progress_bar, report_skipped
from jaxcls.data.items import Layout, SplitItems

__all__ = ['PROCESS_MIN_FILES', 'PROCESS_MIN_WORKERS', 'Resized', 'resize_files',
           'resized_layout']

#: Worker processes from this many files and this many workers up, else threads (a process's
#: start costs 0.2-0.3 s of CPU, which small jobs do not repay). On 2 idle cores, 2,000
#: 500x375 JPEGs to 128 px: two processes 1.81-2.12x one thread, two threads 1.55-1.59x
#: (`python bench/bench_resize.py`; the GIL is held for part of each resize); threads stop
#: scaling past a few cores anyway (decoding on 16 cores: 8 threads 4.3x one; bench/README.md).
PROCESS_MIN_FILES = 2000
PROCESS_MIN_WORKERS = 2


@dataclass
class Resized:
    """What :func:`resize_files` did.

    Attributes:
      root: the folder of the copies.
      written: files resized and written by this call.
      reused: files whose copy was already there and newer than the file.
      skipped: (name, reason) of the files that could not be decoded.
    """

    root: str
    written: int = 0
    reused: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _stale(src: str, dst: str) -> bool:
    try:
        return os.stat(dst).st_mtime_ns < os.stat(src).st_mtime_ns
    except FileNotFoundError:
        return True
    except OSError:  # the source is unreadable: resize_file says why
        return True


def resize_files(fnames: Sequence[str], root: str, dest: str, targ_sz: int, *,
                 resume: bool = True, num_workers: int | None = None,
                 processes: bool | None = None, on_bad: str = 'skip', quiet: bool = False,
                 name: str = 'images', max_pixels: int | None | str = 'pillow') -> Resized:
    """Writes ``{dest}/{f}`` for every ``{root}/{f}`` of `fnames`, its shorter side scaled to
    `targ_sz` (:func:`~jaxcls.data.decode_one.resize_file`).

    Args:
      resume: leave the copies that exist and are newer than their file (default).
      num_workers: threads or processes (default ``os.cpu_count()``).
      processes: worker processes rather than threads; None: from PROCESS_MIN_FILES files
        and PROCESS_MIN_WORKERS workers.
      on_bad: 'skip' (default: leave undecodable files out, warn once) or 'raise'.
      name: what the progress bar and the report call the files.

    >>> import tempfile; from PIL import Image
    >>> d = tempfile.mkdtemp(); Image.new('RGB', (40, 20), 'red').save(f'{d}/a.jpg')
    >>> r = resize_files(['a.jpg'], d, f'{d}/tmp/8', 8, quiet=True)
    >>> r.written, r.reused, Image.open(f'{d}/tmp/8/a.jpg').size
    (1, 0, (16, 8))
    >>> resize_files(['a.jpg'], d, f'{d}/tmp/8', 8, quiet=True).reused
    1
    """
    if on_bad not in ('skip', 'raise'):
        raise ValueError(f"on_bad={on_bad!r}; use 'skip' (leave bad files out, warn) or 'raise'")
    targ_sz = int(targ_sz)
    if targ_sz < 1:
        raise ValueError(f'targ_sz={targ_sz}; the shorter side of the copies must be >= 1 pixel')
    root, dest = os.path.abspath(os.fspath(root)), os.path.abspath(os.fspath(dest))
    if dest == root:
        raise ValueError(f'the copies would overwrite the files in {root!r}; write them to another '
                         f'folder (new_path)')
    names = list(dict.fromkeys(fnames))
    items = [(i, [os.path.join(root, f), os.path.join(dest, f)]) for i, f in enumerate(names)]
    todo = [it for it in items if not resume or _stale(*it[1])]
    workers = max(1, int(num_workers or os.cpu_count() or 1))
    if processes is None:
        processes = len(todo) >= PROCESS_MIN_FILES and workers >= PROCESS_MIN_WORKERS
    reasons: dict[int, str | None] = {}

    def job(i: int, paths: list[str]) -> str | None:
        try:
            decode_one.resize_file(paths[0], paths[1], targ_sz, max_pixels=max_pixels)
            return None
        except decode_one.BadImageError as e:
            return str(e)

    with pillow_quiet(), progress_bar(len(todo), f'resize {name} to {targ_sz}',
                                      quiet or len(todo) < PROGRESS_MIN) as bar:
        procs = None
        if processes and todo:
            try:
                procs = decode_procs.start_workers(workers, None, 0, (0, 0),
                                                   decode_one.resolve_max_pixels(max_pixels),
                                                   resize_to=targ_sz)
            except OSError:
                procs = None  # threads below
        if procs is not None:
            try:
                results, _ = decode_procs.run(procs, todo, job, bar.update)
                reasons.update(results)
            finally:
                decode_procs.stop_workers(procs)
        else:
            ex = cf.ThreadPoolExecutor(workers, thread_name_prefix='jaxcls-resize')
            try:
                for (i, _), err in zip(todo, ex.map(lambda it: job(*it), todo)):
                    reasons[i] = err
                    bar.update(1)
            finally:  # Ctrl-C: the files not started are left for the resumed call
                ex.shutdown(wait=True, cancel_futures=True)
    skipped = [(names[i], r) for i, r in sorted(reasons.items()) if r is not None]
    report_skipped(skipped, len(names), name, on_bad)
    return Resized(dest, len(todo) - len(skipped), len(items) - len(todo), skipped)


def resized_layout(data: Any, targ_sz: int, new_path: str = 'tmp', *, resume: bool = True,
                   num_workers: int | None = None, on_bad: str = 'skip',
                   quiet: bool = False) -> Layout:
    """Resizes the files of `data` (an ImageClassifierData built from files) into
    ``{data.path}/{new_path}/{targ_sz}`` (:func:`resize_files`) and returns the layout of the
    copy: the same classes and splits, less any file that could not be resized, whose reason
    joins ``data.skipped`` in the layout's skipped."""
    splits = [data.trn_ds, data.val_ds, data.test_ds]
    if any(ds is not None and ds.ids is not None for ds in splits):
        raise NotImplementedError(
            'data.resize with several processes: each holds only its share of the files. Run '
            'data.resize(targ_sz, new_path) once in a single process, then build the data from '
            f'{os.path.join(data.path, new_path, str(targ_sz))!r} with the same arguments')
    dest = os.path.join(data.path, new_path, str(int(targ_sz)))
    fnames = [f for ds in splits if ds is not None for f in ds.fnames]
    res = resize_files(fnames, data.path, dest, targ_sz, resume=resume, num_workers=num_workers,
                       on_bad=on_bad, quiet=quiet, name=f'{data.path} files')
    bad = {f for f, _ in res.skipped}

    def keep(ds) -> SplitItems | None:
        if ds is None:
            return None
        idx = [i for i, f in enumerate(ds.fnames) if f not in bad]
        return SplitItems(tuple(ds.fnames[i] for i in idx), ds.y[idx] if ds.labelled else None)

    return Layout(res.root, list(data.classes), bool(data.is_multi), keep(data.trn_ds),
                  keep(data.val_ds), keep(data.test_ds), list(data.skipped) + res.skipped)
