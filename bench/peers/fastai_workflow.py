"""fastai 2's side of bench_workflow.py: the lesson workflow (data object, learner,
`fine_tune`) from random weights, with the wall time and validation accuracy of every epoch.

Runs in the torch venv with fastai (never jax or jaxcls), once per request:

    echo '{"data": "/path/digits", "arch": "resnet18", "sz": 32, "bs": 64, "epochs": 5, "lr": 0.005}' | \
        .venv-torch/bin/python bench/peers/fastai_workflow.py

Protocol: one JSON line on stdin, {"data", "arch": resnet18|resnet34|resnet50, "sz", "bs",
"epochs", "lr"}; one JSON line on stdout, {"setup": seconds, "epochs": [[seconds since the
start, accuracy], ...], "version": "fastai ..., torch ..."}. The clock starts after the
imports, before `ImageDataLoaders.from_folder` (Resize(sz), aug_transforms without flips,
max_zoom 1.1, num_workers=0); `vision_learner(pretrained=False)` with fastai's own
optimiser (Adam), its progress bar removed, then `fine_tune(epochs, lr)`.
"""
import json
import os
import sys
import time


def main():
    a = json.loads(sys.stdin.readline())
    import torch
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    from fastai.vision.all import (ImageDataLoaders, Resize, aug_transforms, vision_learner,
                                   accuracy, resnet18, resnet34, resnet50, Callback)
    import fastai
    arch = {'resnet18': resnet18, 'resnet34': resnet34, 'resnet50': resnet50}[a['arch']]
    t0 = time.perf_counter()
    dls = ImageDataLoaders.from_folder(a['data'], train='train', valid='valid', bs=a['bs'],
                                       item_tfms=Resize(a['sz']), num_workers=0,
                                       batch_tfms=aug_transforms(size=a['sz'], do_flip=False,
                                                                 max_zoom=1.1))
    learn = vision_learner(dls, arch, pretrained=False, metrics=accuracy)
    learn.remove_cb(learn.cbs.filter(lambda c: type(c).__name__ == 'ProgressCallback')[0])
    t_setup = time.perf_counter() - t0
    epochs = []

    class Clock(Callback):
        order = 100   # after the Recorder has the epoch's metrics

        def after_epoch(self):
            acc = float(self.learn.recorder.values[-1][-1])
            epochs.append((time.perf_counter() - t0, acc))

    learn.fine_tune(a['epochs'], a['lr'], cbs=[Clock()])
    print(json.dumps({'setup': t_setup, 'epochs': epochs, 'version': 'fastai ' + fastai.__version__
                      + ', torch ' + torch.__version__}))


if __name__ == '__main__':
    main()
