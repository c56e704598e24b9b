"""Items: which image files (or arrays) make up each split, their labels and the class list.

No JAX and no decoding here: this module only lists folders and validates the layout
(CSV files are read by :mod:`jaxcls.data.csv_labels`), so that every layout mistake is
reported (with the path and the fix) before a single image is decoded.

Layout rules (fastai 0.7's, made explicit):

* ``from folders``: ``{path}/{trn_name}/<class>/<image>``; the classes are the
  sorted subfolder names of the train folder, and the valid folder must have
  exactly the same ones. An optional test folder is unlabelled (every image in
  it, at any depth) or, with ``test_with_labels=True``, laid out like train.
* Hidden files and folders (name starting with ``.``, e.g. ``.DS_Store``,
  ``.ipynb_checkpoints``) are ignored silently.
* Image files are recognised by extension, case-insensitively
  (:data:`IMAGE_EXTENSIONS`). Other files inside a class folder are not errors:
  they are listed in ``skipped`` with the reason ``'not an image file'``.
* Nested subfolders inside a class folder are *included*: every image below
  ``train/cat/`` (e.g. ``train/cat/2017/a.jpg``) is a ``cat``. This is the
  forgiving choice for photo dumps sorted by date; the relative path in
  ``fnames`` shows where each image came from.
* Within a class, files are sorted by relative path, so the order (and hence
  every index-based split) is the same on every machine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = [
    'IMAGE_EXTENSIONS', 'LayoutError', 'SplitItems', 'Layout', 'is_image_file',
    'list_images', 'folder_items', 'unlabelled_split', 'array_labels', 'get_cv_idxs',
    'check_classes',
]

#: Extensions (lower case) treated as images. Anything Pillow reads in practice.
IMAGE_EXTENSIONS = frozenset({
    '.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.bmp', '.dib', '.gif', '.tif', '.tiff',
    '.webp', '.ppm', '.pgm', '.pbm', '.pnm', '.tga', '.ico', '.jp2', '.j2k',
})

NOT_AN_IMAGE = 'not an image file'
NOT_IN_CLASS = 'not inside a class folder'


class LayoutError(ValueError):
    """The folders or CSV do not describe a dataset jaxcls can read; the message says how to fix it."""


@dataclass(frozen=True)
class SplitItems:
    """The files of one split.

    Attributes:
      fnames: paths relative to the dataset root, '/'-separated
        (``'train/cat/cat.1.jpg'``), as fastai's ``ds.fnames``.
      y: int64 class indices (N,), float32 one-hot/multi-hot targets (N, c), or
        None for an unlabelled split.
    """

    fnames: tuple[str, ...]
    y: np.ndarray | None

    def __len__(self) -> int:
        return len(self.fnames)


@dataclass(frozen=True)
class Layout:
    """Everything known about a dataset before decoding.

    Attributes:
      root: absolute dataset root; ``os.path.join(root, fname)`` opens a file.
      classes: class names, sorted.
      is_multi: True when targets are multi-hot (several labels per image).
      train, valid: the labelled splits.
      test: the test split, or None.
      skipped: (relative path, reason) for every file found but not used.
    """

    root: str
    classes: list[str]
    is_multi: bool
    train: SplitItems
    valid: SplitItems
    test: SplitItems | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)


def check_classes(classes: Sequence, is_multi: bool, where: str, fix: str) -> None:
    """LayoutError unless a single-label dataset has two classes or more (a softmax over one
    class is always right, so it would train to a perfect score and learn nothing). A
    multi-label dataset may have one label: each image has it or not.

    >>> check_classes(['cats'], False, 'train/', 'add train/dogs/')
    Traceback (most recent call last):
    ...
    jaxcls.data.items.LayoutError: train/ has one class, 'cats'; a classifier needs two or more (a model that always answers 'cats' would score 100%). Fix: add train/dogs/
    """
    if not is_multi and len(classes) < 2:
        one = f"one class, {str(classes[0])!r}" if len(classes) else 'no classes'
        what = f'always answers {str(classes[0])!r}' if len(classes) else 'answers nothing'
        raise LayoutError(f'{where} has {one}; a classifier needs two or more (a model that '
                          f'{what} would score 100%). Fix: {fix}')


def is_image_file(name: str) -> bool:
    """True for a file name with an image extension (case-insensitive).

    >>> is_image_file('IMG_0001.JPG'), is_image_file('notes.txt')
    (True, False)
    """
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _hidden(name: str) -> bool:
    return name.startswith('.')


def _rel(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, '/')


def list_images(folder: str, root: str | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """All image files below `folder` (recursively, sorted), and the non-image files skipped.

    Hidden files and folders are ignored; symlinked folders are followed once.

    Returns:
      (images, skipped): image paths relative to `root` (default: `folder`),
      and (relative path, 'not an image file') for every other file.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); (d / 'a.PNG').touch(); (d / 'b.txt').touch()
    >>> list_images(str(d))
    (['a.PNG'], [('b.txt', 'not an image file')])
    """
    root = folder if root is None else root
    images: list[str] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        # One relpath per folder, not per file (25 us each: 0.5 s for 20,000 files).
        reldir = _rel(dirpath, root)
        prefix = '' if reldir == '.' else reldir + '/'
        for f in filenames:
            if _hidden(f):
                continue
            rel = prefix + f
            if is_image_file(f):
                images.append(rel)
            else:
                skipped.append((rel, NOT_AN_IMAGE))
    images.sort()
    skipped.sort()
    return images, skipped


def _subdirs(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder)
                  if not _hidden(e.name) and e.is_dir(follow_symlinks=True))


def _top_files(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder)
                  if not _hidden(e.name) and e.is_file(follow_symlinks=True))


def _require_dir(path: str, name: str, what: str, fix: str) -> str:
    folder = os.path.join(path, name)
    if not os.path.isdir(folder):
        have = _subdirs(path) if os.path.isdir(path) else None
        where = (f'; {path} has folders {have}' if have is not None
                 else f' ({path} itself does not exist)')
        raise LayoutError(f'no {what} folder {folder!r}{where}. {fix}')
    return folder


def _class_folder_split(path: str, name: str) -> tuple[list[str], list[str], list[str], list[tuple[str, str]]]:
    """Lists `{path}/{name}/<class>/...`: (classes, fnames, labels-as-names, skipped)."""
    folder = os.path.join(path, name)
    found = _subdirs(folder)
    stray = _top_files(folder)
    stray_images = [f for f in stray if is_image_file(f)]
    if stray_images:
        raise LayoutError(
            f'{name}/ has {len(stray_images)} image file(s) directly inside it '
            f'(e.g. {os.path.join(folder, stray_images[0])!r}); images must sit in one '
            f'subfolder per class, e.g. {name}/<class>/{stray_images[0]}. Move them into '
            f'class folders (or, for unlabelled images, use a test folder).')
    if not found:
        raise LayoutError(
            f'{name}/ ({folder}) has no class subfolders; put the images of each class in '
            f'its own folder: {name}/<class>/<image>, e.g. {name}/cats/cat.1.jpg')
    skipped = [(f'{name}/{f}', NOT_IN_CLASS) for f in stray]
    fnames: list[str] = []
    labels: list[str] = []
    for cls in found:
        imgs, skip = list_images(os.path.join(folder, cls), root=path)
        skipped += skip
        if not imgs:
            extra = f' (only non-image files: {[s for s, _ in skip][:3]})' if skip else ''
            raise LayoutError(
                f'class folder {name}/{cls}/ ({os.path.join(folder, cls)}) has no images{extra}; '
                f'add images (extensions {sorted(IMAGE_EXTENSIONS)[:6]}...) or remove the folder')
        fnames += imgs
        labels += [cls] * len(imgs)
    return found, fnames, labels, skipped


def unlabelled_split(path: str, name: str) -> tuple[SplitItems, list[tuple[str, str]]]:
    """The images of the unlabelled test folder `{path}/{name}` (any depth), and the files skipped."""
    folder = _require_dir(path, name, 'test', 'Create it, or pass test_name=None.')
    imgs, skipped = list_images(folder, root=path)
    if not imgs:
        raise LayoutError(f'test folder {folder!r} has no images; add some or pass test_name=None')
    return SplitItems(tuple(imgs), None), skipped


def folder_items(path: str, trn_name: str = 'train', val_name: str = 'valid',
                 test_name: str | None = None, test_with_labels: bool = False) -> Layout:
    """The layout of an ImageNet-style folder dataset (fastai's ``from_paths``).

    Args:
      path: dataset root holding `trn_name`, `val_name` (and `test_name`).
      trn_name, val_name: split folders, each with one subfolder per class.
      test_name: optional test folder; unlabelled (any images inside, at any
        depth) unless `test_with_labels`, then it has train's class folders
        (a subset of them is allowed).

    Raises:
      LayoutError: missing folders, no classes, an empty class, images directly
        in a split folder, or valid classes that differ from train's.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for s in ('train', 'valid'):
    ...     for c in ('dogs', 'cats'):
    ...         (d / s / c).mkdir(parents=True); (d / s / c / f'{c}1.jpg').touch()
    >>> lay = folder_items(str(d)); lay.classes, lay.train.fnames[0], lay.train.y.tolist()
    (['cats', 'dogs'], 'train/cats/cats1.jpg', [0, 1])
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise LayoutError(f'dataset folder {path!r} does not exist; pass the folder that '
                          f'holds {trn_name}/ and {val_name}/')
    layout_fix = (f'from_paths expects {path}/{trn_name}/<class>/<image> and '
                  f'{path}/{val_name}/<class>/<image>; pass trn_name=/val_name= if yours are '
                  f'named differently.')
    _require_dir(path, trn_name, 'train', layout_fix)
    _require_dir(path, val_name, 'valid', layout_fix)
    classes, trn_f, trn_l, skipped = _class_folder_split(path, trn_name)
    vclasses, val_f, val_l, vskip = _class_folder_split(path, val_name)
    skipped += vskip
    if vclasses != classes:
        extra = sorted(set(vclasses) - set(classes))
        missing = sorted(set(classes) - set(vclasses))
        parts = []
        if extra:
            parts.append(f'{val_name}/ has classes {extra} that {trn_name}/ lacks')
        if missing:
            parts.append(f'{trn_name}/ has classes {missing} that {val_name}/ lacks')
        raise LayoutError('; '.join(parts) + '. Both folders need the same class subfolders '
                          '(rename or add folders so the names match exactly).')
    index = {c: i for i, c in enumerate(classes)}
    trn = SplitItems(tuple(trn_f), np.array([index[c] for c in trn_l], np.int64))
    val = SplitItems(tuple(val_f), np.array([index[c] for c in val_l], np.int64))
    test = None
    if test_name is not None:
        if test_with_labels:
            _require_dir(path, test_name, 'test',
                         'Create it with class subfolders, or pass test_name=None.')
            tclasses, tst_f, tst_l, tskip = _class_folder_split(path, test_name)
            unknown = sorted(set(tclasses) - set(classes))
            if unknown:
                raise LayoutError(f'{test_name}/ has classes {unknown} that {trn_name}/ lacks; '
                                  f'a labelled test folder may only use train\'s classes {classes}')
            test = SplitItems(tuple(tst_f), np.array([index[c] for c in tst_l], np.int64))
        else:
            test, tskip = unlabelled_split(path, test_name)
        skipped += tskip
    check_classes(classes, False, f'{trn_name}/',
                  f'add a folder of images per class under {trn_name}/ and {val_name}/ (e.g. '
                  f'{trn_name}/other/ beside {trn_name}/{classes[0]}/ for "{classes[0]} or not")')
    return Layout(path, classes, False, trn, val, test, skipped)


def get_cv_idxs(n: int, cv_idx: int = 0, val_pct: float = 0.2, seed: int = 42) -> np.ndarray:
    """fastai 0.7's validation indices: a seeded permutation's `cv_idx`-th block of `int(val_pct*n)`.

    Same numbers as fastai's ``np.random.seed(42); np.random.permutation(n)``, but
    through a private ``RandomState(seed)``, so numpy's global RNG is left alone.

    >>> get_cv_idxs(10).tolist()
    [8, 1]
    """
    n_val = int(val_pct * n)
    start = cv_idx * n_val
    return np.random.RandomState(seed).permutation(n)[start:start + n_val]


def array_labels(trn_y, val_y, classes: Sequence | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list, bool]:
    """Checks and normalises label arrays: (trn_y, val_y, classes, is_multi).

    1-D integer labels are single-label class indices (int64); 2-D labels
    (N, c) are multi-hot targets (float32). `classes` defaults to
    ``['0', '1', ...]`` (as strings, for plot titles).

    >>> array_labels([0, 2, 1], [1], None)[2]
    ['0', '1', '2']
    """
    ys = [np.asarray(trn_y), np.asarray(val_y)]
    if ys[0].ndim != ys[1].ndim or ys[0].ndim not in (1, 2):
        raise LayoutError(f'labels must be 1-D class indices or 2-D multi-hot arrays, with the '
                          f'same rank for trn and val; got shapes {ys[0].shape} and {ys[1].shape}')
    is_multi = ys[0].ndim == 2
    if is_multi:
        if ys[0].shape[1] != ys[1].shape[1]:
            raise LayoutError(f'trn and val multi-hot labels have {ys[0].shape[1]} and '
                              f'{ys[1].shape[1]} columns; they must match')
        c = ys[0].shape[1]
        ys = [y.astype(np.float32) for y in ys]
    else:
        for y in ys:
            if y.size and (not np.issubdtype(y.dtype, np.integer) and not np.all(y == np.round(y))):
                raise LayoutError(f'1-D labels must be integer class indices; got {y.dtype} '
                                  f'values like {y[:3].tolist()}')
        ys = [y.astype(np.int64) for y in ys]
        lo = min(int(y.min()) for y in ys if y.size)
        if lo < 0:
            raise LayoutError(f'labels must be >= 0; got {lo}')
        c = max(int(y.max()) for y in ys if y.size) + 1
    if classes is None:
        classes = [str(i) for i in range(c)]
    else:
        classes = list(classes)
        if len(classes) < c:
            raise LayoutError(f'classes has {len(classes)} names but the labels need {c} '
                              f'(max label {c - 1}); pass one name per class')
    check_classes(classes, is_multi, 'the labels',
                  'pass labels of two classes or more (0 and 1 at least), or classes= naming '
                  'every class')
    return ys[0], ys[1], classes, is_multi
