"""The data cleaner without a model: the ranking against hand-computed losses, the CSV, the
contact sheet parsed as HTML, and `jaxcls clean --apply / --undo` on a folder of files
(quarantine, relabel, collisions, refusals naming the row, the undo manifest)."""
import base64
import contextlib
import csv
import doctest
import io
import json
import math
import os

import numpy as np
import pytest

from jaxcls import htmlpage
from jaxcls.clean import DecisionError, apply_decisions, moves, ranking, sheet, undo
from jaxcls.cli import main

from helpers import HtmlPage

CLASSES = ['cats', 'dogs']
PATHS = ['train/cats/a.png', 'train/cats/b.png', 'train/dogs/c.png', 'valid/dogs/d.png',
         'valid/cats/e.png', 'train/dogs/f.png']
LABELS = np.array([0, 0, 1, 1, 0, 1])
PROBS = np.array([[0.90, 0.10],    # right, loss -log .9
                  [0.20, 0.80],    # wrong, loss -log .2 = 1.609
                  [0.60, 0.40],    # wrong, loss -log .4 = 0.916
                  [0.30, 0.70],    # right, loss -log .7 = 0.357
                  [0.01, 0.99],    # wrong, loss -log .01 = 4.605
                  [0.30, 0.70]])   # right, ties with d: input order kept
SKIPPED = [('train/cats/broken.jpg', 'truncated  file'), ('train/notes.txt', 'not inside a class folder')]


def test_rank_puts_disagreements_first_then_unreadable_then_the_rest():
    rows = ranking.rank(PROBS, LABELS, PATHS, CLASSES, skipped=SKIPPED)
    assert [r.path for r in rows] == [
        'valid/cats/e.png', 'train/cats/b.png', 'train/dogs/c.png',     # wrong, by loss
        'train/cats/broken.jpg', 'train/notes.txt',                      # unreadable, as given
        'valid/dogs/d.png', 'train/dogs/f.png', 'train/cats/a.png']      # right, by loss
    e = rows[0]
    assert (e.split, e.label, e.predicted, e.note) == ('valid', 'cats', 'dogs', 'label != predicted')
    assert e.probability == pytest.approx(0.99) and e.loss == pytest.approx(-math.log(0.01))
    assert rows[1].loss == pytest.approx(-math.log(0.2)) and rows[1].probability == 0.8
    assert rows[-1].loss == pytest.approx(-math.log(0.9)) and rows[-1].note == ''
    broken, stray = rows[3], rows[4]
    assert (broken.split, broken.label, broken.predicted) == ('train', 'cats', '')
    assert broken.note == 'unreadable: truncated file' and broken.unreadable
    assert math.isnan(broken.loss) and math.isnan(broken.probability)
    assert (stray.split, stray.label) == ('train', '')          # not in a class folder
    # splits given explicitly win over the paths' first folder
    named = ranking.rank(PROBS, LABELS, PATHS, CLASSES, splits=['x'] * 6)
    assert {r.split for r in named} == {'x'}
    # an exact 0 for the label is a finite, huge loss (as ClassificationInterpretation)
    zero = ranking.rank(np.array([[0.0, 1.0]]), [0], ['train/cats/z.png'], CLASSES)
    assert zero[0].loss == pytest.approx(708.4, abs=0.1)


@pytest.mark.parametrize('probs, labels, match', [
    (PROBS[:5], LABELS, r'probs must be \(N, c\) = \(6, 2\)'),
    (np.log(PROBS), LABELS, 'convert log-probabilities'),
    (PROBS, np.eye(2)[LABELS], 'multi-label data has no one label'),
    (PROBS, LABELS + 1, "class index 2, outside 0..1 for the classes \\['cats', 'dogs'\\]"),
])
def test_rank_refuses_what_it_cannot_rank(probs, labels, match):
    with pytest.raises(ValueError, match=match):
        ranking.rank(probs, labels, PATHS, CLASSES)


