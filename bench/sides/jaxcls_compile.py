"""jaxcls's side of compile_flags.py: one train step compiled and run, in a fresh process (so
XLA_FLAGS, read when XLA starts, are the request's), the persistent compile cache off.

Runs with jaxcls's python and this checkout on PYTHONPATH (compile_flags.py sets both):

    echo '{"arch": "tiny", "sz": 32, "bs": 10, "steps": 5}' | \
        XLA_FLAGS=--xla_backend_optimization_level=0 PYTHONPATH=. \
        python bench/sides/jaxcls_compile.py

Protocol: one JSON line on stdin, {"arch" ('tiny', the tests' net, or e.g. 'resnet34'),
"sz", "bs", "steps"}; one JSON line on stdout, {"cpu": CPU seconds of XLA's compile (its
threads included), "wall": its seconds, "loss": of the first run, "step": median seconds of
the next `steps` runs}. The step is the unfrozen learner's: augmentation inside, uint8
images at the side the learner caches for `sz`, SGD over the three layer groups.
"""
import json
import statistics
import sys
import time
from functools import partial


def main():
    a = json.loads(sys.stdin.readline())
    import jax
    import numpy as np
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
    # tests/helpers.py's test net: one basic block per stage
    arch = ArchSpec('resnet_tiny', 'basic', (1, 1, 1, 1), 512) if a['arch'] == 'tiny' else a['arch']
    trn, _ = tfms_from_model(arch, a['sz'], aug_tfms=transforms_side_on, max_zoom=1.1)
    net, variables, _ = convnet(arch, 2, pretrained=False, key=jax.random.PRNGKey(0))
    labels = layer_group_labels(variables['params'], get_arch(arch).layer_groups[0])
    state = create_train_state(net.apply, variables, layer_group_sgd(labels, (True,) * 3), rng=0)
    step = jit(make_train_step('softmax', partial(augment, cfg=trn)))
    rng, side = np.random.default_rng(0), default_cache_size(a['sz'])
    batch = {'image': rng.integers(0, 255, (a['bs'], side, side, 3), dtype=np.uint8),
             'label': rng.integers(0, 2, a['bs']).astype(np.int32)}
    hp = hparams_at(fit_schedule([0.01] * 3, 1, 4)[1], 0)
    lowered = step.lower(state, batch, hp)
    c0, t0 = time.process_time(), time.perf_counter()
    compiled = lowered.compile()
    c1, t1 = time.process_time(), time.perf_counter()
    loss = float(compiled(state, batch, hp)[1]['loss'])
    times = []
    for _ in range(a['steps']):
        t = time.perf_counter()
        compiled(state, batch, hp)[1]['loss'].block_until_ready()
        times.append(time.perf_counter() - t)
    print(json.dumps({'cpu': c1 - c0, 'wall': t1 - t0, 'loss': loss,
                      'step': statistics.median(times)}))


if __name__ == '__main__':
    sys.exit(main())
