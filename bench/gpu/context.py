"""One bench_gpu.py run's state, handed to every section: its sizes, the torch peer, the
results recorded so far, the guard that keeps one broken section from costing the others'
numbers, and the alternation of a jaxcls measurement with torch's."""
from __future__ import annotations

import time
import traceback

from gpu.common import say
from gpu.sizes import Sizes
from gpu.torch_peer import TorchPeer, TorchSide


class Context:
    """`modes`: the torch modes measured, (False,) eager or (False, True) eager then
    torch.compile; `setup_timeout` / `step_timeout`: seconds before a silent torch worker is
    stopped; `results`: what goes to bench_gpu.json (sections add to it)."""

    def __init__(self, S: Sizes, peer: TorchPeer, modes: tuple, setup_timeout: float,
                 step_timeout: float, t_start: float, results: dict, workdir: str, spec):
        self.S, self.peer, self.modes = S, peer, modes
        self.setup_timeout, self.step_timeout = setup_timeout, step_timeout
        self.t_start, self.results, self.workdir, self.spec = t_start, results, workdir, spec
        self.arch_desc = (f'{spec.name} {list(S.stages)}, {S.sz} px, batch {S.bs}, bfloat16 '
                          f'compute, float32 params and BatchNorm statistics')

    def guarded(self, section: str, fn, *a):
        """Run one section; an exception is reported and recorded, and the run goes on, so
        one broken section never costs the others' numbers (a GPU session is short)."""
        try:
            return fn(*a)
        except Exception as e:  # noqa: BLE001 - reported, recorded, and shown in the table
            traceback.print_exc()
            msg = f'{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ""}'
            say(f'    FAILED: {msg[:300]}')
            self.results['failed'][section] = msg[:1000]
            return None

    def stamp(self) -> str:
        """Seconds since the run started, for the log."""
        return f'(at {time.perf_counter() - self.t_start:.0f} s)'

    def torch_timed(self, kind: str, bs: int, steps: int, jax_side) -> list:
        """Each torch mode set up in turn, then timed in alternation with `jax_side`."""
        sides = []
        for compiled in self.modes:
            t = TorchSide(self.peer, kind, self.S, bs, steps, compiled, self.setup_timeout,
                          self.step_timeout)
            sides.append(t)
            if t.error:
                say(f'    torch ({t.mode}): not available ({t.error})')
                continue
            say(f'    torch ({t.mode}): first call {t.first:.1f} s {self.stamp()}')
            for _ in range(self.S.repeats):
                if jax_side is not None:
                    self.guarded(f'{kind} repeats', jax_side.repeat)
                t.repeat()
            say(f'    torch ({t.mode}): {t.rate() or 0:.1f} img/s'
                + (f' (then: {t.error})' if t.error else ''))
        return sides

    def jax_alone(self, section: str, jax_side) -> None:
        """The jaxcls repeats when no torch mode was measured to alternate with."""
        if jax_side is not None and not jax_side.times:
            for _ in range(self.S.repeats):
                self.guarded(section, jax_side.repeat)
