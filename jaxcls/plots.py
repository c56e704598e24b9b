"""All of jaxcls's pictures. The only module that imports matplotlib, and only when called.

Every function returns its matplotlib Figure and saves it when given `fname`.
Without a display (no $DISPLAY, as on servers and in CI) the Agg backend is used.

- training: `plot_lr`, `plot_lr_find`, `plot_loss` (through `learn.sched`);
- images: `plot_images` (the lesson's `plots`), `overlay_heatmap`;
- interpretation (:mod:`jaxcls.interpret`): `plot_interpretation`, `plot_top_losses`,
  `plot_most_correct` / `plot_most_incorrect` / `plot_most_uncertain`,
  `plot_confusion_matrix`;
- data: `show_batch`, `aug_preview`, `batch_images` (the pixels show_batch draws);
- fastai 0.7's `fastai.plots`, with its arguments: `plots`, `plots_from_files`,
  `load_img_id`, `plot_confusion_matrix`; ``plt`` is pyplot itself.

Nothing here computes pixels: the objects passed in supply displayable arrays
(`data.preview_batch`, `data.aug_samples`, `interp.display_images`), and this
module imports nothing from the rest of jaxcls.

Every image grid takes `heatmaps=`: one (h, w) array in [0, 1] per image,
resized bilinearly to the image and blended in with opacity 0.5 * value.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional

import numpy as np


__all__ = [
    'plt', 'plot_lr', 'plot_lr_find', 'plot_loss', 'overlay_heatmap', 'plot_images', 'plots',
    'plots_from_files', 'load_img_id', 'plot_interpretation', 'plot_top_losses',
    'plot_most_correct', 'plot_most_incorrect', 'plot_most_uncertain', 'plot_confusion_matrix',
    'batch_images', 'show_batch', 'aug_preview',
]


def __getattr__(name: str) -> Any:
    """``plots.plt``: matplotlib.pyplot, imported on first use with the backend chosen here
    (what ``from jaxcls.plots import *`` and jaxcls.imports hand a notebook)."""
    if name == 'plt':
        return _plt()
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def _plt():
    import matplotlib
    if 'matplotlib.pyplot' not in sys.modules and not os.environ.get('DISPLAY') \
            and 'ipykernel' not in sys.modules and sys.platform.startswith('linux'):
        matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _finish(fig, fname: Optional[Any]):
    fig.tight_layout()
    if fname is not None:
        fig.savefig(fname, dpi=100)
    return fig


def plot_lr(rec, show_moms: bool = False, fname: Any = None):
    """The learning rate (last layer group) at each iteration; momentum beside it if asked."""
    plt = _plt()
    ncols = 2 if show_moms else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    ax = axes[0, 0]
    ax.plot(rec.iterations, rec.lrs)
    ax.set_xlabel('iterations')
    ax.set_ylabel('learning rate')
    if show_moms:
        axes[0, 1].plot(rec.iterations, rec.moms)
        axes[0, 1].set_xlabel('iterations')
        axes[0, 1].set_ylabel('momentum')
    return _finish(fig, fname)


def _skip(values, n_skip, n_skip_end):
    end = len(values) - n_skip_end if n_skip_end else len(values)
    return values[n_skip:end]


def plot_lr_find(rec, n_skip: int = 10, n_skip_end: int = 5, fname: Any = None):
    """Smoothed loss against learning rate (log scale), as fastai's `sched.plot()`."""
    plt = _plt()
    lrs, losses = _skip(rec.lrs, n_skip, n_skip_end), _skip(rec.losses, n_skip, n_skip_end)
    if not lrs:
        lrs, losses = rec.lrs, rec.losses  # too few points to skip any: show them all
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set_xscale('log')
    ax.set_xlabel('learning rate (log scale)')
    ax.set_ylabel('loss')
    sug = getattr(rec, 'suggestions', {}) or {}
    if 'valley' in sug:
        i = int(np.argmin(np.abs(np.log(np.asarray(rec.lrs)) - np.log(sug['valley']))))
        ax.plot([sug['valley']], [rec.losses[i]], 'o', color='C1',
                label=f"valley: {sug['valley']:.2e}")
        ax.legend()
    return _finish(fig, fname)


def plot_loss(rec, n_skip: int = 10, n_skip_end: int = 5, fname: Any = None):
    """Smoothed training loss against iteration."""
    plt = _plt()
    its = _skip(rec.iterations, n_skip, n_skip_end) or rec.iterations
    losses = _skip(rec.losses, n_skip, n_skip_end) or rec.losses
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(its, losses)
    ax.set_xlabel('iterations')
    ax.set_ylabel('loss')
    return _finish(fig, fname)


