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


def fbeta(beta: float = 2.0, thresh: float = 0.5) -> Callable[[np.ndarray, np.ndarray], float]:
    """Mean per-image F-beta of multi-label predictions (lesson 2's f2 metric)."""
    def f(preds, targs):
        p = np.asarray(preds) > thresh
        t = np.asarray(targs) > 0.5
        tp = (p & t).sum(1)
        prec = tp / np.maximum(p.sum(1), 1)
        rec = tp / np.maximum(t.sum(1), 1)
        b2 = beta ** 2
        return float(np.mean((1 + b2) * prec * rec / np.maximum(b2 * prec + rec, 1e-12)))
    f.__name__ = f'f{beta:g}'
    return f
