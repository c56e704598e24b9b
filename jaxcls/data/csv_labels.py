"""Labels from a CSV file (fastai's ``from_csv``): the rows, the rules for bad rows, the split.

The CSV's first column is the file name inside ``{path}/{folder}`` (with `suffix`
appended, e.g. ``'.jpg'``), the second the label(s), separated by `cat_separator`: the
layout of both of lesson 2's datasets (``id,breed`` and ``image_name,tags``). If every row
has exactly one label the targets are class indices; otherwise the dataset is multi-label
and the targets are float32 multi-hot rows. The classes are the sorted labels of the
training rows.

A row that cannot be used follows the ``on_bad`` rule of image folders: with ``'skip'``
(the default) it is left out, listed in ``skipped`` as ``(file, 'labels.csv line N: why;
the fix')`` and counted in one :class:`~jaxcls.data.decode.SkippedImagesWarning`; with
``'raise'`` one :class:`~jaxcls.data.items.LayoutError` names every such line and its fix.
The rows are:

* a line that is not UTF-8 (it keeps its place, so ``val_idxs`` still count it);
* an empty label cell, or no label cell; an empty file-name cell; more than two cells;
* a file the CSV names that does not exist;
* a file named twice: the later rows when they repeat the same labels, every row of the
  file when the labels differ (which one is right cannot be known here);
* a validation row with a label that no training row has (the model could not learn it).

What skipping cannot repair is a LayoutError whatever ``on_bad`` says: a missing CSV or
image folder, a header that is not two columns (fastai's from_csv reads exactly the file
name and the labels; it has no column arguments), a header that names an existing image
(the CSV has no header: pass ``skip_header=False``), ``val_idxs`` outside the rows, none
of the named files existing (a wrong `suffix`), or a split left without rows.
"""
from __future__ import annotations

import codecs
import csv
import io
import os
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from jaxcls.data.decode import SkippedImagesWarning
from jaxcls.data.items import (Layout, LayoutError, SplitItems, check_classes, get_cv_idxs,
                               unlabelled_split)

__all__ = ['CsvRow', 'read_csv_rows', 'csv_items']

ON_BAD = ('skip', 'raise')
#: Bad rows named in a message (all of them are in ``skipped``).
LISTED = 5


@dataclass
class CsvRow:
    """One data row of the CSV.

    Attributes:
      index: its place among the data rows (header and blank lines excluded): what
        ``val_idxs`` and :func:`~jaxcls.data.items.get_cv_idxs` count.
      line: the line of the file it starts on (1-based, the header and blank lines included).
      cells: its cells as read.
      problem: why it cannot be used, with the fix; None when it can.
      fname: the image's path relative to the dataset root, once known.
      labels: its labels.
    """

    index: int
    line: int
    cells: list[str]
    problem: str | None = None
    fname: str | None = None
    labels: list[str] = field(default_factory=list)


def _text(raw: bytes) -> tuple[str, dict[int, str]]:
    """The file's text and {line: why} for its lines that are not UTF-8; those are decoded with
    replacement characters, so that every row keeps its place and its line number."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode('utf-8'), {}
    except UnicodeDecodeError:
        pass
    bad = {}
    for n, line in enumerate(raw.split(b'\n'), 1):
        try:
            line.decode('utf-8')
        except UnicodeDecodeError as e:
            bad[n] = (f'not UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1}); save the '
                      f'CSV as UTF-8')
    return raw.decode('utf-8', errors='replace'), bad


def read_csv_rows(csv_path: str, skip_header: bool = True) -> tuple[CsvRow | None, list[CsvRow]]:
    """(header or None, data rows) of a CSV file, each with its line number; blank lines are
    left out, and a row on a line that is not UTF-8 gets that as its `problem`.

    >>> import tempfile; f = tempfile.mktemp(suffix='.csv')
    >>> _ = open(f, 'wb').write(b'id,tags\\n\\na,x y\\nb\\xe9,z\\n')
    >>> header, rows = read_csv_rows(f)
    >>> header.cells, [(r.index, r.line, r.problem) for r in rows]
    (['id', 'tags'], [(0, 3, None), (1, 4, 'not UTF-8 (byte 0xe9 at column 2); save the CSV as UTF-8')])
    """
    with open(csv_path, 'rb') as f:
        text, bad = _text(f.read())
    reader = csv.reader(io.StringIO(text, newline=''))
    header, rows, end = None, [], 0
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if skip_header and header is None:
                header = CsvRow(-1, start, cells)
                continue
            problem = next((bad[n] for n in range(start, end + 1) if n in bad), None)
            rows.append(CsvRow(len(rows), start, cells, problem))
    except csv.Error as e:
        raise LayoutError(f'{csv_path} line {reader.line_num}: {e}; fix the line (a CSV of '
                          f'fname,labels rows)') from None
    return header, rows


def _check_header(header: CsvRow, csv_path: str, img_dir: str, suffix: str) -> None:
    cells = header.cells
    if len(cells) != 2:
        seps = [s for s in (';', '\t', '|') if len(cells) == 1 and s in cells[0]]
        hint = (f' (it looks separated by {seps[0]!r}; from_csv reads comma-separated values)'
                if seps else '')
        raise LayoutError(
            f'{csv_path} line {header.line}: the header has {len(cells)} column(s) {cells}{hint}; '
            f'from_csv reads two columns, the file name and its label(s), as fastai did (it has '
            f'no column arguments). Write the CSV as those two columns, e.g. id,breed or '
            f'image_name,tags')
    first = cells[0].strip()
    if first and os.path.isfile(os.path.join(img_dir, first + suffix)):
        raise LayoutError(
            f'{csv_path} line {header.line} ({",".join(cells)!r}) names an existing image, '
            f'{os.path.join(img_dir, first + suffix)!r}: it is a data row, not a header. Pass '
            f'skip_header=False (or add a header line such as id,label)')


def _parse(r: CsvRow, folder: str, suffix: str, sep: str) -> None:
    """Sets the row's fname and labels, or its problem."""
    if r.problem:
        return
    if len(r.cells) > 2:
        r.problem = (f'{len(r.cells)} cells, but a row is fname,labels; quote a cell that holds a '
                     f'comma, or remove the extra cells')
        return
    name = r.cells[0].strip()
    if not name:
        r.problem = 'empty file-name cell; name the image or remove the row'
        return
    r.fname = f'{folder}/{name}{suffix}'.replace(os.sep, '/')
    r.labels = [t for t in (r.cells[1] if len(r.cells) > 1 else '').strip().split(sep) if t]
    if not r.labels:
        r.problem = 'empty label cell; give the image its label(s), or remove the row'


