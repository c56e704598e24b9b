"""The lesson workflow end to end: jaxcls vs fastai 2 on the same folder of images, one run.

    python bench/bench_workflow.py                          # the demo digits, resnet18 at 32 px
    python bench/bench_workflow.py --data PATH --sz 64 --target 0.9 --budget 120

Both sides start from a folder-per-class dataset (train/ and valid/), build their data
objects, make a ResNet learner with the library's default head, and run fastai 2's
`fine_tune(epochs, base_lr)`: one frozen epoch, then the whole net one-cycled. Each side
uses its library's own optimiser (jaxcls: SGD momentum 0.9, fastai: Adam) and the same
augmentation (no flips, since the default data are digits; zoom up to 1.1). Weights start
random on both sides (`pretrained=False`: no downloads here). After every epoch the wall
time since the start of the workflow (data objects included, imports excluded) and the
validation accuracy are recorded; the table gives

  - the time to first reach `--target` validation accuracy, and
  - the accuracy of the last epoch finished within `--budget` seconds.

jaxcls runs twice, in fresh processes: 'cold' with an empty compilation cache and 'warm'
reusing it (the second run of a script). Each side is a script of its own:
bench/sides/jaxcls_workflow.py (with this checkout on PYTHONPATH) and
bench/peers/fastai_workflow.py, which runs in the torch venv (`--torch-python`, default
.venv-torch/bin/python), made with:

    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch==2.14.1 torchvision==0.29.1 fastai
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

from timing import machine, run_once, script, with_checkout


def summarise(r: dict, target: float, budget: float) -> tuple[str, str]:
    """(time to target, accuracy at budget) as table cells."""
    ep = r['epochs']
    hit = next((t for t, acc in ep if acc >= target), None)
    within = [acc for t, acc in ep if t <= budget]
    return (f'{hit:.1f} s' if hit is not None else f'not reached ({max(a for _, a in ep):.4f})',
            f'{within[-1]:.3f}' if within else f'no epoch done (first at {ep[0][0]:.0f} s)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', help='folder with train/ and valid/ (default: the demo digits)')
    ap.add_argument('--arch', default='resnet18', choices=['resnet18', 'resnet34', 'resnet50'])
    ap.add_argument('--sz', type=int, default=32)
    ap.add_argument('--bs', type=int, default=64)
    # fine_tune(5) (1 frozen + 5 unfrozen epochs): where both sides end near 95% on the digits.
    ap.add_argument('--epochs', type=int, default=5)
    # Each side's best of a sweep (bench/README.md), measured by --lr-jaxcls X / --lr-fastai X.
    ap.add_argument('--lr-jaxcls', type=float, default=0.1, help="jaxcls's base_lr (SGD)")
    ap.add_argument('--lr-fastai', type=float, default=5e-3, help="fastai's base_lr (Adam)")
    # On the way to the ~95% both sides end at after fine_tune(5) from random weights.
    ap.add_argument('--target', type=float, default=0.93)
    ap.add_argument('--budget', type=float, default=60.0, help='seconds')
    ap.add_argument('--sides', default='jaxcls,fastai', help='which to run (default both)')
    ap.add_argument('--torch-python', default=os.path.join('.venv-torch', 'bin', 'python'))
    args = ap.parse_args()
    if args.data is None:
        from jaxcls.demo import build_digits, default_digits_dir
        args.data = build_digits(default_digits_dir())
    common = dict(data=os.path.abspath(args.data), arch=args.arch, sz=args.sz, bs=args.bs,
                  epochs=args.epochs)
    print(f'{args.arch} at {args.sz} px, batch {args.bs}, fine_tune({args.epochs}) from random '
          f'weights on {args.data}; {machine()}')
    results = {}
    sides = args.sides.split(',')
    if 'jaxcls' in sides:
        with tempfile.TemporaryDirectory() as cache:
            env = with_checkout({'JAXCLS_COMPILATION_CACHE': cache})
            for run_name in ('jaxcls (cold cache)', 'jaxcls (warm cache)'):
                results[run_name] = run_once(sys.executable, script('sides', 'jaxcls_workflow.py'),
                                             {**common, 'lr': args.lr_jaxcls}, env)
    if 'fastai' not in sides:
        pass
    elif os.path.exists(args.torch_python):
        results['fastai 2'] = run_once(args.torch_python, script('peers', 'fastai_workflow.py'),
                                       {**common, 'lr': args.lr_fastai})
    else:
        results['fastai 2'] = {'error': f'no torch venv at {args.torch_python}; see the docstring '
                                        'for how to make one, or pass --torch-python'}
    print(f'{"":22} {"setup s":>8} {"epochs (s: accuracy)":52} {"to " + str(args.target):>16} '
          f'{"at " + str(args.budget) + " s":>10}')
    for name, r in results.items():
        if 'error' in r:
            print(f'{name:22} failed: {r["error"][:150]}')
            continue
        hit, at_budget = summarise(r, args.target, args.budget)
        traj = ' '.join(f'{t:.0f}:{a:.3f}' for t, a in r['epochs'])
        print(f'{name:22} {r["setup"]:8.1f} {traj:52} {hit:>16} {at_budget:>10}   ({r["version"]})')


if __name__ == '__main__':
    main()
