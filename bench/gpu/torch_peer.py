"""bench_gpu.py's client of its torch peer (bench/peers/torch_gpu.py): every answer awaited
with a timeout, each torch measurement (train or forward, eager or torch.compile) set up once
and timed in repeats, and the faster mode picked for the table."""
from __future__ import annotations

import os
import shutil
from typing import Any, Optional

from gpu.sizes import Sizes
from timing import Worker, WorkerError, median_rate, script


class TorchPeer:
    """The torch worker: JSON lines in and out, every answer awaited with a timeout, so a
    hung compile or a crash turns into 'not available' instead of a hung benchmark. A worker
    stopped that way is started again for the next measurement (`revive`)."""

    def __init__(self, python: str, device: str, log_path: str):
        self.error: Optional[str] = None
        self.fatal = False  # no torch at all: never retried
        self.info: dict = {}
        self.python, self.device, self.log_path = python, device, log_path
        self.worker: Optional[Worker] = None
        self.log = None
        self._spawn()

    def _spawn(self) -> None:
        self.error = None
        exe = shutil.which(self.python) or (self.python if os.path.exists(self.python) else None)
        if exe is None:
            self.error = (f'--torch-python {self.python!r} not found; pass the python that has '
                          f'torch and torchvision (e.g. --torch-python /path/to/venv/bin/python)')
            self.fatal = True
            return
        env = dict(os.environ)
        env.pop('PYTHONPATH', None)  # the worker needs nothing of the checkout
        try:
            self.log = open(self.log_path, 'a')
            self.worker = Worker([exe, script('peers', 'torch_gpu.py'), self.device], env=env,
                                 stderr=self.log, name='the torch worker')
        except OSError as e:
            self.error = f'cannot start {exe}: {e}'
            self.fatal = True

    def _answer(self, wait) -> dict:
        """wait() -> the worker's answer; a worker that exited or timed out, as an error."""
        try:
            return wait()
        except WorkerError as e:
            if e.kind != 'exited':
                return {'error': str(e)}
            tail = ''
            try:
                with open(self.log_path) as f:
                    tail = ' '.join(f.read().strip().splitlines()[-3:])[-300:]
            except OSError:
                pass
            return {'error': f'the torch worker exited ({tail or "no message"}; log: {self.log_path})'}

    def start(self, timeout: float) -> None:
        """Wait for the worker's import and its version line."""
        if self.error:
            return
        r = self._answer(lambda: self.worker.ready(timeout))
        if 'error' in r:
            self.error = r['error']
            self.fatal = True  # torch cannot be imported or sees no device: retrying won't help
        else:
            self.info = r

    def revive(self, timeout: float) -> None:
        """A new worker when the last one was stopped (a hung compile, a crash)."""
        if self.error and not self.fatal:
            self.close()
            self._spawn()
            self.start(timeout)

    def ask(self, req: dict, timeout: float) -> dict:
        if self.error:
            return {'error': self.error}
        r = self._answer(lambda: self.worker.ask(req, timeout))
        if 'error' in r and any(w in r['error'] for w in ('exited', 'no answer', 'is gone')):
            self.error = r['error']
        return r

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()


class TorchSide:
    """One torch measurement (train or forward; eager or torch.compile): setup once, then
    timed repeats."""

    def __init__(self, peer: TorchPeer, kind: str, S: Sizes, bs: int, steps: int,
                 compile_: bool, setup_timeout: float, step_timeout: float):
        self.peer, self.kind, self.bs, self.steps = peer, kind, bs, steps
        self.mode = 'compile' if compile_ else 'eager'
        self.step_timeout = step_timeout
        self.times: list[float] = []
        self.first = None
        self.error: Optional[str] = None
        peer.revive(setup_timeout)
        r = peer.ask({'op': 'setup', 'kind': kind, 'stages': list(S.stages), 'sz': S.sz, 'bs': bs,
                      'compile': compile_, 'warmup': S.warmup}, setup_timeout)
        if 'error' in r:
            self.error = r['error']
        else:
            self.first = r['first']

    def repeat(self) -> None:
        if self.error:
            return
        r = self.peer.ask({'op': 'time', 'kind': self.kind, 'steps': self.steps}, self.step_timeout)
        if 'error' in r:
            self.error = r['error']
        else:
            self.times.append(r['seconds'])

    def rate(self) -> Optional[float]:
        return median_rate(self.bs * self.steps, self.times) if self.times else None

    def summary(self) -> dict:
        return {'rate': self.rate(), 'first_s': self.first, 'error': self.error,
                'repeats': len(self.times)}


def best_torch(sides: list) -> tuple[Any, str]:
    """The faster torch mode, the one the ratio is taken against: (rate, mode), or
    ('not available', '') when none was measured."""
    done = [s for s in sides if s is not None and s.rate()]
    if not done:
        return 'not available', ''
    s = max(done, key=lambda s: s.rate())
    return s.rate(), s.mode
