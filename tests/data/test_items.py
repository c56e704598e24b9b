"""Layout discovery and validation: folders, CSV, arrays (no decoding, no JAX)."""
import os
import re

import numpy as np
import pytest

from jaxcls.data.csv_labels import csv_items
from jaxcls.data.items import (LayoutError, array_labels, folder_items,
                               get_cv_idxs, is_image_file, list_images)


def touch(root, *rels):
    for rel in rels:
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, 'wb') as f:
            f.write(b'x')


def make_folders(root, classes=('dogs', 'cats'), n=2, splits=('train', 'valid')):
    for s in splits:
        for c in classes:
            touch(root, *[f'{s}/{c}/{c}{i}.jpg' for i in range(n)])


def test_classes_labels_and_fnames(tmp_path):
    make_folders(tmp_path, n=3)
    lay = folder_items(str(tmp_path))
    assert lay.classes == ['cats', 'dogs']
    assert lay.is_multi is False
    assert lay.root == str(tmp_path)
    assert lay.train.fnames == ('train/cats/cats0.jpg', 'train/cats/cats1.jpg', 'train/cats/cats2.jpg',
                                'train/dogs/dogs0.jpg', 'train/dogs/dogs1.jpg', 'train/dogs/dogs2.jpg')
    assert lay.train.y.dtype == np.int64
    assert lay.train.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert lay.valid.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert lay.test is None and lay.skipped == []


def test_hidden_extensions_nonimages_nested(tmp_path):
    make_folders(tmp_path)
    touch(tmp_path, 'train/cats/.DS_Store', 'train/.hidden_dir/x.jpg', 'train/cats/.ipynb_checkpoints/a.jpg',
          'train/cats/UPPER.JPEG', 'train/cats/notes.txt', 'train/cats/2017/deep/nested.png',
          'train/README.md')
    lay = folder_items(str(tmp_path))
    assert lay.classes == ['cats', 'dogs']  # hidden folder is not a class
    cats = [f for f in lay.train.fnames if '/cats/' in f]
    assert cats == ['train/cats/2017/deep/nested.png', 'train/cats/UPPER.JPEG',
                    'train/cats/cats0.jpg', 'train/cats/cats1.jpg']
    assert sorted(lay.skipped) == [('train/README.md', 'not inside a class folder'),
                                   ('train/cats/notes.txt', 'not an image file')]
    assert len(lay.train) == 6 and lay.train.y.tolist() == [0, 0, 0, 0, 1, 1]


def test_is_image_file_case_insensitive():
    assert is_image_file('a.JPG') and is_image_file('b.Png') and is_image_file('c.webp')
    assert not is_image_file('d.txt') and not is_image_file('jpg')


def test_list_images(tmp_path):
    touch(tmp_path, 'b.png', 'a.jpg', 'sub/c.gif', 'x.csv', '.hidden.jpg')
    imgs, skipped = list_images(str(tmp_path))
    assert imgs == ['a.jpg', 'b.png', 'sub/c.gif']
    assert skipped == [('x.csv', 'not an image file')]


def test_valid_class_mismatch_message(tmp_path):
    make_folders(tmp_path, classes=('dogs',), splits=('train',))
    make_folders(tmp_path, classes=('dogs', 'cat'), splits=('valid',))
    with pytest.raises(LayoutError, match=re.escape("valid/ has classes ['cat'] that train/ lacks")):
        folder_items(str(tmp_path))


def test_train_class_missing_from_valid(tmp_path):
    make_folders(tmp_path, classes=('dogs', 'cats'), splits=('train',))
    make_folders(tmp_path, classes=('dogs',), splits=('valid',))
    with pytest.raises(LayoutError, match=re.escape("train/ has classes ['cats'] that valid/ lacks")):
        folder_items(str(tmp_path))


@pytest.mark.parametrize('setup,pattern', [
    (lambda d: make_folders(d, splits=('valid',)), r"no train folder .*train'.*has folders \['valid'\]"),
    (lambda d: make_folders(d, splits=('train',)), r"no valid folder .*valid'.*trn_name=/val_name="),
    (lambda d: (os.makedirs(f'{d}/train'), make_folders(d, splits=('valid',))),
     r'train/ .* has no class subfolders'),
    (lambda d: (make_folders(d), os.makedirs(f'{d}/train/empty')),
     r'class folder train/empty/ .* has no images'),
    (lambda d: (make_folders(d), touch(d, 'train/empty/readme.txt')),
     r"train/empty/ .* has no images \(only non-image files: \['train/empty/readme.txt'\]\)"),
    (lambda d: (make_folders(d), touch(d, 'train/loose.jpg')),
     r"train/ has 1 image file\(s\) directly inside it .*loose.jpg.*train/<class>/loose.jpg"),
])
def test_layout_errors(tmp_path, setup, pattern):
    setup(str(tmp_path))
    with pytest.raises(LayoutError, match=pattern):
        folder_items(str(tmp_path))