def test_csv_table_and_doctests():
    rows = ranking.rank(PROBS, LABELS, PATHS, CLASSES, skipped=SKIPPED[:1])
    f = io.StringIO()
    assert ranking.write_csv(rows, f, {'train/cats/b.png': 'relabel:dogs'}) == 7
    back = list(csv.DictReader(io.StringIO(f.getvalue())))
    assert list(back[0]) == list(ranking.COLUMNS)
    assert [r['path'] for r in back] == [r.path for r in rows]
    assert back[1]['action'] == 'relabel:dogs' and back[0]['action'] == ''
    assert float(back[0]['loss']) == pytest.approx(rows[0].loss, rel=1e-5)
    assert back[3]['loss'] == back[3]['probability'] == ''          # the unreadable file
    text = ranking.format_table(rows, 2).splitlines()
    assert text[1].split()[:4] == ['0', 'valid/cats/e.png', 'cats', 'dogs']
    assert text[-1] == '... 5 more' and len(text) == 4
    for mod in (ranking, sheet, htmlpage):
        assert doctest.testmod(mod).failed == 0, mod.__name__


def test_contact_sheet_is_self_contained():
    rows = ranking.rank(PROBS, LABELS, PATHS, CLASSES, skipped=SKIPPED[:1])
    rng = np.random.default_rng(0)
    thumbs = {p: htmlpage.image_bytes(rng.integers(0, 255, (40, 40, 3), np.uint8), 'JPEG', 16)
              for p in PATHS}
    html = sheet.contact_sheet(rows, thumbs, title='pets <1>', how_to='fill the action column',
                               limit=5)
    page = HtmlPage(html)
    assert page.sections == ['files'] and not page.external
    assert len(page.cards) == 5                       # the first 5 of 7 rows
    assert [c['id'] for c in page.cards] == [f'r{i}' for i in range(5)]
    assert page.cards[3]['class'].split() == ['card', 'bad']        # the unreadable one
    assert page.cards[0]['class'].split() == ['card', 'disagrees']
    assert len(page.imgs) == 4                        # no thumbnail for the unreadable file
    from PIL import Image
    for src in page.imgs:
        head, data = src.split(',', 1)
        assert head == 'data:image/jpeg;base64'
        assert Image.open(io.BytesIO(base64.b64decode(data))).size == (16, 16)
    assert 'pets &lt;1&gt;' in html and 'The first 5 are shown; the CSV has all.' in html
    assert 'unreadable: truncated file' in html


# ----------------------------------------------------------------------------- apply / undo

def _dataset(root):
    """A folder dataset of small distinct files (no decoding happens here)."""
    for split in ('train', 'valid'):
        for cls in CLASSES:
            os.makedirs(root / split / cls)
            for i in range(2):
                (root / split / cls / f'{i}.png').write_bytes(f'{split}/{cls}/{i}'.encode())
    return root


def _tree(root):
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), 'rb').read()
            for d, _, fs in os.walk(root) for f in fs if not f.startswith('undo-')}


def _csv(path, rows):
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['path', 'label', 'action'])
        w.writerows(rows)
    return str(path)


