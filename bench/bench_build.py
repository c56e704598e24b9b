"""The lesson's first two lines, jaxcls vs fastai 2: the data object and a learner with a
pretrained ResNet34 body loaded from a local weights file, each in a fresh process.

    python bench/bench_build.py --torch-python .venv-torch/bin/python

Both sides load the same torchvision-format file: a randomly initialised torchvision
resnet34 state dict, saved where each library looks for ImageNet weights (torch's hub
cache for fastai, $JAXCLS_WEIGHTS for jaxcls), so nothing is downloaded. The data are the
demo digits folder at 32 px, batch 64 (the same for both). jaxcls runs with an empty
compilation cache ('cold', the first run of a script) and again with it warm; then twice
with `pretrained=False` (the random body that bench_gpu.sh's lesson uses, whose random
initialisation compiles once). Printed per run:
seconds for the data object, for the learner, and both. Each run is a script of its own:
bench/sides/jaxcls_build.py (with this checkout on PYTHONPATH), bench/peers/fastai_build.py,
and bench/peers/torch_weights.py writes the weights file. fastai runs in the torch venv,
made with:

    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch==2.14.1 torchvision==0.29.1 fastai
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

from timing import machine, run_once, script, with_checkout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', help='folder with train/ and valid/ (default: the demo digits)')
    ap.add_argument('--sz', type=int, default=32)
    ap.add_argument('--bs', type=int, default=64)
    ap.add_argument('--torch-python', default=os.path.join('.venv-torch', 'bin', 'python'))
    args = ap.parse_args()
    if not os.path.exists(args.torch_python):
        sys.exit(f'bench_build: no torch venv at {args.torch_python} (it writes the weights file '
                 f'and runs fastai); see the docstring for how to make one, or pass --torch-python')
    if args.data is None:
        from jaxcls.demo import build_digits, default_digits_dir
        args.data = build_digits(default_digits_dir())
    common = dict(data=os.path.abspath(args.data), sz=args.sz, bs=args.bs)
    print(f'ResNet34 learner at {args.sz} px, batch {args.bs}, on {args.data}; {machine()}')
    with tempfile.TemporaryDirectory() as tmp:
        torch_home = os.path.join(tmp, 'torch')
        weights = os.path.join(tmp, 'jaxcls-weights')
        # torchvision's file name for resnet34's ImageNet weights; found there, it is loaded
        # without a download.
        w = run_once(args.torch_python, script('peers', 'torch_weights.py'), {'paths': [
            os.path.join(torch_home, 'hub', 'checkpoints', 'resnet34-b627a593.pth'),
            os.path.join(weights, 'resnet34-b627a593.pth')]})
        if 'error' in w:
            sys.exit(f'bench_build: could not write the weights file: {w["error"]}')
        results = {}
        env = with_checkout({'JAXCLS_WEIGHTS': weights,
                             'JAXCLS_COMPILATION_CACHE': os.path.join(tmp, 'xla')})
        for name, pretrained in (('jaxcls (cold cache)', True), ('jaxcls (warm cache)', True),
                                 ('jaxcls random body (cold)', False),
                                 ('jaxcls random body (warm)', False)):
            results[name] = run_once(sys.executable, script('sides', 'jaxcls_build.py'),
                                     {**common, 'pretrained': pretrained}, env)
        results['fastai 2'] = run_once(args.torch_python, script('peers', 'fastai_build.py'),
                                       common, {'TORCH_HOME': torch_home})
    print(f'{"":28} {"data s":>7} {"learner s":>10} {"both s":>7}')
    for name, r in results.items():
        if 'error' in r:
            print(f'{name:28} failed: {r["error"][:150]}')
            continue
        print(f'{name:28} {r["data"]:7.2f} {r["learner"]:10.2f} {r["data"] + r["learner"]:7.2f}   '
              f'({r["version"]})')


if __name__ == '__main__':
    main()
