"""ImageClassifierData: the lesson's attributes from folders, CSV and arrays, with tiny generated images."""
import collections
import os

import numpy as np
import pytest
from PIL import Image

from jaxcls.data import decode as dec
from jaxcls.data import decode_one, tfm_loader
from jaxcls.data.imagedata import ImageClassifierData, ImageDataset

# Stand-in for transforms.TfmConfig: the data layer only reads sz, mean and std.
Cfg = collections.namedtuple('Cfg', 'sz mean std')
TFMS = (Cfg(16, (0.5,) * 3, (0.25,) * 3), Cfg(16, (0.5,) * 3, (0.25,) * 3))  # cache size 18

COLOURS = {'cats': (250, 0, 0), 'dogs': (0, 0, 250), 'fish': (0, 250, 0)}


def make_dataset(root, n=(3, 2), classes=('dogs', 'cats'), test=0):
    for split, k in zip(('train', 'valid'), n):
        for c in classes:
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
            for i in range(k):
                Image.new('RGB', (20 + i, 14), COLOURS[c]).save(os.path.join(root, split, c, f'{i}.png'))
    if test:
        os.makedirs(os.path.join(root, 'test'), exist_ok=True)
        for i in range(test):
            Image.new('L', (9, 9), 30 * i).save(os.path.join(root, 'test', f't{i}.jpg'))


def colour_class(x):
    """Class index read back from the decoded pixels: 0 = red (cats), 1 = blue (dogs)."""
    px = np.asarray(x)[:, 9, 9].astype(int)
    return (px[:, 2] > px[:, 0]).astype(int).tolist()


def test_from_paths_attributes(tmp_path):
    make_dataset(tmp_path, test=3)
    data = ImageClassifierData.from_paths(str(tmp_path), bs=4, tfms=TFMS, test_name='test')
    assert data.path == str(tmp_path)
    assert data.classes == ['cats', 'dogs'] and data.c == 2 and not data.is_multi
    assert data.sz == 16 and data.bs == 4 and data.cache_size == 18 == dec.default_cache_size(16)
    assert data.trn_y.tolist() == [0, 0, 0, 1, 1, 1] and data.val_y.tolist() == [0, 0, 1, 1]
    assert data.trn_ds.x.shape == (6, 18, 18, 3) and data.trn_ds.x.dtype == np.uint8
    assert colour_class(data.trn_ds.x) == data.trn_y.tolist()  # labels line up with pixels
    assert data.val_ds.fnames == ['valid/cats/0.png', 'valid/cats/1.png', 'valid/dogs/0.png', 'valid/dogs/1.png']
    assert len(data.trn_ds) == 6 and len(data.val_ds) == 4 and len(data.test_ds) == 3
    assert data.test_ds.fnames == ['test/t0.jpg', 'test/t1.jpg', 'test/t2.jpg']
    assert data.test_ds.x[:, 4, 4].tolist() == [[0] * 3, [30] * 3, [60] * 3]
    assert len(data.trn_dl) == 2 and len(data.val_dl) == 1 and len(data.test_dl) == 1
    assert data.tfms == TFMS and data.skipped == []
    assert len(data.trn_ds.fingerprint) == 20 and data.trn_ds.fingerprint != data.val_ds.fingerprint
    b = next(data.val_dl.iter_epoch(0))  # the step's view: uint8, label, mask
    assert set(b) == {'image', 'label', 'mask'} and b['image'].shape == (4, 18, 18, 3)
    assert np.asarray(b['label']).tolist() == [0, 0, 1, 1]
    # the training loader shuffles and sees every image once per epoch
    seen = []
    for b in data.trn_dl.iter_epoch(0):
        m = np.asarray(b['mask']) > 0
        seen += list(zip(colour_class(b['image'][m]), np.asarray(b['label'])[m].tolist()))
    assert len(seen) == 6 and all(a == b for a, b in seen)
    assert sorted(os.listdir(tmp_path / 'tmp'))[0].startswith('test-18px-')  # cache under {path}/tmp


