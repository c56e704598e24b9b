"""XLA's persistent compilation cache, on by default for jaxcls's learners and command line.

The first ResNet34 train step takes seconds to compile on a CPU; with the cache, the
second run of the same script loads the compiled step from disk instead. The cache lives
in $JAXCLS_COMPILATION_CACHE (default ~/.cache/jaxcls/xla); set it to 0 to turn it off.
A cache directory you configured in jax yourself is left alone.
"""
from __future__ import annotations

import os
from typing import Optional

import jax

ENV = 'JAXCLS_COMPILATION_CACHE'
# Only programs that took at least this long to compile are written: the tiniest helpers
# recompile faster than they load, while a learner's head-only steps load far faster than
# they compile (JAX's default is 1 s).
MIN_COMPILE_SECONDS = 0.25


def default_dir() -> str:
    return os.path.join(os.path.expanduser('~'), '.cache', 'jaxcls', 'xla')


def enable(path: Optional[str] = None) -> Optional[str]:
    """Turn the persistent cache on (idempotent); returns its folder, or None when disabled.

    >>> folder = enable()  # doctest: +SKIP
    """
    env = os.environ.get(ENV)
    if path is None and env is not None and env.strip().lower() in ('0', 'false', 'no', 'off', ''):
        return None
    current = jax.config.jax_compilation_cache_dir
    if current and path is None:
        return current  # the user's (or an earlier call's) choice stands
    folder = path or env or default_dir()
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return None  # an unwritable home: compile every time rather than fail
    jax.config.update('jax_compilation_cache_dir', folder)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_SECONDS)
    return folder
