"""decode: building a split -- bad files skipped with reasons or raised, records and arrays, and the
names the module hands on from decode_one and decode_cache."""
import io
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from jaxcls.data import decode as dec
from jaxcls.data import decode_cache, decode_one
from jaxcls.data.decode import (BadImageError, SkippedImagesWarning, decode_arrays, decode_files)

from image_files import save


def test_names_from_before_the_split_are_the_lower_modules_own():
    # bench/, train/ and cli import these from jaxcls.data.decode.
    for name in ('decode_image', 'BadImageError', 'to_rgb', 'square_resize'):
        assert getattr(dec, name) is getattr(decode_one, name)
    for name in ('default_cache_size', 'wait_for_cache_writes', 'ram_budget', 'RAM_FRACTION',
                 'FORMAT_VERSION', 'CACHE_MARGIN', 'MMAP_BYTES', 'manifest_fingerprint',
                 'array_fingerprint'):
        assert getattr(dec, name) is getattr(decode_cache, name)
    assert all(hasattr(dec, name) for name in dec.__all__)


def write_bad_files(root):
    good = [save(Image.new('RGB', (12, 9), (i * 40, 0, 0)), os.path.join(root, f'ok{i}.png'))
            for i in range(3)]
    open(os.path.join(root, 'empty.jpg'), 'wb').close()
    with open(os.path.join(root, 'text.jpg'), 'w') as f:
        f.write('this is not a jpeg')
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, 'JPEG')
    with open(os.path.join(root, 'trunc.jpg'), 'wb') as f:
        f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
    return ['empty.jpg', 'ok0.png', 'ok1.png', 'text.jpg', 'trunc.jpg', 'ok2.png', 'missing.png']


def test_bad_files_skipped_with_reasons(tmp_path):
    names = write_bad_files(tmp_path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        d = decode_files(names, str(tmp_path), 8, name='train', quiet=True)
    ours = [x for x in w if issubclass(x.category, SkippedImagesWarning)]
    assert len(ours) == 1 and 'skipped 4 of 7 files in train' in str(ours[0].message)
    assert not [x for x in w if 'PIL' in x.filename]  # Pillow's own warnings are folded in
    assert d.fnames == ('ok0.png', 'ok1.png', 'ok2.png') and d.kept.tolist() == [1, 2, 5]
    reasons = dict(d.skipped)
    assert reasons['empty.jpg'] == 'empty file (0 bytes)'
    assert reasons['text.jpg'].startswith('not an image Pillow can read')
    assert reasons['trunc.jpg'].startswith('truncated')
    assert reasons['missing.png'].startswith('unreadable')
    assert len(d.x) + len(d.skipped) == len(names)
    assert d.x[:, 0, 0, 0].tolist() == [0, 40, 80]


def test_on_bad_raise(tmp_path):
    names = write_bad_files(tmp_path)
    with pytest.raises(BadImageError, match=r"4 of 7 files in images could not be decoded: 'empty.jpg'"):
        decode_files(names, str(tmp_path), 8, on_bad='raise', cache_dir=str(tmp_path / 'c'), quiet=True)
    assert not any(f.endswith('.npy') for f in os.listdir(tmp_path / 'c'))  # nothing cached
    with pytest.raises(ValueError, match="on_bad='ignore'"):
        decode_files(names, str(tmp_path), 8, on_bad='ignore')


def test_decode_records_bytes_and_arrays():
    def png(c):
        b = io.BytesIO()
        Image.new('RGB', (10, 6), c).save(b, 'PNG')
        return b.getvalue()
    recs = [png((255, 0, 0)), b'', np.full((5, 5, 1), 7, np.uint8), png((0, 0, 255))]
    with pytest.warns(SkippedImagesWarning):
        d = dec.decode_records(lambda idx: [recs[i] for i in idx], [f'r{i}' for i in range(4)], 4, chunk=3)
    assert d.fnames == ('r0', 'r2', 'r3') and d.skipped == [('r1', 'empty file (0 bytes)')]
    assert d.x[:, 0, 0].tolist() == [[255, 0, 0], [7, 7, 7], [0, 0, 255]]


def test_decode_arrays():
    x = np.zeros((3, 10, 20, 3), np.float32)
    x[1] = 1.0
    out = decode_arrays(x, 8)
    assert out.shape == (3, 8, 8, 3) and out.dtype == np.uint8 and out[:, 0, 0, 0].tolist() == [0, 255, 0]
    g = decode_arrays(np.full((2, 8, 8), 9, np.uint8), 8)
    assert g.shape == (2, 8, 8, 3) and (g == 9).all()
    same = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    np.testing.assert_array_equal(decode_arrays(same, 8), same)  # already the cache size: untouched
    with pytest.raises(ValueError, match=r'float image arrays must hold values in \[0, 1\]; got 255..255'):
        decode_arrays(np.full((1, 4, 4, 3), 255.0), 4)
    with pytest.raises(ValueError, match='NCHW'):
        decode_arrays(np.zeros((1, 3, 4, 4, 2), np.uint8), 4)
    assert decode_cache.array_fingerprint(same) == decode_cache.array_fingerprint(same.copy()) != decode_cache.array_fingerprint(same[:1])