def test_from_paths_reuses_cache(tmp_path, monkeypatch):
    make_dataset(tmp_path)
    first = ImageClassifierData.from_paths(str(tmp_path), bs=2, tfms=TFMS)
    assert not first.trn_ds.from_cache

    def boom(*a, **k):
        raise AssertionError('decoded again')
    monkeypatch.setattr(decode_one, 'decode_image', boom)
    again = ImageClassifierData.from_paths(str(tmp_path), bs=2, tfms=TFMS)
    assert again.trn_ds.from_cache and again.val_ds.from_cache
    assert again.trn_ds.fingerprint == first.trn_ds.fingerprint
    np.testing.assert_array_equal(again.trn_ds.x, first.trn_ds.x)


def test_bad_and_stray_files_are_reported(tmp_path):
    make_dataset(tmp_path)
    open(tmp_path / 'train' / 'cats' / 'broken.png', 'wb').close()
    (tmp_path / 'train' / 'dogs' / 'notes.txt').write_text('hi')
    with pytest.warns(dec.SkippedImagesWarning, match='skipped 1 of 7 files in train'):
        data = ImageClassifierData.from_paths(str(tmp_path), bs=2, tfms=TFMS, cache_dir=False)
    assert sorted(data.skipped) == [('train/cats/broken.png', 'empty file (0 bytes)'),
                                    ('train/dogs/notes.txt', 'not an image file')]
    assert len(data.trn_ds) == 6 and colour_class(data.trn_ds.x) == data.trn_y.tolist()
    assert 'train/cats/broken.png' not in data.trn_ds.fnames
    with pytest.raises(dec.BadImageError, match='broken.png'):
        ImageClassifierData.from_paths(str(tmp_path), bs=2, tfms=TFMS, cache_dir=False, on_bad='raise')


def test_size_is_required(tmp_path):
    make_dataset(tmp_path)
    with pytest.raises(ValueError, match=r'needs an image size: pass tfms=tfms_from_model\(arch, sz\)'):
        ImageClassifierData.from_paths(str(tmp_path))
    with pytest.raises(TypeError, match=r'tfms must be a \(train, valid\) pair'):
        ImageClassifierData.from_paths(str(tmp_path), tfms=TFMS[0])
    with pytest.raises(ValueError, match='cache_size=8 is smaller than the training size sz=16'):
        ImageClassifierData.from_paths(str(tmp_path), tfms=TFMS, cache_size=8)
    data = ImageClassifierData.from_paths(str(tmp_path), bs=2, cache_size=10, cache_dir=False)
    assert data.cache_size == 10 and data.sz == 10 and data.trn_ds.x.shape[1:] == (10, 10, 3)


def write_csv_set(root, labels):
    os.makedirs(os.path.join(root, 'imgs'), exist_ok=True)
    with open(os.path.join(root, 'labels.csv'), 'w') as f:
        f.write('image_name,tags\n')
        for i, tags in enumerate(labels):
            c = COLOURS[tags.split()[0]]
            Image.new('RGB', (12, 12), c).save(os.path.join(root, 'imgs', f'im{i}.jpg'))
            f.write(f'im{i},{tags}\n')


def test_from_csv_single_label(tmp_path):
    write_csv_set(tmp_path, ['cats', 'dogs'] * 5)
    data = ImageClassifierData.from_csv(str(tmp_path), 'imgs', 'labels.csv', bs=4, tfms=TFMS, suffix='.jpg')
    assert data.classes == ['cats', 'dogs'] and not data.is_multi
    assert len(data.val_ds) == 2 and len(data.trn_ds) == 8  # fastai's 20 %, seed 42: rows 1 and 8
    assert data.val_ds.fnames == ['imgs/im1.jpg', 'imgs/im8.jpg'] and data.val_y.tolist() == [1, 0]
    assert colour_class(data.trn_ds.x) == data.trn_y.tolist()


