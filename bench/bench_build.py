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
seconds for the data object, for the learner, and both. fastai runs in the torch venv, made
with:

    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch==2.14.1 torchvision==0.29.1 fastai
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

from bench_workflow import run  # one child process per side, JSON out (same folder)

# Writes the weights file; runs in the torch venv.
WRITE = r'''
import json, os, sys, torch, torchvision
a = json.loads(sys.argv[1])
torch.manual_seed(0)
sd = torchvision.models.resnet34().state_dict()
for path in a['paths']:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(sd, path)
print(json.dumps({'ok': True}))
'''

FASTAI = r'''
import json, os, sys, time
a = json.loads(sys.argv[1])
import torch
torch.set_num_threads(os.cpu_count())
from fastai.vision.all import ImageDataLoaders, Resize, vision_learner, accuracy, resnet34
import fastai
t0 = time.perf_counter()
dls = ImageDataLoaders.from_folder(a['data'], train='train', valid='valid', bs=a['bs'],
                                   item_tfms=Resize(a['sz']), num_workers=0)
t1 = time.perf_counter()
learn = vision_learner(dls, resnet34, pretrained=True, metrics=accuracy)
t2 = time.perf_counter()
print(json.dumps({'data': t1 - t0, 'learner': t2 - t1, 'version': 'fastai ' + fastai.__version__
                  + ', torch ' + torch.__version__}))
'''

JAXCLS = r'''
import json, os, sys, time
a = json.loads(sys.argv[1])
import jax
from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model, resnet34
t0 = time.perf_counter()
data = ImageClassifierData.from_paths(a['data'], bs=a['bs'], quiet=True,
                                      tfms=tfms_from_model(resnet34, a['sz']))
t1 = time.perf_counter()
learn = ConvLearner.pretrained(resnet34, data, pretrained=a['pretrained'], quiet=True)
assert learn.pretrained_body == a['pretrained']
t2 = time.perf_counter()
print(json.dumps({'data': t1 - t0, 'learner': t2 - t1, 'version': 'jaxcls, jax ' + jax.__version__}))
'''


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
    print(f'ResNet34 learner at {args.sz} px, batch {args.bs}, on {args.data}; {os.cpu_count()} '
          f'cores, load average {os.getloadavg()[0]:.1f}')
    with tempfile.TemporaryDirectory() as tmp:
        torch_home = os.path.join(tmp, 'torch')
        weights = os.path.join(tmp, 'jaxcls-weights')
        # torchvision's file name for resnet34's ImageNet weights; found there, it is loaded
        # without a download.
        w = run(args.torch_python, WRITE, {'paths': [
            os.path.join(torch_home, 'hub', 'checkpoints', 'resnet34-b627a593.pth'),
            os.path.join(weights, 'resnet34-b627a593.pth')]})
        if 'error' in w:
            sys.exit(f'bench_build: could not write the weights file: {w["error"]}')
        results = {}
        env = {'JAXCLS_WEIGHTS': weights, 'JAXCLS_COMPILATION_CACHE': os.path.join(tmp, 'xla')}
        for name, pretrained in (('jaxcls (cold cache)', True), ('jaxcls (warm cache)', True),
                                 ('jaxcls random body (cold)', False),
                                 ('jaxcls random body (warm)', False)):
            results[name] = run(sys.executable, JAXCLS, {**common, 'pretrained': pretrained}, env)
        results['fastai 2'] = run(args.torch_python, FASTAI, common, {'TORCH_HOME': torch_home})
    print(f'{"":28} {"data s":>7} {"learner s":>10} {"both s":>7}')
    for name, r in results.items():
        if 'error' in r:
            print(f'{name:28} failed: {r["error"][:150]}')
            continue
        print(f'{name:28} {r["data"]:7.2f} {r["learner"]:10.2f} {r["data"] + r["learner"]:7.2f}   '
              f'({r["version"]})')


if __name__ == '__main__':
    main()
