"""TFDS without TensorFlow: a tiny real array_record dataset built in tmp_path, and tfds.testing.mock_data.

On tfds 4.9.10, ``mock_data`` mocks ``tfds.data_source`` but its fake records
can only be *encoded* (which ``SkipDecoding`` needs) with TensorFlow installed,
so the end-to-end test builds a real array_record dataset with a small
GeneratorBasedBuilder (images given as PNG bytes: no TensorFlow needed), and the
mock test supplies its own records through ``as_data_source_fn``.
"""
import io
import sys

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip('tensorflow_datasets')

from jaxcls.data import decode_one  # noqa: E402
from jaxcls.data.imagedata import ImageClassifierData  # noqa: E402

RED, BLUE = (240, 10, 10), (10, 10, 240)


def png(colour, size):
    buf = io.BytesIO()
    Image.new('RGB', size, colour).save(buf, 'PNG')
    return buf.getvalue()


class JaxclsTinyPets(tfds.core.GeneratorBasedBuilder):
    """Two classes, colour-coded (cat = red, dog = blue), so labels can be checked against pixels."""

    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3)),
            'label': tfds.features.ClassLabel(names=['cat', 'dog'])}))

    def _split_generators(self, dl_manager):
        return {'train': self._generate_examples(8), 'test': self._generate_examples(4)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {'image': png(BLUE if i % 2 else RED, (20 + i, 16)), 'label': i % 2}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('tfds')
    JaxclsTinyPets(data_dir=str(d), file_format='array_record').download_and_prepare()
    return str(d)


def colour_labels(x):
    px = np.asarray(x)[:, 8, 8].astype(int)
    return (px[:, 2] > px[:, 0]).astype(int).tolist()


Cfg = __import__('collections').namedtuple('Cfg', 'sz mean std')
TFMS = (Cfg(12, (0.5,) * 3, (0.25,) * 3),) * 2  # cache size 14


def test_from_tfds_array_record_without_tensorflow(data_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorflow', None)  # any TF import would fail
    data = ImageClassifierData.from_tfds('jaxcls_tiny_pets', data_dir=data_dir, bs=4, tfms=TFMS)
    assert data.classes == ['cat', 'dog'] and data.c == 2 and not data.is_multi
    assert len(data.trn_ds) == 8 and len(data.val_ds) == 4 and data.test_ds is None
    assert data.trn_ds.x.shape == (8, 14, 14, 3) and data.trn_ds.x.dtype == np.uint8
    assert sorted(data.trn_y.tolist()) == [0] * 4 + [1] * 4
    assert colour_labels(data.trn_ds.x) == data.trn_y.tolist()  # labels follow their images
    assert colour_labels(data.val_ds.x) == data.val_y.tolist()
    assert data.trn_ds.fnames[0] == 'train[0]' and data.val_ds.fnames[-1] == 'test[3]'
    assert 'jaxcls_tiny_pets' in data.path and not data.trn_ds.from_cache
    b = next(data.trn_dl.iter_epoch(0))
    assert b['image'].shape == (4, 14, 14, 3) and b['label'].dtype == np.int32

    # second run: stat-only check, no decoding, labels from the label cache
    def boom(*a, **k):
        raise AssertionError('decoded again')
    monkeypatch.setattr(decode_one, 'decode_image', boom)
    again = ImageClassifierData.from_tfds('jaxcls_tiny_pets', data_dir=data_dir, bs=4, tfms=TFMS)
    assert again.trn_ds.from_cache and again.val_ds.from_cache
    assert again.trn_ds.fingerprint == data.trn_ds.fingerprint
    assert again.trn_y.tolist() == data.trn_y.tolist()
    np.testing.assert_array_equal(again.trn_ds.x, data.trn_ds.x)


def test_split_slicing_and_dict(data_dir):
    data = ImageClassifierData.from_tfds('jaxcls_tiny_pets', data_dir=data_dir, bs=2, tfms=TFMS,
                     split={'train': 'train[:75%]', 'valid': 'train[75%:]', 'test': 'test'})
    assert (len(data.trn_ds), len(data.val_ds), len(data.test_ds)) == (6, 2, 4)
    assert colour_labels(data.val_ds.x) == data.val_y.tolist()
    assert data.test_ds.fnames[0] == 'test[0]' and len(data.test_dl) == 2


def test_errors(data_dir, monkeypatch):
    with pytest.raises(ValueError, match=r"no feature 'img'; its features are \['image', 'label'\]"):
        ImageClassifierData.from_tfds('jaxcls_tiny_pets', data_dir=data_dir, tfms=TFMS, image_key='img')
    with pytest.raises(ValueError, match=r"split='train': pass \(train_split, valid_split"):
        ImageClassifierData.from_tfds('jaxcls_tiny_pets', data_dir=data_dir, tfms=TFMS, split='train')
    with pytest.raises(ValueError, match="cannot read split 'nope'"):
        ImageClassifierData.from_tfds('jaxcls_tiny_pets', data_dir=data_dir, tfms=TFMS,
                                      split=('train', 'nope'))

    # a dataset in a format without random access, and no TensorFlow installed
    def not_random_access(*a, **k):
        raise NotImplementedError('Random access data source for file format tfrecord is not supported')
    monkeypatch.setattr(tfds, 'data_source', not_random_access)
    monkeypatch.setitem(sys.modules, 'tensorflow', None)
    with pytest.raises(ImportError, match=r"pip install 'jaxcls\[tf\]'.*file_format='array_record'"):
        ImageClassifierData.from_tfds('jaxcls_tiny_pets', data_dir=data_dir, tfms=TFMS, cache_dir=False)


def test_mock_data_source(tmp_path):
    """tfds.testing.mock_data (no files): mnist's class names from its code, records we supply."""
    from tensorflow_datasets import testing as tfds_testing
    rng = np.random.default_rng(0)
    records = [{'image': png((int(v), int(v), int(v)), (28, 28)), 'label': i % 10}
               for i, v in enumerate(rng.integers(0, 256, 12))]

    def as_data_source(self, split, decoders=None, deserialize_method=None, **kw):
        assert 'image' in decoders  # jaxcls asks for the encoded bytes
        return records[:8] if str(split).startswith('train') else records[8:]

    with tfds_testing.mock_data(policy=tfds_testing.MockPolicy.USE_CODE, as_data_source_fn=as_data_source):
        data = ImageClassifierData.from_tfds('mnist', bs=4, tfms=TFMS)
    assert data.classes == [str(i) for i in range(10)]
    assert data.trn_y.tolist() == [r['label'] for r in records[:8]]
    assert data.trn_ds.cache_file is None  # mocked dataset has no files: decoded in memory
    np.testing.assert_array_equal(data.val_ds.x[:, 5, 5, 0],
                                  [np.frombuffer(Image.open(io.BytesIO(r['image'])).tobytes(), np.uint8)[0]
                                   for r in records[8:]])
