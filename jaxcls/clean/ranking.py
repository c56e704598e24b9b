"""Which files of a dataset to look at first: a pure ranking of the training and validation
files by the disagreement between their label and the model's prediction, then by loss,
with the files the decoder could not read among them.

Numbers in, rows out: no model, no files opened. `jaxcls clean` and
`ImageClassifierCleaner` compute the probabilities (with the model's validation
transform) and call :func:`rank`.

    >>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> rows = rank(probs, [0, 0, 1], ['train/cats/a.png', 'train/cats/b.png',
    ...             'valid/dogs/c.png'], ['cats', 'dogs'],
    ...             skipped=[('train/dogs/d.png', 'truncated file')])
    >>> [(r.path, r.predicted, round(r.loss, 3), r.note) for r in rows]  # doctest: +NORMALIZE_WHITESPACE
    [('train/cats/b.png', 'dogs', 1.609, 'label != predicted'),
     ('valid/dogs/c.png', 'cats', 0.916, 'label != predicted'),
     ('train/dogs/d.png', '', nan, 'unreadable: truncated file'),
     ('train/cats/a.png', 'cats', 0.105, '')]
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence, TextIO

import numpy as np

__all__ = ['CleanRow', 'rank', 'COLUMNS', 'write_csv', 'format_table', 'DISAGREES', 'UNREADABLE']

DISAGREES = 'label != predicted'
UNREADABLE = 'unreadable'
# The columns of the CSV `jaxcls clean` writes; the user fills `action` (keep / delete /
# relabel:<class>) and hands the file to `jaxcls clean --apply`.
COLUMNS = ('path', 'split', 'label', 'predicted', 'probability', 'loss', 'note', 'action')
_TINY = np.finfo(np.float64).tiny  # as jaxcls.interpret: only an exact 0 is clipped


@dataclass(frozen=True)
class CleanRow:
    """One file of the ranking.

    path: relative to the dataset root ('train/cats/cat.1.jpg'); split: its first folder;
    label: the class its folder says; predicted: the model's class ('' if unreadable);
    probability: the model's probability of `predicted`; loss: -log P(label) (NaN if
    unreadable); note: 'label != predicted', 'unreadable: <reason>' or ''.
    """

    path: str
    split: str
    label: str
    predicted: str
    probability: float
    loss: float
    note: str

    @property
    def unreadable(self) -> bool:
        return self.note.startswith(UNREADABLE)


def _split_label(path: str, classes: Sequence[str]) -> tuple[str, str]:
    """('train', 'cats') of 'train/cats/x.jpg'; the label is '' where the second folder is not
    a class (a file directly in train/)."""
    parts = str(path).replace('\\', '/').split('/')
    split = parts[0] if len(parts) > 1 else ''
    label = parts[1] if len(parts) > 2 and parts[1] in classes else ''
    return split, label


def rank(probs: Any, labels: Any, paths: Sequence[str], classes: Sequence[str],
         splits: Optional[Sequence[str]] = None,
         skipped: Iterable[tuple[str, str]] = ()) -> list[CleanRow]:
    """Every file as a CleanRow, the ones to look at first first.

    Args:
      probs: (N, c) probabilities of the N decoded files (softmax: one label per image).
      labels: (N,) class indices, the labels the files have now.
      paths: N paths relative to the dataset root ('train/cats/cat.1.jpg').
      classes: the c class names.
      splits: N split names (default: each path's first folder).
      skipped: (path, reason) of the files that were found but not decoded
        (`data.skipped`); they appear flagged 'unreadable: <reason>'.

    Order: the files whose prediction disagrees with their label, highest loss first (the
    likely mislabelled); then the unreadable files, in the order given; then the rest,
    highest loss first (the hardest of those labelled as predicted). Ties keep the input
    order.
    """
    classes = [str(c) for c in classes]
    c = len(classes)
    probs = np.asarray(probs, np.float64)
    n = len(paths)
    if probs.ndim != 2 or probs.shape != (n, c):
        raise ValueError(f'probs must be (N, c) = ({n}, {c}) for {n} paths and the classes '
                         f'{classes}; got shape {probs.shape}')
    if n and (not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1):
        raise ValueError(f'probs must be probabilities in [0, 1], got values from '
                         f'{np.nanmin(probs):.3g} to {np.nanmax(probs):.3g}; convert '
                         'log-probabilities (learn.predict()) with np.exp first')
    labels = np.asarray(labels)
    if labels.shape != (n,) or (n and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f'labels must be ({n},) class indices, got shape {labels.shape} dtype '
                         f'{labels.dtype}; multi-label data has no one label to clean by')
    bad = labels[(labels < 0) | (labels >= c)]
    if len(bad):
        raise ValueError(f'labels hold class index {int(bad[0])}, outside 0..{c - 1} for the '
                         f'classes {classes}')
    if splits is not None and len(splits) != n:
        raise ValueError(f'{len(splits)} splits for {n} paths; pass one per path (or none)')
    pred = np.argmax(probs, axis=1) if n else np.zeros((0,), np.int64)
    loss = -np.log(np.maximum(probs[np.arange(n), labels], _TINY))
    keyed = []
    for i, p in enumerate(paths):
        split = str(splits[i]) if splits is not None else _split_label(p, classes)[0]
        wrong = bool(pred[i] != labels[i])
        row = CleanRow(str(p), split, classes[labels[i]], classes[pred[i]],
                       float(probs[i, pred[i]]), float(loss[i]), DISAGREES if wrong else '')
        keyed.append(((0 if wrong else 2, -float(loss[i]), len(keyed)), row))
    for p, why in skipped:
        split, label = _split_label(p, classes)
        row = CleanRow(str(p), split, label, '', math.nan, math.nan,
                       f'{UNREADABLE}: {" ".join(str(why).split())}')
        keyed.append(((1, 0.0, len(keyed)), row))
    keyed.sort(key=lambda kr: kr[0])
    return [r for _, r in keyed]


def _num(v: float) -> str:
    return '' if not math.isfinite(v) else f'{v:.6g}'


def write_csv(rows: Iterable[CleanRow], f: TextIO, actions: Optional[dict] = None) -> int:
    """The rows as CSV (COLUMNS), `action` from `actions` {path: action} or empty; returns
    the number of rows written."""
    w = csv.writer(f)
    w.writerow(COLUMNS)
    actions = actions or {}
    n = 0
    for r in rows:
        w.writerow([r.path, r.split, r.label, r.predicted, _num(r.probability), _num(r.loss),
                    r.note, actions.get(r.path, '')])
        n += 1
    return n


def format_table(rows: Sequence[CleanRow], n: Optional[int] = 20) -> str:
    """The first n rows (all with n=None) as a plain-text table.

    >>> print(format_table([CleanRow('train/a/x.png', 'train', 'a', 'b', 0.75, 1.386,
    ...                              DISAGREES)]))
    #  path           label  predicted  probability  loss    note
    0  train/a/x.png  a      b          0.7500       1.3860  label != predicted
    """
    shown = list(rows if n is None else rows[:int(n)])
    head = ['#', 'path', 'label', 'predicted', 'probability', 'loss', 'note']
    body = [[str(i), r.path, r.label, r.predicted,
             '' if not math.isfinite(r.probability) else f'{r.probability:.4f}',
             '' if not math.isfinite(r.loss) else f'{r.loss:.4f}', r.note]
            for i, r in enumerate(shown)]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ['  '.join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head] + body]
    if n is not None and len(rows) > len(shown):
        lines.append(f'... {len(rows) - len(shown)} more')
    return '\n'.join(lines)
