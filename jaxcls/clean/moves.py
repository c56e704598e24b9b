"""Acting on cleaning decisions without losing anything: files marked `delete` move to
``PATH/quarantine/`` (keeping their relative path), files marked `relabel:<class>` move into
that class's folder of their split, and every move is written to an undo manifest first.
Nothing is ever deleted and nothing is overwritten: a name that is taken gets a ``~1``
(``~2``, ...) before its extension.

Every row is checked before the first file moves: a path outside the dataset (absolute
elsewhere, or ``../``), a missing file, an unknown action or class, or a path given twice is
refused with its line of the CSV. The decode cache and the precompute cache need no telling:
the decode manifest is keyed by the files' names, sizes and mtimes, so the next
``from_paths`` sees the moved files and decodes again, and a new decode fingerprint keys new
precomputed activations.

    >>> result = apply_decisions('clean.csv', 'data/pets')          # doctest: +SKIP
    >>> undo('data/pets/quarantine/undo-20261203-141500.json')       # doctest: +SKIP
"""
from __future__ import annotations

import csv
import datetime
import json
import os
from dataclasses import dataclass, field
from typing import Iterable, Optional

from jaxcls.atomic_file import replaced

__all__ = ['QUARANTINE', 'DecisionError', 'Move', 'Applied', 'read_decisions', 'plan_moves',
           'apply_moves', 'apply_decisions', 'undo']

QUARANTINE = 'quarantine'
MANIFEST_FORMAT = 'jaxcls-clean-undo'
ACTIONS = "'keep' (or empty), 'delete', or 'relabel:<class>'"


class DecisionError(ValueError):
    """A decisions CSV or undo manifest that cannot be acted on; the message names the row."""


@dataclass(frozen=True)
class Move:
    """One file move, paths relative to the dataset root ('/'-separated)."""

    src: str
    dst: str
    action: str
    line: int


@dataclass
class Applied:
    """What an apply did: the moves, the undo manifest, and the rows that asked for nothing
    (keep, or a relabel to the class the file already has)."""

    moves: list[Move]
    manifest: Optional[str]
    unchanged: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def deleted(self) -> int:
        return sum(m.action == 'delete' for m in self.moves)

    @property
    def relabelled(self) -> int:
        return len(self.moves) - self.deleted


def read_decisions(csv_path: str) -> list[tuple[int, str, str]]:
    """(line, path, action) of every row of a decisions CSV: the CSV `jaxcls clean` wrote
    with its `action` column filled (any other columns are ignored)."""
    try:
        with open(csv_path, newline='', encoding='utf-8-sig') as f:
            reader = csv.DictReader(f)
            cols = [c.strip() for c in reader.fieldnames or []]
            if 'path' not in cols or 'action' not in cols:
                raise DecisionError(f'{csv_path} has the columns {cols}; a decisions CSV needs '
                                    "'path' and 'action' (the CSV jaxcls clean writes, with "
                                    f'its action column filled with {ACTIONS})')
            reader.fieldnames = cols
            return [(reader.line_num, (r.get('path') or '').strip(),
                     ' '.join((r.get('action') or '').split())) for r in reader]
    except UnicodeDecodeError as e:
        raise DecisionError(f'{csv_path} is not UTF-8 text ({e}); save it as UTF-8 CSV') from e


def _inside(root: str, path: str, where: str) -> str:
    """`path` (relative to root, or absolute) as a '/'-separated path relative to root;
    DecisionError when it points outside root."""
    full = os.path.normpath(path if os.path.isabs(path) else os.path.join(root, path))
    # Links in the folders above the file are resolved; the file itself moves as it is.
    full = os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full))
    if os.path.commonpath([root, full]) != root or full == root:
        raise DecisionError(f'{where}: path {path!r} is outside the dataset {root}; only files '
                            'inside it can be quarantined or relabelled')
    return os.path.relpath(full, root).replace(os.sep, '/')


