"""ImageDataset (one decoded split) and the checks of tfms= and cache_size= shared by the constructors."""
import collections

import numpy as np
import pytest

from jaxcls.data.dataset import ImageDataset, check_tfms, resolve_size
from jaxcls.data.decode import Decoded

Cfg = collections.namedtuple('Cfg', 'sz mean std')


def test_dataset_object():
    ds = ImageDataset(np.zeros((2, 4, 4, 3), np.uint8), np.array([1, 0]), ['a', 'b'], ['x', 'y'])
    assert len(ds) == 2 and ds.c == 2 and ds.cache_size == 4 and ds[0][1] == 1
    with pytest.raises(ValueError, match='2 images, 2 targets and 1 names'):
        ImageDataset(np.zeros((2, 4, 4, 3), np.uint8), np.array([1, 0]), ['a'], ['x'])


def test_from_decoded_keeps_the_targets_and_ids_of_the_kept_rows():
    d = Decoded(np.zeros((2, 4, 4, 3), np.uint8), ('a', 'c'), np.array([0, 2]),
                [('b', 'empty file (0 bytes)')], 'f' * 20, 4)
    ds = ImageDataset.from_decoded(d, np.array([5, 6, 7]), ['x'], ids=[10, 11, 12])
    assert ds.y.tolist() == [5, 7] and ds.ids.tolist() == [10, 12] and ds.fnames == ['a', 'c']
    assert ds.skipped == [('b', 'empty file (0 bytes)')] and ds.labelled
    unlabelled = ImageDataset.from_decoded(d, None, ['x'])
    assert not unlabelled.labelled and unlabelled.y.tolist() == [0, 0] and unlabelled.ids is None


def test_shard_is_every_count_th_row():
    ds = ImageDataset(np.arange(5)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8),
                      np.arange(5), list('abcde'), ['x'], fingerprint='fp')
    s = ds.shard(0, 2)
    assert s.fnames == ['a', 'c', 'e'] and s.ids.tolist() == [0, 2, 4]
    assert s.x[:, 0, 0, 0].tolist() == [0, 2, 4] and s.fingerprint == 'fp-p0of2'
    with pytest.raises(ValueError, match='already one process'):
        s.shard(0, 2)


def test_tfms_and_size_checks():
    assert check_tfms(None) == (None, None)
    with pytest.raises(TypeError, match=r'tfms must be a \(train, valid\) pair'):
        check_tfms(Cfg(16, 0, 1))
    with pytest.raises(TypeError, match='tfms entries must be transform configs with .sz'):
        check_tfms((Cfg(16, 0, 1), 'x'))
    assert resolve_size((Cfg(16, 0, 1), Cfg(20, 0, 1)), None) == (20, 23)   # round(1.15 * 20)
    assert resolve_size((None, None), 12) == (None, 12)
    with pytest.raises(ValueError, match='cache_size=8 is smaller than the training size sz=16'):
        resolve_size((Cfg(16, 0, 1), None), 8)
    with pytest.raises(ValueError, match='needs an image size'):
        resolve_size((None, None), None)
