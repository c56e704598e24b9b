"""Data parallel with JAX's own sharding: training on 8 (forced CPU) devices gives the same
parameters as on one device. Each run is a subprocess, since the device count is fixed when
jax starts."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent('''
    import sys, json
    import numpy as np, jax
    sys.path.insert(0, {tests!r})
    from helpers import TINY, colour_square_arrays
    from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model, transforms_side_on
    x, y = colour_square_arrays(40)
    tfms = tfms_from_model(TINY, 32, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_arrays({tmp!r}, (x[:32], y[:32]), (x[32:], y[32:]), bs=16,
                                           tfms=tfms, cache_size=36)
    # The plain kernels on one device as on eight: the single-CPU-device rewrites (checked
    # against them in tests/models/test_ops.py) would add rounding of their own.
    learn = ConvLearner.pretrained(TINY, data, pretrained=False, quiet=True, kernels='xla')
    learn.unfreeze()
    # 2 steps. Further on, a tiny random ResNet with batch statistics over 16 images is
    # chaotic: a 1e-6 relative nudge to its weights changes the loss by ~10% within 4 steps
    # on ONE device, so only the first steps can show that sharding changes nothing else.
    learn.fit(1e-3, 1)
    batch = next(data.trn_dl.iter_epoch(0))
    leaves = jax.tree_util.tree_leaves((learn.state.params, learn.state.batch_stats))
    np.savez({out!r}, *[np.asarray(a) for a in leaves])
    print(json.dumps({{'devices': jax.device_count(),
                      'shards': len(batch['image'].addressable_shards),
                      'val_loss': learn.history[-1]['val_loss']}}))
''')


def _run(tmp_path, ndev):
    out = tmp_path / f'params{ndev}.npz'
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={ndev}",
               JAX_PLATFORMS='cpu')
    code = SCRIPT.format(tests=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), tmp=str(tmp_path / f'd{ndev}'), out=str(out))
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    arrays = np.load(out)
    return info, [arrays[k] for k in sorted(arrays.files, key=lambda s: int(s.split('_')[1]))]


def test_eight_devices_train_like_one(tmp_path):
    one, p1 = _run(tmp_path, 1)
    eight, p8 = _run(tmp_path, 8)
    assert one['devices'] == 1 and eight['devices'] == 8 and eight['shards'] == 8
    assert len(p1) == len(p8)
    # Relative L2 distance per array: rounding differences of the all-reduced batch
    # statistics and gradients, nothing more.
    worst = max(float(np.linalg.norm(a - b) / (np.linalg.norm(a) + 1e-6)) for a, b in zip(p1, p8))
    assert worst < 1e-4, worst
    assert abs(one['val_loss'] - eight['val_loss']) < 1e-4 * max(1.0, one['val_loss'])
