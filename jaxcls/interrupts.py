"""Ctrl-C for the `jaxcls` command: exit 130 within a couple of seconds, at any moment, with one
line saying what was saved and how to resume; never a hang or a signal death.

Python runs a SIGINT handler only between bytecodes of the main thread, so a KeyboardInterrupt
waits while the main thread is inside a long C++ call (an XLA compile takes 6-13 s here), and
it can land where it is swallowed (a gc callback) so that training simply goes on. And when
the interpreter then shuts down while XLA's or Orbax's threads still run, it can crash
(SIGSEGV). So the command does not rely on the exception alone:

- :class:`Guard` makes the C-level handler write to a pipe (`signal.set_wakeup_fd`), which a
  watchdog thread reads at once, whatever the main thread is doing;
- the main thread still gets its KeyboardInterrupt and, if it gets there first, says what was
  saved and calls :meth:`Guard.exit`;
- otherwise, `GRACE_S` after the signal, the watchdog does the same from its thread;
- either way the exit closes the progress bars, prints the line, sends anything the dying
  threads would still print (Orbax's writers complain as they lose their loop) to /dev/null
  so that line stays the last, removes the temporary folders a write in flight had started
  (again until a pass finds none: a writer thread can recreate one while it is removed),
  and ends with ``os._exit(130)``, skipping the interpreter's shutdown (where the crashes
  were). A second Ctrl-C exits at once. The entry point ends a finished run with
  ``os._exit`` too, under the guard, so no Ctrl-C falls into the shutdown either.

Only the command-line entry point uses this; the library never installs signal handlers.
"""
from __future__ import annotations

import json
import logging
import os
import re
import select
import shutil
import signal
import sys
import threading
import time
from typing import Callable, Optional

__all__ = ['Guard', 'EXIT_INTERRUPTED', 'GRACE_S', 'SWEEP_S', 'complete_steps', 'remove_partial',
           'sweep_until_quiet']

#: The shell's status for a command ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130
#: Seconds the main thread has, after Ctrl-C, to stop by itself before the watchdog exits for
#: it: enough to unwind a training step and write one line, short of the 2 s a user waits.
GRACE_S = 1.0
#: The longest the exit keeps sweeping partial writes (passes 20 ms apart, until two find
#: nothing): GRACE_S plus this stays under the 2 s.
SWEEP_S = 0.4

# Orbax writes a checkpoint into '<step>.orbax-checkpoint-tmp[-<n>]' and renames it when whole.
_PARTIAL = re.compile(r'.*\.orbax-checkpoint-tmp(-\d+)?$')