def test_apply_moves_never_deletes_or_overwrites_and_undo_restores(tmp_path):
    root = _dataset(tmp_path / 'pets')
    before = _tree(root)
    decisions = _csv(tmp_path / 'd.csv', [
        ['train/cats/0.png', 'cats', 'relabel:dogs'],     # dogs/0.png is taken: 0~1.png
        ['train/cats/1.png', 'cats', 'delete'],
        ['valid/dogs/0.png', 'dogs', ' Delete '],         # case and spaces forgiven
        [str(root / 'valid' / 'cats' / '1.png'), 'cats', 'relabel: dogs'],   # absolute, inside
        ['train/dogs/1.png', 'dogs', 'relabel:dogs'],     # already its class: nothing to do
        ['train/dogs/0.png', 'dogs', 'keep'],
        ['valid/cats/0.png', 'cats', ''],
    ])
    done = apply_decisions(decisions, str(root))
    assert (done.deleted, done.relabelled, len(done.unchanged)) == (2, 2, 3)
    after = _tree(root)
    assert after['train/dogs/0~1.png'] == b'train/cats/0'       # renamed, not overwritten
    assert after['train/dogs/0.png'] == b'train/dogs/0'
    assert after['quarantine/train/cats/1.png'] == b'train/cats/1'
    assert after['quarantine/valid/dogs/0.png'] == b'valid/dogs/0'
    assert after['valid/dogs/1~1.png'] == b'valid/cats/1'
    assert sorted(after.values()) == sorted(before.values())   # every byte is still there
    man = json.load(open(done.manifest))
    assert os.path.dirname(done.manifest) == str(root / 'quarantine')
    assert man['state'] == 'applied' and man['root'] == str(root.resolve())
    assert [(m['from'], m['to'], m['line']) for m in man['moves']] == [
        ('train/cats/0.png', 'train/dogs/0~1.png', 2), ('train/cats/1.png',
         'quarantine/train/cats/1.png', 3), ('valid/dogs/0.png', 'quarantine/valid/dogs/0.png', 4),
        ('valid/cats/1.png', 'valid/dogs/1~1.png', 5)]
    # quarantining the same name again keeps both copies
    (root / 'train' / 'cats' / '1.png').write_bytes(b'second')
    again = apply_decisions(_csv(tmp_path / 'e.csv', [['train/cats/1.png', '', 'delete']]), str(root))
    assert again.moves[0].dst == 'quarantine/train/cats/1~1.png' and again.manifest != done.manifest
    back, notes = undo(done.manifest)
    assert len(back) == 4 and notes == []
    restored = _tree(root)
    assert {k: v for k, v in restored.items() if not k.startswith('quarantine')} == before
    assert restored['quarantine/train/cats/1~1.png'] == b'second'
    with pytest.raises(DecisionError, match='was undone already'):
        undo(done.manifest)
    # the second file's old place is taken again: its undo is refused, nothing moves
    with pytest.raises(DecisionError, match='train/cats/1.png exists again'):
        undo(again.manifest)
    assert _tree(root) == restored


def test_undo_refuses_to_overwrite_and_skips_what_never_moved(tmp_path):
    root = _dataset(tmp_path / 'pets')
    done = apply_decisions(_csv(tmp_path / 'd.csv', [['train/cats/0.png', '', 'delete'],
                                                     ['train/cats/1.png', '', 'delete']]), str(root))
    (root / 'train' / 'cats' / '0.png').write_bytes(b'new')
    with pytest.raises(DecisionError, match=r'nothing was undone: train/cats/0.png exists again'):
        undo(done.manifest)
    assert (root / 'quarantine' / 'train' / 'cats' / '1.png').exists()   # nothing moved
    os.remove(root / 'train' / 'cats' / '0.png')
    # an apply cut short: its manifest lists a move that never happened
    man = json.load(open(done.manifest))
    os.rename(root / 'quarantine' / 'train' / 'cats' / '1.png', root / 'train' / 'cats' / '1.png')
    back, notes = undo(done.manifest)
    assert [m.src for m in back] == ['train/cats/0.png'] and len(man['moves']) == 2
    assert notes == ['train/cats/1.png was not moved (the apply stopped before it); left as it is']


def _refusals(root, outside):
    return {
        'absolute path elsewhere': ([str(outside)], 'delete', 'is outside the dataset'),
        'a ../ path': (['../secret.png'], 'delete', "path '../secret.png' is outside the dataset"),
        'a link out of the dataset': (['train/cats/out/y.png'], 'delete', 'is outside the dataset'),
        'an unknown class': (['train/cats/0.png'], 'relabel:foxes',
                             r"as 'foxes': train/ has the classes \['cats', 'dogs'\]"),
        'an unknown action': (['train/cats/0.png'], 'remove', "unknown action 'remove'"),
        'a missing file': (['train/cats/9.png'], 'delete', "'train/cats/9.png' is not a file"),
        'a file given twice': (['train/cats/0.png', 'train/cats/0.png'], 'delete',
                               'already has a decision on line 3'),
        'a quarantined file': (['quarantine/x.png'], 'delete', 'is already in quarantine/'),
    }