def _free(root: str, rel: str, taken: set) -> str:
    """`rel`, or rel with '~1', '~2', ... before the extension, whichever is not taken on
    disk or by another move of this plan."""
    stem, ext = os.path.splitext(rel)
    cand, i = rel, 0
    while cand in taken or os.path.lexists(os.path.join(root, cand)):
        i += 1
        cand = f'{stem}~{i}{ext}'
    taken.add(cand)
    return cand


def _classes(root: str, split: str) -> list[str]:
    folder = os.path.join(root, split)
    return sorted(n for n in os.listdir(folder)
                  if not n.startswith('.') and os.path.isdir(os.path.join(folder, n)))


def plan_moves(root: str, decisions: Iterable[tuple[int, str, str]], where: str = 'decisions',
               unit: str = 'line') -> tuple[list[Move], list[tuple[int, str, str]]]:
    """(moves, unchanged rows) for the decisions (line, path, action) on the dataset `root`,
    every row checked first (DecisionError naming `where` and the `unit` (line) of the
    row); nothing moves."""
    root = os.path.realpath(root)
    moves, unchanged, seen, taken = [], [], {}, set()
    for line, path, action in decisions:
        at = f'{where} {unit} {line}'
        verb, _, arg = action.partition(':')
        verb, arg = verb.strip().lower(), arg.strip()
        if verb in ('', 'keep'):
            unchanged.append((line, path, action))
            continue
        if verb not in ('delete', 'relabel') or (verb == 'delete' and arg) or \
                (verb == 'relabel' and not arg):
            raise DecisionError(f'{at}: unknown action {action!r} for {path!r}; use {ACTIONS}')
        if not path:
            raise DecisionError(f'{at}: the path is empty; give the file (as jaxcls clean wrote it)')
        rel = _inside(root, path, at)
        parts = rel.split('/')
        if parts[0] == QUARANTINE:
            raise DecisionError(f'{at}: {rel!r} is already in {QUARANTINE}/; to bring it back, '
                                'use jaxcls clean --undo with the manifest that moved it')
        if rel in seen:
            raise DecisionError(f'{at}: {rel!r} already has a decision on {unit} {seen[rel]}; '
                                'keep one row per file')
        seen[rel] = line
        if not os.path.isfile(os.path.join(root, rel)):
            raise DecisionError(f'{at}: {rel!r} is not a file in {root} (moved already? an '
                                'apply writes an undo manifest into quarantine/)')
        if verb == 'delete':
            moves.append(Move(rel, _free(root, f'{QUARANTINE}/{rel}', taken), 'delete', line))
            continue
        if len(parts) < 2:
            raise DecisionError(f'{at}: {rel!r} is not inside a split folder (train/, valid/); '
                                'only files in one can be relabelled')
        classes = _classes(root, parts[0])
        if arg not in classes:
            raise DecisionError(f'{at}: cannot relabel {rel!r} as {arg!r}: {parts[0]}/ has the '
                                f'classes {classes}; use one of them (relabel:{classes[0] if classes else "<class>"})')
        rest = parts[2:] if len(parts) > 2 and parts[1] in classes else parts[1:]
        if len(parts) > 2 and parts[1] == arg:
            unchanged.append((line, path, action))       # it has that label already
            continue
        moves.append(Move(rel, _free(root, '/'.join([parts[0], arg, *rest]), taken),
                          f'relabel:{arg}', line))
    return moves, unchanged


def _write_json(fname: str, obj: dict) -> None:
    with replaced(fname, encoding='utf-8') as f:
        json.dump(obj, f, indent=1)
        f.write('\n')


def _manifest_name(root: str) -> str:
    folder = os.path.join(root, QUARANTINE)
    os.makedirs(folder, exist_ok=True)
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    for i in range(1000):
        name = os.path.join(folder, f'undo-{stamp}{"" if i == 0 else f"-{i}"}.json')
        try:
            with open(name, 'x', encoding='utf-8'):   # claimed: another apply gets another name
                return name
        except FileExistsError:
            continue
    raise DecisionError(f'{folder} has 1000 undo manifests from {stamp}; move some away')


