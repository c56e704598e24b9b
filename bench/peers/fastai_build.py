"""fastai 2's side of bench_build.py: the data object and a pretrained ResNet34 learner,
each timed, in a fresh process.

Runs in the torch venv with fastai (never jax or jaxcls), once per request; the weights come
from torch's hub cache ($TORCH_HOME), where bench_build.py puts them, so nothing is downloaded:

    echo '{"data": "/path/digits", "sz": 32, "bs": 64}' | .venv-torch/bin/python bench/peers/fastai_build.py

Protocol: one JSON line on stdin, {"data": folder with train/ and valid/, "sz", "bs"}; one
JSON line on stdout, {"data": seconds, "learner": seconds, "version": "fastai ..., torch ..."}.
Imports are not timed; `ImageDataLoaders.from_folder(..., item_tfms=Resize(sz),
num_workers=0)` is "data", `vision_learner(dls, resnet34, pretrained=True)` is "learner".
"""
import json
import os
import sys
import time


def main():
    a = json.loads(sys.stdin.readline())
    import torch
    torch.set_num_threads(os.cpu_count())
    from fastai.vision.all import ImageDataLoaders, Resize, vision_learner, accuracy, resnet34
    import fastai
    t0 = time.perf_counter()
    dls = ImageDataLoaders.from_folder(a['data'], train='train', valid='valid', bs=a['bs'],
                                       item_tfms=Resize(a['sz']), num_workers=0)
    t1 = time.perf_counter()
    vision_learner(dls, resnet34, pretrained=True, metrics=accuracy)
    t2 = time.perf_counter()
    print(json.dumps({'data': t1 - t0, 'learner': t2 - t1, 'version': 'fastai ' + fastai.__version__
                      + ', torch ' + torch.__version__}))


if __name__ == '__main__':
    main()
