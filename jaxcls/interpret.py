"""What the model got right and wrong, as numbers: the lesson's most correct / incorrect /
uncertain images, top losses, the confusion matrix and a per-class report.

Pictures of the same things are in :mod:`jaxcls.plots` (`plot_top_losses`,
`plot_confusion_matrix`, ...), which draws the arrays this module gives
(`display_images`: the images as the model saw them); this module imports no
matplotlib.

    >>> import numpy as np
    >>> probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    >>> interp = ClassificationInterpretation(probs, np.array([0, 0, 1, 1]), ['cats', 'dogs'])
    >>> interp.preds.tolist(), interp.confusion_matrix().tolist()
    ([0, 1, 0, 1], [[1, 1], [1, 1]])
    >>> interp.most_confused()
    [('cats', 'dogs', 1), ('dogs', 'cats', 1)]
    >>> interp.title(1)
    'dogs 0.70 (true cats)'
"""
from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence

import numpy as np

__all__ = ['ClassificationInterpretation']

# Multi-label probabilities are clipped this far from 0 and 1 before taking logs, as
# jaxcls.train.metrics.bce_loss does, so the mean of `losses` is the validation loss.
_BCE_EPS = 1e-7
_TINY = np.finfo(np.float64).tiny  # single-label: only an exact 0 is clipped (loss ~708)