def test_from_csv_multi_label(tmp_path):
    write_csv_set(tmp_path, ['cats fish', 'dogs', 'cats', 'dogs fish'])
    data = ImageClassifierData.from_csv(str(tmp_path), 'imgs', 'labels.csv', bs=2, tfms=TFMS,
                                        suffix='.jpg', val_idxs=[3])
    assert data.is_multi and data.classes == ['cats', 'dogs', 'fish'] and data.c == 3
    assert data.val_y.tolist() == [[0, 1, 1]] and data.trn_y.dtype == np.float32
    assert data.trn_y.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
    b = next(data.val_dl.iter_epoch(0))
    assert b['label'].shape == (2, 3) and b['label'].dtype == np.float32
    assert np.asarray(b['mask']).tolist() == [1, 0]


def test_from_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 20, 30, 3), dtype=np.uint8)
    y = np.arange(10) % 3
    data = ImageClassifierData.from_arrays(str(tmp_path), (x, y), (x[:4].astype(np.float32) / 255, y[:4]),
                                           bs=4, tfms=TFMS, test=x[:2])
    assert data.classes == ['0', '1', '2'] and data.c == 3 and not data.is_multi
    assert data.trn_ds.x.shape == (10, 18, 18, 3) and data.val_ds.x.shape == (4, 18, 18, 3)
    np.testing.assert_array_equal(data.val_ds.x, data.trn_ds.x[:4])  # float 0..1 == uint8 0..255
    np.testing.assert_array_equal(data.test_ds.x, data.trn_ds.x[:2])
    assert data.trn_ds.fnames[:2] == ['trn[0]', 'trn[1]'] and data.trn_y.tolist() == y.tolist()
    assert data.trn_ds.fingerprint == dec.array_fingerprint(data.trn_ds.x)
    assert os.listdir(tmp_path) == []  # nothing written
    # squares between sz and the default cache size keep their own size (no resampling)
    sq = rng.integers(0, 256, (6, 17, 17, 3), dtype=np.uint8)
    d2 = ImageClassifierData.from_arrays(str(tmp_path), (sq, np.arange(6) % 2), (sq[:2], [0, 1]), bs=2,
                                         tfms=TFMS, classes=['a', 'b'])
    assert d2.cache_size == 17 and d2.classes == ['a', 'b']
    np.testing.assert_array_equal(d2.trn_ds.x, sq)
    multi = ImageClassifierData.from_arrays(str(tmp_path), (sq, np.eye(4)[np.arange(6) % 4]),
                                            (sq[:2], np.eye(4)[:2]), bs=2, tfms=TFMS)
    assert multi.is_multi and multi.c == 4 and multi.val_y.dtype == np.float32
    with pytest.raises(ValueError, match='trn has 6 images but 5 labels'):
        ImageClassifierData.from_arrays(str(tmp_path), (sq, np.arange(5)), (sq, np.arange(6)), tfms=TFMS)


def test_denorm_uses_the_valid_config(tmp_path):
    tr = pytest.importorskip('jaxcls.data.transforms')
    tfms = tr.tfms_from_stats(((0.5,) * 3, (0.25,) * 3), 16)
    x = np.zeros((4, 20, 20, 3), np.uint8)
    data = ImageClassifierData.from_arrays(str(tmp_path), (x, np.arange(4) % 2), (x, np.arange(4) % 2),
                                           bs=2, tfms=tfms)
    out = data.denorm(np.full((1, 2, 2, 3), 2.0, np.float32))
    np.testing.assert_allclose(out, 1.0)  # 2 * 0.25 + 0.5


def test_continuous_is_refused(tmp_path):
    x = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(NotImplementedError, match='continuous=True'):
        ImageClassifierData.from_arrays(str(tmp_path), (x, [0, 1]), (x, [0, 1]), tfms=TFMS, continuous=True)


