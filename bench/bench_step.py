"""ResNet34 training speed: jaxcls vs torchvision (eager, and torch.compile where it works), one run.

    python bench/bench_step.py                       # 64, 128, 224 px, batch 32 (CPU)
    python bench/bench_step.py --sizes 64 --steps 5

PyTorch runs in its own venv, never next to jaxcls:

    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch==2.14.1 torchvision==0.29.1
    (or `make parity`, which builds the same venv)

The torch side is a worker subprocess (`--torch-python`, default .venv-torch/bin/python)
that keeps its model between requests, so both frameworks are timed in alternation on the
same machine: for each size and repeat, jaxcls steps, then torch steps (on the GPU when
torch sees one, synchronised after each step). Both train the same
architecture with SGD (lr 0.01, momentum 0.9) on the same batch size, float32, random
normalised images; the median step time of each repeat is kept and the median of repeats
printed, with images/s and the ratio jaxcls / torch (> 1 means jaxcls is faster).
A second table times the frozen body's forward pass (precompute) the same way against
torchvision's resnet34 body under no_grad.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WORKER = r'''
import json, os, sys, time, statistics
import torch, torchvision
torch.set_num_threads(os.cpu_count())
dev = 'cuda' if torch.cuda.is_available() else 'cpu'
def sync():
    if dev == 'cuda':
        torch.cuda.synchronize()
models = {}
print(json.dumps({'ready': True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    key = (req['sz'], req['mode'])
    if key not in models and req['mode'] == 'forward':
        body = torch.nn.Sequential(*list(torchvision.models.resnet34().children())[:-2]).eval().to(dev)
        x = torch.randn(req['bs'], 3, req['sz'], req['sz'], device=dev)
        def step():
            with torch.no_grad():
                f = body(x)
                f = torch.cat([f.amax((2, 3)), f.mean((2, 3))], 1)
            sync()
        t = time.perf_counter()
        step()
        models[key] = (step, time.perf_counter() - t, None)
    if key not in models:
        m = torchvision.models.resnet34(num_classes=2).to(dev)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(req['bs'], 3, req['sz'], req['sz'], device=dev)
        y = torch.randint(0, 2, (req['bs'],), device=dev)
        fwd = m
        err = None
        if req['mode'] == 'compile':
            try:
                fwd = torch.compile(m)
            except Exception as e:
                err = repr(e)
        def step():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(fwd(x), y)
            loss.backward()
            opt.step()
            sync()
        t = time.perf_counter()
        try:
            step()
        except Exception as e:
            err = repr(e)[:300]
        models[key] = (step, time.perf_counter() - t, err)
    step, first, err = models[key]
    if err:
        print(json.dumps({'error': err}), flush=True); continue
    times = []
    for _ in range(req['steps']):
        t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    print(json.dumps({'median': statistics.median(times), 'first': first,
                      'torch': torch.__version__ + ' on ' + dev}), flush=True)
'''


def timed(one):
    """(run(n) -> median seconds of n calls of `one`, seconds of the first call, compile included)."""
    t = time.perf_counter()
    one()
    first = time.perf_counter() - t

    def run(n):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            one()
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    return run, first


def jax_runner(sz: int, bs: int):
    import jax.numpy as jnp
    import numpy as np
    from jaxcls.models import resnet34
    from jaxcls.train.optim import sgd
    from jaxcls.train.state import create_train_state
    from jaxcls import xla
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


def jax_forward_runner(sz: int, bs: int):
    """The frozen body's forward pass as precompute runs it: eval-mode ResNet34 body and
    concat pooling, jitted, float32."""
    import jax.numpy as jnp
    import numpy as np
    from jaxcls.models import resnet34
    from jaxcls import xla
    from jaxcls.models.head import concat_pool

    module, variables = resnet34(num_classes=None)
    fn = xla.jit(lambda v, x: concat_pool(module.apply(v, x, False)))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((bs, sz, sz, 3), np.float32))

    def one():
        fn(variables, x).block_until_ready()

    return timed(one)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--sizes', type=int, nargs='+', default=[64, 128, 224])
    ap.add_argument('--bs', type=int, default=None,
                    help='batch size (default 32 on a CPU, 256 on a GPU)')
    ap.add_argument('--steps', type=int, default=3, help='timed steps per repeat (default 3)')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--torch-python', default=os.path.join('.venv-torch', 'bin', 'python'))
    ap.add_argument('--no-compile', action='store_true', help='skip torch.compile')
    ap.add_argument('--compile-cache', metavar='DIR',
                    help="keep XLA's persistent compilation cache in DIR (default: off, so every "
                         'compile is timed cold); run twice with the same DIR to see a cache hit')
    ap.add_argument('--no-forward', action='store_true',
                    help="skip the frozen-body forward (precompute) table")
    args = ap.parse_args()
    import jax
    if args.bs is None:
        args.bs = 32 if jax.devices()[0].platform == 'cpu' else 256
    if args.compile_cache:
        from jaxcls import compile_cache
        compile_cache.enable(args.compile_cache)
    if not os.path.exists(args.torch_python):
        sys.exit(f'no torch venv at {args.torch_python}; make one with: python3 -m venv .venv-torch '
                 f'&& .venv-torch/bin/pip install torch==2.14.1 torchvision==0.29.1 '
                 f'(or pass --torch-python)')
    worker = subprocess.Popen([args.torch_python, '-c', WORKER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, bufsize=1)
    # torch's import takes seconds of CPU: wait for it, or it lands in jaxcls's compile time.
    if not worker.stdout.readline():
        sys.exit(f'the torch worker ({args.torch_python}) exited before it was ready')

    def ask(sz, mode, steps):
        worker.stdin.write(json.dumps({'sz': sz, 'bs': args.bs, 'mode': mode, 'steps': steps}) + '\n')
        return json.loads(worker.stdout.readline())

    modes = ['eager'] + ([] if args.no_compile else ['compile'])
    print(f'ResNet34 training, batch {args.bs}, float32, SGD momentum 0.9; {os.cpu_count()} cores, '
          f'jax {jax.__version__} on {jax.devices()[0].platform}; load average '
          f'{os.getloadavg()[0]:.1f}; median of {args.repeats} repeats x {args.steps} steps')
    rows = []
    for sz in args.sizes:
        run, first, compile_s = jax_runner(sz, args.bs)
        res = {'jax': [], **{m: [] for m in modes}}
        firsts = {'jax': first}
        errors = {}
        for _ in range(args.repeats):
            res['jax'].append(run(args.steps))
            for m in modes:
                if m in errors:
                    continue
                r = ask(sz, m, args.steps)
                if 'error' in r:
                    errors[m] = r['error']
                    continue
                res[m].append(r['median'])
                firsts[m] = r['first']
        med = {k: statistics.median(v) for k, v in res.items() if v}
        rows.append((sz, med, firsts, errors))
        line = f'{sz:>4}px  jaxcls {args.bs / med["jax"]:7.1f} img/s (compile {compile_s:4.1f} s, first step {first:4.1f} s)'
        for m in modes:
            if m in med:
                line += (f' | torch {m} {args.bs / med[m]:7.1f} img/s, jaxcls/torch '
                         f'{med[m] / med["jax"]:.2f}x')
            else:
                line += f' | torch {m}: failed ({errors.get(m, "?")[:80]})'
        print(line, flush=True)
    if not args.no_forward:
        print(f'Frozen ResNet34 body forward + concat pool (what precompute runs), eval mode, batch '
              f'{args.bs}, float32, no gradients; median of {args.repeats} repeats x {args.steps} passes')
        for sz in args.sizes:
            run, first = jax_forward_runner(sz, args.bs)
            jx, tc = [], []
            for _ in range(args.repeats):
                jx.append(run(args.steps))
                tc.append(ask(sz, 'forward', args.steps)['median'])
            j, t = statistics.median(jx), statistics.median(tc)
            print(f'{sz:>4}px  jaxcls {args.bs / j:7.1f} img/s (first pass {first:5.1f} s) | torch eager '
                  f'{args.bs / t:7.1f} img/s, jaxcls/torch {t / j:.2f}x', flush=True)
    worker.stdin.close()
    worker.wait()


if __name__ == '__main__':
    main()