class ClassificationInterpretation:
    """Predictions on a labelled set, with the lesson-1 ways of looking at them.

    Build it from a learner (`ClassificationInterpretation.from_learner(learn)`,
    or `learn.interpretation()`) or from arrays, e.g. after TTA:
    `ClassificationInterpretation(np.mean(np.exp(log_preds), 0), y, data.classes)`.

    Args:
      probs: (N, c) probabilities: softmax for single-label, sigmoid for multi-label.
      targs: (N,) class indices, or (N, c) multi-hot targets for multi-label.
      classes: the c class names.
      images: optional uint8 (N, H, W, 3) images in the same order (the decoded
        cache `data.val_ds.x`), for the plots.
      fnames: optional N file names, same order.
      is_multi: multi-label targets.
      thresh: multi-label only: a probability above it is a predicted label.
      val_cfg: optional TfmConfig (`data.tfms[1]`): the plots show `images` as the
        model saw them (centre crop / resize to its sz).

    Attributes:
      probs, targs, classes, c, images, fnames, is_multi, thresh, val_cfg: as given.
      preds: (N,) arg-max class indices; multi-label: (N, c) bool, probs > thresh.
      losses: (N,) per-image loss: negative log-likelihood of the true class;
        multi-label: binary cross-entropy averaged over the classes. Their mean
        is the learner's validation loss.

    Class arguments (`cls`) take an index or a class name.

    >>> interp = ClassificationInterpretation(np.array([[0.8, 0.2], [0.4, 0.6]]), [0, 0],
    ...                                       ['cats', 'dogs'])
    >>> interp.most_incorrect('cats').tolist(), round(float(interp.losses[1]), 4)
    ([1], 0.9163)
    """

    def __init__(self, probs: Any, targs: Any, classes: Sequence, images: Any = None,
                 fnames: Optional[Sequence[str]] = None, is_multi: bool = False, *,
                 thresh: float = 0.5, val_cfg: Any = None):
        probs = np.asarray(probs, np.float64)
        self._cam = None  # set by from_learner: (uint8 images, classes) -> heatmaps
        self.classes = [str(c) for c in classes]
        self.c = len(self.classes)
        if probs.ndim != 2 or probs.shape[1] != self.c:
            raise ValueError(f'probs must be (N, c) = (N, {self.c}) for the {self.c} classes '
                             f'{self.classes}; got shape {probs.shape}')
        if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
            raise ValueError(f'probs must be probabilities in [0, 1], got values from '
                             f'{np.nanmin(probs):.3g} to {np.nanmax(probs):.3g}; convert '
                             f'log-probabilities (learn.predict()) with np.exp first')
        n = len(probs)
        self.is_multi = bool(is_multi)
        if self.is_multi:
            targs = np.asarray(targs, np.float64)
            if targs.shape != probs.shape:
                raise ValueError(f'multi-label targs must be multi-hot (N, c) = {probs.shape}, '
                                 f'got shape {targs.shape}')
        else:
            targs = np.asarray(targs)
            if targs.shape != (n,) or not np.issubdtype(targs.dtype, np.integer):
                raise ValueError(f'targs must be ({n},) integer class indices, got shape '
                                 f'{targs.shape} dtype {targs.dtype}; multi-hot targets need '
                                 f'is_multi=True')
            bad = targs[(targs < 0) | (targs >= self.c)]
            if len(bad):
                raise ValueError(f'targs hold class index {int(bad[0])}, outside 0..{self.c - 1} '
                                 f'for the classes {self.classes}')
            targs = targs.astype(np.int64)
        if images is not None and len(images) != n:
            raise ValueError(f'{len(images)} images for {n} predictions; pass them in the same '
                             f'order (data.val_ds.x for the validation set)')
        if fnames is not None and len(fnames) != n:
            raise ValueError(f'{len(fnames)} fnames for {n} predictions; they must match')
        self.probs, self.targs = probs, targs
        self.images = images
        self.fnames = None if fnames is None else list(fnames)
        self.thresh = float(thresh)
        self.val_cfg = val_cfg
        if self.is_multi:
            self.preds = probs > self.thresh
            p = np.clip(probs, _BCE_EPS, 1 - _BCE_EPS)
            self.losses = -np.mean(targs * np.log(p) + (1 - targs) * np.log(1 - p), axis=1)
        else:
            self.preds = np.argmax(probs, axis=1)
            self.losses = -np.log(np.maximum(probs[np.arange(n), targs], _TINY))

    @classmethod
    def from_learner(cls, learn: Any, is_test: bool = False) -> 'ClassificationInterpretation':
        """The learner's predictions on the validation set (or a labelled test set).

        Single-label log-probabilities are turned into probabilities with np.exp;
        the images are the decoded cache of that set, for the plots.

        >>> interp = ClassificationInterpretation.from_learner(learn)   # doctest: +SKIP
        >>> interp.plot_top_losses(9)                                    # doctest: +SKIP
        """
        data = learn.data
        ds = data.test_ds if is_test else data.val_ds
        if is_test and ds is not None and not getattr(ds, 'labelled', True):
            raise ValueError('the test set has no labels, so there is nothing to compare the '
                             'predictions with; build the data with test_with_labels=True, or '
                             'use learn.predict(is_test=True)')
        preds, targs = learn.predict_with_targs(is_test)
        is_multi = bool(getattr(learn, 'is_multi', False))
        probs = np.asarray(preds, np.float64) if is_multi else np.exp(np.asarray(preds, np.float64))
        interp = cls(probs, targs, data.classes, images=ds.x, fnames=ds.fnames, is_multi=is_multi,
                     val_cfg=data.tfms[1])
        from jaxcls.cam import learner_heatmaps  # jax-only; no plotting
        interp._cam = lambda images, classes: learner_heatmaps(learn, images, classes)
        return interp

    def heatmaps(self, idxs: Any, classes: Any = None) -> np.ndarray:
        """Class activation maps (n, sz, sz) in [0, 1] of the images at `idxs`, for `classes`
        (default: each image's predicted class). Needs an interpretation from a learner.

        >>> interp.heatmaps(interp.top_losses(4)[1]).shape  # doctest: +SKIP
        (4, 224, 224)
        """
        if getattr(self, '_cam', None) is None or self.images is None:
            raise ValueError('heatmaps need the model: build the interpretation with '
                             'ClassificationInterpretation.from_learner(learn)')
        idxs = np.asarray(idxs, np.int64).ravel()
        if classes is None:
            if self.is_multi:
                raise ValueError('multi-label images have no single predicted class; pass '
                                 'classes= (one class index per image)')
            classes = self.preds[idxs]
        classes = [self.class_index(c) for c in np.broadcast_to(np.asarray(classes, object),
                                                                idxs.shape)]
        return self._cam(self.images[idxs], np.asarray(classes, np.int32))

    def display_images(self, idxs: Any) -> np.ndarray:
        """The images at `idxs` as the model saw them, ready to draw: with `val_cfg` and
        uint8 images, the validation transform (centre crop or resize to its sz), then
        denormalised to 0..1 float32 (n, sz, sz, 3); otherwise the images as stored.

        >>> interp = ClassificationInterpretation(np.eye(2), [0, 1], 'ab',
        ...                                       images=np.full((2, 4, 4, 3), 255, np.uint8))
        >>> interp.display_images([1]).shape
        (1, 4, 4, 3)
        """
        if self.images is None:
            raise ValueError('this interpretation has no images; build it with '
                             'ClassificationInterpretation.from_learner(learn) or pass images=')
        x = np.asarray(self.images[np.asarray(idxs, np.int64).reshape(-1)])
        if self.val_cfg is None or x.dtype != np.uint8 or len(x) == 0:
            return x
        from jaxcls.data import transforms as T  # jax: only when a transformed image is asked for
        return T.denorm(np.asarray(T.val_transform(x, self.val_cfg)), self.val_cfg)

    # ------------------------------------------------------------------ helpers

    def __len__(self) -> int:
        return len(self.probs)

    def __repr__(self) -> str:
        kind = 'multi-label' if self.is_multi else f'accuracy {self.accuracy():.4f}'
        return f'ClassificationInterpretation({len(self)} images, {self.c} classes, {kind})'

    def class_index(self, cls: Any) -> int:
        """The index of a class given by index or name.

        >>> ClassificationInterpretation(np.eye(2), [0, 1], ['cats', 'dogs']).class_index('dogs')
        1
        """
        if isinstance(cls, numbers.Integral) and not isinstance(cls, bool):
            if 0 <= int(cls) < self.c:
                return int(cls)
            raise ValueError(f'class index {cls} is out of range; use 0..{self.c - 1} or a name '
                             f'from {self.classes}')
        if isinstance(cls, str) and cls in self.classes:
            return self.classes.index(cls)
        raise ValueError(f'unknown class {cls!r}; use a name from {self.classes} or an index '
                         f'0..{self.c - 1}')

    def _single(self, what: str) -> None:
        if self.is_multi:
            raise NotImplementedError(
                f'{what} needs one true class per image; these are multi-label targets. Use '
                f'top_losses(), confusion_matrix() (one 2x2 matrix per class) or per_class()')

    @property
    def correct(self) -> np.ndarray:
        """(N,) bool: the prediction is right (multi-label: every label right)."""
        if self.is_multi:
            return np.all(self.preds == (self.targs > 0.5), axis=1)
        return self.preds == self.targs

    def accuracy(self) -> float:
        """Fraction of images predicted right (multi-label: per label, as accuracy_thresh).

        >>> ClassificationInterpretation(np.array([[.9, .1], [.4, .6]]), [0, 0], 'ab').accuracy()
        0.5
        """
        if self.is_multi:
            return float(np.mean(self.preds == (self.targs > 0.5)))
        return float(np.mean(self.correct))

    def _top(self, idxs: np.ndarray, key: np.ndarray, n: Optional[int]) -> np.ndarray:
        """idxs sorted by key ascending (ties: lower index first), the first n."""
        order = idxs[np.argsort(key[idxs], kind='stable')]
        return order if n is None else order[:int(n)]

    # ------------------------------------------------------------------ losses

    def top_losses(self, k: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """(losses, indices) of the k images with the highest loss, highest first (all if k=None).

        >>> interp = ClassificationInterpretation(np.array([[.9, .1], [.2, .8]]), [0, 0], 'ab')
        >>> interp.top_losses(1)[1].tolist()
        [1]
        """
        idxs = self._top(np.arange(len(self)), -self.losses, k)
        return self.losses[idxs], idxs

    # ------------------------------------------------------------------ the lesson's picks

    def most_correct(self, cls: Any, n: int = 4) -> np.ndarray:
        """Images of class `cls` predicted right, most confident (highest P(cls)) first.

        >>> interp = ClassificationInterpretation(np.array([[.6, .4], [.9, .1]]), [0, 0], 'ab')
        >>> interp.most_correct('a').tolist()
        [1, 0]
        """
        self._single('most_correct')
        i = self.class_index(cls)
        idxs = np.flatnonzero((self.targs == i) & (self.preds == i))
        return self._top(idxs, -self.probs[:, i], n)

    def most_incorrect(self, cls: Any, n: int = 4) -> np.ndarray:
        """Images of class `cls` predicted wrong, most confidently wrong (lowest P(cls)) first.

        >>> interp = ClassificationInterpretation(np.array([[.4, .6], [.1, .9]]), [0, 0], 'ab')
        >>> interp.most_incorrect('a').tolist()
        [1, 0]
        """
        self._single('most_incorrect')
        i = self.class_index(cls)
        idxs = np.flatnonzero((self.targs == i) & (self.preds != i))
        return self._top(idxs, self.probs[:, i], n)

    def most_uncertain(self, cls: Any = None, n: int = 4) -> np.ndarray:
        """Images whose predicted class has a probability closest to 1/c (a coin toss for two
        classes); with `cls`, only images of that true class.

        >>> interp = ClassificationInterpretation(np.array([[.9, .1], [.45, .55]]), [0, 1], 'ab')
        >>> interp.most_uncertain().tolist()
        [1, 0]
        """
        self._single('most_uncertain')
        idxs = np.arange(len(self))
        if cls is not None:
            idxs = np.flatnonzero(self.targs == self.class_index(cls))
        return self._top(idxs, np.abs(self.probs.max(axis=1) - 1.0 / self.c), n)

    def _random(self, mask: np.ndarray, n: int, seed: int) -> np.ndarray:
        """min(n, count) of the masked indices, drawn without replacement, in index order."""
        idxs = np.flatnonzero(mask)
        pick = np.random.default_rng(seed).choice(idxs, min(int(n), len(idxs)), replace=False)
        return np.sort(pick)

    def random_correct(self, n: int = 4, seed: int = 0) -> np.ndarray:
        """n images predicted right, drawn at random with `seed` (fewer if fewer are right),
        in index order.

        >>> ClassificationInterpretation(np.eye(3), [0, 1, 1], 'abc').random_correct(5).tolist()
        [0, 1]
        """
        self._single('random_correct')
        return self._random(self.correct, n, seed)

    def random_incorrect(self, n: int = 4, seed: int = 0) -> np.ndarray:
        """n images predicted wrong, drawn at random with `seed` (fewer if fewer are wrong),
        in index order.

        >>> ClassificationInterpretation(np.eye(3), [0, 1, 1], 'abc').random_incorrect().tolist()
        [2]
        """
        self._single('random_incorrect')
        return self._random(~self.correct, n, seed)

    # ------------------------------------------------------------------ confusion

    def confusion_matrix(self, normalize: bool = False) -> np.ndarray:
        """Counts: rows are the actual class, columns the predicted one; `normalize` divides
        each row by its total (a row with no images stays 0).

        Multi-label: (c, 2, 2), one [[TN, FP], [FN, TP]] matrix per class.

        >>> interp = ClassificationInterpretation(np.eye(2)[[0, 1, 1]], [0, 0, 1], 'ab')
        >>> interp.confusion_matrix().tolist(), interp.confusion_matrix(True)[0].tolist()
        ([[1, 1], [0, 1]], [0.5, 0.5])
        """
        if self.is_multi:
            t = self.targs > 0.5
            p = self.preds
            cm = np.stack([np.stack([(~t & ~p).sum(0), (~t & p).sum(0)], -1),
                           np.stack([(t & ~p).sum(0), (t & p).sum(0)], -1)], 1).astype(np.int64)
        else:
            cm = np.zeros((self.c, self.c), np.int64)
            np.add.at(cm, (self.targs, self.preds), 1)
        if not normalize:
            return cm
        rows = cm.sum(-1, keepdims=True)
        return np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)

    def most_confused(self, min_val: int = 1) -> list[tuple[str, str, int]]:
        """(actual, predicted, count) for every off-diagonal cell with count >= min_val,
        most frequent first (ties in class order).

        >>> interp = ClassificationInterpretation(np.eye(3)[[1, 1, 2, 0]], [0, 0, 1, 0], 'abc')
        >>> interp.most_confused()
        [('a', 'b', 2), ('b', 'c', 1)]
        """
        self._single('most_confused')
        cm = self.confusion_matrix()
        cells = [(int(cm[a, p]), a, p) for a in range(self.c) for p in range(self.c)
                 if a != p and cm[a, p] >= min_val and cm[a, p] > 0]
        cells.sort(key=lambda t: (-t[0], t[1], t[2]))
        return [(self.classes[a], self.classes[p], n) for n, a, p in cells]

    # ------------------------------------------------------------------ per-class report

    def per_class(self) -> list[dict]:
        """Precision, recall, F1 and support (images of the class) for every class.

        A ratio with nothing to divide by (no image predicted as the class, or none
        of it) is 0.0, as scikit-learn's default. Multi-label: each class on its
        own, predicted when its probability > thresh.

        >>> ClassificationInterpretation(np.eye(2)[[0, 1, 1]], [0, 0, 1], 'ab').per_class()[0]
        {'class': 'a', 'precision': 1.0, 'recall': 0.5, 'f1': 0.6666666666666666, 'support': 2}
        """
        if self.is_multi:
            cm = self.confusion_matrix()
            tp, fp, fn = cm[:, 1, 1], cm[:, 0, 1], cm[:, 1, 0]
        else:
            cm = self.confusion_matrix()
            tp = np.diag(cm)
            fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
        out = []
        for i, name in enumerate(self.classes):
            prec = _ratio(tp[i], tp[i] + fp[i])
            rec = _ratio(tp[i], tp[i] + fn[i])
            out.append({'class': name, 'precision': prec, 'recall': rec,
                        'f1': _ratio(2 * prec * rec, prec + rec), 'support': int(tp[i] + fn[i])})
        return out

    def report(self, digits: int = 2) -> str:
        """The per-class table with accuracy, macro (plain mean) and weighted (by support)
        averages, laid out as scikit-learn's classification_report. Multi-label adds a
        micro average (counts pooled over classes) instead of accuracy.

        >>> print(ClassificationInterpretation(np.eye(2)[[0, 1, 1]], [0, 0, 1], 'ab').report())
                     precision    recall  f1-score   support
        <BLANKLINE>
                   a      1.00      0.50      0.67         2
                   b      0.50      1.00      0.67         1
        <BLANKLINE>
            accuracy                          0.67         3
           macro avg      0.75      0.75      0.67         3
        weighted avg      0.83      0.67      0.67         3
        """
        rows = self.per_class()
        width = max([len(r['class']) for r in rows] + [len('weighted avg')])
        head = ['precision', 'recall', 'f1-score', 'support']
        fmt_num = lambda v: f'{v:>9.{digits}f}'  # noqa: E731
        lines = [' ' * width + ' ' + ' '.join(f'{h:>9}' for h in head), '']
        for r in rows:
            lines.append(f"{r['class']:>{width}} {fmt_num(r['precision'])} {fmt_num(r['recall'])}"
                         f" {fmt_num(r['f1'])} {r['support']:>9d}")
        lines.append('')
        support = np.array([r['support'] for r in rows], np.float64)
        total = int(support.sum())
        if self.is_multi:
            cm = self.confusion_matrix().sum(0)
            tp, fp, fn = cm[1, 1], cm[0, 1], cm[1, 0]
            p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
            lines.append(f"{'micro avg':>{width}} {fmt_num(p)} {fmt_num(r)} "
                         f"{fmt_num(_ratio(2 * p * r, p + r))} {total:>9d}")
        else:
            lines.append(f"{'accuracy':>{width}} {'':>9} {'':>9} {fmt_num(self.accuracy())} "
                         f"{total:>9d}")
        for name, w in (('macro avg', np.ones_like(support)), ('weighted avg', support)):
            avg = [_ratio(float(np.dot(w, [r[k] for r in rows])), float(w.sum()))
                   for k in ('precision', 'recall', 'f1')]
            lines.append(f'{name:>{width}} ' + ' '.join(fmt_num(v) for v in avg) + f' {total:>9d}')
        return '\n'.join(lines)

    # ------------------------------------------------------------------ titles

    def title(self, i: int) -> str:
        """'predicted-class probability (true true-class)' for image i, as the lesson's
        plot_val_with_title; multi-label lists every predicted label with its probability.

        >>> ClassificationInterpretation(np.array([[.07, .93]]), [0], ['cats', 'dogs']).title(0)
        'dogs 0.93 (true cats)'
        """
        i = int(i)
        if self.is_multi:
            pred = ' '.join(f'{self.classes[j]} {self.probs[i, j]:.2f}'
                            for j in np.flatnonzero(self.preds[i])) or 'none'
            true = ' '.join(self.classes[j] for j in np.flatnonzero(self.targs[i] > 0.5)) or 'none'
            return f'{pred} (true {true})'
        p = int(self.preds[i])
        return f'{self.classes[p]} {self.probs[i, p]:.2f} (true {self.classes[self.targs[i]]})'


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0
