"""Decode throughput: jaxcls's threaded cache builder vs a plain single-thread Pillow loop, and cache reuse.

    python bench/bench_decode.py              # 2000 JPEGs of 500x375 (dogscats-like), sz=224
    python bench/bench_decode.py --n 500 --sz 128

Generates the JPEGs in a temporary folder, then in one run prints:
  * plain:   for each file, Image.open -> convert('RGB') -> centre square -> resize (bilinear),
             one thread (what a hand-written loop does);
  * jaxcls:  decode_files(...) with 1 thread and with all cores (EXIF, draft, any mode, cache write);
  * reuse:   a second decode_files call on the same files (stat-only manifest check + load);
and the target: threaded >= 0.8 x cores x the plain single-thread rate. CPU ms per image
(process CPU time / images) shows whether threads add overhead independently of how
busy the machine is.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import tempfile
import time

import numpy as np
from PIL import Image

from jaxcls.data.decode import decode_files, default_cache_size
from jaxcls.data.items import list_images


def make_jpegs(folder: str, n: int, w: int, h: int) -> list[str]:
    """n photo-like JPEGs (a smooth random field plus grain, ~35-50 KB at 500x375, quality 90)."""
    os.makedirs(folder, exist_ok=True)

    def one(i):
        rng = np.random.default_rng(i)
        small = Image.fromarray(rng.integers(0, 256, (h // 32 + 2, w // 32 + 2, 3), dtype=np.uint8))
        base = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
        img = np.clip(base + rng.integers(-8, 9, (h, w, 3), dtype=np.int16), 0, 255).astype(np.uint8)
        name = f'img{i:05d}.jpg'
        Image.fromarray(img).save(os.path.join(folder, name), quality=90)
        return name

    with cf.ThreadPoolExecutor(os.cpu_count()) as ex:
        return list(ex.map(one, range(n)))


def plain_loop(root: str, names: list[str], size: int) -> np.ndarray:
    out = np.empty((len(names), size, size, 3), np.uint8)
    for i, f in enumerate(names):
        im = Image.open(os.path.join(root, f)).convert('RGB')
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        out[i] = np.asarray(im.resize((size, size), Image.Resampling.BILINEAR))
    return out


def timed(fn, n):
    """(images/s, process CPU seconds per image, result) of one call."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return n / (time.perf_counter() - t), (time.process_time() - c) / n, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=2000, help='number of JPEGs (default 2000)')
    ap.add_argument('--width', type=int, default=500)
    ap.add_argument('--height', type=int, default=375)
    ap.add_argument('--sz', type=int, default=224, help='training size; cache size = round(1.15 sz)')
    ap.add_argument('--workers', type=int, default=os.cpu_count())
    ap.add_argument('--plain-n', type=int, default=None,
                    help='images for the single-thread loops (default min(n, 500))')
    ap.add_argument('--repeats', type=int, default=3,
                    help='interleaved repeats; the best of each variant is reported (default 3)')
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    size = default_cache_size(args.sz)
    tmp = tempfile.mkdtemp(prefix='jaxcls-bench-')
    try:
        t = time.perf_counter()
        names = make_jpegs(os.path.join(tmp, 'imgs'), args.n, args.width, args.height)
        names = [f'imgs/{f}' for f in names]
        mb = sum(os.path.getsize(os.path.join(tmp, f)) for f in names) / 2**20
        print(f'generated {args.n} JPEGs {args.width}x{args.height} ({mb:.0f} MiB) in '
              f'{time.perf_counter() - t:.1f}s; cache size {size}px (sz={args.sz}); {cores} cores, '
              f'{args.workers} decode threads; best of {args.repeats} interleaved repeats')
        pn = min(args.n, args.plain_n or 500)
        load_before = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
        for f in names:  # warm the page cache so every variant reads from memory
            with open(os.path.join(tmp, f), 'rb') as fh:
                fh.read()

        cache = os.path.join(tmp, 'tmp')
        variants = {
            'plain Pillow loop, 1 thread': (pn, lambda: plain_loop(tmp, names[:pn], size)),
            'jaxcls decode_files, 1 thread': (pn, lambda: decode_files(
                names[:pn], tmp, size, cache_dir=None, num_workers=1, quiet=True)),
            f'jaxcls decode_files, {args.workers} threads': (args.n, lambda: decode_files(
                names, tmp, size, cache_dir=None, num_workers=args.workers, quiet=True)),
            '  + writing the .npy cache': (args.n, lambda: (shutil.rmtree(cache, ignore_errors=True),
                                                            decode_files(names, tmp, size, name='train',
                                                                         cache_dir=cache,
                                                                         num_workers=args.workers,
                                                                         quiet=True))[1]),
        }
        best: dict[str, tuple[float, float]] = {}
        outs = {}
        for _ in range(args.repeats):
            for k, (n, fn) in variants.items():
                rate, cpu, out = timed(fn, n)
                if k not in best or rate > best[k][0]:
                    best[k] = (rate, cpu)
                outs[k] = out
        keys = list(variants)
        ref, one, cached = outs[keys[0]], outs[keys[1]], outs[keys[3]]
        diff = np.abs(one.x.astype(int) - ref.astype(int)).mean()
        assert not cached.from_cache and len(cached.x) == args.n

        t = time.perf_counter()
        listed, _ = list_images(os.path.join(tmp, 'imgs'), root=tmp)
        r = decode_files(listed, tmp, size, name='train', cache_dir=cache, quiet=True)
        reuse = time.perf_counter() - t
        assert r.from_cache and len(r.x) == args.n
        np.asarray(r.x[-1])  # touch the data

        load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
        print(f'load average before the timed runs: {load_before:.1f}, after: {load:.1f} '
              f'(above {cores} means other processes shared the cores)')
        print(f'{"variant":<34}{"img/s":>9}{"img/s/core":>12}{"CPU ms/img":>12}')
        for i, k in enumerate(keys):
            rate, cpu = best[k]
            per_core = rate if i < 2 else rate / cores
            note = f'   (mean |diff| vs plain {diff:.2f} levels)' if i == 1 else ''
            print(f'{k:<34}{rate:>9.0f}{per_core:>12.0f}{cpu * 1e3:>12.2f}{note}')
        plain = best[keys[0]][0]
        target = 0.8 * cores * plain
        for k in keys[2:]:
            rate = best[k][0]
            print(f'target 0.8 x {cores} x {plain:.0f} = {target:.0f} img/s: {k.strip()}: '
                  f'{rate / (cores * plain):.2f} x cores x plain -> {"met" if rate >= target else "NOT met"}')
        print(f'cache reuse (list folder + stat + manifest + load, {args.n} images): {reuse * 1e3:.0f} ms '
              f'= {reuse * 1e4 / args.n * 1e3:.0f} ms per 10,000 images '
              f'({"memory-mapped" if isinstance(r.x, np.memmap) else "in memory"}, '
              f'{r.x.nbytes / 2**20:.0f} MiB)')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
