"""jaxcls's side of bench_build.py: the data object and a ResNet34 learner, each timed, in a
fresh process (so the compilation cache's state, cold or warm, is what the run finds).

Runs with jaxcls's python and this checkout on PYTHONPATH (bench_build.py sets both), once
per request; the weights come from $JAXCLS_WEIGHTS, where bench_build.py puts them:

    echo '{"data": "/path/digits", "sz": 32, "bs": 64, "pretrained": true}' | \
        PYTHONPATH=. python bench/sides/jaxcls_build.py

Protocol: one JSON line on stdin, {"data", "sz", "bs", "pretrained"}; one JSON line on
stdout, {"data": seconds, "learner": seconds, "version": "jaxcls, jax ..."}. Imports are not
timed; `ImageClassifierData.from_paths` is "data", `ConvLearner.pretrained` is "learner".
"""
import json
import sys
import time


def main():
    a = json.loads(sys.stdin.readline())
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


if __name__ == '__main__':
    main()
