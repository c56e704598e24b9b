"""What the modern recipe costs: the ResNet34 training step with MixUp / CutMix, label smoothing
and the weights' moving average (EMA) on, against the same step with them off, one run.

    python bench/bench_recipe.py                      # 64 and 224 px, batch 32 (CPU)
    python bench/bench_recipe.py --sizes 64 --steps 5 --accumulate 4

The step is bench_step.py's (`make_train_step` under `jaxcls.xla.jit`, donated state,
`resnet34(num_classes=2)`, SGD lr 0.01 momentum 0.9, float32, one random normalised batch)
built three ways: 'off' (the plain step), 'mixup' (mixup=0.4, label_smoothing=0.1,
ema=0.999) and 'cutmix' (cutmix=1.0, label_smoothing=0.1, ema=0.999); MixUp and CutMix are
one at a time, so each of those rows carries every option the target names. With
`--accumulate N` a fourth step takes the same batch as N micro-batches (gradient
accumulation's scan, for information: it trades speed for memory). Each is compiled on its
own clock first; then, for each repeat, every configuration runs `--steps` steps in turn
(interleaved, so the machine's drift falls on all of them alike); the median step of each
repeat, the median of repeats. Prints img/s and the recipe's cost against 'off' in percent
of the plain step time (the target: at most 10%), by the wall clock and by the CPU time
of this process (all its threads): on a machine other processes load, the wall clock of a
step varies by 2x from one step to the next and the CPU time much less, so the second is
the steadier measure there; on a quiet machine the two agree.
"""
from __future__ import annotations

import argparse
import statistics
import time

from timing import machine

RECIPES = {'off': {},
           'mixup': dict(mixup=0.4, label_smoothing=0.1, ema=0.999),
           'cutmix': dict(cutmix=1.0, label_smoothing=0.1, ema=0.999)}
TARGET = 0.10   # the recipe may add at most 10% to the step time


def runner(variables, apply_fn, sz: int, bs: int, opts: dict):
    """(one() -> runs a step and waits for it, compile seconds) for one configuration."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jaxcls import xla
    from jaxcls.train.optim import sgd
    from jaxcls.train.recipe import init_ema
    from jaxcls.train.state import create_train_state
    from jaxcls.train.steps import make_train_step

    own = jax.tree_util.tree_map(jnp.array, variables)   # its own buffers: the step donates them
    state = create_train_state(apply_fn, own, sgd(0.01))
    if opts.get('ema'):
        state = state.replace(ema=init_ema(state.variables))
    rng = np.random.default_rng(0)
    batch = {'image': jnp.asarray(rng.standard_normal((bs, sz, sz, 3), np.float32)),
             'label': jnp.asarray(rng.integers(0, 2, bs))}
    t = time.perf_counter()
    step = xla.jit(make_train_step(**opts), donate_argnums=0).lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    holder = [state]

    def one():
        holder[0], m = step(holder[0], batch)
        m['loss'].block_until_ready()

    one()   # the first call places the state
    return one, compile_s


def seconds(one, n: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process) of n calls of `one`."""
    wall, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        one()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--sizes', type=int, nargs='+', default=[64, 224])
    ap.add_argument('--bs', type=int, default=None,
                    help='batch size (default 32 on a CPU, 256 on a GPU)')
    ap.add_argument('--steps', type=int, default=3, help='timed steps per repeat (default 3)')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--accumulate', type=int, default=0, metavar='N',
                    help='also time the plain step as N micro-batches (default: not timed)')
    args = ap.parse_args()
    import jax
    from jaxcls.models import resnet34
    bs = args.bs or (32 if jax.devices()[0].platform == 'cpu' else 256)
    recipes = dict(RECIPES)
    if args.accumulate > 1:
        recipes[f'accumulate={args.accumulate}'] = dict(accumulate=args.accumulate)
    module, variables = resnet34(num_classes=2)
    print(f'ResNet34 training step, batch {bs}, float32, SGD momentum 0.9, recipe off and on; '
          f'{machine()}, jax {jax.__version__} on {jax.devices()[0].platform}; median of '
          f'{args.repeats} repeats x {args.steps} steps, configurations interleaved')
    for name, opts in recipes.items():
        print(f'  {name:>14}: {opts or "the plain step"}')
    verdicts = []
    for sz in args.sizes:
        runs, compiles = {}, {}
        for name, opts in recipes.items():
            runs[name], compiles[name] = runner(variables, module.apply, sz, bs, opts)
        times = {name: [] for name in recipes}
        for _ in range(args.repeats):
            for name, one in runs.items():
                times[name].append(seconds(one, args.steps))
        wall = {name: statistics.median(w for w, _ in v) for name, v in times.items()}
        cpu = {name: statistics.median(c for _, c in v) for name, v in times.items()}
        cost = {name: (wall[name] / wall['off'] - 1, cpu[name] / cpu['off'] - 1)
                for name in recipes}
        cells = []
        for name in recipes:
            more = '' if name == 'off' else (f', {100 * cost[name][0]:+5.1f}% wall '
                                             f'{100 * cost[name][1]:+5.1f}% cpu')
            cells.append(f'{name} {bs / wall[name]:6.1f} img/s, {cpu[name]:5.2f} cpu-s{more} '
                         f'(compile {compiles[name]:4.1f} s)')
        print(f'{sz:>4}px  ' + ' | '.join(cells), flush=True)
        worst = [max(cost[n][i] for n in ('mixup', 'cutmix')) for i in (0, 1)]
        verdicts.append(f'{sz} px ' + ', '.join(
            f'{100 * w:+.1f}% {what} ({"met" if w <= TARGET else "NOT met"})'
            for w, what in zip(worst, ('wall', 'cpu'))))
    print(f'recipe cost, the worse of the mixup and cutmix rows (target <= {100 * TARGET:.0f}%): '
          + '; '.join(verdicts))


if __name__ == '__main__':
    main()
