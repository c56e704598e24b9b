"""Decoding one image -- a file, its encoded bytes, or an array -- to a uint8 (S, S, 3) square,
or to a resized copy of its file (:func:`resize_file`, what ``data.resize`` writes).

Pillow decodes every image, the same way wherever it comes from:

1. JPEGs bigger than needed are decoded at 1/2, 1/4 or 1/8 scale
   (``Image.draft('RGB', (S, S))``: the DCT-domain reduction keeps the short
   side >= S).
2. EXIF orientation is applied (``ImageOps.exif_transpose``), so phone photos
   come out upright. A malformed EXIF block leaves the image as stored.
3. Any mode becomes RGB: L, 1, P, CMYK, YCbCr... by Pillow's ``convert``;
   transparency (RGBA, LA, PA, P or L with a transparent colour) is composited
   on **white** (what image viewers and web pages show; a transparent
   background then reads as "no object there" rather than as a black blob);
   16-bit integer images (I;16*, and mode I within 0..65535) are scaled by
   255/65535 and rounded (65535 -> 255, 32768 -> 128), never clipped; mode I
   outside that range and mode F are rescaled from their own min..max (F in
   0..1 is taken as 0..1).
4. The centred square of side min(W, H) is resized to S x S in one bilinear,
   antialiased resample (``Image.resize(box=...)`` with ``reducing_gap=2``):
   exactly "resize the short side to S, then centre-crop", without resampling
   the pixels the crop throws away.

A file that cannot be decoded raises :class:`BadImageError` with the reason:
empty, truncated, corrupt, non-image, unreadable (no permission, a symlink loop
or a dangling link) or over-large, or not a regular file (a FIFO would block
``open`` forever). A JPEG whose scan data ends early but is properly terminated
decodes as libjpeg fills it (grey), as in Pillow; there is no reliable way to
tell it from a real image.

Decompression bombs: images whose pixel count *after* JPEG draft exceeds
``max_pixels`` (default: Pillow's ``Image.MAX_IMAGE_PIXELS`` at call time,
about 89.5 M) are refused with a reason before their pixels are decoded; a
giant JPEG is decoded at 1/8 scale when that brings it under the limit.
Pillow's own global limit is not changed.

This file imports nothing from jaxcls: the decode worker processes
(:mod:`jaxcls.data.decode_procs`) load it by its path, without the package.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import stat
import struct
import threading

import numpy as np
from PIL import Image, ImageOps

__all__ = ['BadImageError', 'ALPHA_BACKGROUND', 'RESAMPLE', 'REDUCING_GAP', 'SETTINGS',
           'RESIZE_QUALITY', 'JPEG_EXTENSIONS', 'to_rgb', 'square_resize', 'resolve_max_pixels',
           'open_rgb', 'decode_image', 'short_side_size', 'resize_file', 'array_image',
           'as_uint8_images']

#: Colour that transparent pixels are composited on.
ALPHA_BACKGROUND = (255, 255, 255)
RESAMPLE = Image.Resampling.BILINEAR
REDUCING_GAP = 2.0
#: How images are decoded, as recorded in every cache manifest (a change rebuilds the caches).
SETTINGS = {'resample': 'bilinear', 'reducing_gap': REDUCING_GAP,
            'alpha_background': list(ALPHA_BACKGROUND), 'exif_transpose': True,
            'crop': 'centre-square'}
#: JPEG quality of the copies resize_file writes (data.resize).
RESIZE_QUALITY = 90
JPEG_EXTENSIONS = ('.jpg', '.jpeg', '.jpe', '.jfif')


class BadImageError(ValueError):
    """A file could not be decoded (raised per image, or for all of them with ``on_bad='raise'``)."""


def _to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    a = a.astype(np.float64)
    if mode.startswith('I;16') or (mode == 'I' and a.size and a.min() >= 0 and a.max() <= 65535):
        a = a * (255.0 / 65535.0)
    elif mode == 'F' and a.size and a.min() >= 0 and a.max() <= 1:
        a = a * 255.0
    else:
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def to_rgb(im: Image.Image) -> Image.Image:
    """`im` as an RGB image: alpha composited on white, 16-bit scaled to 8-bit.

    >>> to_rgb(Image.new('LA', (1, 1), (0, 0))).getpixel((0, 0))  # fully transparent -> white
    (255, 255, 255)
    """
    mode = im.mode
    if mode == 'RGB' and 'transparency' not in im.info:
        return im
    if (mode in ('RGBA', 'RGBa', 'LA', 'La', 'PA')
            or (mode in ('P', 'L', 'RGB', '1') and 'transparency' in im.info)):
        rgba = im.convert('RGBA')
        bg = Image.new('RGBA', im.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(bg, rgba).convert('RGB')
    if mode.startswith('I') or mode == 'F':
        return Image.fromarray(_to_uint8(np.asarray(im), mode)).convert('RGB')
    return im.convert('RGB')


def square_resize(im: Image.Image, size: int) -> Image.Image:
    """The centred min(W, H) square of `im`, resized to `size` x `size` (bilinear, antialiased)."""
    w, h = im.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    if (w, h) == (size, size):
        return im
    return im.resize((size, size), RESAMPLE, box=box, reducing_gap=REDUCING_GAP)


def _open_unchecked(fp) -> Image.Image:
    """Image.open without Pillow's decompression-bomb check (our own check follows)."""
    Image.preinit()
    fp.seek(0)
    prefix = fp.read(16)
    for loader in (lambda: None, Image.init):
        loader()
        for fmt in list(Image.ID):
            factory, accept = Image.OPEN[fmt]
            ok = accept(prefix) if accept else True
            if ok and not isinstance(ok, str):
                fp.seek(0)
                try:
                    return factory(fp, '')
                except (SyntaxError, IndexError, TypeError, struct.error):
                    continue
    raise Image.UnidentifiedImageError('cannot identify image file')