# ---------------------------------------------------------------------------------------
# Image grids (the lesson's `plots(ims, rows=2, titles=...)`) and heatmap overlays
# ---------------------------------------------------------------------------------------

# A heatmap value h in [0, 1] is drawn over its pixel with opacity HEATMAP_ALPHA * h, so
# a zero leaves the image untouched and a one covers half of it with the colour map's top.
HEATMAP_ALPHA = 0.5
# 'jet' ends in red: it stands out on white strokes and dark backgrounds alike, where
# magma's pale-yellow top vanished on bright image areas (seen on the digits demo).
HEATMAP_CMAP = 'jet'
# Confusion matrices with more classes than this show colours only, no numbers in the cells.
_CM_MAX_TEXT = 30


def _resize_bilinear(a, hw):
    """Bilinear resample of a 2-D array to (H, W), pixel centres aligned, edges clamped (numpy).

    >>> _resize_bilinear(np.array([[0., 1.], [2., 3.]]), (4, 4))[0].tolist()
    [0.0, 0.25, 0.75, 1.0]
    """
    a = np.asarray(a, np.float64)
    H, W = int(hw[0]), int(hw[1])

    def axis(n_in, n_out):
        x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(x).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), x - lo

    y0, y1, wy = axis(a.shape[0], H)
    x0, x1, wx = axis(a.shape[1], W)
    top = a[y0][:, x0] * (1 - wx) + a[y0][:, x1] * wx
    bottom = a[y1][:, x0] * (1 - wx) + a[y1][:, x1] * wx
    return top * (1 - wy)[:, None] + bottom * wy[:, None]


def _check_heatmap(hm, i):
    hm = np.asarray(hm, np.float64)
    if hm.ndim != 2:
        raise ValueError(f'heatmaps[{i}] has shape {hm.shape}; each heatmap must be 2-D (h, w)')
    if hm.size == 0 or not np.all(np.isfinite(hm)) or hm.min() < 0 or hm.max() > 1:
        raise ValueError(f'heatmaps[{i}] must hold finite values in [0, 1], got '
                         f'{np.nanmin(hm) if hm.size else "nothing"} to '
                         f'{np.nanmax(hm) if hm.size else "nothing"}; scale it, e.g. '
                         f'(h - h.min()) / (h.max() - h.min())')
    return hm


def overlay_heatmap(image, heatmap, alpha: float = HEATMAP_ALPHA, cmap: str = HEATMAP_CMAP):
    """An image (uint8 or float 0..1, (H, W, 3) or (H, W)) with a [0, 1] heatmap of any size
    resized onto it (bilinear) and blended in colour: opacity alpha * heatmap per pixel.

    Returns float 0..1 (H, W, 3): where the heatmap is 0 the image is unchanged.

    >>> img = np.zeros((4, 4, 3), np.uint8)
    >>> out = overlay_heatmap(img, np.array([[0., 0.], [0., 1.]]))
    >>> out.shape, out[0, 0].tolist(), bool(out[3, 3].sum() > 0)
    ((4, 4, 3), [0.0, 0.0, 0.0], True)
    """
    import matplotlib
    img = _to_display(image, 'overlay_heatmap')
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    hm = _resize_bilinear(_check_heatmap(heatmap, 0), img.shape[:2])
    colours = np.asarray(matplotlib.colormaps[cmap](hm)[..., :3], np.float64)
    a = (float(alpha) * hm)[..., None]
    return (img * (1 - a) + colours * a).astype(np.float32)


def _to_display(x, fn):
    """One image (H, W, 3) or (H, W) as float 0..1: uint8 / 255, floats checked for range."""
    x = np.asarray(x)
    if x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[-1] not in (1, 3)):
        raise ValueError(f'{fn}: each image must be (H, W, 3) or (H, W), got shape {x.shape}')
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if lo < -1e-3 or hi > 1 + 1e-3 or not np.isfinite([lo, hi]).all():
        raise ValueError(f'{fn}: float images must be 0..1 pixels, got values from {lo:.3g} to '
                         f'{hi:.3g}; normalised images need data.denorm(x) first (uint8 works '
                         f'as is)')
    return np.clip(x, 0.0, 1.0)