def test_missing_root(tmp_path):
    with pytest.raises(LayoutError, match='does not exist'):
        folder_items(str(tmp_path / 'nope'))


def test_custom_split_names(tmp_path):
    make_folders(tmp_path, splits=('trn', 'val'))
    lay = folder_items(str(tmp_path), trn_name='trn', val_name='val')
    assert lay.train.fnames[0] == 'trn/cats/cats0.jpg' and len(lay.valid) == 4


def test_test_folder_unlabelled_and_labelled(tmp_path):
    make_folders(tmp_path)
    touch(tmp_path, 'test/b.jpg', 'test/a.png', 'test/sub/c.jpg', 'test/notes.txt')
    lay = folder_items(str(tmp_path), test_name='test')
    assert lay.test.fnames == ('test/a.png', 'test/b.jpg', 'test/sub/c.jpg') and lay.test.y is None
    assert ('test/notes.txt', 'not an image file') in lay.skipped

    make_folders(tmp_path, classes=('dogs',), splits=('test2',))
    lay = folder_items(str(tmp_path), test_name='test2', test_with_labels=True)
    assert lay.test.y.tolist() == [1, 1]  # 'dogs' is class 1 of train's ['cats', 'dogs']
    make_folders(tmp_path, classes=('cows',), splits=('test3',))
    with pytest.raises(LayoutError, match=re.escape("test3/ has classes ['cows'] that train/ lacks")):
        folder_items(str(tmp_path), test_name='test3', test_with_labels=True)
    with pytest.raises(LayoutError, match=r"no test folder .*nope.*test_name=None"):
        folder_items(str(tmp_path), test_name='nope')
    os.makedirs(tmp_path / 'emptytest')
    with pytest.raises(LayoutError, match='has no images'):
        folder_items(str(tmp_path), test_name='emptytest')


# ------------------------------------------------------------------------------ CSV

def write_csv(root, rows, name='labels.csv', header='id,label'):
    with open(os.path.join(root, name), 'w') as f:
        if header is not None:
            f.write(header + '\n')
        f.write(''.join(r + '\n' for r in rows))


def test_get_cv_idxs_matches_fastai_global_seed():
    np.random.seed(42)
    fastai = np.random.permutation(50)[:10]
    np.testing.assert_array_equal(get_cv_idxs(50), fastai)
    assert get_cv_idxs(10).tolist() == [8, 1]
    assert len(get_cv_idxs(101)) == 20  # int(0.2 * 101)


def test_csv_single_label_split(tmp_path):
    touch(tmp_path, *[f'imgs/{i}.jpg' for i in range(25)])
    write_csv(tmp_path, [f'{i},{"dog" if i % 3 else "cat"}' for i in range(25)])
    lay = csv_items(str(tmp_path), 'imgs', 'labels.csv', suffix='.jpg')
    assert lay.classes == ['cat', 'dog'] and not lay.is_multi
    assert len(lay.valid) == 5 and len(lay.train) == 20  # int(0.2 * 25)
    val_rows = sorted(get_cv_idxs(25).tolist())
    assert lay.valid.fnames == tuple(f'imgs/{i}.jpg' for i in val_rows)  # CSV order
    assert lay.valid.y.tolist() == [0 if i % 3 == 0 else 1 for i in val_rows]
    assert lay.train.y.dtype == np.int64
    again = csv_items(str(tmp_path), 'imgs', 'labels.csv', suffix='.jpg')
    assert again.valid.fnames == lay.valid.fnames  # deterministic
    assert set(lay.train.fnames).isdisjoint(lay.valid.fnames)


