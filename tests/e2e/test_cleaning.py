"""The data cleaner with a model: a tiny model trained on a clean folder ranks the files of a
copy with two planted mislabels and a broken file (`jaxcls clean`), the decisions are applied
and undone and the decode and precompute caches notice, and `ImageClassifierCleaner(learn)`
gives the same ranking in Python.
"""
import contextlib
import csv
import io
import os
import shutil

import numpy as np
import pytest

from jaxcls import ImageClassifierData, tfms_from_model
from jaxcls.cli import main
from jaxcls.train.inference import Predictor

from helpers import SZ, TINY, HtmlPage, learner, make_folder

PLANTED = {'train/dogs/cats.0.png': 'cats', 'valid/cats/dogs.1.png': 'dogs'}  # path: true class
BROKEN = 'train/cats/broken.png'


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def _data(path):
    return ImageClassifierData.from_paths(path, bs=10, tfms=tfms_from_model(TINY, SZ), quiet=True)


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    """A tiny model trained (head, 5 epochs) on a clean folder: 24 + 12 images per class."""
    learn = learner(_data(make_folder(tmp_path_factory.mktemp('clean') / 'pets')), precompute=True)
    learn.fit(0.05, 5)
    assert learn.history[-1]['accuracy'] == 1.0
    return learn.save('tiny')


@pytest.fixture(scope='module')
def dirty(model, tmp_path_factory):
    """A copy of the dataset with a cat filed as a dog (train), a dog filed as a cat (valid)
    and a file that is no image."""
    root = str(tmp_path_factory.mktemp('dirty') / 'pets')
    shutil.copytree(os.path.dirname(os.path.dirname(model)), root,
                    ignore=shutil.ignore_patterns('tmp', 'models'))
    for wrong, true in PLANTED.items():
        split, _, name = wrong.split('/')
        os.rename(os.path.join(root, split, true, name), os.path.join(root, wrong))
    with open(os.path.join(root, BROKEN), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n and nothing after')
    return root


@pytest.fixture(scope='module')
def cleaned(model, dirty, tmp_path_factory):
    out = tmp_path_factory.mktemp('clean-out')
    rc, stdout, stderr = run(['clean', model, dirty, '--out', out, '--bs', 10])
    assert rc == 0, stderr
    return {'out': out, 'stdout': stdout, 'rows': list(csv.DictReader(open(out / 'clean.csv')))}


def test_clean_ranks_the_planted_mistakes_first(cleaned, model, dirty):
    rows = cleaned['rows']
    assert len(rows) == 48 + 24 + 1
    assert {r['path'] for r in rows[:2]} == set(PLANTED)
    for r in rows[:2]:
        assert (r['predicted'], r['note'], r['action']) == (PLANTED[r['path']], 'label != predicted', '')
        assert float(r['loss']) > 5 and float(r['probability']) > 0.99
    wrong = [r for r in rows if r['note'] == 'label != predicted']
    assert rows[:len(wrong)] == wrong                        # disagreements first
    bad = rows[len(wrong)]
    assert (bad['path'], bad['label'], bad['predicted'], bad['loss']) == (BROKEN, 'cats', '', '')
    assert bad['note'].startswith('unreadable: not an image Pillow can read')
    for group in (wrong, rows[len(wrong) + 1:]):             # each by loss, highest first
        losses = [float(r['loss']) for r in group]
        assert losses == sorted(losses, reverse=True)
    # the probabilities are the model's, with its validation transform (as jaxcls predict)
    top = rows[:3] + rows[-2:]
    probs, kept, _ = Predictor.load(model).predict_files([os.path.join(dirty, r['path'])
                                                          for r in top if r != bad])
    classes = ['cats', 'dogs']
    for r, p in zip([r for r in top if r != bad], probs):
        assert float(r['probability']) == pytest.approx(p[classes.index(r['predicted'])], rel=1e-4)
        assert float(r['loss']) == pytest.approx(-np.log(p[classes.index(r['label'])]), rel=1e-3)
    page = HtmlPage(open(cleaned['out'] / 'clean.html').read())
    assert page.sections == ['files'] and len(page.cards) == 73 and not page.external
    assert len(page.imgs) == 72 and all(s.startswith('data:image/jpeg;base64,') for s in page.imgs)
    said = cleaned['stdout'].splitlines()
    assert said[0].startswith(f'ranked 73 files of {dirty} (train 48, valid 24, unreadable 1): '
                              f'{len(wrong)} disagree')
    assert said[-1] == f"then:  jaxcls clean --apply {cleaned['out'] / 'clean.csv'} {dirty}"


def test_apply_is_seen_by_the_decode_and_precompute_caches(cleaned, dirty, tmp_path):
    work = str(tmp_path / 'pets')
    shutil.copytree(dirty, work)
    before = _data(work)
    assert np.bincount(before.trn_y).tolist() == [23, 25] and len(before.skipped) == 1
    learner(before, precompute=True)
    pre = os.path.join(work, 'tmp', 'precompute')
    cached = set(os.listdir(pre))
    assert len(cached) == 2                                   # train and valid features
    rows = [dict(r) for r in cleaned['rows']]
    for r in rows:
        r['action'] = {**{p: f'relabel:{c}' for p, c in PLANTED.items()}, BROKEN: 'delete'}.get(
            r['path'], 'keep')
    decisions = tmp_path / 'decisions.csv'
    with open(decisions, 'w', newline='') as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows + [{**rows[-1], 'path': '../../pets/train/cats/cats.1.png',
                             'action': 'delete'}])
    rc, out, err = run(['clean', '--apply', decisions, work])   # the last row leaves the dataset
    assert rc == 2 and f'decisions.csv line {len(rows) + 2}: path ' in err and 'outside' in err
    assert _data(work).trn_ds.from_cache                      # nothing moved
    with open(decisions, 'w', newline='') as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    rc, out, err = run(['clean', '--apply', decisions, work])
    assert rc == 0, err
    assert out.startswith(f"1 file(s) moved to {os.path.join(work, 'quarantine')}, 2 relabelled")
    after = _data(work)
    assert np.bincount(after.trn_y).tolist() == [24, 24] and np.bincount(after.val_y).tolist() == [12, 12]
    assert after.skipped == [] and not after.trn_ds.from_cache and not after.val_ds.from_cache
    assert after.trn_ds.fingerprint != before.trn_ds.fingerprint
    assert os.path.isfile(os.path.join(work, 'quarantine', BROKEN))
    learn = learner(after, precompute=True)                   # features for the new layout
    assert len(set(os.listdir(pre)) - cached) == 2
    assert learn._features['train'].shape[0] == 48
    manifest = out.split('jaxcls clean --undo ')[1].strip()
    rc, out, err = run(['clean', '--undo', manifest])
    assert rc == 0, err
    again = _data(work)                                        # the first cache serves again
    assert again.trn_ds.from_cache and again.trn_ds.fingerprint == before.trn_ds.fingerprint
    assert np.bincount(again.trn_y).tolist() == [23, 25] and len(again.skipped) == 1