def _grid(images, titles=None, rows: int = 1, figsize=None, heatmaps=None,
          suptitle=None, fn='plot_images'):
    """The figure of an image grid (one axis per image, nothing else), not yet finished."""
    import math
    plt = _plt()
    ims = [_to_display(im, fn) for im in images]
    n = len(ims)
    if titles is not None and len(titles) != n:
        raise ValueError(f'{fn}: {len(titles)} titles for {n} images; pass one per image')
    if heatmaps is not None:
        if len(heatmaps) != n:
            raise ValueError(f'{fn}: {len(heatmaps)} heatmaps for {n} images; pass one (h, w) '
                             f'array per image')
        ims = [overlay_heatmap(im, hm) for im, hm in zip(ims, heatmaps)]
    rows = int(rows)
    if rows < 1:
        raise ValueError(f'{fn}: rows={rows}; use rows >= 1')
    cols = max(1, math.ceil(n / rows))
    rows = max(1, math.ceil(n / cols))
    if figsize is None:
        figsize = (min(3 * cols, 20), min(3 * rows, 20) + (0.4 if suptitle else 0))
    fig = plt.figure(figsize=figsize)
    for i, im in enumerate(ims):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis('off')
        ax.imshow(im, cmap='gray' if im.ndim == 2 else None, vmin=0.0, vmax=1.0)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
    if n == 0:
        fig.text(0.5, 0.5, 'nothing to show', ha='center', va='center')
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_images(images, titles=None, rows: int = 1, figsize=None, fname=None, heatmaps=None):
    """A grid of images, the lesson's `plots(ims, rows=2, titles=...)`.

    Args:
      images: uint8 or float 0..1 images, (N, H, W, 3) or a list of (H, W, 3) / (H, W).
      titles: one per image.
      rows: grid rows; columns are ceil(N / rows). Only N axes are made.
      figsize: inches (default 3 per cell).
      fname: save the figure there.
      heatmaps: one (h, w) array in [0, 1] per image, resized and overlaid (see
        `overlay_heatmap`).

    >>> fig = plot_images(np.zeros((4, 8, 8, 3), np.uint8), titles=list('abcd'), rows=2)
    >>> len(fig.axes), fig.axes[3].get_title()
    (4, 'd')
    """
    return _finish(_grid(images, titles, rows, figsize, heatmaps), fname)


# fastai 0.7's image plots (fastai.plots), with its arguments. Like fastai's they draw on
# a new pyplot figure and return None, so a notebook shows the figure once.
def plots(ims, figsize=(12, 6), rows: int = 1, interp: bool = False, titles=None,
          maintitle=None):
    """A grid of images, fastai 0.7's `plots`: (N, H, W, 3) or fastai's (N, 3, H, W), uint8
    or floats in [0, 1] (``ds.denorm(x)`` of a loader's x); `interp` smooths the pixels."""
    if getattr(ims, 'ndim', 0) == 4 and ims.shape[-1] != 3 and ims.shape[1] == 3:
        ims = np.moveaxis(np.asarray(ims), 1, 3)          # fastai's NCHW
    fig = _grid(ims, titles, rows, figsize, suptitle=maintitle, fn='plots')
    if interp:
        for ax in fig.axes:
            for im in ax.get_images():
                im.set_interpolation('bilinear')
    fig.tight_layout()


def plots_from_files(imspaths, figsize=(10, 5), rows: int = 1, titles=None, maintitle=None):
    """Image files in a grid (fastai 0.7's `plots_from_files`), read with plt.imread."""
    plt = _plt()
    plots([plt.imread(os.fspath(p)) for p in imspaths], figsize, rows, titles=titles,
          maintitle=maintitle)


def load_img_id(ds, idx: int, path: Any):
    """Image `idx` of dataset `ds` as fastai 0.7 read it: the file ``path/ds.fnames[idx]``
    as a numpy array (H, W, 3) uint8, at its full size."""
    plt = _plt()
    return np.asarray(plt.imread(os.path.join(os.fspath(path), ds.fnames[idx])))


# ---------------------------------------------------------------------------------------
# Interpretation: most correct / incorrect / uncertain, top losses, confusion matrix
# ---------------------------------------------------------------------------------------

def _heatmaps_for(heatmaps, idxs, interp=None):
    if heatmaps is True:  # class activation maps of the predicted classes (interp.heatmaps)
        if interp is None or not hasattr(interp, 'heatmaps'):
            raise ValueError('heatmap=True needs an interpretation made from a learner '
                             '(ClassificationInterpretation.from_learner(learn))')
        return interp.heatmaps(idxs)
    return heatmaps(idxs) if callable(heatmaps) else heatmaps