def test_preview_batch_and_aug_samples(tmp_path):
    """The arrays the plots draw: picked and augmented with the key, denormalised, titled."""
    import jax
    tr = pytest.importorskip('jaxcls.data.transforms')
    trn_cfg, val_cfg = tr.tfms_from_stats(((0.5,) * 3, (0.25,) * 3), 16,
                                          aug_tfms=tr.transforms_side_on, max_zoom=1.1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 18, 18, 3), dtype=np.uint8)   # kept as is: the 18 px cache
    y = np.arange(7) % 2
    data = ImageClassifierData.from_arrays(str(tmp_path), (x, y), (x[:5], y[:5]), bs=4,
                                           tfms=(trn_cfg, val_cfg), classes=['cats', 'dogs'])
    np.testing.assert_array_equal(data.trn_ds.x, x)
    imgs, titles, idxs = data.preview_batch(4, key=2)
    assert imgs.shape == (4, 16, 16, 3) and imgs.dtype == np.float32
    assert imgs.min() >= 0 and imgs.max() <= 1
    assert idxs.tolist() == sorted(set(idxs.tolist())) and len(idxs) == 4
    assert titles == [['cats', 'dogs'][y[i]] for i in idxs]
    _, k_aug = jax.random.split(jax.random.PRNGKey(2))
    ref = tr.denorm(np.asarray(tfm_loader.jitted('augment')(k_aug, x[idxs], trn_cfg)), trn_cfg)
    np.testing.assert_allclose(imgs, ref, atol=1e-6)
    assert not np.allclose(data.preview_batch(4, key=3)[0], imgs)
    # Validation: every image (n is capped), the exact centre crop, no randomness.
    v01, _, vidx = data.preview_batch(100, is_train=False, key=3)
    assert vidx.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(v01, x[:5, 1:17, 1:17] / 255.0, atol=1e-6)   # ceil(2 / 2)
    with pytest.raises(ValueError, match='n=0; show at least one image'):
        data.preview_batch(0)
    # Augmented versions of one training image.
    samples = data.aug_samples(2, 5, key=5)
    # The reference runs jitted like the first one: op by op, aug_samples compiled about
    # 120 small programs (5 s of this test).
    ref = tr.denorm(np.asarray(tfm_loader.jitted('aug_samples')(jax.random.PRNGKey(5), x[2],
                                                              trn_cfg, 5)), trn_cfg)
    assert samples.shape == (5, 16, 16, 3)
    np.testing.assert_allclose(samples, ref, atol=1e-5)
    assert len({s.tobytes() for s in samples}) > 1
    np.testing.assert_array_equal(data.aug_samples(-5, 5, key=5), samples)   # -5 is image 2
    with pytest.raises(ValueError, match='idx=7 is out of range for 7 training images; use 0..6'):
        data.aug_samples(7)
    assert data.label_text(y[1]) == 'dogs'
    multi = ImageClassifierData.from_arrays(str(tmp_path), (x, np.eye(3)[y]), (x, np.eye(3)[y]),
                                            tfms=(trn_cfg, val_cfg), classes=['a', 'b', 'c'])
    assert multi.label_text([1, 0, 1]) == 'a c' and multi.label_text([0, 0, 0]) == 'none'
    bare = ImageClassifierData.from_arrays(str(tmp_path), (x, y), (x, y), cache_size=20)
    with pytest.raises(ValueError, match='the data has no transforms'):
        bare.preview_batch(2)
    with pytest.raises(ValueError, match='the data has no transforms'):
        bare.aug_samples(0)


def test_image_dataset_is_still_importable_from_here():
    # jaxcls.ImageDataset is looked up in jaxcls.data.imagedata; the class lives in dataset.py.
    import jaxcls
    from jaxcls.data import dataset
    assert ImageDataset is dataset.ImageDataset is jaxcls.ImageDataset