def _move(root: str, m_from: str, m_to: str) -> None:
    src, dst = os.path.join(root, m_from), os.path.join(root, m_to)
    if os.path.lexists(dst):                            # never overwrite (checked again here:
        raise FileExistsError(f'{dst} exists; nothing was overwritten')   # it may have appeared)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.rename(src, dst)


def apply_moves(root: str, moves: list[Move], source: str = '') -> Optional[str]:
    """Write the undo manifest (every planned move, before the first one), move the files,
    mark the manifest complete; returns its path (None when there is nothing to move)."""
    if not moves:
        return None
    root = os.path.realpath(root)
    name = _manifest_name(root)
    doc = {'format': MANIFEST_FORMAT, 'version': 1, 'root': root, 'decisions': source,
           'created': datetime.datetime.now().isoformat(timespec='seconds'), 'state': 'applying',
           'moves': [{'from': m.src, 'to': m.dst, 'action': m.action, 'line': m.line}
                     for m in moves]}
    _write_json(name, doc)
    for k, m in enumerate(moves):
        try:
            _move(root, m.src, m.dst)
        except OSError as e:
            raise DecisionError(f'moving {m.src} to {m.dst} failed ({e}); {k} of {len(moves)} '
                                f'files were moved: jaxcls clean --undo {name} puts them back') from e
    doc['state'] = 'applied'
    _write_json(name, doc)
    return name


def apply_decisions(csv_path: str, root: str) -> Applied:
    """`jaxcls clean --apply CSV PATH`: read, check every row, then move (see the module)."""
    rows = read_decisions(csv_path)
    moves, unchanged = plan_moves(root, rows, where=os.path.basename(csv_path))
    return Applied(moves, apply_moves(root, moves, os.path.abspath(csv_path)), unchanged)


def undo(manifest: str, root: Optional[str] = None) -> tuple[list[Move], list[str]]:
    """Move the files of an apply back: (moves undone, notes on moves that had not happened).

    Refused before anything moves when a file's old place is taken again (nothing is
    overwritten) or when a moved file is missing, naming them; a manifest undone once is
    refused the second time.
    """
    try:
        with open(manifest, encoding='utf-8') as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise DecisionError(f'cannot read the undo manifest {manifest!r} ({e}); pass the '
                            f'undo-*.json that jaxcls clean --apply wrote into {QUARANTINE}/') from e
    if not isinstance(doc, dict) or doc.get('format') != MANIFEST_FORMAT:
        raise DecisionError(f'{manifest!r} is not an undo manifest of jaxcls clean --apply')
    if doc.get('state') == 'undone':
        raise DecisionError(f'{manifest} was undone already (at {doc.get("undone")}); its '
                            'files are back where they were')
    root = os.path.realpath(root or doc['root'])
    todo, notes, problems = [], [], []
    for i, m in enumerate(doc.get('moves', [])):
        where = f'{manifest} move {i}'
        src, dst = _inside(root, m['from'], where), _inside(root, m['to'], where)
        at_src = os.path.lexists(os.path.join(root, src))
        at_dst = os.path.lexists(os.path.join(root, dst))
        if at_dst and not at_src:
            todo.append(Move(src, dst, m.get('action', ''), int(m.get('line', 0))))
        elif at_src and not at_dst:
            notes.append(f'{src} was not moved (the apply stopped before it); left as it is')
        elif at_src:
            problems.append(f'{src} exists again, so {dst} cannot go back without overwriting it')
        else:
            problems.append(f'{dst} (moved from {src}) is missing')
    if problems:
        raise DecisionError(f'nothing was undone: {"; ".join(problems)}. Move those files out '
                            'of the way (or back) and run the undo again')
    for m in reversed(todo):
        _move(root, m.dst, m.src)
    doc['state'], doc['undone'] = 'undone', datetime.datetime.now().isoformat(timespec='seconds')
    _write_json(manifest, doc)
    return todo, notes