def plot_interpretation(interp, idxs, title=None, fname=None, heatmaps=None, rows: int = 1,
                        figsize=None, heatmap: bool = False):
    """The images at `idxs` of a ClassificationInterpretation, each titled `interp.title(i)`
    ('dogs 0.93 (true cats)'): the lesson's plot_val_with_title.

    Images are centre-cropped (the validation transform of `interp.val_cfg`) and
    shown in 0..1 colours. `heatmaps` is one (h, w) array in [0, 1] per index, or
    a callable taking `idxs` and returning them; `heatmap=True` overlays the class
    activation map (Grad-CAM) of each image's predicted class.

    >>> from jaxcls.interpret import ClassificationInterpretation
    >>> interp = ClassificationInterpretation(np.eye(2), [0, 0], ['cats', 'dogs'],
    ...                                       images=np.zeros((2, 8, 8, 3), np.uint8))
    >>> plot_interpretation(interp, [1]).axes[0].get_title()
    'dogs 1.00 (true cats)'
    """
    idxs = np.asarray(idxs, np.int64).ravel()
    fig = _grid(interp.display_images(idxs), [interp.title(i) for i in idxs], rows, figsize,
                _heatmaps_for(True if heatmap else heatmaps, idxs, interp), title,
                'plot_interpretation')
    return _finish(fig, fname)


def plot_top_losses(interp, k: int = 9, fname=None, heatmaps=None, rows=None, figsize=None,
                    heatmap: bool = False):
    """The k images with the highest loss, titled 'predicted probability (true class)' and
    the loss; a square-ish grid unless `rows` is given.

    >>> from jaxcls.interpret import ClassificationInterpretation
    >>> interp = ClassificationInterpretation(np.array([[.9, .1], [.2, .8]]), [0, 0], 'ab',
    ...                                       images=np.zeros((2, 8, 8, 3), np.uint8))
    >>> plot_top_losses(interp, 1).axes[0].get_title()
    'b 0.80 (true a)\\nloss 1.61'
    """
    import math
    losses, idxs = interp.top_losses(k)
    if rows is None:
        rows = max(1, math.isqrt(len(idxs)))
    titles = [f'{interp.title(i)}\nloss {l:.2f}' for l, i in zip(losses, idxs)]
    fig = _grid(interp.display_images(idxs), titles, rows, figsize,
                _heatmaps_for(True if heatmap else heatmaps, np.asarray(idxs), interp),
                'Top losses: prediction probability (true class), loss', 'plot_top_losses')
    return _finish(fig, fname)


def plot_most_correct(interp, cls, n: int = 4, fname=None, heatmaps=None, heatmap: bool = False):
    """The lesson's 'most correct cats': images of class `cls` predicted right, most sure first."""
    name = interp.classes[interp.class_index(cls)]
    return plot_interpretation(interp, interp.most_correct(cls, n), f'Most correct {name}',
                               fname, True if heatmap else heatmaps)


def plot_most_incorrect(interp, cls, n: int = 4, fname=None, heatmaps=None, heatmap: bool = False):
    """The lesson's 'most incorrect cats': images of class `cls` predicted wrong, the most
    confidently wrong first."""
    name = interp.classes[interp.class_index(cls)]
    return plot_interpretation(interp, interp.most_incorrect(cls, n), f'Most incorrect {name}',
                               fname, True if heatmap else heatmaps)


def plot_most_uncertain(interp, cls=None, n: int = 4, fname=None, heatmaps=None, heatmap: bool = False):
    """The lesson's 'most uncertain predictions' (probability closest to 1/c), of class `cls`
    if given."""
    name = '' if cls is None else ' ' + interp.classes[interp.class_index(cls)]
    return plot_interpretation(interp, interp.most_uncertain(cls, n),
                               f'Most uncertain predictions{name}', fname,
                               True if heatmap else heatmaps)


def _draw_cm(ax, cm, labels, cmap, fmt):
    im = ax.imshow(cm, interpolation='nearest', cmap=cmap)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=45, ha='right')
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels)
    if len(labels) <= _CM_MAX_TEXT:
        mid = (float(cm.max()) + float(cm.min())) / 2
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, format(cm[i, j], fmt), ha='center', va='center',
                        color='white' if cm[i, j] > mid else 'black')
    ax.set_ylabel('Actual')
    ax.set_xlabel('Predicted')
    return im


