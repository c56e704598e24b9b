"""Does the Grad-CAM heatmap land on the evidence? Train a small ResNet on squares in noise.

Two synthetic 4-class tasks, each image uniform noise with one bright square:

- colour: the square's colour (red, green, blue, white) is the class; it sits anywhere.
  The evidence is the square itself.
- quadrant: a white square, and the class is the quadrant it sits in. The evidence is
  the square's *position*, which a convolutional net can only read from the zero
  padding at the image border.

For each correctly classified validation image it measures the share of the
(upsampled, non-negative) heatmap's mass that falls inside the square, next to the
share a uniform map would give (the square's area fraction), for the heatmap as
jaxcls places it (`upsample_map`: each cell on its receptive field) and for a plain
half-pixel `jax.image.resize`.

    python bench/cam_localization.py            # both tasks, 64 px, ~2 min on 2 CPU cores

tests/test_cam.py runs a smaller colour task through `measure`.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model
from jaxcls.cam import class_activation_map
from jaxcls.data.transforms import val_transform
from jaxcls.archs import ArchSpec

# Four basic stages of one block each: small enough to train in seconds on a CPU. With
# xtra_cut=2 the heatmap comes from the stride-8 stage, an 8x8 map at 64 px, so a
# 24 px square spans three cells.
ARCH = ArchSpec('resnet_tiny', 'basic', (1, 1, 1, 1), 512)
COLOURS = np.array([[255, 40, 40], [40, 255, 40], [40, 40, 255], [255, 255, 255]], np.uint8)


def normalise(h: jax.Array) -> jax.Array:
    """Each map to [0, 1] as jaxcls normalises its own heatmaps (an all-zero map stays zero)."""
    top = jnp.max(h, axis=(-2, -1), keepdims=True)
    return jnp.where(top > 0, h / jnp.where(top > 0, top, 1.0), 0.0)


def squares(n: int, sz: int, side: int, task: str, noise: float = 0.5, seed: int = 0):
    """(images uint8 (n, sz, sz, 3), labels (n,), top-left corners (n, 2)).

    noise: the background is uniform in [0, noise * 255] per pixel and channel.
    """
    rng = np.random.default_rng(seed)
    x = (rng.random((n, sz, sz, 3)) * noise * 255).astype(np.uint8)
    y = rng.integers(0, 4, n)
    corners = np.empty((n, 2), int)
    half = sz // 2
    for i in range(n):
        if task == 'quadrant':
            oy, ox = (y[i] // 2) * half, (y[i] % 2) * half
            r, c = oy + rng.integers(0, half - side + 1), ox + rng.integers(0, half - side + 1)
            x[i, r:r + side, c:c + side] = 255
        elif task == 'colour':
            r, c = rng.integers(0, sz - side + 1, 2)
            x[i, r:r + side, c:c + side] = COLOURS[y[i]]
        else:
            raise ValueError(f"task={task!r}; use 'colour' or 'quadrant'")
        corners[i] = r, c
    return x, y, corners


def mass_inside(maps: np.ndarray, corners: np.ndarray, side: int) -> np.ndarray:
    """Share of each map's total mass inside its side x side square at `corners`."""
    out = np.empty(len(maps))
    for i, (m, (r, c)) in enumerate(zip(maps, corners)):
        out[i] = m[r:r + side, c:c + side].sum() / max(float(m.sum()), 1e-12)
    return out


def measure(task: str, sz: int = 64, side: int = 24, n_train: int = 1200, n_valid: int = 200,
            epochs: int = 3, lr: float = 0.05, noise: float = 0.5, path: str = '.') -> dict:
    """Train ARCH on the task (whole net, from scratch) and measure where the heatmaps fall."""
    xt, yt, _ = squares(n_train, sz, side, task, noise, seed=0)
    xv, yv, cv = squares(n_valid, sz, side, task, noise, seed=1)
    data = ImageClassifierData.from_arrays(path, (xt, yt), (xv, yv), bs=32, cache_size=sz,
                                           tfms=tfms_from_model(ARCH, sz))
    learn = ConvLearner.pretrained(ARCH, data, pretrained=False, quiet=True, xtra_cut=2)
    learn.unfreeze()
    t = time.perf_counter()
    learn.fit(lr, epochs)
    fit_s = time.perf_counter() - t
    ok = learn.predict().argmax(-1) == yv
    x = val_transform(jnp.asarray(data.val_ds.x), data.tfms[1])
    low, up = class_activation_map(learn.model, learn.state.variables, x, jnp.asarray(yv))
    plain = normalise(jnp.clip(jax.image.resize(low, up.shape, method='linear'), 0, None))
    inside = mass_inside(np.asarray(up)[ok], cv[ok], side)
    inside_plain = mass_inside(np.asarray(plain)[ok], cv[ok], side)
    first = int(np.flatnonzero(ok)[0]) if ok.any() else 0
    grey = val_transform(jnp.full((1, sz, sz, 3), 128, jnp.uint8), data.tfms[1])
    const, _ = class_activation_map(learn.model, learn.state.variables, grey, 0, upsample=False)
    return dict(task=task, accuracy=float(ok.mean()), chance=side * side / sz / sz,
                median=float(np.median(inside)), at_least_60=float((inside >= 0.6).mean()),
                median_plain_resize=float(np.median(inside_plain)), map=tuple(low.shape[1:]),
                fit_s=fit_s, example=(np.asarray(low[first]), tuple(cv[first]), int(yv[first])),
                constant_map=np.asarray(const[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sz', type=int, default=64)
    ap.add_argument('--side', type=int, default=24)
    ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--noise', type=float, default=0.5)
    ap.add_argument('--tasks', default='colour,quadrant')
    ap.add_argument('--show', action='store_true',
                    help='also print, per task, the low-resolution map of one validation image '
                         'with its square, and the map of a constant grey image')
    a = ap.parse_args()
    import tempfile
    print(f'{"task":9} {"acc":>6} {"map":>6} {"chance":>7} {"median inside":>14} '
          f'{">=60%":>6} {"plain resize":>13} {"fit s":>6}')
    shown = []
    for task in a.tasks.split(','):
        with tempfile.TemporaryDirectory() as d:
            r = measure(task, a.sz, a.side, epochs=a.epochs, noise=a.noise, path=d)
        shown.append(r)
        print(f'{task:9} {r["accuracy"]:6.3f} {"x".join(map(str, r["map"])):>6} {r["chance"]:7.3f} '
              f'{r["median"]:14.3f} {r["at_least_60"]:6.2f} {r["median_plain_resize"]:13.3f} '
              f'{r["fit_s"]:6.1f}')
    if a.show:
        np.set_printoptions(precision=1, suppress=True, linewidth=120)
        for r in shown:
            low, (row, col), cls = r['example']
            cell = a.sz // low.shape[0]
            print(f'\n{r["task"]}: class {cls}, square at rows {row}-{row + a.side - 1}, columns '
                  f'{col}-{col + a.side - 1} (cells of {cell} px, cell i centred on pixel {cell}*i)')
            print(low)
            print(f'{r["task"]}: constant grey image, class 0')
            print(r['constant_map'])


if __name__ == '__main__':
    main()
