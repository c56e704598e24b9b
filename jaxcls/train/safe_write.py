"""Writing a model or checkpoint folder so that nothing saved is ever lost: one writer at a
time, enough space before the first byte, and a new folder that replaces the old in one step.

- `FolderLock(folder)`: an advisory lock (`flock`) on `.<name>.lock` beside the folder, with
  the holder's pid, host and command written in it; a second writer gets FolderBusyError
  naming that process instead of two writers racing in one folder. The kernel drops the lock
  when its process dies, so a killed writer never leaves a folder locked (only the empty
  file, which the next lock reuses); a writer that finishes removes the file.
- `check_space(folder, nbytes, what)`: NotEnoughSpaceError naming the bytes needed, the bytes
  free and where, before anything is written.
- `replace_folder(new, final)`: the new folder takes the final name in one atomic step
  (Linux's renameat2 RENAME_EXCHANGE swaps the two names; elsewhere two renames, and a reader
  that finds only the old one under its temporary name puts it back: `recover`), and only
  then is the old one removed. A kill at any moment leaves the old or the new model under the
  name, never neither.
- `replacing(final, nbytes, what)`: all of the above around one write: `with replacing(...)
  as tmp:` write the new file or folder to `tmp`; it replaces `final` when the block ends, and
  is removed when the block raises (a full disk becoming NotEnoughSpaceError).
- `temp_name(final)` / `sweep_stale(final)`: the temporary names (`.<name>.<pid>.<hex>.tmp`)
  and the removal of those left by dead processes (the Ctrl-C guard of the command removes
  this process's own: jaxcls.interrupts.remove_partial).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import glob
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
import uuid
from typing import Optional

from .integrity import FolderBusyError, NotEnoughSpaceError

__all__ = ['FolderLock', 'check_space', 'join_orbax_threads', 'replace_folder', 'replacing',
           'recover', 'remove_temp', 'temp_name', 'sweep_stale', 'is_out_of_space']

_RENAME_EXCHANGE = 2           # linux/fs.h
_AT_FDCWD = -100
# '.<name>.<pid>.<hex>.tmp' (and Orbax's own '<that>.orbax-checkpoint-tmp[-<n>]' inside
# it), or '.<name>.<pid>.<hex>.old'.
_TEMP = re.compile(r'^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.(?P<kind>tmp|old)'
                   r'(\.orbax-checkpoint-tmp(-\d+)?)?$')


def _split(final: str) -> tuple[str, str]:
    final = os.path.abspath(os.fspath(final))
    return os.path.dirname(final), os.path.basename(final)


def temp_name(final: str, kind: str = 'tmp') -> str:
    """A sibling of `final` for this process to write into ('tmp') or park the old one in ('old')."""
    parent, name = _split(final)
    return os.path.join(parent, f'.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{kind}')


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(final: str) -> list[str]:
    """Remove the temporary siblings of `final` that dead processes left ('.tmp': an unfinished
    write; '.old': a replaced model whose removal was cut short). Returns their names."""
    parent, name = _split(final)
    gone = []
    if not os.path.isdir(parent):
        return gone
    for n in os.listdir(parent):
        m = _TEMP.match(n)
        if m and m['name'] == name and not _alive(int(m['pid'])):
            if m['kind'] == 'old' and not os.path.exists(final):
                continue                        # the only copy left: recover() puts it back
            shutil.rmtree(os.path.join(parent, n), ignore_errors=True)
            gone.append(n)
    return gone


def recover(final: str) -> bool:
    """Put back a model a killed two-rename replacement left only under its '.old' name (the
    systems without an atomic exchange). True when it did."""
    parent, name = _split(final)
    if os.path.exists(final) or not os.path.isdir(parent):
        return False
    olds = [n for n in os.listdir(parent)
            if (m := _TEMP.match(n)) and m['name'] == name and m['kind'] == 'old']
    for n in sorted(olds, key=lambda n: os.path.getmtime(os.path.join(parent, n)), reverse=True):
        try:
            os.rename(os.path.join(parent, n), final)
            return True
        except OSError:
            continue
    return False


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    if not sys.platform.startswith('linux'):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False                            # this file system cannot exchange
    raise OSError(err, os.strerror(err), b)


def replace_folder(new: str, final: str) -> None:
    """Give the complete folder (or file) `new` the name `final`, replacing what is there in
    one step, then remove the old one (see the module docstring)."""
    if os.path.isfile(new):
        os.replace(new, final)                  # one step for a file everywhere
        return
    if not os.path.exists(final):
        os.rename(new, final)
        return
    if _exchange(new, final):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old folder
        return
    old = temp_name(final, 'old')
    os.rename(final, old)
    os.rename(new, final)
    shutil.rmtree(old, ignore_errors=True)


# A write cut short (an exception, Ctrl-C) may leave writer threads (Orbax's) that create
# files for a moment more: removing its temporary folder is retried this long, passes 20 ms
# apart, until it stays gone.
REMOVE_S = 0.5
# The longest a failed write waits for Orbax's other writer threads to end before its
# temporary folder is removed (Orbax raises the first failed part of a write while the other
# parts' threads may still be creating files): they fail or finish within milliseconds (a
# full disk fails every write), and a loaded machine can hold a thread back a second or more.
WRITERS_S = 10.0


def join_orbax_threads(seconds: float = WRITERS_S) -> None:
    """Wait (at most `seconds` in all) for the live threads Orbax started, other than this one."""
    deadline = time.monotonic() + seconds
    for t in threading.enumerate():
        if t is not threading.current_thread() and type(t).__module__.startswith('orbax.'):
            t.join(max(0.0, deadline - time.monotonic()))


def remove_temp(path: str) -> None:
    """Remove an unfinished write: the file or folder `path` and Orbax's own temporary
    siblings of it, again until they stay gone (see REMOVE_S)."""
    from jaxcls.interrupts import sweep_until_quiet

    def sweep() -> list[str]:
        left = [path] + glob.glob(glob.escape(path) + '.orbax-checkpoint-tmp*')
        left = [p for p in left if os.path.lexists(p)]
        for p in left:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(p)
        return left
    sweep_until_quiet(sweep, REMOVE_S)


@contextlib.contextmanager
def replacing(final: str, nbytes: int, what: str):
    """`with replacing(final, nbytes, 'model') as tmp:` write the new version of the file or
    folder `final` to `tmp`. One writer at a time (FolderLock), `nbytes` checked against the
    free space first, what dead writers left swept; when the block ends `tmp` replaces
    `final` in one step, and when it raises `tmp` is removed and `final` is as it was (a full
    disk raises NotEnoughSpaceError)."""
    final = os.path.abspath(os.fspath(final))
    with FolderLock(final, what):
        recover(final)
        sweep_stale(final)
        check_space(final, nbytes, f'the {what}')
        tmp = temp_name(final)
        try:
            yield tmp
        except BaseException as e:
            if not isinstance(e, KeyboardInterrupt):   # Ctrl-C: stop now, sweep what is there
                join_orbax_threads()
            remove_temp(tmp)
            if is_out_of_space(e):
                raise NotEnoughSpaceError(
                    f'the disk filled up while writing the {what} to {final}; nothing was '
                    f'written (the previous {what} there, if any, is unchanged). Free some '
                    'space and save again') from e
            raise
        replace_folder(tmp, final)


def check_space(folder: str, nbytes: int, what: str) -> None:
    """NotEnoughSpaceError when the disk `folder` is (or will be) on has less than `nbytes` free."""
    probe = os.path.abspath(os.fspath(folder))
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    if free < nbytes:
        raise NotEnoughSpaceError(
            f'not enough disk space to save {what} to {folder}: it needs about '
            f'{_mb(nbytes)}, and {_mb(free)} are free on that disk ({probe}). Free some space '
            'there (older checkpoints or models under the same folder) or save elsewhere; '
            'nothing was written')


def _mb(n: int) -> str:
    return f'{n / 2**20:.1f} MiB'


def is_out_of_space(err: BaseException) -> bool:
    """Whether an error (or one in its chain) is the disk being full (ENOSPC, or Orbax's and
    TensorStore's RESOURCE_EXHAUSTED / 'No space left' texts)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if getattr(err, 'errno', None) == errno.ENOSPC or any(
                s in str(err) for s in ('No space left', 'RESOURCE_EXHAUSTED', 'ENOSPC')):
            return True
        err = err.__cause__ or err.__context__
    return False