def complete_steps(directory: Optional[str]) -> list[int]:
    """The steps of the whole checkpoints in `directory` (Orbax's step folders), ascending."""
    if not directory or not os.path.isdir(directory):
        return []
    return sorted(int(n) for n in os.listdir(directory)
                  if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def remove_partial(directory: Optional[str]) -> list[str]:
    """Delete what an unfinished write left in `directory`: Orbax's temporary checkpoint
    folders, and this process's temporary files and folders (jaxcls names them
    ``*.<pid>.*.tmp`` or ``*.<pid>.*.tmp.npy`` before renaming them into place)."""
    if not directory or not os.path.isdir(directory):
        return []
    mine = f'.{os.getpid()}.'
    gone = []
    for n in os.listdir(directory):
        p = os.path.join(directory, n)
        if n.startswith('.') and n.endswith('.lock') and _lock_pid(p) == os.getpid():
            try:
                os.remove(p)                   # a folder lock this process held
            except OSError:
                continue
        elif _PARTIAL.match(n) or (mine in n and os.path.isdir(p) and n.endswith('.tmp')):
            shutil.rmtree(p, ignore_errors=True)
        elif mine in n and (n.endswith('.tmp') or n.endswith('.tmp.npy')):
            try:
                os.remove(p)
            except OSError:
                continue
        else:
            continue
        gone.append(n)
    return gone


def sweep_until_quiet(sweep: Callable[[], list], seconds: float, pause: float = 0.02) -> None:
    """Call `sweep` (it removes partial writes and returns what it removed) until two passes
    in a row remove nothing, `pause` seconds apart, or `seconds` have passed: the writer
    threads of a write cut short (Orbax's) may create files for a moment more."""
    deadline, quiet = time.monotonic() + seconds, 0
    while quiet < 2 and time.monotonic() < deadline:
        quiet = 0 if sweep() else quiet + 1
        if quiet < 2:
            time.sleep(pause)


def _lock_pid(path: str) -> Optional[int]:
    """The pid a folder lock file names (jaxcls.train.safe_write.FolderLock), or None."""
    try:
        with open(path) as f:
            return int(json.load(f)['pid'])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _close_progress_bars() -> None:
    """End every open tqdm bar with its newline, so the line printed next starts a line."""
    try:
        from tqdm import tqdm
        for bar in list(getattr(tqdm, '_instances', ())):
            bar.close()
    except Exception:  # noqa: BLE001 -- a bar another thread is drawing must not stop the exit
        pass


class Guard:
    """SIGINT handling for one run of the command (a context manager; main thread only).

    `message` is called (from whichever thread exits) for the line printed after
    'jaxcls: interrupted; '; the folders in `sweep` lose their partial writes before the
    exit. A command sets both while it runs (e.g. once its checkpoint folder is known). A
    Guard that was never entered installs nothing: it only holds them (in-process calls of
    `cli.main`, as the tests make).
    """

    def __init__(self, grace_s: float = GRACE_S, exit_fn: Callable[[int], None] = os._exit):
        self.grace_s = float(grace_s)
        self.message: Callable[[], str] = lambda: 'nothing was saved'
        self.sweep: list[str] = []
        self.active = False
        self._exit_fn = exit_fn
        self._lock = threading.Lock()
        self._fired = threading.Event()
        self._old_fd = self._old_handler = self._old_hook = self._old_thread_hook = None
        self._r = self._w = None

    def __enter__(self) -> 'Guard':
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        self._old_fd = signal.set_wakeup_fd(self._w)
        self._old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        self._old_hook, self._old_thread_hook = sys.unraisablehook, threading.excepthook
        sys.unraisablehook = self._unraisable
        threading.Thread(target=self._watch, name='jaxcls-interrupt-watchdog', daemon=True).start()
        self.active = True
        return self

    def __exit__(self, *exc) -> None:
        self.active = False
        signal.signal(signal.SIGINT, self._old_handler or signal.default_int_handler)
        sys.unraisablehook, threading.excepthook = self._old_hook, self._old_thread_hook
        signal.set_wakeup_fd(self._old_fd if self._old_fd is not None else -1)
        os.close(self._w)                              # the watchdog reads EOF and ends

    def _on_sigint(self, signum, frame) -> None:
        if self._fired.is_set():                       # the second Ctrl-C: no more waiting
            self.exit()
        self._fired.set()
        self._hush()
        raise KeyboardInterrupt

    def _hush(self) -> None:
        """From the first Ctrl-C on, errors of other threads are consequences of it (Orbax's
        writers losing their event loop, a write whose folder was swept), whether raised in a
        thread, unraisable or logged by asyncio or Orbax: not printed."""
        if self._exit_fn is os._exit:
            threading.excepthook = lambda args: None
            sys.unraisablehook = lambda info: None
            logging.disable(logging.CRITICAL)

    def _unraisable(self, info) -> None:
        """A KeyboardInterrupt raised where Python cannot propagate it (a gc callback, a
        finaliser) is swallowed there, and training would go on; the watchdog ends the run
        instead, so it needs no traceback on the way."""
        if not issubclass(info.exc_type, KeyboardInterrupt):
            self._old_hook(info)

    def _watch(self) -> None:
        """Wait for a SIGINT byte on the pipe; then exit after the grace period, or at once on
        a second one."""
        deadline = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._r], [], [], timeout)
            if not ready:                              # the grace period ran out
                return self.exit()
            try:
                data = os.read(self._r, 64)
            except OSError:
                data = b''
            if not data:                               # __exit__ closed the pipe
                os.close(self._r)
                return None
            for b in data:
                if b != signal.SIGINT:
                    continue
                if deadline is not None:
                    return self.exit()
                self._hush()
                deadline = time.monotonic() + self.grace_s

    def _line(self) -> str:
        try:
            return f'jaxcls: interrupted; {self.message()}'
        except Exception as e:  # noqa: BLE001 -- the exit must happen regardless
            return f'jaxcls: interrupted (what was saved is unknown: {e})'

    def _sweep(self) -> list[str]:
        return [g for d in self.sweep for g in remove_partial(d)]

    def say(self) -> str:
        """Sweep the partial writes and return the line to print."""
        self._sweep()
        return self._line()

    def exit(self, status: int = EXIT_INTERRUPTED) -> None:
        """Print the line, silence what dying threads would print after it, sweep partial
        writes, and end the process now (os._exit: the interpreter's shutdown, with XLA's and
        Orbax's threads still running, is skipped)."""
        with self._lock:                                # one thread prints and exits
            hard = self._exit_fn is os._exit
            self._hush()
            _close_progress_bars()
            line = self._line()
            for write in (lambda: sys.stdout.flush(),
                          lambda: (sys.stderr.write(line + '\n'), sys.stderr.flush())):
                try:
                    write()
                except Exception:  # noqa: BLE001 -- a closed pipe must not stop the exit
                    pass
            if hard:
                _silence_stdio()
            sweep_until_quiet(self._sweep, SWEEP_S)
            self._exit_fn(status)

    def finish(self, status: int) -> None:
        """End a completed run with `status`, still under the guard: flush and os._exit, so a
        Ctrl-C can no longer land in the interpreter's shutdown."""
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:  # noqa: BLE001
                pass
        self._exit_fn(status)


def _silence_stdio() -> None:
    """Point file descriptors 1 and 2 at /dev/null (the process ends in a moment)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
    except OSError:
        pass