def resolve_max_pixels(max_pixels: int | None | str) -> int | None:
    """The pixel limit `max_pixels` stands for: 'pillow' is Pillow's limit now."""
    return Image.MAX_IMAGE_PIXELS if max_pixels == 'pillow' else max_pixels


def open_rgb(src: str | os.PathLike | bytes, size: int, *, max_pixels: int | None | str = 'pillow'
             ) -> Image.Image:
    """One image file (or its encoded bytes) as a loaded, upright RGB Pillow image whose
    shorter side is at least `size` when the original's is (a big JPEG is draft-decoded at
    1/2, 1/4 or 1/8 scale): what :func:`decode_image` and :func:`resize_file` resample.

    Raises:
      BadImageError: the reason the image cannot be decoded.
    """
    limit = resolve_max_pixels(max_pixels)
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise BadImageError('empty file (0 bytes)')
        fp = io.BytesIO(src)
    else:
        try:
            st = os.stat(src)
            if not stat.S_ISREG(st.st_mode):  # a FIFO would block open() forever
                raise BadImageError('not a regular file (a FIFO, device or socket)')
            if st.st_size == 0:
                raise BadImageError('empty file (0 bytes)')
            fp = open(src, 'rb')
        except OSError as e:
            raise BadImageError(f'unreadable: {e.strerror or e}') from None
    try:
        try:
            im = Image.open(fp)
        except Image.DecompressionBombError:
            im = _open_unchecked(fp)
        except Image.UnidentifiedImageError:
            raise BadImageError('not an image Pillow can read (unknown or corrupt format)') from None
        w, h = im.size
        if im.format == 'JPEG':
            im.draft('RGB', (size, size))
        dw, dh = im.size
        if limit is not None and dw * dh > limit:
            drafted = f', {dw}x{dh} after JPEG draft' if (dw, dh) != (w, h) else ''
            raise BadImageError(
                f'too large: {w}x{h}{drafted} = {dw * dh} pixels > max_pixels={limit} '
                f'(decompression-bomb guard; pass max_pixels=None to decode it anyway)')
        try:
            im.load()
        except OSError as e:
            msg = str(e)
            kind = 'truncated' if 'truncated' in msg or 'broken data stream' in msg else 'corrupt'
            raise BadImageError(f'{kind}: {msg}') from None
        except (SyntaxError, ValueError, struct.error, EOFError, MemoryError) as e:
            raise BadImageError(f'corrupt: {type(e).__name__}: {e}') from None
        try:
            ImageOps.exif_transpose(im, in_place=True)
        except Exception:  # malformed EXIF: keep the image as stored
            pass
        try:
            return to_rgb(im)
        except (OSError, ValueError) as e:
            raise BadImageError(f'corrupt: {type(e).__name__}: {e}') from None
    except BadImageError:
        raise
    except Exception as e:  # anything Pillow throws that we did not foresee
        raise BadImageError(f'corrupt: {type(e).__name__}: {e}') from None
    finally:
        fp.close()


