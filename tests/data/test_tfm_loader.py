"""fastai 0.7's six loaders on the data object: (x, y) pairs of transformed images, ds.denorm,
and the step's uint8 batches beside them; one-class datasets refused."""
import os

import numpy as np
import pytest
from PIL import Image

from jaxcls.data import tfm_ops
from jaxcls.data.imagedata import ImageClassifierData
from jaxcls.data.items import LayoutError
from jaxcls.data.tfm_config import tfms_from_stats, transforms_side_on
from jaxcls.data.tfm_loader import TfmDataLoader

STATS = ((0.5,) * 3, (0.25,) * 3)
TFMS = tfms_from_stats(STATS, 8, aug_tfms=transforms_side_on, max_zoom=1.2)


def images(n, start=0):
    """n 10x10 images; image i is a horizontal ramp (flips and zooms change it) whose top-left
    pixel is 10 * (start + i), so rows can be told apart after a validation transform."""
    ramp = np.arange(10, dtype=np.uint8)[None, :, None] * 20
    base = (10 * np.arange(start, start + n, dtype=np.uint8))[:, None, None, None]
    return np.broadcast_to(base + ramp, (n, 10, 10, 3)).copy()


@pytest.fixture(scope='module')
def data():
    return ImageClassifierData.from_arrays('.', (images(5), [0, 1, 0, 1, 1]),
                                           (images(3, 5), [1, 0, 1]), bs=2, tfms=TFMS,
                                           test=images(3, 8), classes=['cats', 'dogs'],
                                           cache_size=10)


def val_pixels(x):
    """What val_transform makes of uint8 images: centre crop to 8, normalised."""
    return (np.asarray(x)[:, 1:9, 1:9].astype(np.float32) / 255 - 0.5) / 0.25


def test_the_six_loaders_split_images_and_transforms_as_fastai(data):
    want = {'trn_dl': (data.trn_ds, True, True), 'val_dl': (data.val_ds, False, False),
            'fix_dl': (data.trn_ds, False, False), 'aug_dl': (data.val_ds, True, False),
            'test_dl': (data.test_ds, False, False), 'test_aug_dl': (data.test_ds, True, False)}
    for name, (ds, aug, shuffle) in want.items():
        dl = getattr(data, name)
        assert isinstance(dl, TfmDataLoader), name
        assert dl.augment is aug and dl.shuffle is shuffle and dl.n == len(ds), name
        assert dl.tfm is (TFMS[0] if aug else TFMS[1]), name
        assert np.shares_memory(np.asarray(dl.x), np.asarray(ds.x)) or dl.x is ds.x, name


def test_validation_transforms_give_the_images_in_order_and_a_short_last_batch(data):
    pairs = list(data.val_dl)
    assert [x.shape for x, _ in pairs] == [(2, 8, 8, 3), (1, 8, 8, 3)]
    assert all(x.dtype == np.float32 for x, _ in pairs)
    x = np.concatenate([np.asarray(x) for x, _ in pairs])
    np.testing.assert_allclose(x, val_pixels(data.val_ds.x), atol=1e-6)
    assert np.concatenate([np.asarray(y) for _, y in pairs]).tolist() == data.val_y.tolist()
    # fix_dl: the training images in file order, not shuffled, not augmented
    fx = np.concatenate([np.asarray(x) for x, _ in data.fix_dl])
    np.testing.assert_allclose(fx, val_pixels(data.trn_ds.x), atol=1e-6)
    xt, yt = next(iter(data.test_dl))
    np.testing.assert_allclose(np.asarray(xt), val_pixels(data.test_ds.x[:2]), atol=1e-6)


def test_the_training_loader_shuffles_by_its_key_and_augments(data):
    dl = data.trn_dl
    epoch = dl.epoch
    order = dl.order(epoch)
    ys = np.concatenate([np.asarray(y) for _, y in dl])
    assert ys.tolist() == data.trn_y[order].tolist() and sorted(order.tolist()) == list(range(5))
    # the step's view of the same loader is unchanged: uint8 rows and a mask
    b = next(dl.iter_epoch(epoch))
    assert set(b) == {'image', 'label', 'mask'} and b['image'].dtype == np.uint8
    assert b['image'].shape == (2, 10, 10, 3)


