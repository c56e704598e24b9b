"""The data pipeline against its peers, in one run on the same files.

    python bench/bench_data.py                 # 1000 JPEGs of 500x375, sz=224, batch 32
    python bench/bench_data.py --n 400 --sz 128

Prints:
  1. decode throughput of jaxcls's threaded cache builder vs a plain single-thread
     Pillow decode-and-resize loop (img/s, img/s per core); target >= 0.8 x cores x plain;
  2. on-device augmentation (flip + zoom + rotate + lighting + normalise, jitted) of a
     uint8 batch from that cache vs one ResNet34 training step on the same batch size and
     image size; target: augmentation <= 10% of the step.
Medians of several repeats; the load average is printed, since other processes on the
machine slow every number.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_decode import make_jpegs, plain_loop  # noqa: E402
from timing import machine, median_seconds  # noqa: E402

from jaxcls.data.decode import decode_files, default_cache_size  # noqa: E402
from jaxcls.data.transforms import augment, tfms_from_model, transforms_side_on  # noqa: E402
from jaxcls.models import resnet34  # noqa: E402
from jaxcls.train.optim import sgd  # noqa: E402
from jaxcls.train.state import create_train_state  # noqa: E402
from jaxcls.train.steps import make_train_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=1000)
    ap.add_argument('--sz', type=int, default=224)
    ap.add_argument('--bs', type=int, default=32)
    ap.add_argument('--repeats', type=int, default=3)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    size = default_cache_size(args.sz)
    tmp = tempfile.mkdtemp(prefix='jaxcls-bench-data-')
    names = [f'imgs/{f}' for f in make_jpegs(os.path.join(tmp, 'imgs'), args.n, 500, 375)]
    print(f'{args.n} JPEGs 500x375, cache {size}px, sz {args.sz}, batch {args.bs}, {machine()}, '
          f'jax {jax.__version__} on {jax.devices()[0].platform}')

    pn = min(args.n, 300)
    plain = pn / median_seconds(lambda: plain_loop(tmp, names[:pn], size), args.repeats)
    ours = args.n / median_seconds(lambda: decode_files(names, tmp, size, cache_dir=None,
                                                     quiet=True), args.repeats)
    print('\n1. decode (images/s)')
    print(f'   plain Pillow loop, 1 thread       {plain:8.0f}   ({plain:.0f} per core)')
    print(f'   jaxcls decode_files, {cores} threads   {ours:8.0f}   ({ours / cores:.0f} per core)')
    print(f'   ratio {ours / (cores * plain):.2f} x cores x plain (target >= 0.8): '
          f'{"met" if ours >= 0.8 * cores * plain else "NOT met"}')

    x = decode_files(names[:args.bs], tmp, size, cache_dir=None, quiet=True).x
    trn, _ = tfms_from_model(resnet34, args.sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    aug = jax.jit(augment, static_argnums=2)
    xb = jax.device_put(x)
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 100))
    aug(next(keys), xb, trn).block_until_ready()
    t_aug = median_seconds(lambda: aug(next(keys), xb, trn).block_until_ready(), args.repeats + 2)

    module, variables = resnet34(num_classes=2)
    state = create_train_state(module.apply, variables, sgd(0.01))
    step = jax.jit(make_train_step(), donate_argnums=0)
    batch = {'image': aug(next(keys), xb, trn), 'label': jnp.arange(args.bs) % 2}
    holder = [state]

    def run():
        holder[0], m = step(holder[0], batch)
        m['loss'].block_until_ready()

    t0 = time.perf_counter()
    run()
    compile_s = time.perf_counter() - t0
    t_step = median_seconds(run, args.repeats)
    print(f'\n2. augmentation vs ResNet34 train step (batch {args.bs}, {args.sz}px, median)')
    print(f'   augment (jitted)                  {t_aug * 1e3:8.1f} ms')
    print(f'   ResNet34 train step               {t_step * 1e3:8.1f} ms   (first call incl. compile '
          f'{compile_s:.1f} s)')
    print(f'   augmentation = {100 * t_aug / t_step:.1f}% of the step (target <= 10%): '
          f'{"met" if t_aug <= 0.1 * t_step else "NOT met"}')


if __name__ == '__main__':
    main()
