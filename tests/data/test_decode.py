"""Decoding to the uint8 cache: modes, EXIF, bad files, bombs, the on-disk cache and its invalidation."""
import io
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from jaxcls.data import decode as dec
from jaxcls.data import decode_cache, decode_one
from jaxcls.data.decode import (BadImageError, SkippedImagesWarning, decode_arrays, decode_files,
                                decode_image, default_cache_size)


def save(im, path, **kw):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    im.save(path, **kw)
    return path


def test_default_cache_size():
    assert default_cache_size(224) == 258 and default_cache_size(32) == 37 and default_cache_size(299) == 344


def test_square_crop_and_resize(tmp_path):
    # 40x20: left quarter red, middle half green, right quarter blue -> the centre square is green.
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :10] = (255, 0, 0)
    a[:, 10:30] = (0, 255, 0)
    a[:, 30:] = (0, 0, 255)
    p = save(Image.fromarray(a), tmp_path / 'a.png')
    out = decode_image(str(p), 10)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    # resize-then-crop: the antialiasing filter may see one source pixel past the square's edge
    assert (out[:, 1:-1] == (0, 255, 0)).all()
    assert out[:, 0, 0].max() < 80 and out[:, -1, 2].max() < 80
    up = decode_image(str(p), 30)  # upsampling small images works too
    assert up.shape == (30, 30, 3) and (up[5:25, 5:25] == (0, 255, 0)).all()


@pytest.mark.parametrize('mode,value,expect', [
    ('L', 100, (100, 100, 100)),
    ('1', 1, (255, 255, 255)),
    ('LA', (80, 255), (80, 80, 80)),       # opaque
    ('LA', (80, 0), (255, 255, 255)),      # transparent -> white background
    ('RGBA', (0, 0, 0, 128), (127, 127, 127)),  # half-transparent black on white
    ('RGBA', (10, 20, 30, 255), (10, 20, 30)),
])
def test_modes(tmp_path, mode, value, expect):
    p = save(Image.new(mode, (12, 10), value), tmp_path / 'm.png')
    out = decode_image(str(p), 8)
    np.testing.assert_allclose(out.reshape(-1, 3), np.tile(expect, (64, 1)), atol=1)


def test_palette_with_transparency(tmp_path):
    im = Image.new('P', (16, 16), 0)
    im.putpalette([200, 10, 10, 0, 0, 0] + [0] * 762)
    for x in range(8, 16):  # right half uses the transparent index 1
        for y in range(16):
            im.putpixel((x, y), 1)
    p = save(im, tmp_path / 'p.png', transparency=1)
    assert Image.open(p).mode == 'P' and Image.open(p).info['transparency'] == 1
    out = decode_image(str(p), 16)
    assert out[8, 2].tolist() == [200, 10, 10]
    assert out[8, 13].tolist() == [255, 255, 255]  # transparent, not palette black


def test_cmyk_jpeg(tmp_path):
    p = save(Image.new('RGB', (16, 16), (200, 30, 40)).convert('CMYK'), tmp_path / 'c.jpg', quality=95)
    assert Image.open(p).mode == 'CMYK'
    out = decode_image(str(p), 8)
    np.testing.assert_allclose(out.mean((0, 1)), (200, 30, 40), atol=6)


@pytest.mark.parametrize('v16,v8', [(65535, 255), (32768, 128), (0, 0), (257 * 77, 77)])
def test_16bit_png_scaled_not_clipped(tmp_path, v16, v8):
    p = save(Image.fromarray(np.full((10, 14), v16, np.uint16)), tmp_path / 'g16.png')
    assert Image.open(p).mode.startswith('I;16')
    out = decode_image(str(p), 8)
    assert (out == v8).all(), (out.min(), out.max())


def test_32bit_int_and_float_modes():
    assert dec.to_rgb(Image.fromarray(np.full((2, 2), 65535, np.int32), 'I')).getpixel((0, 0)) == (255,) * 3
    f = Image.fromarray(np.array([[0.0, 0.5], [1.0, 1.0]], np.float32), 'F')
    assert np.asarray(dec.to_rgb(f))[:, :, 0].tolist() == [[0, 128], [255, 255]]
    wide = Image.fromarray(np.array([[-10.0, 10.0]], np.float32), 'F')  # min..max rescale
    assert np.asarray(dec.to_rgb(wide))[0, :, 0].tolist() == [0, 255]