def _duplicates(rows: Sequence[CsvRow]) -> None:
    """Marks the rows that name a file an earlier row names."""
    groups: dict[str, list[CsvRow]] = {}
    for r in rows:
        if not r.problem:
            groups.setdefault(r.fname, []).append(r)
    for rs in groups.values():
        if len(rs) < 2:
            continue
        if all(sorted(r.labels) == sorted(rs[0].labels) for r in rs):
            for r in rs[1:]:
                r.problem = f'repeats line {rs[0].line} (the same file and labels); remove it'
            continue
        said = '; '.join(f'line {r.line}: {" ".join(r.labels)!r}' for r in rs)
        for r in rs:
            r.problem = (f'{r.fname} is labelled differently on {len(rs)} lines ({said}); keep '
                         f'only the row that is right')


def _report(bad: Sequence[CsvRow], n: int, csv_path: str, on_bad: str,
            emptied: str | None) -> list[tuple[str, str]]:
    """The skipped entries of the bad rows, after one warning; LayoutError with on_bad='raise',
    when no row is left, or when skipping them leaves the split `emptied` (a name) without rows."""
    name = os.path.basename(csv_path)
    entries = [(r.fname or f'{name} line {r.line}', f'{name} line {r.line}: {r.problem}')
               for r in bad]
    if not bad:
        return entries
    listing = '; '.join(why for _, why in entries[:LISTED]) + (' ...' if len(bad) > LISTED else '')
    if len(bad) == n:
        raise LayoutError(f'none of the {n} rows of {csv_path} can be used: {listing}')
    if on_bad == 'raise':
        raise LayoutError(f'{len(bad)} of the {n} rows of {csv_path} cannot be used: {listing}. '
                          f"Fix them, or pass on_bad='skip' to leave them out (data.skipped "
                          f'then lists them)')
    if emptied:
        raise LayoutError(f'no {emptied} rows of {csv_path} are left after skipping the bad '
                          f'ones: {listing}')
    warnings.warn(f'jaxcls skipped {len(bad)} of the {n} rows of {csv_path}: {listing}. The '
                  f"data's .skipped lists them all; on_bad='raise' makes this an error.",
                  SkippedImagesWarning, stacklevel=4)
    return entries


