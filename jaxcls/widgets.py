"""Notebook widgets: `ImageClassifierCleaner(learn)`, the data cleaner of `jaxcls clean` in a
notebook.

    >>> cleaner = ImageClassifierCleaner(learn)         # doctest: +SKIP
    >>> cleaner              # shows the widgets          # doctest: +SKIP
    >>> print(cleaner.table(10))   # no widgets needed    # doctest: +SKIP
    >>> cleaner.write_csv('decisions.csv'); cleaner.apply()   # doctest: +SKIP

The widgets need ipywidgets, an optional extra (``pip install 'jaxcls[widgets]'``); without
it the cleaner still ranks, prints its table, writes the CSV and applies the decisions, and
showing it says how to install them.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from jaxcls import htmlpage
from jaxcls.clean import moves, ranking
from jaxcls.train.precompute import compute_features

__all__ = ['ImageClassifierCleaner', 'INSTALL']

INSTALL = ("ImageClassifierCleaner's widgets need ipywidgets, which is not installed: "
           "pip install 'jaxcls[widgets]' (or pip install ipywidgets). Without them: "
           'print(cleaner.table()), cleaner.rows, cleaner.set(path, action), cleaner.write_csv(f), '
           'cleaner.apply().')


class ImageClassifierCleaner:
    """The training and validation files of `learn.data` ranked for cleaning: label and
    prediction disagree first (highest loss first), then the unreadable files, then the rest
    (jaxcls.clean.ranking.rank), predicted with the validation transform.

    Attributes:
      rows: the ranking, a list of CleanRow (path, split, label, predicted, probability,
        loss, note); paths relative to `path`.
      path: the dataset root. classes: the class names.
      actions: {path: 'delete' or 'relabel:<class>'}, set by the widgets or `set`.

    In a notebook, the cleaner as a cell's value shows `n` rows (default 24, from `start`)
    as thumbnails with a keep / delete / relabel choice each (`widget()`); `apply()` then
    moves the files as `jaxcls clean --apply` does: to ``path/quarantine/`` or into the new
    class folder, with an undo manifest, never deleting.
    """

    def __init__(self, learn: Any, n: int = 24, start: int = 0, bs: Optional[int] = None):
        data = learn.data
        if getattr(learn, 'is_multi', False):
            raise NotImplementedError('ImageClassifierCleaner ranks files by their one label; '
                                      'this learner is multi-label')
        bs = int(bs or data.bs)
        splits = [ds for ds in (data.trn_ds, data.val_ds) if len(ds)]
        logp = np.concatenate([compute_features(learn.predict_array, ds.x, bs) for ds in splits])
        self.path, self.classes = data.path, list(data.classes)
        self._images = {f: (ds, i) for ds in splits for i, f in enumerate(ds.fnames)}
        self.rows = ranking.rank(np.exp(logp.astype(np.float64)),
                                 np.concatenate([np.asarray(ds.y, np.int64) for ds in splits]),
                                 [f for ds in splits for f in ds.fnames], self.classes,
                                 skipped=data.skipped)
        self.actions: dict[str, str] = {}
        self.n, self.start = int(n), int(start)

    # ------------------------------------------------------------------ without widgets

    def table(self, n: Optional[int] = 20) -> str:
        """The first n rows (all: n=None) as plain text."""
        return ranking.format_table(self.rows, n)

    def __repr__(self) -> str:
        wrong = sum(r.note == ranking.DISAGREES for r in self.rows)
        return (f'ImageClassifierCleaner({len(self.rows)} files of {self.path}, {wrong} '
                f'disagree with their label)\n{self.table(10)}')

    def set(self, path: str, action: str) -> None:
        """Decide for one file: 'keep', 'delete' or 'relabel:<class>'."""
        known = {r.path for r in self.rows}
        if path not in known:
            raise ValueError(f'{path!r} is not one of the ranked files; use a path from '
                             'cleaner.rows (relative to the dataset, e.g. '
                             f'{self.rows[0].path if self.rows else "train/cats/1.jpg"!r})')
        choices = ['keep', 'delete'] + [f'relabel:{c}' for c in self.classes]
        if action not in choices:
            raise ValueError(f'unknown action {action!r}; use one of {choices}')
        if action == 'keep':
            self.actions.pop(path, None)
        else:
            self.actions[path] = action

    def write_csv(self, fname: str) -> str:
        """The ranking with the chosen actions, as the CSV of `jaxcls clean` (for --apply)."""
        with open(fname, 'w', newline='', encoding='utf-8') as f:
            ranking.write_csv(self.rows, f, self.actions)
        return os.path.abspath(fname)

    def apply(self) -> moves.Applied:
        """Move the files as decided (as `jaxcls clean --apply`); rebuild the data
        (`ImageClassifierData.from_paths`) to train on the result. The undo manifest is in
        the result's `manifest` (`jaxcls clean --undo` it)."""
        decisions = [(i, p, a) for i, (p, a) in enumerate(self.actions.items())]
        plan, unchanged = moves.plan_moves(self.path, decisions, 'cleaner.actions', 'entry')
        done = moves.Applied(plan, moves.apply_moves(self.path, plan, 'ImageClassifierCleaner'),
                             unchanged)
        self.actions = {}
        return done

    # ------------------------------------------------------------------ widgets

    def widget(self, n: Optional[int] = None, start: Optional[int] = None):
        """An ipywidgets box of rows start..start+n: thumbnail, label, prediction, loss and a
        keep / delete / relabel choice that sets `actions`. ImportError (INSTALL) without
        ipywidgets."""
        try:
            import ipywidgets as W
        except ImportError as e:
            raise ImportError(INSTALL) from e
        n, start = self.n if n is None else int(n), self.start if start is None else int(start)
        choices = ['keep', 'delete'] + [f'relabel:{c}' for c in self.classes]
        cards = []
        for r in self.rows[start:start + n]:
            if r.path in self._images:
                ds, i = self._images[r.path]
                pic = W.Image(value=htmlpage.image_bytes(ds.x[i], 'PNG', max_side=128),
                              format='png', layout=W.Layout(width='128px'))
            else:
                pic = W.HTML(f'<b>{htmlpage.esc(r.note)}</b>')
            pick = W.Dropdown(options=choices, value=self.actions.get(r.path, 'keep'),
                              layout=W.Layout(width='150px'))
            pick.observe(lambda ch, p=r.path: self.set(p, ch['new']), names='value')
            text = (f'{htmlpage.esc(r.path)}<br>label <b>{htmlpage.esc(r.label)}</b>' +
                    ('' if r.unreadable else f'<br>predicted <b>{htmlpage.esc(r.predicted)}</b>'
                     f' {r.probability:.2f}<br>loss {r.loss:.3f}'))
            cards.append(W.VBox([pic, W.HTML(text), pick], layout=W.Layout(width='160px')))
        head = W.HTML(f'rows {start}..{start + len(cards) - 1} of {len(self.rows)}; '
                      'then cleaner.apply() (or cleaner.widget(start=...) for more)')
        return W.VBox([head, W.GridBox(cards, layout=W.Layout(
            grid_template_columns='repeat(auto-fill, 165px)'))])

    def _ipython_display_(self) -> None:
        try:
            box = self.widget()
        except ImportError as e:
            print(f'{e}\n\n{self!r}')
            return
        from IPython.display import display
        display(box)
