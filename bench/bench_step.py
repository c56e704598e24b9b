"""ResNet34 training speed: jaxcls vs torchvision (eager, and torch.compile where it works), one run.

    python bench/bench_step.py                       # 64, 128, 224 px, batch 32 (CPU)
    python bench/bench_step.py --sizes 64 --steps 5

The frozen body's forward pass (precompute) is bench/bench_forward.py, with the same options.
PyTorch runs in its own venv, never next to jaxcls:

    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch==2.14.1 torchvision==0.29.1
    (or `make parity`, which builds the same venv)

The torch side is a worker subprocess (bench/peers/torch_resnet.py, run by `--torch-python`,
default .venv-torch/bin/python) that keeps its model between requests, so both frameworks
are timed in alternation on the same machine: torch's import is awaited first (it would land
in jaxcls's compile time), then for each size and repeat, jaxcls steps,
then torch steps (on the GPU when torch sees one, synchronised after each step). Both train
the same architecture with SGD (lr 0.01, momentum 0.9) on the same batch size, float32,
random normalised images; the median step time of each repeat is kept and the median of
repeats printed, with images/s and the ratio jaxcls / torch (> 1 means jaxcls is faster).
jaxcls's step is traced, lowered and compiled on its own clock first ('compile': what the
persistent cache saves), then its first call is timed ('first step').
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import resnet34_peer
from timing import ratio, timed


def jax_runner(sz: int, bs: int):
    """(run(n) -> median step seconds, first step seconds, compile seconds) of a jitted
    ResNet34 training step with donated state, one random batch."""
    import jax.numpy as jnp
    import numpy as np
    from jaxcls import xla
    from jaxcls.models import resnet34
    from jaxcls.train.optim import sgd
    from jaxcls.train.state import create_train_state
    from jaxcls.train.steps import make_train_step

    module, variables = resnet34(num_classes=2)
    holder = [create_train_state(module.apply, variables, sgd(0.01))]
    rng = np.random.default_rng(0)
    batch = {'image': jnp.asarray(rng.standard_normal((bs, sz, sz, 3), np.float32)),
             'label': jnp.asarray(rng.integers(0, 2, bs))}
    # Trace, lower and compile, timed on their own: what the persistent cache saves.
    t = time.perf_counter()
    step = xla.jit(make_train_step(), donate_argnums=0).lower(holder[0], batch).compile()
    compile_s = time.perf_counter() - t

    def one():
        holder[0], m = step(holder[0], batch)
        m['loss'].block_until_ready()

    run, first = timed(one)
    return run, first, compile_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    resnet34_peer.add_options(ap)
    ap.add_argument('--no-compile', action='store_true', help='skip torch.compile')
    args = ap.parse_args()
    jax, peer = resnet34_peer.setup(args)
    modes = ['eager'] + ([] if args.no_compile else ['compile'])
    print(f'ResNet34 training, batch {args.bs}, float32, SGD momentum 0.9; {os.cpu_count()} cores, '
          f'jax {jax.__version__} on {jax.devices()[0].platform}; load average '
          f'{os.getloadavg()[0]:.1f}; median of {args.repeats} repeats x {args.steps} steps')
    for sz in args.sizes:
        run, first, compile_s = jax_runner(sz, args.bs)
        res = {'jax': [], **{m: [] for m in modes}}
        errors = {}
        for _ in range(args.repeats):
            res['jax'].append(run(args.steps))
            for m in modes:
                if m in errors:
                    continue
                r = peer.ask(sz, m, args.steps)
                if 'error' in r:
                    errors[m] = r['error']
                    continue
                res[m].append(r['median'])
        med = {k: statistics.median(v) for k, v in res.items() if v}
        line = (f'{sz:>4}px  jaxcls {args.bs / med["jax"]:7.1f} img/s (compile {compile_s:4.1f} s, '
                f'first step {first:4.1f} s)')
        for m in modes:
            if m in med:
                line += (f' | torch {m} {args.bs / med[m]:7.1f} img/s, jaxcls/torch '
                         f'{ratio(args.bs / med["jax"], args.bs / med[m])}')
            else:
                line += f' | torch {m}: failed ({errors.get(m, "?")[:80]})'
        print(line, flush=True)
    peer.close()


if __name__ == '__main__':
    main()
