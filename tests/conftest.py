"""Shared test setup: small, deterministic, CPU-only."""
import os
import sys
import tempfile

# Tests compile hundreds of small programs and run each for milliseconds, so most of LLVM's
# code optimisation (XLA's backend level 3, the default users get) is time spent for nothing
# here: level 1 compiles a ResNet34 step about a fifth faster and runs it as fast. HLO
# optimisation, fusion and every numeric rule are the same; bench/ measures the default.
# (Level 0 would save more, but miscompiles here: a jitted Grad-CAM gave inf weights.)
TEST_XLA_FLAGS = '--xla_backend_optimization_level=1'
# Once: xdist's workers inherit the controller's environment and import this file again, and
# jax's persistent-cache key hashes XLA_FLAGS word by word, so a doubled flag gave the workers
# other keys than a one-process run (`pytest tests/x.py` after `make test` compiled anew).
if TEST_XLA_FLAGS not in os.environ.get('XLA_FLAGS', '').split():
    os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

# Many tests build the same small networks; XLA's persistent cache lets every test after
# the first reuse a compiled step instead of compiling it again (compiles dominate here).
# Every program is kept, the quickest too. Set as jax's environment variables (read when jax
# is imported), so the subprocesses tests start (the CLI, the examples, killed runs)
# share the cache too and nothing a test runs writes to ~/.cache/jaxcls.
CACHE = os.environ.get('JAXCLS_TEST_COMPILE_CACHE') or os.path.join(
    tempfile.gettempdir(), f'jaxcls-test-xla-cache-{os.getuid()}')
os.environ['JAX_COMPILATION_CACHE_DIR'] = CACHE
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'

# Test files in subfolders import the shared helpers of tests/ (make_folder, TINY, ...) by name.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Tests never download: make any hub lookup fail fast instead of hanging on the network.
os.environ.setdefault('JAXCLS_OFFLINE', '1')
