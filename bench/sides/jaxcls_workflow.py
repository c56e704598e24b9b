"""jaxcls's side of bench_workflow.py: the lesson workflow (data object, learner,
`fine_tune`) from random weights, with the wall time and validation accuracy of every epoch,
in a fresh process (so the compilation cache's state, cold or warm, is what the run finds).

Runs with jaxcls's python and this checkout on PYTHONPATH (bench_workflow.py sets both),
once per request:

    echo '{"data": "/path/digits", "arch": "resnet18", "sz": 32, "bs": 64, "epochs": 5, "lr": 0.1}' | \
        PYTHONPATH=. python bench/sides/jaxcls_workflow.py

Protocol: one JSON line on stdin, {"data", "arch": resnet18|resnet34|resnet50, "sz", "bs",
"epochs", "lr"}; one JSON line on stdout, {"setup": seconds, "epochs": [[seconds since the
start, accuracy], ...], "version": "jaxcls, jax ..."}. The clock starts after the imports,
before `ImageClassifierData.from_paths` (transforms_basic: no flips, max_zoom 1.1);
`ConvLearner.pretrained(pretrained=False)` with jaxcls's SGD (momentum 0.9), then
`fine_tune(epochs, lr)`.
"""
import json
import sys
import time


def main():
    a = json.loads(sys.stdin.readline())
    import jax
    from jaxcls import Callback, ConvLearner, ImageClassifierData, tfms_from_model, transforms_basic
    from jaxcls.archs import get_arch
    arch = get_arch(a['arch'])
    t0 = time.perf_counter()
    data = ImageClassifierData.from_paths(a['data'], bs=a['bs'], quiet=True,
                                          tfms=tfms_from_model(arch, a['sz'],
                                                               aug_tfms=transforms_basic,
                                                               max_zoom=1.1))
    learn = ConvLearner.pretrained(arch, data, pretrained=False, quiet=True)
    t_setup = time.perf_counter() - t0
    epochs = []

    class Clock(Callback):
        def on_epoch_end(self, learner, epoch, logs):
            epochs.append((time.perf_counter() - t0, float(logs['accuracy'])))

    learn.fine_tune(a['epochs'], a['lr'], callbacks=[Clock()])
    print(json.dumps({'setup': t_setup, 'epochs': epochs, 'version': 'jaxcls, jax ' + jax.__version__}))


if __name__ == '__main__':
    main()
