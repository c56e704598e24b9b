"""Section 2 of bench_gpu.py: the lesson's unfrozen training fed from a uint8 cache with
on-device augmentation (ImageClassifierData.from_arrays + ConvLearner, half(), unfreeze(),
fit), images/s over the epochs after a warm-up epoch, each timed by a callback from its
start to its last step (validation excluded). jaxcls only: no torch row.
"""
from __future__ import annotations

import statistics

import numpy as np

from gpu.common import epoch_timer, say
from gpu.context import Context
from gpu.sizes import Sizes
from timing import median_rate


def jax_train_aug(S: Sizes, spec, workdir: str) -> dict:
    """Section 2: the lesson's unfrozen training, uint8 cache -> on-device augmentation."""
    import jax.numpy as jnp
    from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model, transforms_side_on
    n = S.bs * S.aug_batches
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n, S.cache, S.cache, 3), dtype=np.uint8)
    y = np.arange(n) % 2
    tfms = tfms_from_model(spec, S.sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    # One validation batch: fit validates after every epoch; it is outside the timed span.
    data = ImageClassifierData.from_arrays(workdir, (x, y), (x[:S.bs], y[:S.bs]), bs=S.bs,
                                           tfms=tfms)
    assert data.cache_size == S.cache, (data.cache_size, S.cache)
    learn = ConvLearner.pretrained(spec, data, pretrained=False, quiet=True)
    learn.half()
    learn.unfreeze()
    assert learn.dtype == jnp.bfloat16
    timer = epoch_timer()
    hist = learn.fit(0.01, 1 + S.aug_epochs, callbacks=[timer])
    warm = timer.times[1:]
    return {'rate': median_rate(n, warm), 'first_epoch_s': timer.times[0],
            'epoch_s': statistics.median(warm), 'images': n,
            'val_loss': hist[-1]['val_loss'], 'learn': learn, 'data': data}



def run(ctx: Context):
    """Section 2, logged as it goes; its numbers with the learner and data (section 3 uses
    them), or None when it failed."""
    S = ctx.S
    say(f'\n[2] training from the uint8 cache ({S.cache} px) with on-device augmentation '
        f'(transforms_side_on, max_zoom=1.1): ConvLearner, half(), unfreeze(), fit {ctx.stamp()}')
    r2 = ctx.guarded('2', jax_train_aug, S, ctx.spec, ctx.workdir)
    if r2 is not None:
        say(f"    {r2['images']} images per epoch: first epoch {r2['first_epoch_s']:.1f} s "
            f"(compiles), then {r2['epoch_s']:.3f} s = {r2['rate']:.1f} img/s (median of "
            f"{S.aug_epochs})")
        ctx.results['train_aug'] = {k: v for k, v in r2.items() if k not in ('learn', 'data')}
    return r2
