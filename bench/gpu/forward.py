"""Section 3 of bench_gpu.py: the frozen body's forward pass (what precompute runs) on uint8
batches, centre-cropped and normalised on the device, the body in bfloat16, large batch;
jaxcls (section 2's learner) and torch (bench/peers/torch_gpu.py) timed in alternation.
"""
from __future__ import annotations

import time

from gpu.common import say
from gpu.context import Context
from gpu.sizes import Sizes
from timing import median_rate


class JaxForward:
    """Section 3: the frozen body's pooled features of uint8 batches (centre crop and
    normalisation on the device, then the body in bfloat16): the function precompute jits."""

    def __init__(self, S: Sizes, learn, data):
        import jax
        import jax.numpy as jnp
        from jaxcls.data import transforms as T
        from jaxcls.models.head import ConvNet
        self.jax, self.S = jax, S
        net, cfg = learn.model, data.tfms[1]
        assert net.body.dtype == jnp.bfloat16
        fn = jax.jit(lambda v, x: net.apply(v, T.val_transform(x, cfg), method=ConvNet.features)
                     .astype(jnp.float32))
        self.variables = learn.state.variables
        self.x = jax.random.bits(jax.random.PRNGKey(3), (S.fwd_bs, S.cache, S.cache, 3), jnp.uint8)
        t = time.perf_counter()
        self.fn = fn.lower(self.variables, self.x).compile()
        self.compile_s = time.perf_counter() - t
        t = time.perf_counter()
        self._run(1)
        self.first_s = time.perf_counter() - t
        self._run(S.warmup)
        self.times: list[float] = []

    def _run(self, n: int) -> None:
        outs = [self.fn(self.variables, self.x) for _ in range(n)]
        self.jax.block_until_ready(outs)
        self.features = outs[-1].shape if outs else None

    def repeat(self) -> None:
        t = time.perf_counter()
        self._run(self.S.fwd_steps)
        self.times.append(time.perf_counter() - t)

    def rate(self) -> float:
        return median_rate(self.S.fwd_bs * self.S.fwd_steps, self.times)


def run(ctx: Context, r2) -> tuple:
    """Section 3 on section 2's learner and data (`r2`; None: it failed, jaxcls is not
    measured), logged as it goes; (jaxcls img/s or None, the torch sides)."""
    S = ctx.S
    say(f'\n[3] frozen-body forward (pooled features, what precompute runs), batch {S.fwd_bs}, '
        f'bfloat16, uint8 input cropped and normalised on the device {ctx.stamp()}')
    j3 = ctx.guarded('3', JaxForward, S, r2['learn'], r2['data']) if r2 is not None else None
    if j3 is not None:
        say(f'    jaxcls: compile {j3.compile_s:.1f} s, first batch {j3.first_s:.2f} s, features '
            f'{j3.features}')
    t3 = ctx.torch_timed('forward', S.fwd_bs, S.fwd_steps, j3)
    ctx.jax_alone('3', j3)
    j3_rate = j3.rate() if j3 is not None and j3.times else None
    if j3_rate:
        say(f'    jaxcls {j3_rate:.1f} img/s (median of {len(j3.times)})')
    ctx.results['forward_frozen'] = {'jax': j3_rate, 'jax_compile_s': j3 and j3.compile_s,
                                     'torch': {t.mode: t.summary() for t in t3}}
    return j3_rate, t3
