"""A real command in a process group of its own, watched as a terminal shows it: its
progress bars, its epoch rows and when they appeared, what is left of its process group and
of its partial files. bench/interrupt_trials.py signals such runs at chosen moments."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

PARTIAL = ('orbax-checkpoint-tmp', '.tmp')    # '.tmp' also matches '.tmp.npy'
BAR = re.compile(r'^(?P<desc>[^:\r\n]+):\s+\d+%\|[^|]*\|\s*(?P<i>\d+)/(?P<n>\d+) \[')
ROW = re.compile(r'^\s+\d+\s+(-?\d|nan|inf)')


class Run:
    """The command in a process group of its own; its stdout and stderr read as they come,
    split at '\\r' and '\\n' into what a terminal would show (progress bars, table rows)."""

    def __init__(self, argv: list[str], env: dict, cwd: str):
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                  start_new_session=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.raw = {'out': b'', 'err': b''}
        self.bar = {'out': None, 'err': None}      # the newest (desc, i, n) bar
        self.cleared = {'out': False, 'err': False}  # the bar was closed (a blank line)
        self.rows: list[float] = []                # when each epoch row appeared
        self.lock = threading.Lock()
        self.readers = [threading.Thread(target=self._read, args=(s,), daemon=True)
                        for s in ('out', 'err')]
        for t in self.readers:
            t.start()

    def _read(self, s: str) -> None:
        f = self.p.stdout if s == 'out' else self.p.stderr
        done = b''
        for chunk in iter(lambda: f.read1(65536), b''):
            with self.lock:
                self.raw[s] += chunk
                parts = re.split(rb'[\r\n]', done + chunk)
                done = parts.pop()                  # not ended yet: a bar being drawn
                for part in parts:
                    self._see(s, part.decode('utf-8', 'replace'))
                m = BAR.match(done.decode('utf-8', 'replace'))
                if m:
                    self.bar[s], self.cleared[s] = (m['desc'], int(m['i']), int(m['n'])), False

    def _see(self, s: str, text: str) -> None:
        m = BAR.match(text)
        if m:
            self.bar[s], self.cleared[s] = (m['desc'], int(m['i']), int(m['n'])), False
        elif text and not text.strip() and self.bar[s] is not None:
            self.cleared[s] = True
        elif s == 'out' and ROW.match(text):
            self.rows.append(time.monotonic())

    def state(self, s: str):
        with self.lock:
            return self.bar[s], self.cleared[s], len(self.rows)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def text(self, s: str) -> str:
        with self.lock:
            return self.raw[s].decode('utf-8', 'replace')

    def kill(self) -> None:
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait()


def group_members(pgid: int) -> list[str]:
    """The command lines of the live processes in process group `pgid`."""
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            state, _, group = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[:3]
            if int(group) == pgid and state != 'Z':
                found.append(open(f'/proc/{pid}/cmdline').read().replace('\0', ' ').strip())
        except (OSError, IndexError, ValueError):
            continue
    return found


def partial_files(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root)
                  for n in dirs + files if any(p in n for p in PARTIAL))


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in re.split(r'[\r\n]', text) if ln.strip()]
    return lines[-1] if lines else ''
