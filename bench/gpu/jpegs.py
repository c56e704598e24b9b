"""The lesson's folder of generated JPEGs (section 4 of bench_gpu.py): train/ and valid/, one
folder per class, made in parallel processes and reused by later runs. Not timed.
"""
from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np

JPEG_MARKER = '.bench_gpu_jpegs.json'
# Bump when the generated images change, so an old folder in --workdir is regenerated.
JPEG_VERSION = 2
CLASSES = ('cats', 'dogs')
# A class tint on an upsampled 8x6 random field, +-8 grain: ~35 KB at 500x375 and quality 85,
# close to the dogs-vs-cats photos (decode cost tracks the compressed size).
JPEG_QUALITY = 85
JPEG_GRAIN = 8
TINTS = ((200, 90, 60), (60, 110, 200))
# One image in this many goes to valid/: the lesson's dogscats has 2,000 of 25,000 (8 %).
VALID_EVERY = 10


def _jpeg_job(job: tuple[str, list[tuple[str, int, int]], tuple[int, int]]) -> int:
    """Write one chunk of JPEGs: (root, [(relative path, class index, seed)], (w, h))."""
    from PIL import Image
    root, items, (w, h) = job
    for rel, cls, seed in items:
        rng = np.random.default_rng(seed)
        field = rng.integers(0, 256, (6, 8, 3)).astype(np.float32)
        small = 0.5 * field + 0.5 * np.asarray(TINTS[cls], np.float32)
        im = Image.fromarray(small.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        a = np.asarray(im).astype(np.int16) + rng.integers(-JPEG_GRAIN, JPEG_GRAIN + 1,
                                                           (h, w, 3), dtype=np.int16)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(
            os.path.join(root, rel), 'JPEG', quality=JPEG_QUALITY)
    return len(items)


def jpeg_layout(n: int) -> list[tuple[str, int, int]]:
    """(relative path, class, seed) of every image: train/<class>/ and valid/<class>/."""
    out = []
    k = len(CLASSES)
    for i in range(n):
        cls = i % k
        split = 'valid' if (i // k) % VALID_EVERY == VALID_EVERY - 1 else 'train'
        out.append((os.path.join(split, CLASSES[cls], f'{CLASSES[cls][:-1]}.{i}.jpg'), cls, i))
    return out


def make_jpegs(root: str, n: int, wh: tuple[int, int], workers: int) -> tuple[float, bool]:
    """The folder-per-class tree under `root`, generated in parallel processes, or reused
    when a previous run made the same one. Returns (seconds, reused)."""
    want = {'version': JPEG_VERSION, 'n': n, 'wh': list(wh), 'quality': JPEG_QUALITY}
    marker = os.path.join(root, JPEG_MARKER)
    layout = jpeg_layout(n)
    try:
        with open(marker) as f:
            if json.load(f) == want and all(os.path.exists(os.path.join(root, r))
                                            for r, _, _ in layout[::max(1, n // 100)]):
                return 0.0, True
    except (OSError, ValueError):
        pass
    t = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    for split in ('train', 'valid'):
        for c in CLASSES:
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
    # ~100 images per task: big enough to amortise the pickling, small enough to balance.
    chunk = 100
    jobs = [(root, layout[s:s + chunk], tuple(wh)) for s in range(0, n, chunk)]
    import concurrent.futures as cf
    import multiprocessing as mp
    # 'spawn': nothing of this process (threads, a JAX runtime) is inherited by the workers.
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context('spawn')) as ex:
        done = sum(ex.map(_jpeg_job, jobs))
    assert done == n, (done, n)
    with open(marker, 'w') as f:
        json.dump(want, f)
    return time.perf_counter() - t, False
