"""The digits builder behind `jaxcls demo`: counts, a stratified split, PNG shapes, determinism.

The full demo (training included, about 2 minutes) is run by hand: `jaxcls demo`.
"""
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

pytest.importorskip('sklearn')
from sklearn.datasets import load_digits  # noqa: E402

from jaxcls.demo import DIGITS_SIZE, build_digits, digits_split, save_interpretation  # noqa: E402


def _files(root):
    out = {}
    for split in ('train', 'valid'):
        for c in sorted(os.listdir(os.path.join(root, split))):
            for f in sorted(os.listdir(os.path.join(root, split, c))):
                out[f'{split}/{c}/{f}'] = os.path.join(root, split, c, f)
    return out


def _digest(root):
    h = hashlib.sha256()
    for rel, full in _files(root).items():
        h.update(rel.encode())
        with open(full, 'rb') as f:
            h.update(f.read())
    return h.hexdigest()


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    return build_digits(str(tmp_path_factory.mktemp('digits') / 'digits'))


def test_every_scan_once_in_class_folders(digits):
    y = load_digits().target
    files = _files(digits)
    assert len(files) == len(y) == 1797
    assert sorted(os.listdir(os.path.join(digits, 'train'))) == [str(d) for d in range(10)]
    assert sorted(os.listdir(os.path.join(digits, 'valid'))) == [str(d) for d in range(10)]
    # file name = row of load_digits, folder = its label; each row appears once
    rows = sorted(int(os.path.splitext(os.path.basename(k))[0]) for k in files)
    assert rows == list(range(len(y)))
    for rel in files:
        _, c, f = rel.split('/')
        assert int(c) == y[int(f[:4])]


def test_split_is_stratified_80_20(digits):
    y = load_digits().target
    counts = np.bincount(y)
    for c in range(10):
        n_val = len(os.listdir(os.path.join(digits, 'valid', str(c))))
        n_trn = len(os.listdir(os.path.join(digits, 'train', str(c))))
        assert n_val + n_trn == counts[c]
        assert n_val == round(0.2 * counts[c])          # 35 or 36 of ~180 per class
    n_val = sum(len(os.listdir(os.path.join(digits, 'valid', str(c)))) for c in range(10))
    assert n_val == 359
    meta = json.load(open(os.path.join(digits, 'digits.json')))
    assert sum(meta['counts']['valid'].values()) == n_val


def test_pngs_are_32px_greyscale_with_a_blank_margin(digits):
    files = _files(digits)
    images = load_digits().images
    for rel in list(files)[::97]:
        im = Image.open(files[rel])
        assert im.mode == 'L' and im.size == (DIGITS_SIZE, DIGITS_SIZE)
        a = np.asarray(im)
        # one blank source pixel of ten on each side: the outer ~2 px stay (nearly) black
        assert a[:2].max() < 40 and a[-2:].max() < 40 and a[:, :2].max() < 40
        # the ink follows the scan: its brightest source pixel is bright in the PNG
        src = images[int(os.path.basename(rel)[:4])]
        assert a.max() >= 255 * src.max() / 16 * 0.8


def test_deterministic_and_idempotent(digits, tmp_path):
    again = build_digits(str(tmp_path / 'again'))
    assert _digest(again) == _digest(digits)
    stamp = os.path.getmtime(os.path.join(digits, 'train', '0', '0000.png'))
    assert build_digits(digits) == digits                      # same settings: nothing written
    assert os.path.getmtime(os.path.join(digits, 'train', '0', '0000.png')) == stamp
    other = build_digits(str(tmp_path / 'again'), seed=1)      # new settings: rebuilt
    assert _digest(other) != _digest(digits)


def test_digits_split_counts_and_validation():
    y = np.repeat(np.arange(3), [10, 20, 5])
    m = digits_split(y, 0.2, seed=3)
    assert [int(m[y == c].sum()) for c in range(3)] == [2, 4, 1]
    assert np.array_equal(m, digits_split(y, 0.2, seed=3))
    assert not np.array_equal(m, digits_split(y, 0.2, seed=4))
    with pytest.raises(ValueError, match='between 0 and 1'):
        digits_split(y, 1.5)


def test_builder_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match='size=4'):
        build_digits(str(tmp_path), size=4)
    with pytest.raises(ValueError, match="'bilinear'"):
        build_digits(str(tmp_path), resample='bilinear')


def test_save_interpretation_writes_the_plots(tmp_path):
    from jaxcls.interpret import ClassificationInterpretation
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    interp = ClassificationInterpretation(probs, [0, 0, 1, 1], ['a/b', 'c'],
                                          images=np.zeros((4, 8, 8, 3), np.uint8))
    saved = save_interpretation(interp, str(tmp_path))
    assert sorted(saved) == ['confusion_matrix', 'most_incorrect_a_b', 'most_incorrect_c',
                             'top_losses']
    assert all(os.path.getsize(p) > 1000 for p in saved.values())