def test_csv_multi_label_and_explicit_val(tmp_path):
    touch(tmp_path, *[f'imgs/{i}.png' for i in range(5)])
    write_csv(tmp_path, ['0,clear road', '1,haze', '2,clear haze', '3,road water', '4,water road clear'])
    lay = csv_items(str(tmp_path), 'imgs', 'labels.csv', val_idxs=[3, 0], suffix='.png')
    assert lay.is_multi and lay.classes == ['clear', 'haze', 'road', 'water']
    assert lay.train.y.dtype == np.float32
    assert lay.valid.fnames == ('imgs/0.png', 'imgs/3.png')
    assert lay.valid.y.tolist() == [[1, 0, 1, 0], [0, 0, 1, 1]]
    assert lay.train.y.tolist() == [[0, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 1]]
    assert lay.skipped == []


def test_csv_separator_no_header(tmp_path):
    touch(tmp_path, 'imgs/a.jpg', 'imgs/b.jpg')
    write_csv(tmp_path, ['a.jpg,x;y', 'b.jpg,y'], header=None)
    lay = csv_items(str(tmp_path), 'imgs', 'labels.csv', val_idxs=[1], skip_header=False,
                    cat_separator=';')
    assert lay.classes == ['x', 'y'] and lay.train.y.tolist() == [[1, 1]]


def test_csv_errors(tmp_path):
    touch(tmp_path, 'imgs/0.jpg', 'imgs/1.jpg')
    write_csv(tmp_path, ['0,a', '1,b', '7,a'])
    with pytest.raises(LayoutError, match=r"1 of the 3 rows of .*labels.csv cannot be used: "
                                          r"labels.csv line 4: no file imgs/7.jpg"):
        csv_items(str(tmp_path), 'imgs', 'labels.csv', suffix='.jpg', on_bad='raise')
    write_csv(tmp_path, ['0', '1'], name='one_col.csv')
    with pytest.raises(LayoutError, match=r"none of the 2 rows of .*one_col.csv can be used: "
                                          r"one_col.csv line 2: empty label cell"):
        csv_items(str(tmp_path), 'imgs', 'one_col.csv', suffix='.jpg')
    with pytest.raises(LayoutError, match=r"image folder .*nope.* does not exist"):
        csv_items(str(tmp_path), 'nope', 'labels.csv')
    with pytest.raises(LayoutError, match=r"CSV file .*missing.csv.* does not exist"):
        csv_items(str(tmp_path), 'imgs', 'missing.csv')
    write_csv(tmp_path, ['0,a', '1,b'], name='ok.csv')
    with pytest.raises(LayoutError, match=r"val_idxs has \[5\] outside the 2 CSV rows"):
        csv_items(str(tmp_path), 'imgs', 'ok.csv', val_idxs=[5], suffix='.jpg')
    with pytest.raises(LayoutError, match=r"none of the 2 files .* names exists .*\(do the CSV "
                                          r"names need suffix='.jpg'\?\)"):
        csv_items(str(tmp_path), 'imgs', 'ok.csv')
    with pytest.raises(ValueError, match="on_bad='ignore'; use 'skip'"):
        csv_items(str(tmp_path), 'imgs', 'ok.csv', on_bad='ignore')


def test_csv_test_folder(tmp_path):
    touch(tmp_path, 'imgs/0.jpg', 'imgs/1.jpg', 'imgs/2.jpg', 'test/t.jpg')
    write_csv(tmp_path, ['0,a', '1,b', '2,a'])
    lay = csv_items(str(tmp_path), 'imgs', 'labels.csv', val_idxs=[0], suffix='.jpg', test_name='test')
    assert lay.test.fnames == ('test/t.jpg',)


# ------------------------------------------------------------------------------ arrays

def test_array_labels():
    yt, yv, classes, multi = array_labels([0, 2, 1], np.array([1.0, 0.0]), None)
    assert classes == ['0', '1', '2'] and not multi and yv.dtype == np.int64 and yv.tolist() == [1, 0]
    yt, yv, classes, multi = array_labels(np.eye(3)[[0, 1]], np.eye(3)[[2]], ['a', 'b', 'c'])
    assert multi and yt.dtype == np.float32 and classes == ['a', 'b', 'c']
    with pytest.raises(LayoutError, match='classes has 2 names but the labels need 3'):
        array_labels([0, 2], [1], ['a', 'b'])
    with pytest.raises(LayoutError, match='integer class indices'):
        array_labels([0.5, 1], [1], None)
    with pytest.raises(LayoutError, match='same rank'):
        array_labels([0, 1], np.eye(2), None)
