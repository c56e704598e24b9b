"""Shared test setup: small, deterministic, CPU-only."""
import os
import platform
import subprocess
import sys
import tempfile

# Many tests build the same small networks; XLA's persistent cache lets every test after
# the first reuse a compiled step instead of compiling it again (compiles dominate here).
# Every program is kept, the quickest too. Set as jax's environment variables (read when jax
# is imported), so the subprocesses tests start (the CLI, the examples, killed runs)
# share the cache too and nothing a test runs writes to ~/.cache/jaxcls.
CACHE = os.environ.get('JAXCLS_TEST_COMPILE_CACHE') or os.path.join(
    tempfile.gettempdir(), f'jaxcls-test-xla-cache-{os.getuid()}')
os.environ['JAX_COMPILATION_CACHE_DIR'] = CACHE
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'

# Tests compile hundreds of small programs and run each for milliseconds, so the time XLA:CPU
# spends making fast machine code is spent for nothing here. On x86-64 the tests compile
# with LLVM's optimisation off (level 0; users get 3) and XLA's older loop emitters instead
# of its MLIR fusion emitters: the TINY train step compiles in 1.2-1.7 CPU s instead of
# 7.4-8.9 at the previous level 1 (`python bench/compile_flags.py`), and the whole suite takes
# half the CPU (bench/README.md, "compile_flags.py"). HLO optimisation, fusion and every
# numeric rule are the same; bench/, the demo and the lesson example's end-to-end test
# (tests/e2e/test_examples.py) compile as users do.
# At level 0, LLVM fuses a multiply and an add into one FMA instruction in some kernels and
# not in others, so two kernels that recompute the same x * a + b disagree in the last bit,
# and the gradient of a max (which counts the elements equal to it) divides by zero: a
# jitted Grad-CAM gave inf weights. Capping the instruction set at AVX (no FMA) makes every
# kernel round alike. Elsewhere than x86-64 there is no such cap, and the tests keep level 1.
FAST_XLA_FLAGS = ('--xla_backend_optimization_level=0', '--xla_cpu_use_fusion_emitters=false',
                  '--xla_cpu_max_isa=AVX')
SAFE_XLA_FLAGS = ('--xla_backend_optimization_level=1',)


def _test_xla_flags():
    """FAST_XLA_FLAGS where this jaxlib knows them (an unknown flag aborts every process that
    starts XLA), checked once per jaxlib version in a child process; else SAFE_XLA_FLAGS."""
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        return SAFE_XLA_FLAGS
    from importlib.metadata import version
    stamp = os.path.join(CACHE, f"xla-flags-jaxlib-{version('jaxlib')}.txt")
    if not os.path.exists(stamp):
        env = dict(os.environ, XLA_FLAGS=' '.join(FAST_XLA_FLAGS), JAX_PLATFORMS='cpu')
        probe = subprocess.run([sys.executable, '-c', 'import jax; jax.devices()'], env=env,
                               capture_output=True, timeout=300)
        os.makedirs(CACHE, exist_ok=True)
        with open(stamp, 'w') as f:
            f.write('fast' if probe.returncode == 0 else 'safe')
    with open(stamp) as f:
        return FAST_XLA_FLAGS if f.read() == 'fast' else SAFE_XLA_FLAGS


TEST_XLA_FLAGS = _test_xla_flags()
# What a subprocess removes from XLA_FLAGS to compile as users do (tests/e2e/test_examples.py).
os.environ['JAXCLS_TEST_XLA_FLAGS'] = ' '.join(TEST_XLA_FLAGS)
# Each flag once, and none the caller's XLA_FLAGS already sets: xdist's workers inherit the
# controller's environment and import this file again, and jax's persistent-cache key hashes
# XLA_FLAGS word by word, so a doubled flag gave the workers other keys than a one-process
# run (`pytest tests/x.py` after `make test` compiled anew).
_flags = os.environ.get('XLA_FLAGS', '').split()
_names = {f.split('=')[0] for f in _flags}
os.environ['XLA_FLAGS'] = ' '.join(
    _flags + [f for f in TEST_XLA_FLAGS if f.split('=')[0] not in _names])

# Test files in subfolders import the shared helpers of tests/ (make_folder, TINY, ...) by name.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Tests never download: make any hub lookup fail fast instead of hanging on the network.
os.environ.setdefault('JAXCLS_OFFLINE', '1')