def exif_jpeg(path, orientation):
    """A 40x20 JPEG: left half red, right half blue, stored with an EXIF orientation."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)
    a[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(Image.fromarray(a), path, quality=95, exif=exif.tobytes())


def test_exif_rotation_upright(tmp_path):
    # Orientation 6: the viewer rotates 90 degrees clockwise; the red left half ends up on top.
    p = exif_jpeg(tmp_path / 'r6.jpg', 6)
    out = decode_image(str(p), 20).astype(int)
    assert out.shape == (20, 20, 3)
    assert (abs(out[2, 10] - (255, 0, 0)) < 30).all()  # top is red
    assert (abs(out[17, 10] - (0, 0, 255)) < 30).all()  # bottom is blue
    # the same as Pillow's own exif_transpose followed by our crop
    from PIL import ImageOps
    ref = np.asarray(dec.square_resize(ImageOps.exif_transpose(Image.open(p)).convert('RGB'), 20))
    np.testing.assert_allclose(out, ref, atol=2)
    # orientation 1 (and 3 = 180 degrees): left/right halves, swapped for 3
    o1 = decode_image(str(exif_jpeg(tmp_path / 'r1.jpg', 1)), 20).astype(int)
    o3 = decode_image(str(exif_jpeg(tmp_path / 'r3.jpg', 3)), 20).astype(int)
    assert o1[10, 0, 0] > 200 and o1[10, 19, 2] > 200
    assert o3[10, 0, 2] > 200 and o3[10, 19, 0] > 200


def test_big_jpeg_uses_draft(tmp_path, monkeypatch):
    a = np.zeros((480, 640, 3), np.uint8)
    a[:, :, 1] = np.linspace(0, 255, 640)[None, :]
    p = save(Image.fromarray(a), tmp_path / 'big.jpg', quality=95)
    calls = []
    orig = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        r = orig(self, mode, size)
        calls.append((size, self.size))
        return r
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, 'draft', spy)
    out = decode_image(str(p), 50)
    assert calls == [((50, 50), (80, 60))]  # decoded at 1/8 scale, short side 60 >= 50
    ref = np.asarray(Image.open(p).convert('RGB').crop((80, 0, 560, 480)).resize((50, 50), Image.BILINEAR))
    assert np.abs(out.astype(int) - ref).mean() < 3


def test_max_pixels_guard(tmp_path, monkeypatch):
    png = save(Image.new('RGB', (100, 100), 'red'), tmp_path / 'big.png')
    jpg = save(Image.new('RGB', (400, 400), 'red'), tmp_path / 'big.jpg')
    with pytest.raises(BadImageError, match=r'too large: 100x100 = 10000 pixels > max_pixels=5000'):
        decode_image(str(png), 16, max_pixels=5000)
    assert decode_image(str(jpg), 16, max_pixels=5000).shape == (16, 16, 3)  # 1/8 draft: 50x50
    # Pillow's own bomb error (> 2 * MAX_IMAGE_PIXELS) is handled, not fatal, not hanging:
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 3000)
    for p in (png, jpg):
        with pytest.raises(Image.DecompressionBombError):
            Image.open(p)
    with pytest.raises(BadImageError, match='max_pixels=3000'):
        decode_image(str(png), 16)
    with pytest.raises(BadImageError, match=r'too large: 400x400, 50x50 after JPEG draft = 2500 pixels > max_pixels=2000'):
        decode_image(str(jpg), 16, max_pixels=2000)
    assert decode_image(str(jpg), 16)[0, 0, 0] > 240  # JPEG: opened unchecked, drafted to 50x50
    assert decode_image(str(png), 16, max_pixels=None).shape == (16, 16, 3)


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
    assert man['format'] == dec.FORMAT_VERSION and man['cache_size'] == 12 and man['jaxcls']
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
    assert dec.wait_for_cache_writes(timeout=60)
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
    assert dec.array_fingerprint(same) == dec.array_fingerprint(same.copy()) != dec.array_fingerprint(same[:1])
