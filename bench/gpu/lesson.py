"""Section 4 of bench_gpu.py: the lesson's first three lines on the generated folder of JPEGs
(from_paths decoding to the uint8 cache, ConvLearner.pretrained(precompute=True,
pretrained=False, dtype='bfloat16'), fit(0.01, 3)), each phase timed; twice in one process,
the decode cache and stored features deleted before each pass: once as the process finds
the compilation cache, once more with it warm. jaxcls only: no torch row.
"""
from __future__ import annotations

import os
import shutil
import time

import numpy as np

from gpu.checks import ram_gb
from gpu.common import epoch_timer, say
from gpu.context import Context
from gpu.sizes import Sizes


def decode_probe(path: str, cache_size: int, n: int = 500) -> float:
    """Milliseconds per JPEG that one thread needs to decode and resize (no cache, no pool):
    with T decode threads the decode cannot beat n_images * this / T."""
    from jaxcls.data.decode import decode_image
    names = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(path, 'train'))
                   for f in fs if f.endswith('.jpg'))[:n]
    for f in names[:20]:  # warm the file cache and Pillow
        decode_image(f, cache_size)
    t = time.perf_counter()
    for f in names:
        decode_image(f, cache_size)
    return (time.perf_counter() - t) / max(1, len(names)) * 1e3


def jax_lesson(S: Sizes, spec, path: str) -> dict:
    """Section 4: the lesson's first three lines on a folder of JPEGs, each phase timed.
    The decode cache and stored features of an earlier pass are deleted first, so every
    pass decodes every JPEG. `pretrained(precompute=True)` is timed in its two parts (the
    model, then the features: the same work), fit per epoch (the first compiles)."""
    from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model
    from jaxcls.data.decode import wait_for_cache_writes
    shutil.rmtree(os.path.join(path, 'tmp'), ignore_errors=True)
    t0 = time.perf_counter()
    data = ImageClassifierData.from_paths(path, tfms=tfms_from_model(spec, S.sz), quiet=True)
    t1 = time.perf_counter()
    # bfloat16 compute as in every other section: the body's forward runs once, in bf16.
    learn = ConvLearner.pretrained(spec, data, precompute=False, pretrained=False, quiet=True,
                                   dtype='bfloat16')
    t_model = time.perf_counter()
    learn.precompute = True
    t2 = time.perf_counter()
    timer = epoch_timer()
    hist = learn.fit(0.01, S.fit_epochs, callbacks=[timer])
    t3 = time.perf_counter()
    # The decode cache goes to disk in the background while the lesson runs; how much longer
    # it took is reported (Python waits for it at exit), and the next pass needs it done.
    wait_for_cache_writes()
    t4 = time.perf_counter()
    assert not data.trn_ds.from_cache and not data.skipped, 'expected a fresh decode of every file'
    return {'decode_s': t1 - t0, 'precompute_s': t2 - t1, 'model_s': t_model - t1,
            'features_s': t2 - t_model, 'fit_s': t3 - t2, 'fit_epochs_s': timer.times,
            'total_s': t3 - t0, 'cache_write_after_s': t4 - t3,
            'n_train': len(data.trn_ds), 'n_valid': len(data.val_ds), 'bs': data.bs,
            'cache_size': data.cache_size, 'in_ram': not isinstance(data.trn_ds.x, np.memmap),
            'hist': hist}



def run(ctx: Context, jpeg_root: str) -> list:
    """Section 4, logged as it goes; the two passes' numbers (None for a pass that failed)."""
    S, spec = ctx.S, ctx.spec
    say(f'\n[4] the lesson on {S.n_jpegs} JPEGs: from_paths(tfms=tfms_from_model({spec.name}, '
        f'{S.sz})) + ConvLearner.pretrained(precompute=True, pretrained=False, '
        "dtype='bfloat16') + "
        f'fit(0.01, {S.fit_epochs}) {ctx.stamp()}')
    probe = ctx.guarded('4 probe', decode_probe, jpeg_root, round(1.15 * S.sz))
    if probe:
        threads = os.cpu_count() or 1
        say(f'    one thread decodes a JPEG in {probe:.2f} ms: {S.n_jpegs} on {threads} threads '
            f'take at least {S.n_jpegs * probe / threads / 1e3:.2f} s; RAM available '
            f'{ram_gb():.1f} GB')
    ctx.results['decode_ms_per_image_one_thread'] = probe
    passes = []
    for name in ('first pass', 'again, compile cache warm'):
        r = ctx.guarded(f'4 {name}', jax_lesson, S, spec, jpeg_root)
        passes.append(r)
        if r is None:
            continue
        last = r['hist'][-1]
        say(f"    {name}: decode {r['decode_s']:.2f} s ({r['n_train']} + {r['n_valid']} images, "
            f"{r['cache_size']} px, {'in RAM' if r['in_ram'] else 'memory-mapped'}) + "
            f"pretrained/precompute {r['precompute_s']:.2f} s (model {r['model_s']:.2f} + "
            f"features {r['features_s']:.2f}) + fit {r['fit_s']:.2f} s (epochs "
            f"{', '.join(f'{v:.2f}' for v in r['fit_epochs_s'])}) = {r['total_s']:.2f} s; "
            f"cache on disk {r['cache_write_after_s']:.1f} s after fit; last epoch val_loss "
            f"{last['val_loss']:.4f} accuracy {last.get('accuracy', float('nan')):.4f} {ctx.stamp()}")
    ctx.results['lesson'] = [r and {k: v for k, v in r.items() if k != 'hist'} for r in passes]
    return passes