def test_augmentation_draws_from_numpys_generator_as_fastai_did(data):
    def draw():  # lesson 1's get_augs: a fresh data object, one batch of aug_dl
        d = ImageClassifierData.from_arrays('.', (images(5), [0, 1, 0, 1, 1]),
                                            (images(3, 5), [1, 0, 1]), bs=2, tfms=TFMS,
                                            cache_size=10)
        x, _ = next(iter(d.aug_dl))
        return d.trn_ds.denorm(x)[1]
    np.random.seed(3)
    a = [draw() for _ in range(6)]
    assert a[0].shape == (8, 8, 3) and 0 <= a[0].min() and a[0].max() <= 1
    assert len({x.tobytes() for x in a}) > 1          # six draws, not one picture six times
    np.random.seed(3)
    np.testing.assert_array_equal(draw(), a[0])       # np.random.seed repeats them


def test_denorm_takes_either_layout_and_gives_hwc_pixels(data):
    x, _ = next(iter(data.val_dl))
    img = data.val_ds.denorm(x)
    want = np.asarray(data.val_ds.x[:2, 1:9, 1:9], np.float32) / 255
    assert img.shape == (2, 8, 8, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img, want, atol=1e-6)
    np.testing.assert_allclose(data.val_ds.denorm(np.moveaxis(np.asarray(x), 3, 1)), want, atol=1e-6)
    np.testing.assert_allclose(data.trn_ds.denorm(np.asarray(x)[0]), want[:1], atol=1e-6)
    np.testing.assert_allclose(data.denorm(x), want, atol=1e-6)
    raw = np.stack([data.val_ds[i][0] for i in (0, 2)])        # uint8 rows: only scaled
    np.testing.assert_allclose(data.val_ds.denorm(raw), raw / 255.0, atol=1e-6)
    clipped = data.val_ds.denorm(np.full((1, 2, 2, 3), 5.0, np.float32))
    assert float(clipped.max()) == 1.0
    with pytest.raises(ValueError, match=r'\(n, H, W, 3\) or \(n, 3, H, W\).*\(2, 5\)'):
        data.val_ds.denorm(np.zeros((2, 5)))


def test_without_transforms_the_pairs_are_the_uint8_images():
    d = ImageClassifierData.from_arrays('.', (images(3), [0, 1, 0]), (images(2), [0, 1]), bs=2,
                                        cache_size=10)
    x, y = next(iter(d.aug_dl))
    assert x.dtype == np.uint8 and x.shape == (2, 10, 10, 3) and y.tolist() == [0, 1]
    with pytest.raises(ValueError, match='no transform to undo'):
        d.val_ds.denorm(np.zeros((1, 10, 10, 3), np.float32))


def test_augment_matches_the_public_op(data):
    """The fastai view's augmentation is tfm_ops.augment with a PRNGKey from numpy's seed."""
    import jax
    np.random.seed(11)
    x, _ = next(iter(data.aug_dl.iter_xy(0)))
    np.random.seed(11)
    seed = np.random.randint(2 ** 31 - 1)
    ref = jax.jit(tfm_ops.augment, static_argnums=2)(jax.random.PRNGKey(seed),
                                                     np.asarray(data.val_ds.x[:2]), TFMS[0])
    np.testing.assert_allclose(np.asarray(x), np.asarray(ref), atol=1e-5)


def test_one_class_is_refused_before_decoding(tmp_path):
    for split in ('train', 'valid'):
        os.makedirs(tmp_path / split / 'cats')
        Image.new('RGB', (12, 12)).save(tmp_path / split / 'cats' / '0.png')
    with pytest.raises(LayoutError, match=r"train/ has one class, 'cats'; a classifier needs two"):
        ImageClassifierData.from_paths(str(tmp_path), tfms=TFMS)
    assert not os.path.exists(tmp_path / 'tmp')          # nothing was decoded
    with pytest.raises(LayoutError, match=r"the labels has one class, '0'.*classes="):
        ImageClassifierData.from_arrays('.', (images(2), [0, 0]), (images(1), [0]), tfms=TFMS)
    (tmp_path / 'labels.csv').write_text('id,label\n0,cats\n')
    with pytest.raises(LayoutError, match=r"labels.csv has one class, 'cats'"):
        ImageClassifierData.from_csv(str(tmp_path), 'train/cats', str(tmp_path / 'labels.csv'),
                                     tfms=TFMS, suffix='.png', val_idxs=[])
    # naming two classes is enough (a validation set may hold one of them only), and one
    # multi-label column is a yes/no question, which is allowed
    ImageClassifierData.from_arrays('.', (images(2), [0, 0]), (images(1), [0]), tfms=TFMS,
                                    classes=['cats', 'dogs'])
    d = ImageClassifierData.from_arrays('.', (images(2), [[1.], [0.]]), (images(1), [[1.]]),
                                        tfms=TFMS)
    assert d.is_multi and d.c == 1
