"""`jaxcls clean`: find the files a model and their labels disagree on, and act on the decisions.

    jaxcls clean MODEL PATH [--out DIR]       rank train/ and valid/: clean.csv, clean.html
    jaxcls clean --apply clean.csv PATH       delete -> PATH/quarantine/, relabel:<class> -> moved
    jaxcls clean --undo MANIFEST              put the files of an apply back

The ranking is :func:`jaxcls.clean.ranking.rank` over the model's probabilities for every
training and validation image, computed with the model's own validation transform (as
`jaxcls predict`); the moves are :mod:`jaxcls.clean.moves` (nothing is deleted, nothing
overwritten, an undo manifest for each apply). A mistake is one `jaxcls: error:` line and
status 2, as for the other commands (jaxcls.commands).
"""
from __future__ import annotations

import argparse
import os

from jaxcls import commands as C
from jaxcls.commands import UserError

__all__ = ['clean', 'CSV_NAME', 'SHEET_NAME', 'THUMB_PX']

CSV_NAME, SHEET_NAME = 'clean.csv', 'clean.html'
# Side of the contact sheet's thumbnails: 500 JPEGs of 128 px are about 2.5 MB of page.
THUMB_PX = 128
USAGE = ('jaxcls clean MODEL PATH [--out DIR] | jaxcls clean --apply DECISIONS.csv PATH | '
         'jaxcls clean --undo MANIFEST')


def _positionals(args: argparse.Namespace) -> list[str]:
    """The positional arguments, checked against the mode (rank, --apply or --undo)."""
    got = list(args.paths)
    if args.apply and args.undo:
        raise UserError('--apply and --undo are two separate steps; give one of them')
    want, names = ((1, 'PATH (the dataset the CSV names files of)') if args.apply else
                   (0, 'nothing but the manifest') if args.undo else (2, 'MODEL and PATH'))
    if args.undo and len(got) == 1:
        return got                                     # --undo MANIFEST PATH: another root
    if len(got) != want:
        raise UserError(f'jaxcls clean takes {names} here, got {len(got)} argument(s) '
                        f'{got}; usage: {USAGE}')
    return got


def clean(args: argparse.Namespace) -> int:
    """jaxcls clean: rank, --apply or --undo (see the module docstring)."""
    paths = _positionals(args)
    if args.undo:
        return _undo(args, paths)
    if args.apply:
        return _apply(args, paths[0])
    return _rank(args, *paths)


def _probabilities(pred, x, bs: int, desc: str):
    """The model's probabilities for decoded images, in padded batches of bs (one compile),
    with a progress bar on stderr."""
    import numpy as np
    from tqdm.auto import tqdm
    from jaxcls.train.precompute import compute_features
    if not len(x):
        return np.zeros((0, len(pred.classes)))
    with tqdm(total=len(x), desc=desc, unit='img', leave=False) as bar:
        return compute_features(pred.predict_images, x, bs, progress=bar.update)


