"""What the side-by-side benches share: the median-of-repeats timer, the client of a peer
process (JSON lines on its stdin and stdout), and the ratio and table printing.

The scripts in bench/ import it as `timing` (python puts a script's own folder first on
sys.path). It imports neither jax nor jaxcls, so a script can start its torch peer before
paying for them.
"""
from __future__ import annotations

import json
import os
import queue
import statistics
import subprocess
import threading
import time
from typing import Callable, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def script(*parts: str) -> str:
    """The path of a script in bench/, e.g. script('peers', 'torch_resnet.py')."""
    return os.path.join(HERE, *parts)


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------

def median_seconds(fn: Callable[[], object], n: int) -> float:
    """The median wall time of n calls of `fn`, each timed on its own."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def timed(one: Callable[[], object]) -> tuple[Callable[[int], float], float]:
    """(run(n) -> median seconds of n calls of `one`, seconds of the first call, compile included)."""
    t = time.perf_counter()
    one()
    first = time.perf_counter() - t
    return (lambda n: median_seconds(one, n)), first


def median_rate(images: int, seconds: Sequence[float]) -> float:
    """Images per second of the median of several timed blocks of `images` images each."""
    return images / statistics.median(seconds)


# --------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------

def ratio(jaxcls_rate: float, peer_rate: float) -> str:
    """jaxcls / peer of two rates (higher is better), as printed: '1.23x' (> 1: jaxcls faster)."""
    return f'{jaxcls_rate / peer_rate:.2f}x'


def machine() -> str:
    """The CPU count and load average every script prints: other processes slow every number."""
    return f'{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}'


def table_lines(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """A table of text cells, columns padded and joined by ' | ', a '-+-' rule under the head."""
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

    def line(cells):
        return ' | '.join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return [line(head), '-+-'.join('-' * w for w in widths), *(line(b) for b in body)]


# --------------------------------------------------------------------------------------
# Peer processes
# --------------------------------------------------------------------------------------

class WorkerError(RuntimeError):
    """A worker that did not answer. `kind`: 'exited' (its stdout closed), 'timeout' (no
    answer in time; the worker was stopped) or 'gone' (its stdin could not be written)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class Worker:
    """A long-lived peer process: one JSON request per line on its stdin, one JSON answer
    per line on its stdout, its first line a greeting once its imports are done.

    Lines are read by a thread, so `answer` can give up after `timeout` seconds (None: wait
    for ever); a worker that timed out is stopped. `stderr`: a file for the worker's own
    messages (default: this process's stderr).
    """

    def __init__(self, argv: Sequence[str], env: Optional[dict] = None, stderr=None,
                 name: str = 'the worker'):
        self.name = name
        self.lines: queue.Queue = queue.Queue()
        self.proc: Optional[subprocess.Popen] = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
            bufsize=1, env=env)
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()

    @staticmethod
    def _read(proc: subprocess.Popen, lines: queue.Queue) -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def answer(self, timeout: Optional[float] = None) -> dict:
        """The next line the worker writes, parsed."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise WorkerError('timeout', f'no answer from {self.name} in {timeout:.0f} s '
                                         '(stopped)') from None
        if line is None:
            self.lines.put(None)  # every later call sees the exit too
            raise WorkerError('exited', f'{self.name} exited')
        return json.loads(line)

    def ready(self, timeout: Optional[float] = None) -> dict:
        """Wait for the greeting: the worker's imports are done (they cost seconds of CPU,
        which must not land in a timed span of this process)."""
        return self.answer(timeout)

    def ask(self, request: dict, timeout: Optional[float] = None) -> dict:
        """Send one request and wait for its answer."""
        try:
            self.proc.stdin.write(json.dumps(request) + '\n')
            self.proc.stdin.flush()
        except (AttributeError, OSError, ValueError) as e:  # no process, a closed pipe
            raise WorkerError('gone', f'{self.name} is gone ({e})') from None
        return self.answer(timeout)

    def close(self, timeout: float = 10) -> None:
        """Close its stdin (a worker ends at end of input); kill it after `timeout` seconds."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def run_once(python: str, path: str, request: dict, env: Optional[dict] = None) -> dict:
    """Run a one-shot script in a fresh process: `request` as one JSON line on its stdin,
    its last stdout line the JSON answer; {'error': its last stderr line} when it fails.
    `env` adds to this process's environment."""
    out = subprocess.run([python, path], input=json.dumps(request) + '\n', capture_output=True,
                         text=True, env={**os.environ, **(env or {})})
    if out.returncode != 0:
        return {'error': out.stderr.strip().splitlines()[-1] if out.stderr.strip() else
                f'exit status {out.returncode}'}
    return json.loads(out.stdout.strip().splitlines()[-1])


def with_checkout(env: Optional[dict] = None) -> dict:
    """`env` plus this checkout first on PYTHONPATH: a jaxcls script run as a file imports
    the jaxcls next to it, not an installed one."""
    path = os.environ.get('PYTHONPATH')
    return {**(env or {}), 'PYTHONPATH': REPO + (os.pathsep + path if path else '')}
