"""Shared test setup: small, deterministic, CPU-only."""
import os
import sys
import tempfile

import jax

# Test files in subfolders import the shared helpers of tests/ (make_folder, TINY, ...) by name.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Tests never download: make any hub lookup fail fast instead of hanging on the network.
os.environ.setdefault('JAXCLS_OFFLINE', '1')

# Many tests build the same small networks; XLA's persistent cache lets every test after
# the first reuse a compiled step instead of compiling it again (compiles dominate here).
_CACHE = os.environ.get('JAXCLS_TEST_COMPILE_CACHE') or os.path.join(
    tempfile.gettempdir(), f'jaxcls-test-xla-cache-{os.getuid()}')
jax.config.update('jax_compilation_cache_dir', _CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