def _rank(args: argparse.Namespace, model: str, path: str) -> int:
    import io
    import numpy as np
    from jaxcls import ImageClassifierData, htmlpage
    from jaxcls.clean import ranking, sheet
    path = C._need_dir(path, 'dataset folder', 'pass the folder that holds train/ and valid/')
    out = C._out_dir(args, path)
    C._guard(args, path, out)
    pred = C._load_predictor(model)
    if pred.is_multi:
        raise UserError(f'{model} is a multi-label model; jaxcls clean ranks files by their '
                        'one label (a folder per class), so it needs a single-label model')
    with C._user_errors():
        data = ImageClassifierData.from_paths(path, bs=args.bs, cache_size=pred.cache_size)
    if list(data.classes) != list(pred.classes):
        raise UserError(f'{model} was trained on the classes {pred.classes} but {path} has '
                        f'{data.classes}; clean a dataset with the same class folders')
    splits = (data.trn_ds, data.val_ds)
    probs = np.concatenate([_probabilities(pred, ds.x, args.bs, f'predict {nm}')
                            for ds, nm in zip(splits, ('train', 'valid'))])
    labels = np.concatenate([np.asarray(ds.y, np.int64) for ds in splits])
    names = [f for ds in splits for f in ds.fnames]
    rows = ranking.rank(probs, labels, names, data.classes, skipped=data.skipped)
    os.makedirs(out, exist_ok=True)
    csv_path, sheet_path = os.path.join(out, CSV_NAME), os.path.join(out, SHEET_NAME)
    table = io.StringIO()
    ranking.write_csv(rows, table)
    htmlpage.write(csv_path, table.getvalue())
    where = {f: (ds, i) for ds in splits for i, f in enumerate(ds.fnames)}
    thumbs = {}
    for r in rows[:args.sheet]:
        if r.path in where:
            ds, i = where[r.path]
            thumbs[r.path] = htmlpage.image_bytes(ds.x[i], 'JPEG', max_side=THUMB_PX)
    then = f'jaxcls clean --apply {csv_path} {path}'
    how_to = (f'To act on what you see: fill the action column of {csv_path} with keep, '
              f'delete (the file moves to {os.path.join(path, "quarantine")}/) or '
              f'relabel:<class> (one of {", ".join(data.classes)}), then run: {then}')
    htmlpage.write(sheet_path, sheet.contact_sheet(rows, thumbs, title=f'jaxcls clean: {path}',
                                                   how_to=how_to, limit=args.sheet))
    n_wrong = sum(r.note == ranking.DISAGREES for r in rows)
    n_bad = sum(r.unreadable for r in rows)
    print(f'ranked {len(rows)} files of {path} (train {len(data.trn_ds)}, valid '
          f'{len(data.val_ds)}, unreadable {n_bad}): {n_wrong} disagree with their label')
    print(ranking.format_table(rows, 10))
    print(f'csv:   {csv_path}  (fill its action column: keep, delete or relabel:<class>)')
    print(f'sheet: {sheet_path}  ({min(len(rows), args.sheet)} files, most suspicious first)')
    print(f'then:  {then}')
    return 0


def _apply(args: argparse.Namespace, path: str) -> int:
    from jaxcls.clean import moves
    path = C._need_dir(path, 'dataset folder', 'pass the dataset folder the CSV names files of')
    if not os.path.isfile(args.apply):
        raise UserError(f'--apply {args.apply!r} is not a file; pass the CSV jaxcls clean wrote, '
                        'with its action column filled')
    quarantine = os.path.join(path, moves.QUARANTINE)
    guard = C._guard(args, path, quarantine)
    guard.message = lambda: (f'the files moved so far are listed in the newest undo-*.json in '
                             f'{quarantine}; jaxcls clean --undo FILE puts them back')
    try:
        done = moves.apply_decisions(args.apply, path)
    except moves.DecisionError as e:
        raise UserError(str(e)) from e
    print(f'{done.deleted} file(s) moved to {quarantine}, {done.relabelled} relabelled, '
          f'{len(done.unchanged)} row(s) left as they are')
    for m in done.moves[:20]:
        print(f'  {m.src} -> {m.dst}')
    if len(done.moves) > 20:
        print(f'  ... and {len(done.moves) - 20} more (all in the manifest)')
    if done.manifest:
        print(f'undo:  jaxcls clean --undo {done.manifest}')
    return 0


def _undo(args: argparse.Namespace, paths: list[str]) -> int:
    import sys
    from jaxcls.clean import moves
    root = C._need_dir(paths[0], 'dataset folder', 'pass the dataset the manifest moved '
                       'files in') if paths else None
    try:
        back, notes = moves.undo(args.undo, root)
    except moves.DecisionError as e:
        raise UserError(str(e)) from e
    for n in notes:
        print(f'jaxcls: {n}', file=sys.stderr)
    print(f'{len(back)} file(s) moved back; {args.undo} is marked undone')
    return 0
