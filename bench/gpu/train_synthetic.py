"""Section 1 of bench_gpu.py: ResNet34 training images/s on synthetic data already on the
device, jaxcls (build + create_train_state + make_train_step under jit, donated state) and
torch (bench/peers/torch_gpu.py) timed in alternation, repeat by repeat.

bfloat16 compute with float32 parameters and BatchNorm statistics, 224 px, batch 256 in the
full run; each repeat is `steps` steps between two synchronisations, after `warmup`
untimed ones. JAXCLS_BENCH_TRACE=DIR also writes a jax.profiler trace of three more steps
(untimed) into DIR.
"""
from __future__ import annotations

import os
import time

from gpu.common import say
from gpu.context import Context
from gpu.sizes import Sizes
from timing import median_rate


class JaxTrainSynthetic:
    """Section 1: build + create_train_state + make_train_step under jit, donated state."""

    def __init__(self, S: Sizes, spec):
        import jax
        import jax.numpy as jnp
        from jaxcls.models import build
        from jaxcls.train.optim import sgd
        from jaxcls.train.state import create_train_state
        from jaxcls.train.steps import make_train_step
        self.jax, self.S = jax, S
        module, variables = build(spec, num_classes=2, dtype=jnp.bfloat16)
        self.state = create_train_state(module.apply, variables, sgd(0.01))
        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        # Normalised-looking images made on the device: nothing crosses PCIe while timing.
        self.batch = {'image': jax.random.normal(k1, (S.bs, S.sz, S.sz, 3), jnp.float32),
                      'label': jax.random.randint(k2, (S.bs,), 0, 2, jnp.int32)}
        jitted = jax.jit(make_train_step(), donate_argnums=0)
        t = time.perf_counter()
        self.step = jitted.lower(self.state, self.batch).compile()
        self.compile_s = time.perf_counter() - t
        t = time.perf_counter()
        self._steps(1)
        self.first_s = time.perf_counter() - t
        self._steps(S.warmup)
        self.times: list[float] = []

    def _steps(self, n: int) -> None:
        for _ in range(n):
            self.state, metrics = self.step(self.state, self.batch)
        self.jax.block_until_ready((self.state, metrics))
        self.loss = float(metrics['loss'])

    def repeat(self) -> None:
        self.jax.block_until_ready(self.state)
        t = time.perf_counter()
        self._steps(self.S.steps)
        self.times.append(time.perf_counter() - t)

    def rate(self) -> float:
        return median_rate(self.S.bs * self.S.steps, self.times)


def run(ctx: Context) -> tuple:
    """Section 1, logged as it goes; (jaxcls img/s or None, the torch sides)."""
    S, peer = ctx.S, ctx.peer
    say(f'\n[1] training, synthetic data on the device: {ctx.arch_desc} {ctx.stamp()}')
    j1 = ctx.guarded('1', JaxTrainSynthetic, S, ctx.spec)
    if j1 is not None:
        say(f'    jaxcls: compile {j1.compile_s:.1f} s (cache load if warm), first step '
            f'{j1.first_s:.2f} s {ctx.stamp()}')
    peer.start(ctx.setup_timeout)
    if peer.error:
        say(f'    torch: not available ({peer.error})')
    else:
        say(f"    torch {peer.info['torch']} torchvision {peer.info['torchvision']} on "
            f"{peer.info['device_name']}")
    t1 = ctx.torch_timed('train', S.bs, S.steps, j1)
    ctx.jax_alone('1', j1)  # no torch to alternate with
    j1_rate = j1.rate() if j1 is not None and j1.times else None
    trace_dir = os.environ.get('JAXCLS_BENCH_TRACE')
    if trace_dir and j1 is not None:
        ctx.guarded('1 trace', trace, j1, trace_dir)
    if j1_rate:
        say(f'    jaxcls {j1_rate:.1f} img/s (median of {len(j1.times)}; loss {j1.loss:.3f})')
    ctx.results['train_synthetic'] = {'jax': j1_rate, 'jax_compile_s': j1 and j1.compile_s,
                                      'torch': {t.mode: t.summary() for t in t1}}
    return j1_rate, t1


def trace(side: JaxTrainSynthetic, trace_dir: str) -> None:
    """A profiler trace of a few timed-size steps, for reading offline (xprof); untimed."""
    import jax
    jax.profiler.start_trace(trace_dir)
    try:
        side._steps(3)
    finally:
        jax.profiler.stop_trace()
    say(f'    profiler trace of 3 steps in {trace_dir}')
