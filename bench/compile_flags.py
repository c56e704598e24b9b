"""What XLA_FLAGS do to the compile of one train step, side by side.

The suite's time is mostly XLA:CPU compiling small programs (bench/suite_cpu.py), and
tests/conftest.py picks the flags they compile under. This compiles one program, by default
the TINY test net's unfrozen train step (batch 10 at 37 px, augmentation in the step, as
tests/train/test_learner.py builds it), in a fresh process per flag set with the persistent
cache off, the flag sets alternating, and prints the medians of the repeats: the CPU
seconds of XLA's compile (its threads included), its wall seconds, and the step's time. It
also prints the loss of one run of the step: the flag sets round differently, so the losses
agree to about 1e-6, not bit for bit. `--arch resnet34` measures what users compile.

    .venv/bin/python bench/compile_flags.py [--repeats 3]
    .venv/bin/python bench/compile_flags.py --arch resnet34 --sz 64 --bs 32 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SETS = {
    'users (XLA default)': '',
    'level 1 (the tests, until 2026-12-07)': '--xla_backend_optimization_level=1',
    'loop emitters': '--xla_cpu_use_fusion_emitters=false',
    'level 0': '--xla_backend_optimization_level=0',
    'level 0, loop emitters, AVX (the tests)': '--xla_backend_optimization_level=0 '
        '--xla_cpu_use_fusion_emitters=false --xla_cpu_max_isa=AVX',
}

CHILD = r'''
import json, statistics, sys, time
from functools import partial
import jax, numpy as np
jax.config.update('jax_enable_compilation_cache', False)
from jaxcls import tfms_from_model, transforms_side_on
from jaxcls.archs import ArchSpec, get_arch
from jaxcls.data.decode_cache import default_cache_size
from jaxcls.data.transforms import augment
from jaxcls.models.convnet import convnet
from jaxcls.train.loop import hparams_at
from jaxcls.train.optim import layer_group_labels, layer_group_sgd
from jaxcls.train.schedules import fit_schedule
from jaxcls.train.state import create_train_state
from jaxcls.train.steps import make_train_step
from jaxcls.xla import jit
arch_name, sz, bs, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# tests/helpers.py's test net: one basic block per stage
arch = ArchSpec('resnet_tiny', 'basic', (1, 1, 1, 1), 512) if arch_name == 'tiny' else arch_name
trn, _ = tfms_from_model(arch, sz, aug_tfms=transforms_side_on, max_zoom=1.1)
net, variables, _ = convnet(arch, 2, pretrained=False, key=jax.random.PRNGKey(0))
labels = layer_group_labels(variables['params'], get_arch(arch).layer_groups[0])
state = create_train_state(net.apply, variables, layer_group_sgd(labels, (True,) * 3), rng=0)
step = jit(make_train_step('softmax', partial(augment, cfg=trn)))
rng, side = np.random.default_rng(0), default_cache_size(sz)   # the learner's cached side
batch = {'image': rng.integers(0, 255, (bs, side, side, 3), dtype=np.uint8),
         'label': rng.integers(0, 2, bs).astype(np.int32)}
hp = hparams_at(fit_schedule([0.01] * 3, 1, 4)[1], 0)
lowered = step.lower(state, batch, hp)
c0, t0 = time.process_time(), time.time()
compiled = lowered.compile()
c1, t1 = time.process_time(), time.time()
loss = float(compiled(state, batch, hp)[1]['loss'])
times = []
for _ in range(steps):
    t = time.perf_counter()
    compiled(state, batch, hp)[1]['loss'].block_until_ready()
    times.append(time.perf_counter() - t)
print(json.dumps({'cpu': c1 - c0, 'wall': t1 - t0, 'loss': loss,
                  'step': statistics.median(times)}))
'''


def measure(flags: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS='cpu')
    p = subprocess.run([sys.executable, '-c', CHILD, args.arch, str(args.sz), str(args.bs),
                        str(args.steps)], env=env, capture_output=True, text=True, timeout=600)
    if p.returncode:
        raise SystemExit(f'XLA_FLAGS={flags!r} failed:\n{p.stderr[-2000:]}')
    return json.loads(p.stdout.strip().splitlines()[-1])


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
    print(f"{'XLA flags':42s} {'compile CPU s':>14s} {'wall s':>7s} {'step ms':>8s}  loss of one step")
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ('cpu', 'wall', 'step')}
        print(f"{name:42s} {med['cpu']:14.2f} {med['wall']:7.2f} {1000 * med['step']:8.0f}"
              f"  {rs[0]['loss']:.6f}")


if __name__ == '__main__':
    main()