class FolderLock:
    """`with FolderLock(folder, what):` one writer of `folder` at a time (see the module
    docstring). Re-entrant within a process: a nested lock of the same folder is a no-op."""

    _held: dict[str, int] = {}

    def __init__(self, folder: str, what: str = 'model'):
        parent, name = _split(folder)
        self.folder, self.what = os.path.join(parent, name), what
        self.path = os.path.join(parent, f'.{name}.lock')
        self._fd: Optional[int] = None

    def acquire(self) -> 'FolderLock':
        if self._held.get(self.path):
            self._held[self.path] += 1
            return self
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise FolderBusyError(
                    f'{self.folder} is being written by another process ({self._holder()}); '
                    f'wait for it to finish, or write this {self.what} under another name'
                ) from None
            try:   # the holder before us removes the file as it lets go: lock the one in place
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                                 'command': ' '.join(sys.argv)[:200],
                                 'since': time.strftime('%Y-%m-%d %H:%M:%S')}).encode())
        self._fd = fd
        self._held[self.path] = 1
        return self

    def _holder(self) -> str:
        try:
            with open(self.path) as f:
                h = json.load(f)
            return f"pid {h['pid']} on {h['host']}, since {h['since']}: {h['command']}"
        except (OSError, ValueError, KeyError):
            return 'its pid could not be read'

    def release(self) -> None:
        n = self._held.get(self.path, 0)
        if n > 1:
            self._held[self.path] = n - 1
            return
        self._held.pop(self.path, None)
        if self._fd is not None:
            try:                   # removed while still held: nothing is left beside the folder
                os.remove(self.path)
            except OSError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> 'FolderLock':
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
