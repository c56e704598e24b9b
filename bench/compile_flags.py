"""What XLA_FLAGS do to the compile of one train step, side by side.

The suite's time is mostly XLA:CPU compiling small programs (bench/suite_cpu.py), and
tests/conftest.py picks the flags they compile under. This compiles one program, by default
the TINY test net's unfrozen train step (batch 10 at 37 px, augmentation in the step, as
tests/train/test_learner.py builds it), in a fresh process per flag set
(bench/sides/jaxcls_compile.py) with the persistent cache off, the flag sets alternating,
and prints the medians of the repeats: the CPU seconds of XLA's compile (its threads
included), its wall seconds, and the step's time. It also prints the loss of one run of the
step: the flag sets round differently, so the losses agree to about 1e-6, not bit for bit.
`--arch resnet34` measures what users compile.

    .venv/bin/python bench/compile_flags.py [--repeats 3]
    .venv/bin/python bench/compile_flags.py --arch resnet34 --sz 64 --bs 32 --repeats 2
"""
from __future__ import annotations

import argparse
import statistics
import sys

from timing import run_once, script, with_checkout

SETS = {
    'users (XLA default)': '',
    'level 1 (the tests, until 2026-12-07)': '--xla_backend_optimization_level=1',
    'loop emitters': '--xla_cpu_use_fusion_emitters=false',
    'level 0': '--xla_backend_optimization_level=0',
    'level 0, loop emitters, AVX (the tests)': '--xla_backend_optimization_level=0 '
        '--xla_cpu_use_fusion_emitters=false --xla_cpu_max_isa=AVX',
}


def measure(flags: str, args: argparse.Namespace) -> dict:
    request = {'arch': args.arch, 'sz': args.sz, 'bs': args.bs, 'steps': args.steps}
    r = run_once(sys.executable, script('sides', 'jaxcls_compile.py'), request,
                 with_checkout({'XLA_FLAGS': flags, 'JAX_PLATFORMS': 'cpu'}))
    if 'error' in r:
        raise SystemExit(f'XLA_FLAGS={flags!r} failed: {r["error"]}')
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--arch', default='tiny', help="'tiny' (the tests' net) or e.g. resnet34")
    ap.add_argument('--sz', type=int, default=32)
    ap.add_argument('--bs', type=int, default=10)
    ap.add_argument('--steps', type=int, default=5, help='timed steps after the first')
    ap.add_argument('--repeats', type=int, default=3)
    args = ap.parse_args()
    runs = {name: [] for name in SETS}
    for _ in range(args.repeats):
        for name, flags in SETS.items():
            runs[name].append(measure(flags, args))
    print(f'{args.arch}, {args.sz} px, batch {args.bs}')
    print(f"{'XLA flags':42s} {'compile CPU s':>14s} {'wall s':>7s} {'step ms':>8s}"
          '  loss of one step')
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ('cpu', 'wall', 'step')}
        print(f"{name:42s} {med['cpu']:14.2f} {med['wall']:7.2f} {1000 * med['step']:8.0f}"
              f"  {rs[0]['loss']:.6f}")


if __name__ == '__main__':
    main()