@pytest.mark.parametrize('case', list(_refusals('R', 'O')))
def test_apply_refuses_a_bad_row_naming_it_and_moves_nothing(case, tmp_path):
    root = _dataset(tmp_path / 'pets')
    outside = tmp_path / 'secret.png'
    outside.write_bytes(b'not yours')
    (root / 'quarantine').mkdir()
    (root / 'quarantine' / 'x.png').write_bytes(b'q')
    (tmp_path / 'elsewhere').mkdir()
    (tmp_path / 'elsewhere' / 'y.png').write_bytes(b'y')
    os.symlink(tmp_path / 'elsewhere', root / 'train' / 'cats' / 'out')
    paths, action, match = _refusals(root, outside)[case]
    rows = [['valid/cats/0.png', '', 'delete']] + [[p, '', action] for p in paths]
    decisions = _csv(tmp_path / 'd.csv', rows)
    before = _tree(tmp_path)
    with pytest.raises(DecisionError, match=match) as e:
        apply_decisions(decisions, str(root))
    assert f'd.csv line {len(rows) + 1}' in str(e.value)
    assert _tree(tmp_path) == before
    # the command says the same in one line, status 2
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(['clean', '--apply', decisions, str(root)])
    assert rc == 2 and err.getvalue().startswith('jaxcls: error: d.csv line')
    assert err.getvalue().count('\n') == 1 and _tree(tmp_path) == before


def test_the_command_applies_and_undoes(tmp_path):
    root = _dataset(tmp_path / 'pets')
    before = _tree(root)
    decisions = _csv(tmp_path / 'd.csv', [['train/cats/0.png', '', 'relabel:dogs'],
                                          ['valid/dogs/1.png', '', 'delete']])

    def run(*argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main([str(a) for a in argv])
        return rc, out.getvalue(), err.getvalue()

    rc, out, err = run('clean', '--apply', decisions, root)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f'1 file(s) moved to {root / "quarantine"}, 1 relabelled, 0 row(s) left as they are'
    assert lines[1:3] == ['  train/cats/0.png -> train/dogs/0~1.png',
                          '  valid/dogs/1.png -> quarantine/valid/dogs/1.png']
    manifest = lines[3].split('jaxcls clean --undo ')[1]
    assert os.path.isfile(manifest)
    rc, out, err = run('clean', '--undo', manifest)
    assert rc == 0 and out.startswith('2 file(s) moved back'), err
    assert _tree(root) == before
    for argv, said in [(['clean', root], 'takes MODEL and PATH here, got 1'),
                       (['clean', '--apply', decisions], 'takes PATH (the dataset'),
                       (['clean', '--apply', decisions, '--undo', manifest, root], 'two separate'),
                       (['clean', '--apply', tmp_path / 'none.csv', root], 'is not a file'),
                       (['clean', '--undo', decisions], 'cannot read the undo manifest'),
                       (['clean', '--undo', manifest], 'was undone already')]:
        rc, out, err = run(*argv)
        assert rc == 2 and said in err and err.count('\n') == 1, (argv, err)
    with open(tmp_path / 'latin1.csv', 'wb') as f:
        f.write(b'path,action\ntrain/cats/\xe9.png,delete\n')
    with pytest.raises(DecisionError, match='is not UTF-8 text'):
        apply_decisions(str(tmp_path / 'latin1.csv'), str(root))
    (tmp_path / 'cols.csv').write_text('path,todo\na,b\n')
    with pytest.raises(DecisionError, match=r"has the columns \['path', 'todo'\]"):
        moves.read_decisions(str(tmp_path / 'cols.csv'))
