#!/usr/bin/env bash
# One prepared single-GPU benchmark: jaxcls vs PyTorch, ending with one summary table.
#
# Run from the repository root on a machine with one NVIDIA GPU (H100/H200), no network needed:
#
#     bash bench/bench_gpu.sh                                  # the full run: 271 s on one H200
#     bash bench/bench_gpu.sh --sections 4                     # the 20,000-JPEG lesson alone, ~65 s
#     bash bench/bench_gpu.sh --torch-python /opt/venv/bin/python   # torch lives in another python
#     bash bench/bench_gpu.sh --workdir /scratch/bench         # where the JPEGs and caches go
#     bash bench/bench_gpu.sh --tiny                           # CPU smoke test, < 1 min, toy sizes
#
# Options (all passed on to bench/bench_gpu.py; `--help` lists them):
#   --tiny             every section at toy sizes on the CPU (what tests/test_bench_gpu.py runs)
#   --torch-python PY  the python with torch + torchvision (default python3); without them the
#                      torch columns say "not available" and the run still succeeds
#   --torch-compile on|off   torch.compile the torch models (default on; off with --tiny)
#   --workdir DIR      generated JPEGs (kept and reused by later runs), their decode cache and
#                      bench_gpu.json (default $TMPDIR/jaxcls-bench-gpu); the full run needs
#                      ~6 GB free there
#   --sections LIST    which sections run (default 1,2,3,4); naming any of 1-3 runs all three
#
# Environment: JAXCLS_BENCH_TRACE=DIR also writes a jax.profiler trace of three section-1
# training steps into DIR (untimed; read it with xprof).
#
# What it needs: `python3` (or $PYTHON) with jax (CUDA build), flax, optax, orbax-checkpoint,
# pillow and numpy; torch and torchvision (CUDA) for the PyTorch columns. jaxcls is NOT
# installed: it runs from this checkout through PYTHONPATH. tensorflow-datasets, tqdm and
# matplotlib are not needed. Nothing is installed or downloaded (pretrained=False: random
# weights). XLA's persistent compilation cache is on ($JAXCLS_COMPILATION_CACHE, default
# ~/.cache/jaxcls/xla), so a second run spends less time compiling.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-python3}"

if ! command -v "$py" >/dev/null 2>&1; then
    echo "bench_gpu.sh: error: '$py' not found; put python3 on PATH or set PYTHON=/path/to/python" >&2
    exit 2
fi
if [ ! -f "$root/jaxcls/__init__.py" ]; then
    echo "bench_gpu.sh: error: $root is not a jaxcls checkout (no jaxcls/__init__.py); run the" \
         "script from the repository it came with" >&2
    exit 2
fi

# The checkout first, so it wins over any installed jaxcls.
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
# JAX preallocates 75% of the GPU by default; the torch worker shares the GPU (one after the
# other, never timed together), and its ResNet34 at batch 256 needs ~15 GB plus its forward
# at batch 1024. 0.55 leaves ~35 GB of an 80 GB H100 to torch and ~44 GB to JAX, more than
# either uses at these sizes. An explicit setting of yours wins.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.55}"
# TensorFlow (if present at all) must not grab the GPU or print its banner.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

cd "$root"
exec "$py" "$here/bench_gpu.py" "$@"
