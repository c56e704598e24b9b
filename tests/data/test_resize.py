"""data.resize: the copies (size, format, names), once and resumable, threads and processes alike,
bad files skipped and reported, and the data object that reads the copy."""
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from jaxcls.data.decode import BadImageError, SkippedImagesWarning
from jaxcls.data.imagedata import ImageClassifierData
from jaxcls.data.resize import resize_files
from jaxcls.data.tfm_config import tfms_from_stats

TFMS = tfms_from_stats(((0.5,) * 3, (0.25,) * 3), 16)      # cache size 18


def picture(w, h, seed):
    """A smooth colour field: resampling it keeps its mean colour."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8))
    return small.resize((w, h), Image.Resampling.BILINEAR)


@pytest.fixture
def files(tmp_path):
    os.makedirs(tmp_path / 'imgs')
    names = []
    for i, (w, h) in enumerate([(60, 40), (40, 60), (50, 50), (33, 90)]):
        ext = 'png' if i == 3 else 'jpg'
        picture(w, h, i).save(tmp_path / 'imgs' / f'{i}.{ext}', quality=95)
        names.append(f'imgs/{i}.{ext}')
    return tmp_path, names


def test_copies_have_the_shorter_side_at_targ_the_same_names_and_formats(files):
    root, names = files
    res = resize_files(names, root, root / 'tmp' / '20', 20, quiet=True)
    assert (res.written, res.reused, res.skipped) == (4, 0, [])
    sizes = {}
    for f in names:
        out = Image.open(root / 'tmp' / '20' / f)
        sizes[f] = out.size
        assert out.format == ('PNG' if f.endswith('.png') else 'JPEG') and out.mode == 'RGB'
        src = np.asarray(Image.open(root / f).convert('RGB'), float).mean((0, 1))
        assert np.abs(np.asarray(out, float).mean((0, 1)) - src).max() < 4, f
    # fastai 0.7's scale_to: floor(side * targ / shorter side), never under targ
    assert sizes == {'imgs/0.jpg': (30, 20), 'imgs/1.jpg': (20, 30), 'imgs/2.jpg': (20, 20),
                     'imgs/3.png': (20, 54)}
    assert sorted(os.listdir(root / 'tmp' / '20' / 'imgs')) == ['0.jpg', '1.jpg', '2.jpg', '3.png']


def test_an_interrupted_resize_continues_and_a_finished_one_redoes_nothing(files):
    root, names = files
    dest = root / 'tmp' / '24'
    resize_files(names[:2], root, dest, 24, quiet=True)            # stopped after two files
    (dest / 'imgs' / '2.jpg.123-456.tmp').write_bytes(b'partial')   # a write cut short
    stamps = {f: os.stat(dest / f).st_mtime_ns for f in names[:2]}
    res = resize_files(names, root, dest, 24, quiet=True)
    assert (res.written, res.reused) == (2, 2)
    assert {f: os.stat(dest / f).st_mtime_ns for f in names[:2]} == stamps   # not rewritten
    assert Image.open(dest / 'imgs' / '2.jpg').size == (24, 24)
    assert (resize_files(names, root, dest, 24, quiet=True).written, 'nothing') == (0, 'nothing')
    # a file changed since its copy was made is redone; resume=False redoes all
    picture(80, 40, 9).save(root / 'imgs' / '0.jpg')
    os.utime(root / 'imgs' / '0.jpg', ns=(stamps['imgs/0.jpg'] + 10**9,) * 2)
    res = resize_files(names, root, dest, 24, quiet=True)
    assert (res.written, res.reused) == (1, 3) and Image.open(dest / 'imgs' / '0.jpg').size == (48, 24)
    assert resize_files(names, root, dest, 24, resume=False, quiet=True).written == 4


def test_worker_processes_write_the_same_copies_as_threads(files):
    root, names = files
    resize_files(names, root, root / 'a', 20, processes=False, num_workers=2, quiet=True)
    res = resize_files(names, root, root / 'b', 20, processes=True, num_workers=2, quiet=True)
    assert res.written == 4
    for f in names:
        assert (root / 'a' / f).read_bytes() == (root / 'b' / f).read_bytes(), f


def test_bad_files_are_skipped_and_reported_or_raise(files):
    root, names = files
    (root / 'imgs' / 'bad.jpg').write_bytes(b'not a jpeg')
    with pytest.warns(SkippedImagesWarning, match=r"skipped 1 of 5 files .*imgs/bad.jpg.*not an image"):
        res = resize_files(names + ['imgs/bad.jpg'], root, root / 'c', 20, quiet=True)
    assert res.written == 4 and [f for f, _ in res.skipped] == ['imgs/bad.jpg']
    assert not (root / 'c' / 'imgs' / 'bad.jpg').exists()
    with pytest.raises(BadImageError, match=r"1 of 5 files .*imgs/bad.jpg"):
        resize_files(names + ['imgs/bad.jpg'], root, root / 'd', 20, on_bad='raise', quiet=True)
    with pytest.raises(ValueError, match='would overwrite the files'):
        resize_files(names, root, root, 20)


def test_data_resize_reads_the_copy_with_the_same_classes_splits_and_transforms(tmp_path):
    os.makedirs(tmp_path / 'train-jpg')
    os.makedirs(tmp_path / 'test-jpg')
    tags = ['clear primary', 'haze', 'clear water', 'haze primary']
    rows = []
    for i in range(12):
        picture(64, 48, i).save(tmp_path / 'train-jpg' / f'train_{i}.jpg')
        rows.append(f'train_{i},{tags[i % 4]}')
    (tmp_path / 'train-jpg' / 'train_12.jpg').write_bytes(b'broken')
    rows.append('train_12,haze')
    picture(48, 64, 99).save(tmp_path / 'test-jpg' / 'test_0.jpg')
    (tmp_path / 'labels.csv').write_text('image_name,tags\n' + '\n'.join(rows) + '\n')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', SkippedImagesWarning)   # train_12 (reported: below)
        data = ImageClassifierData.from_csv(str(tmp_path), 'train-jpg', 'labels.csv', bs=4,
                                            tfms=TFMS, suffix='.jpg', val_idxs=[0, 5, 12],
                                            test_name='test-jpg', quiet=True)
    small = data.resize(20, 'tmp')
    assert small.path == str(tmp_path / 'tmp' / '20')
    assert (small.classes, small.is_multi, small.tfms, small.bs) == (data.classes, True, TFMS, 4)
    for a, b in ((small.trn_ds, data.trn_ds), (small.val_ds, data.val_ds), (small.test_ds, data.test_ds)):
        assert a.fnames == b.fnames and np.array_equal(a.y, b.y)
        # decoded from 20 px copies instead of 48 px originals: the same pictures
        assert np.abs(np.asarray(a.x, float) - np.asarray(b.x, float)).mean() < 4
    assert small.skipped == data.skipped and [f for f, _ in small.skipped] == ['train-jpg/train_12.jpg']
    assert Image.open(tmp_path / 'tmp' / '20' / 'train-jpg' / 'train_0.jpg').size == (26, 20)
    assert os.path.isdir(tmp_path / 'tmp' / '20' / 'tmp')          # the copy's decode cache
    stamp = os.stat(tmp_path / 'tmp' / '20' / 'train-jpg' / 'train_0.jpg').st_mtime_ns
    again = data.resize(20)                 # nothing rewritten, the decode cache reused
    assert os.stat(tmp_path / 'tmp' / '20' / 'train-jpg' / 'train_0.jpg').st_mtime_ns == stamp
    assert again.trn_ds.from_cache and again.trn_ds.fingerprint == small.trn_ds.fingerprint
    x = np.zeros((4, 8, 8, 3), np.uint8)
    arrays = ImageClassifierData.from_arrays('.', (x, [0, 1, 0, 1]), (x, [0, 1, 0, 1]), cache_size=8)
    with pytest.raises(ValueError, match=r'not read from files \(from_arrays, from_tfds\)'):
        arrays.resize(8)