def test_image_classifier_cleaner_gives_the_same_ranking(cleaned, model, dirty, tmp_path, capsys):
    from jaxcls import ImageClassifierCleaner
    from jaxcls.clean import undo
    work = str(tmp_path / 'pets')
    shutil.copytree(dirty, work)
    learn = learner(_data(work), precompute=True)
    learn.load(os.path.relpath(model, os.path.join(work, 'models')))
    cleaner = ImageClassifierCleaner(learn)
    rows = cleaned['rows']
    assert [r.path for r in cleaner.rows[:10]] == [r['path'] for r in rows[:10]]
    assert sorted(r.path for r in cleaner.rows) == sorted(r['path'] for r in rows)
    by_path = {r['path']: r for r in rows}
    for r in cleaner.rows:
        if not r.unreadable:
            assert r.probability == pytest.approx(float(by_path[r.path]['probability']), abs=1e-4)
    assert cleaner.table(3).splitlines()[1].split()[1] == rows[0]['path']
    assert 'disagree with their label' in repr(cleaner)
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install 'jaxcls\[widgets\]'"):
            cleaner.widget()
        cleaner._ipython_display_()             # what a notebook cell showing it does
        shown = capsys.readouterr().out
        assert "pip install 'jaxcls[widgets]'" in shown and rows[0]['path'] in shown
    else:                                       # with the [widgets] extra: a choice per card
        cards = cleaner.widget(n=4).children[1].children
        assert len(cards) == 4
        cards[0].children[2].value = 'delete'
        assert cleaner.actions == {rows[0]['path']: 'delete'}
        cleaner.set(rows[0]['path'], 'keep')
    with pytest.raises(ValueError, match="unknown action 'remove'"):
        cleaner.set(rows[0]['path'], 'remove')
    with pytest.raises(ValueError, match='is not one of the ranked files'):
        cleaner.set('train/cats/nope.png', 'delete')
    for p, c in PLANTED.items():
        cleaner.set(p, f'relabel:{c}')
    cleaner.set(BROKEN, 'delete')
    cleaner.set(BROKEN, 'keep')                 # changed its mind
    written = list(csv.DictReader(open(cleaner.write_csv(tmp_path / 'decisions.csv'))))
    assert {r['path']: r['action'] for r in written if r['action']} == {
        p: f'relabel:{c}' for p, c in PLANTED.items()}
    done = cleaner.apply()
    assert done.relabelled == 2 and done.deleted == 0
    assert os.path.isfile(os.path.join(work, 'train', 'cats', 'cats.0.png'))
    assert np.bincount(_data(work).trn_y).tolist() == [23 + 1, 25 - 1]
    undo(done.manifest)
    assert os.path.isfile(os.path.join(work, 'train', 'dogs', 'cats.0.png'))

