"""decode_cache: the on-disk cache of a build -- reuse without decoding, invalidation, fingerprints,
memory maps, background writes, an unwritable folder."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxcls.data import decode_cache, decode_one
from jaxcls.data.decode import SkippedImagesWarning, decode_files
from jaxcls.data.decode_cache import default_cache_size

from image_files import save


def test_default_cache_size():
    assert default_cache_size(224) == 258 and default_cache_size(32) == 37 and default_cache_size(299) == 344


def make_set(root, n=4, size=(14, 10)):
    return [os.path.relpath(save(Image.new('RGB', size, (10 * i, 50, 90)), os.path.join(root, 'imgs', f'{i}.png')),
                            root) for i in range(n)]


def test_cache_reuse_does_not_decode(tmp_path, monkeypatch):
    names = make_set(tmp_path)
    cdir = str(tmp_path / 'tmp')
    d1 = decode_files(names, str(tmp_path), 12, name='train', cache_dir=cdir)
    assert not d1.from_cache and d1.cache_file.endswith('.npy') and os.path.exists(d1.cache_file)

    def boom(*a, **k):
        raise AssertionError('decoded although the cache is valid')
    monkeypatch.setattr(decode_one, 'decode_image', boom)
    d2 = decode_files(names, str(tmp_path), 12, name='train', cache_dir=cdir)
    assert d2.from_cache and d2.fingerprint == d1.fingerprint
    np.testing.assert_array_equal(d2.x, d1.x)
    assert d2.x[:, 0, 0, 0].tolist() == [0, 10, 20, 30]
    man = json.load(open(d1.cache_file[:-4] + '.json'))
    assert man['format'] == decode_cache.FORMAT_VERSION and man['cache_size'] == 12 and man['jaxcls']
    st = os.stat(tmp_path / names[0])
    assert man['sources'][0] == [names[0], st.st_size, st.st_mtime_ns]
    # another cache size is another cache
    with pytest.raises(AssertionError, match='decoded although'):
        decode_files(names, str(tmp_path), 10, name='train', cache_dir=cdir, num_workers=1)


@pytest.mark.filterwarnings('ignore::jaxcls.data.decode.SkippedImagesWarning')
def test_cache_invalidation(tmp_path):
    names = make_set(tmp_path)
    cdir = str(tmp_path / 'tmp')
    d1 = decode_files(names, str(tmp_path), 12, cache_dir=cdir)
    # changed content (size differs)
    save(Image.new('RGB', (30, 30), (255, 255, 255)), tmp_path / names[1])
    d2 = decode_files(names, str(tmp_path), 12, cache_dir=cdir)
    assert not d2.from_cache and d2.fingerprint != d1.fingerprint and d2.x[1, 0, 0].tolist() == [255] * 3
    assert decode_files(names, str(tmp_path), 12, cache_dir=cdir).from_cache
    # mtime only
    st = os.stat(tmp_path / names[2])
    os.utime(tmp_path / names[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    d3 = decode_files(names, str(tmp_path), 12, cache_dir=cdir)
    assert not d3.from_cache and d3.fingerprint != d2.fingerprint
    # added and removed files
    names4 = names + make_set(tmp_path, 5)[4:]
    d4 = decode_files(names4, str(tmp_path), 12, cache_dir=cdir)
    assert not d4.from_cache and len(d4.x) == 5
    os.remove(tmp_path / names[0])
    d5 = decode_files(names4, str(tmp_path), 12, cache_dir=cdir)
    assert not d5.from_cache and len(d5.x) == 4 and d5.skipped[0][0] == names[0]
    assert decode_files(names4, str(tmp_path), 12, cache_dir=cdir).from_cache


def test_fingerprint_stable_and_location_free(tmp_path):
    names = make_set(tmp_path)
    a = decode_files(names, str(tmp_path), 12, cache_dir=str(tmp_path / 'c1'))
    b = decode_files(names, str(tmp_path), 12, cache_dir=str(tmp_path / 'c2'))
    c = decode_files(names, str(tmp_path), 12, cache_dir=None)
    assert a.fingerprint == b.fingerprint == c.fingerprint and len(a.fingerprint) == 20
    assert c.cache_file is None and not os.path.exists(tmp_path / 'tmp')
    assert decode_files(names, str(tmp_path), 11).fingerprint != a.fingerprint


@pytest.mark.filterwarnings('ignore::jaxcls.data.decode.SkippedImagesWarning')
def test_memory_mapped_large_cache_with_skips(tmp_path, monkeypatch):
    # More than fits in RAM: decoded straight into a memory-mapped file.
    monkeypatch.setattr(decode_cache, 'ram_budget', lambda: 0)
    names = make_set(tmp_path, 5)
    open(tmp_path / 'imgs' / 'bad.png', 'wb').close()
    names.insert(2, 'imgs/bad.png')
    ref = decode_files(names, str(tmp_path), 12, quiet=True)
    with pytest.warns(SkippedImagesWarning):
        d = decode_files(names, str(tmp_path), 12, cache_dir=str(tmp_path / 'c'), mmap_bytes=0)
    assert isinstance(d.x, np.memmap) and not d.x.flags.writeable
    assert d.x.shape == (5, 12, 12, 3)
    np.testing.assert_array_equal(np.asarray(d.x), ref.x)
    assert [f for f in os.listdir(tmp_path / 'c') if 'tmp' in f] == []  # temporaries cleaned up
    with pytest.warns(SkippedImagesWarning, match='as recorded in the cache'):
        again = decode_files(names, str(tmp_path), 12, cache_dir=str(tmp_path / 'c'), mmap_bytes=0)
    assert again.from_cache and isinstance(again.x, np.memmap) and again.skipped == d.skipped
    small = decode_files(names, str(tmp_path), 12, cache_dir=str(tmp_path / 'c'), quiet=True)
    assert small.from_cache and not isinstance(small.x, np.memmap)  # under the threshold: in RAM


@pytest.mark.filterwarnings('ignore::jaxcls.data.decode.SkippedImagesWarning')
def test_large_cache_that_fits_in_ram_is_written_in_the_background(tmp_path):
    names = make_set(tmp_path, 5)
    open(tmp_path / 'imgs' / 'bad.png', 'wb').close()
    names.insert(2, 'imgs/bad.png')
    ref = decode_files(names, str(tmp_path), 12, quiet=True)
    d = decode_files(names, str(tmp_path), 12, cache_dir=str(tmp_path / 'c'), mmap_bytes=0,
                     quiet=True)
    # Decoded into RAM (not a memory map of a file still being written), the same pixels.
    assert not isinstance(d.x, np.memmap) and not d.from_cache
    np.testing.assert_array_equal(d.x, ref.x)
    assert decode_cache.wait_for_cache_writes(timeout=60)
    assert os.path.exists(d.cache_file) and d.cache_file.endswith('.npy')
    assert [f for f in os.listdir(tmp_path / 'c') if 'tmp' in f] == []
    again = decode_files(names, str(tmp_path), 12, cache_dir=str(tmp_path / 'c'), mmap_bytes=0,
                         quiet=True)
    assert again.from_cache and isinstance(again.x, np.memmap) and again.skipped == d.skipped
    np.testing.assert_array_equal(np.asarray(again.x), ref.x)
    assert again.fingerprint == d.fingerprint


def test_background_cache_write_finishes_before_python_exits(tmp_path):
    # A script that ends right after decoding still leaves a complete, reusable cache.
    names = make_set(tmp_path, 4)
    script = (f'from jaxcls.data.decode import decode_files\n'
              f'decode_files({names!r}, {str(tmp_path)!r}, 12, cache_dir={str(tmp_path / "c")!r}, '
              f'mmap_bytes=0, quiet=True)\n')
    subprocess.run([sys.executable, '-c', script], check=True, timeout=300,
                   env=dict(os.environ, JAX_PLATFORMS='cpu'))
    again = decode_files(names, str(tmp_path), 12, cache_dir=str(tmp_path / 'c'), mmap_bytes=0)
    assert again.from_cache and again.x.shape == (4, 12, 12, 3)


def test_unwritable_cache_dir_falls_back_to_memory(tmp_path):
    names = make_set(tmp_path, 2)
    (tmp_path / 'afile').write_text('x')
    with pytest.warns(UserWarning, match='could not write the decode cache'):
        d = decode_files(names, str(tmp_path), 8, cache_dir=str(tmp_path / 'afile' / 'sub'))
    assert d.x.shape == (2, 8, 8, 3) and d.cache_file is None
