"""`jax.jit` with the XLA options jaxcls's models run fastest under.

jax 0.10's XLA:CPU hands every convolution to YNNPACK by default, and XLA's own (Eigen)
convolutions are faster for every ResNet34 layer, most of all for kernel gradients
(`python bench/bench_step.py`; per-layer timings in bench/README.md). The option is per
compiled program, so jaxcls passes it to its own `jit`s and
changes nothing for anyone else's. Use `jaxcls.xla.jit` (or pass
`compiler_options=compiler_options()` to `jax.jit`) to get the same in your own steps.

The option does not exist in every jaxlib; `compiler_options()` tries it once on a tiny
program and returns {} where it is refused, and on other backends than the CPU.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

# An empty list of YNNPACK fusion kinds: no convolution or dot is handed to YNNPACK.
CPU_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ''}

_known: dict = {}


def compiler_options() -> dict:
    """The XLA compiler options jaxcls compiles with on the default backend ({} if none)."""
    backend = jax.default_backend()
    if backend not in _known:
        opts = {}
        if backend == 'cpu':
            try:
                jax.jit(jnp.negative, compiler_options=CPU_OPTIONS).lower(
                    jnp.zeros(2)).compile()
                opts = dict(CPU_OPTIONS)
            except Exception:  # an older or newer jaxlib without the option
                opts = {}
        _known[backend] = opts
    return dict(_known[backend])


class _Jitted:
    """A `jax.jit` made on first use, when the backend (and so the options) is known."""

    def __init__(self, fun: Callable, kwargs: dict):
        self._fun, self._kwargs, self._jitted = fun, kwargs, None
        functools.update_wrapper(self, fun)

    def _get(self):
        if self._jitted is None:
            kwargs = dict(self._kwargs)
            opts = {**compiler_options(), **(kwargs.pop('compiler_options', None) or {})}
            self._jitted = jax.jit(self._fun, **kwargs, **({'compiler_options': opts} if opts else {}))
        return self._jitted

    def __call__(self, *args, **kwargs):
        return self._get()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith('__'):
            raise AttributeError(name)
        return getattr(self._get(), name)


def jit(fun: Callable | None = None, **kwargs) -> Any:
    """`jax.jit(fun, **kwargs)` plus `compiler_options()`; usable as `@jit` or `jit(f, ...)`.

    The jitted function is built on its first call, so importing a module that defines
    one does not start a backend.
    """
    if fun is None:
        return functools.partial(jit, **kwargs)
    return _Jitted(fun, kwargs)