def csv_items(path: str, folder: str, csv_fname: str, val_idxs: Sequence[int] | None = None,
              suffix: str = '', test_name: str | None = None, skip_header: bool = True,
              cat_separator: str = ' ', on_bad: str = 'skip') -> Layout:
    """The layout of a CSV-labelled dataset (fastai's ``from_csv``); the rules are the module's.

    Args:
      val_idxs: data-row indices (0-based, header and blank lines excluded) of the validation
        set; default :func:`~jaxcls.data.items.get_cv_idxs` (20 % of the rows, seed 42:
        fastai's split). The validation rows keep their CSV order.
      suffix: appended to every name of the first column (e.g. '.jpg').
      test_name: optional unlabelled test folder under `path`.
      skip_header: the CSV's first line is a header.
      cat_separator: what separates the labels of one cell.
      on_bad: 'skip' (bad rows are left out and reported) or 'raise'.

    Raises:
      LayoutError: as the module says.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); (d / 'imgs').mkdir()
    >>> for i in range(5): (d / 'imgs' / f'{i}.png').touch()
    >>> _ = (d / 'labels.csv').write_text('id,tags\\n0,a\\n1,b\\n2,a b\\n3,b\\n4,a\\n')
    >>> lay = csv_items(str(d), 'imgs', 'labels.csv', suffix='.png')
    >>> lay.classes, lay.is_multi, lay.valid.fnames, lay.valid.y.tolist()
    (['a', 'b'], True, ('imgs/1.png',), [[0.0, 1.0]])
    """
    if on_bad not in ON_BAD:
        raise ValueError(f"on_bad={on_bad!r}; use 'skip' (leave bad rows out, warn) or 'raise'")
    path = os.path.abspath(os.fspath(path))
    img_dir = os.path.join(path, folder)
    if not os.path.isdir(img_dir):
        raise LayoutError(f'image folder {img_dir!r} does not exist; from_csv(path, folder, '
                          f'csv_fname) reads images from {{path}}/{{folder}}')
    csv_path = os.fspath(csv_fname)
    csv_path = csv_path if os.path.isabs(csv_path) else os.path.join(path, csv_path)
    if not os.path.isfile(csv_path):
        raise LayoutError(f'CSV file {csv_path!r} does not exist; pass csv_fname relative to '
                          f'{path} or as an absolute path')
    header, rows = read_csv_rows(csv_path, skip_header)
    if header is not None:
        _check_header(header, csv_path, img_dir, suffix)
    if not rows:
        raise LayoutError(f'CSV file {csv_path!r} has no data rows'
                          + (' (skip_header=True dropped its only row)' if skip_header else ''))
    n = len(rows)
    for r in rows:
        _parse(r, folder, suffix, cat_separator)
    named = [r for r in rows if not r.problem]
    missing = [r for r in named if not os.path.isfile(os.path.join(path, r.fname))]
    if named and len(missing) == len(named):
        hint = (f" (suffix={suffix!r}: do the files have another extension?)"
                if suffix else " (do the CSV names need suffix='.jpg'?)")
        raise LayoutError(f'none of the {len(named)} files {csv_path} names exists in {img_dir}, '
                          f'e.g. {[r.fname for r in missing[:3]]}{hint}')
    for r in missing:
        r.problem = f'no file {r.fname}; restore it, or remove the row'
    _duplicates(rows)

    if val_idxs is None:
        val_idxs = get_cv_idxs(n)
    val_idxs = np.asarray(val_idxs, dtype=np.int64).reshape(-1)
    out = val_idxs[(val_idxs < 0) | (val_idxs >= n)]
    if out.size:
        raise LayoutError(f'val_idxs has {out[:5].tolist()} outside the {n} CSV rows (0..{n - 1})')
    is_val = np.zeros(n, bool)
    is_val[val_idxs] = True
    learnable = {t for r in rows if not r.problem and not is_val[r.index] for t in r.labels}
    for r in rows:
        unseen = [t for t in r.labels if t not in learnable]
        if not r.problem and is_val[r.index] and unseen:
            r.problem = (f'label(s) {unseen} appear only in validation rows, so the model cannot '
                         f'learn them; choose val_idxs that leave a row of each label in '
                         f'training, or remove the row')
    good = [r for r in rows if not r.problem]
    trn, val = [r for r in good if not is_val[r.index]], [r for r in good if is_val[r.index]]
    emptied = next((nm for nm, rs, had in (('training', trn, not is_val.all()),
                                           ('validation', val, is_val.any())) if had and not rs),
                   None)
    skipped = _report([r for r in rows if r.problem], n, csv_path, on_bad, emptied)
    classes = sorted(learnable)
    index = {c: i for i, c in enumerate(classes)}
    is_multi = not all(len(r.labels) == 1 for r in good)
    check_classes(classes, is_multi, csv_path, 'give the rows of the CSV two labels or more')

    def split(rs: list[CsvRow]) -> SplitItems:
        if is_multi:
            y = np.zeros((len(rs), len(classes)), np.float32)
            for i, r in enumerate(rs):
                y[i, [index[t] for t in r.labels]] = 1.0
        else:
            y = np.array([index[r.labels[0]] for r in rs], np.int64)
        return SplitItems(tuple(r.fname for r in rs), y)

    test = None
    if test_name is not None:
        test, tskip = unlabelled_split(path, test_name)
        skipped += tskip
    return Layout(path, classes, is_multi, split(trn), split(val), test, skipped)