def decode_image(src: str | os.PathLike | bytes, size: int, *, max_pixels: int | None | str = 'pillow'
                 ) -> np.ndarray:
    """Decodes one image file (or its encoded bytes) to a uint8 (size, size, 3) array.

    Draft-decodes big JPEGs, applies EXIF orientation, converts to RGB and
    centre-crops/resizes (see the module docstring).

    Args:
      src: a path, or the encoded bytes of an image.
      size: side of the output square.
      max_pixels: skip images with more pixels than this after JPEG draft;
        'pillow' (default) uses ``PIL.Image.MAX_IMAGE_PIXELS``; None disables.

    Raises:
      BadImageError: the reason the image cannot be decoded.

    >>> buf = io.BytesIO(); Image.new('RGB', (40, 20), (255, 0, 0)).save(buf, 'PNG')
    >>> a = decode_image(buf.getvalue(), 8); a.shape, a.dtype, a[0, 0].tolist()
    ((8, 8, 3), dtype('uint8'), [255, 0, 0])
    """
    im = open_rgb(src, size, max_pixels=max_pixels)
    try:
        return np.asarray(square_resize(im, size), dtype=np.uint8)
    except Exception as e:  # what Pillow throws resampling a broken image
        raise BadImageError(f'corrupt: {type(e).__name__}: {e}') from None


def short_side_size(w: int, h: int, targ: int) -> tuple[int, int]:
    """(w, h) scaled so that the shorter side is `targ`, as fastai 0.7's resize_img (its
    ``scale_to``: floor, and never under targ).

    >>> short_side_size(500, 375, 128), short_side_size(20, 40, 64)
    ((170, 128), (64, 128))
    """
    r = targ / min(w, h)
    return max(math.floor(w * r), targ), max(math.floor(h * r), targ)


def resize_file(src: str, dest: str, targ: int, *, max_pixels: int | None | str = 'pillow',
                quality: int = RESIZE_QUALITY) -> None:
    """Writes image `src` to `dest` with its shorter side scaled to `targ` (aspect kept,
    bilinear, decoded as :func:`decode_image` decodes: upright, RGB), atomically: a temporary
    file renamed into place, so `dest` is never a partial image. `dest` is a JPEG (`quality`)
    when its name says JPEG, else the format its extension names (PNG stays PNG).

    Raises:
      BadImageError: `src` cannot be decoded. OSError: `dest` cannot be written.
    """
    im = open_rgb(src, targ, max_pixels=max_pixels)
    ext = os.path.splitext(dest)[1].lower()
    fmt = 'JPEG' if ext in JPEG_EXTENSIONS else Image.registered_extensions().get(ext)
    if fmt is None:
        raise BadImageError(f'cannot write {ext!r} files: Pillow has no writer for the extension')
    size = short_side_size(*im.size, targ)
    if im.size != size:
        im = im.resize(size, RESAMPLE, reducing_gap=REDUCING_GAP)
    os.makedirs(os.path.dirname(dest) or '.', exist_ok=True)
    tmp = f'{dest}.{os.getpid()}-{threading.get_ident()}.tmp'
    try:
        im.save(tmp, fmt, **({'quality': quality} if fmt == 'JPEG' else {}))
        os.replace(tmp, dest)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, (KeyError, ValueError)):
            raise BadImageError(f'cannot write it as {fmt}: {e}') from None
        raise


def array_image(a: np.ndarray, size: int) -> np.ndarray:
    """One HWC/HW uint8 array image -> (size, size, 3) uint8."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape == (size, size, 3):
        return a
    try:
        im = Image.fromarray(np.ascontiguousarray(a))
    except (TypeError, ValueError) as e:
        raise BadImageError(f'array of shape {a.shape} and dtype {a.dtype} is not an image: '
                            f'{e}') from None
    return np.asarray(square_resize(to_rgb(im), size), dtype=np.uint8)


def as_uint8_images(x: np.ndarray) -> np.ndarray:
    """NHWC (or NHW) image arrays as uint8: float 0..1 scaled to 0..255; others refused."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f'image arrays must be (N, H, W, C) with C in 1, 3, 4 (or (N, H, W) '
                         f'grayscale), NHWC; got shape {x.shape}. Transpose NCHW arrays with '
                         f'x.transpose(0, 2, 3, 1).')
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f'float image arrays must hold values in [0, 1]; got {lo:g}..{hi:g}. '
                             f'Pass uint8 0..255 arrays as x.astype(np.uint8), or divide by 255.')
        return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer) and x.size and x.min() >= 0 and x.max() <= 255:
        return x.astype(np.uint8)
    raise ValueError(f'image arrays must be uint8 (0..255) or float (0..1); got {x.dtype}')
