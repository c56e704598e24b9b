"""Augmentation throughput: jaxcls.augment (one jitted batch warp) vs a fastai-0.7-style CPU loop.

The peer reproduces what fastai 0.7 does per image on the host: float 0..1
image, rotate with reflection (bilinear), random crop, flip, lighting,
normalise, one image at a time. fastai used cv2; cv2 is not a jaxcls
dependency, so the peer uses scipy.ndimage (same maths, similar speed class).

    python bench/bench_augment.py --batch 64 --cache 256 --sz 224 --iters 20

Prints one table: images/s for each, on this machine's default JAX device.
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from jaxcls.data.transforms import augment, tfms_from_stats, transforms_side_on

STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # ImageNet, as resnet34 uses


def peer_augment(rng: np.random.Generator, images: np.ndarray, sz: int) -> np.ndarray:
    """fastai 0.7's side-on pipeline, one image at a time on the CPU (scipy stands in for cv2)."""
    from scipy import ndimage
    mean, std = (np.asarray(s, np.float32) for s in STATS)
    out = np.empty((len(images), sz, sz, 3), np.float32)
    for i, im in enumerate(images):
        x = im.astype(np.float32) / 255
        if rng.random() < 0.75:  # RandomRotate(10), p=0.75
            x = ndimage.rotate(x, rng.uniform(-10, 10), axes=(1, 0), reshape=False, order=1,
                               mode='reflect')
        b, c = rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)  # RandomLighting(0.05, 0.05)
        c = -1 / (c - 1) if c < 0 else c + 1
        mu = x.mean()
        x = np.clip((x - mu) * c + mu + b, 0, 1)
        if rng.random() < 0.5:  # RandomFlip()
            x = x[:, ::-1]
        r0, c0 = rng.integers(0, x.shape[0] - sz + 1), rng.integers(0, x.shape[1] - sz + 1)
        out[i] = (x[r0:r0 + sz, c0:c0 + sz] - mean) / std
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--cache', type=int, default=256, help='side of the cached uint8 images')
    ap.add_argument('--sz', type=int, default=224)
    ap.add_argument('--iters', type=int, default=20)
    args = ap.parse_args()

    trn, _ = tfms_from_stats(STATS, args.sz, transforms_side_on, max_zoom=1.1)
    images = np.random.default_rng(0).integers(0, 256, (args.batch, args.cache, args.cache, 3),
                                               dtype=np.uint8)
    dev_images = jax.device_put(images)
    fn = jax.jit(augment, static_argnums=2)
    t = time.perf_counter()
    fn(jax.random.key(0), dev_images, trn).block_until_ready()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(args.iters):
        y = fn(jax.random.fold_in(jax.random.key(0), i), dev_images, trn)
    y.block_until_ready()
    jax_ips = args.iters * args.batch / (time.perf_counter() - t)

    rng = np.random.default_rng(0)
    peer_iters = max(1, args.iters // 10)  # the loop is slow; fewer batches suffice
    t = time.perf_counter()
    for _ in range(peer_iters):
        peer_augment(rng, images, args.sz)
    peer_ips = peer_iters * args.batch / (time.perf_counter() - t)

    print(f'device: {jax.devices()[0].device_kind}  batch {args.batch}  '
          f'{args.cache}px -> {args.sz}px  (jaxcls compile {compile_s:.1f} s)')
    print(f'{"":28s}{"images/s":>12s}')
    print(f'{"jaxcls augment (jit, batch)":28s}{jax_ips:12.0f}')
    print(f'{"fastai-style CPU loop":28s}{peer_ips:12.0f}')
    print(f'{"ratio":28s}{jax_ips / peer_ips:12.1f}x')


if __name__ == '__main__':
    main()
