"""Metrics on whole-set predictions, computed on the host: `metric(preds, targs) -> float`.

`preds` are what `learn.predict()` returns: log-probabilities (single-label) or
probabilities (multi-label); `targs` are class indices or multi-hot targets.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

# Probabilities are clipped this far from 0 and 1 before taking logs (multi-label loss),
# the float32 resolution near 1.
_EPS = 1e-7


def accuracy(preds: np.ndarray, targs: np.ndarray) -> float:
    """Fraction of images whose arg-max class is the target.

    >>> accuracy(np.log([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]))
    0.5
    """
    return float(np.mean(np.argmax(preds, -1) == np.asarray(targs)))


def accuracy_np(preds: np.ndarray, targs: np.ndarray) -> np.float64:
    """fastai 0.7's `accuracy_np`: the fraction of rows of `preds` (probabilities or
    log-probabilities, (N, c)) whose arg-max is the target, as a numpy float64.

    >>> log_preds, y = np.log([[[0.9, 0.1], [0.3, 0.7]]] * 2), np.array([0, 0])  # TTA's stack
    >>> accuracy_np(np.mean(np.exp(log_preds), 0), y)
    np.float64(0.5)
    """
    preds, targs = np.asarray(preds), np.asarray(targs)
    if preds.ndim != 2 or len(preds) != len(targs):
        raise ValueError(f'accuracy_np takes predictions (N, c) and N targets; got shapes '
                         f'{preds.shape} and {targs.shape} (average TTA\'s stack first: '
                         f'np.mean(np.exp(log_preds), 0))')
    return np.mean(np.argmax(preds, 1) == targs)


def accuracy_thresh(thresh: float = 0.5) -> Callable[[np.ndarray, np.ndarray], float]:
    """Multi-label accuracy: each probability above `thresh` is a predicted label."""
    def accuracy_thresh(preds, targs):
        return float(np.mean((np.asarray(preds) > thresh) == (np.asarray(targs) > 0.5)))
    return accuracy_thresh


def nll_loss(log_preds: np.ndarray, targs: np.ndarray) -> float:
    """Mean negative log-likelihood of the targets (cross-entropy on log-probabilities)."""
    return float(-np.mean(np.take_along_axis(log_preds, np.asarray(targs)[:, None].astype(int), 1)))


def bce_loss(probs: np.ndarray, targs: np.ndarray) -> float:
    """Mean binary cross-entropy of multi-hot targets given probabilities."""
    p = np.clip(np.asarray(probs, np.float64), _EPS, 1 - _EPS)
    t = np.asarray(targs, np.float64)
    return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))


def fbeta_samples(preds: np.ndarray, targs: np.ndarray, beta: float = 2.0,
                  thresh: float = 0.5) -> np.ndarray:
    """Per-image F-beta of multi-label predictions: each probability above `thresh` (strictly)
    is a predicted label; an image with neither true nor predicted labels scores 0, as
    scikit-learn's ``fbeta_score(average='samples')`` scores it.

    >>> fbeta_samples(np.array([[0.9, 0.1], [0.1, 0.1]]), np.array([[1, 0], [0, 0]]), 2).tolist()
    [1.0, 0.0]
    """
    p = np.asarray(preds) > thresh
    t = np.asarray(targs) > 0.5
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f'multi-label metrics take probabilities (N, c) and multi-hot targets of '
                         f'the same shape; got {p.shape} and {t.shape} (average a TTA stack '
                         f'first: np.mean(multi_preds, 0))')
    tp = (p & t).sum(1)
    prec = tp / np.maximum(p.sum(1), 1)
    rec = tp / np.maximum(t.sum(1), 1)
    b2 = beta ** 2
    return (1 + b2) * prec * rec / np.maximum(b2 * prec + rec, 1e-12)


def fbeta(beta: float = 2.0, thresh: float = 0.5) -> Callable[[np.ndarray, np.ndarray], float]:
    """Mean per-image F-beta of multi-label predictions at one threshold, as a metric."""
    def f(preds, targs):
        return float(np.mean(fbeta_samples(preds, targs, beta, thresh)))
    f.__name__ = f'f{beta:g}'
    return f


def _f2_per_threshold(preds, targs, start: float, end: float, step: float):
    ths = np.arange(start, end, step)
    if len(ths) == 0:
        raise ValueError(f'no thresholds in np.arange({start}, {end}, {step}); pass start < end '
                         f'and a positive step')
    return ths, np.array([np.mean(fbeta_samples(preds, targs, 2.0, th)) for th in ths])


def f2(preds: np.ndarray, targs: np.ndarray, start: float = 0.17, end: float = 0.24,
       step: float = 0.01) -> float:
    """fastai 0.7's planet.py ``f2``: the best mean per-image F2 over the thresholds
    ``np.arange(start, end, step)`` (0.17 ... 0.23), what lesson 2 reports. A learner metric
    as it is: ``ConvLearner.pretrained(arch, data, metrics=[f2])``.

    >>> f2(np.array([[0.3, 0.1], [0.19, 0.5]]), np.array([[1, 0], [0, 1]]))
    1.0
    """
    return float(np.max(_f2_per_threshold(preds, targs, start, end, step)[1]))


def opt_th(preds: np.ndarray, targs: np.ndarray, start: float = 0.17, end: float = 0.24,
           step: float = 0.01) -> np.float64:
    """fastai 0.7's planet.py ``opt_th``: the threshold of ``np.arange(start, end, step)`` whose
    mean per-image F2 is highest (the first such one): the cut-off to tag test images with.

    >>> round(float(opt_th(np.array([[0.3, 0.1], [0.19, 0.5]]), np.array([[1, 0], [0, 1]]))), 2)
    0.19
    """
    ths, scores = _f2_per_threshold(preds, targs, start, end, step)
    return ths[int(np.argmax(scores))]