def plot_confusion_matrix(interp_or_cm, classes=None, normalize: bool = False,
                          title: str = 'Confusion matrix', cmap: Any = 'Blues', figsize=None,
                          fname=None):
    """The confusion matrix (rows actual, columns predicted) with the count in every cell.

    Args:
      interp_or_cm: a ClassificationInterpretation, or a (c, c) matrix (e.g. from
        sklearn.metrics.confusion_matrix(y, preds)).
      classes: tick labels (default the interpretation's classes, or 0..c-1).
      normalize: divide each row by its total and show fractions.
      title, cmap, figsize: the title, a matplotlib colour map (a name, or a Colormap
        such as plt.cm.Blues), the size in inches; fastai 0.7's arguments, in its order.

    A multi-label interpretation draws one 2x2 matrix (no / yes) per class.

    >>> fig = plot_confusion_matrix(np.array([[5, 1], [2, 7]]), ['cats', 'dogs'])
    >>> sorted(t.get_text() for t in fig.axes[0].texts)
    ['1', '2', '5', '7']
    """
    import math
    plt = _plt()
    multi = False
    if hasattr(interp_or_cm, 'confusion_matrix'):
        cm = interp_or_cm.confusion_matrix(normalize=normalize)
        multi = bool(interp_or_cm.is_multi)
        classes = list(interp_or_cm.classes) if classes is None else list(classes)
    else:
        cm = np.asarray(interp_or_cm)
        if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
            raise ValueError(f'plot_confusion_matrix takes a square (c, c) matrix or a '
                             f'ClassificationInterpretation, got shape {cm.shape}')
        if normalize:
            rows = cm.sum(1, keepdims=True).astype(np.float64)
            cm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
        classes = [str(i) for i in range(len(cm))] if classes is None else list(classes)
    if len(classes) != cm.shape[0]:
        raise ValueError(f'{len(classes)} class names for a matrix of {cm.shape[0]} classes; '
                         f'pass one name per row')
    fmt = 'd' if np.issubdtype(cm.dtype, np.integer) else '.2f'
    if multi:
        cols = math.ceil(math.sqrt(len(classes)))
        rows_ = math.ceil(len(classes) / cols)
        fig = plt.figure(figsize=figsize or (min(2.6 * cols, 20), min(2.6 * rows_, 20) + 0.4))
        for i, name in enumerate(classes):
            ax = fig.add_subplot(rows_, cols, i + 1)
            _draw_cm(ax, cm[i], ['no', 'yes'], cmap, fmt)
            ax.set_title(name, fontsize=9)
        fig.suptitle(title)
        return _finish(fig, fname)
    side = min(max(4.0, 0.5 * len(classes) + 3), 20)
    fig, ax = plt.subplots(figsize=figsize or (side + 1, side))
    im = _draw_cm(ax, cm, classes, cmap, fmt)
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    return _finish(fig, fname)


# ---------------------------------------------------------------------------------------
# Data: a batch as the model sees it, and augmented versions of one image
# ---------------------------------------------------------------------------------------

def batch_images(data, n: int = 16, is_train: bool = True, key=0):
    """n images of a split as the model sees them, for display: (images 0..1 (n, sz, sz, 3),
    titles, indices); the same as `data.preview_batch(n, is_train, key)`, which computes
    them (training images augmented with `key`, validation images centre-cropped).

    >>> imgs, titles, idxs = batch_images(data, 4)        # doctest: +SKIP
    """
    return data.preview_batch(n, is_train, key)


def show_batch(data, n: int = 16, rows: int = 4, is_train: bool = True, key=0, fname=None,
               heatmaps=None):
    """n training images, augmented with `key` (or validation images, `is_train=False`),
    in a grid titled with their classes. `heatmaps`: one per image, or a callable
    taking the shown images' indices in the split.

    >>> show_batch(data, 8, rows=2)                       # doctest: +SKIP
    """
    imgs, titles, idxs = data.preview_batch(n, is_train, key)
    fig = _grid(imgs, titles, rows, None, _heatmaps_for(heatmaps, idxs), None, 'show_batch')
    return _finish(fig, fname)


def aug_preview(data, idx: int = 0, n: int = 8, rows: int = 2, key=0, fname=None,
                heatmaps=None):
    """n augmented versions of training image `idx` (`data.aug_samples`), the lesson's
    `plots(ims, rows=2)` of the augmented loader's samples, titled with its name and class.

    >>> aug_preview(data, 0, 6, rows=2)                   # doctest: +SKIP
    """
    imgs = data.aug_samples(idx, n, key)
    ds = data.trn_ds
    fig = _grid(imgs, None, rows, None, heatmaps,
                f'{ds.fnames[int(idx)]} ({data.label_text(ds.y[int(idx)])})', 'aug_preview')
    return _finish(fig, fname)
