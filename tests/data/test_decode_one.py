"""decode_one: one image or array to the uint8 square -- modes, EXIF, JPEG draft, bombs."""
import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from jaxcls.data import decode_one
from jaxcls.data.decode_one import BadImageError, decode_image

from image_files import save


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
    assert decode_one.to_rgb(Image.fromarray(np.full((2, 2), 65535, np.int32), 'I')).getpixel((0, 0)) == (255,) * 3
    f = Image.fromarray(np.array([[0.0, 0.5], [1.0, 1.0]], np.float32), 'F')
    assert np.asarray(decode_one.to_rgb(f))[:, :, 0].tolist() == [[0, 128], [255, 255]]
    wide = Image.fromarray(np.array([[-10.0, 10.0]], np.float32), 'F')  # min..max rescale
    assert np.asarray(decode_one.to_rgb(wide))[0, :, 0].tolist() == [0, 255]


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
    ref = np.asarray(decode_one.square_resize(ImageOps.exif_transpose(Image.open(p)).convert('RGB'), 20))
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
