"""A hostile folder: every kind of file a real photo dump holds. Each is decoded correctly or
skipped with a reason (decoded + skipped = found), nothing crashes, hangs or eats gigabytes,
and training on it equals training on the same folder without the bad files."""
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import zlib

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model, transforms_side_on

from helpers import SZ, TINY

# name (relative to the class folder) -> 'decoded' or a piece of the skip reason.
EXPECT = {
    'empty.jpg': 'empty file (0 bytes)',
    'truncated.jpg': 'truncated',
    'text.jpg': 'not an image Pillow can read',
    'png_named.jpg': 'decoded',
    'deep16.png': 'decoded',
    'cmyk.jpg': 'decoded',
    'palette_alpha.png': 'decoded',
    'one_pixel.png': 'decoded',
    'huge.png': 'too large: 20000x20000',
    'huge_header.jpg': 'decoded',            # at 1/8 scale (JPEG draft); see the pixels test
    'exif_rotated.jpg': 'decoded',
    'grey.png': 'decoded',
    'animated.gif': 'decoded',
    'with space.png': 'decoded',
    'bad\udcff.png': 'decoded',              # the bytes b'bad\xff.png' (not UTF-8)
    'loop_a.jpg': 'unreadable: Too many levels of symbolic links',
    'loop_b.jpg': 'unreadable: Too many levels of symbolic links',
    'dangling.png': 'unreadable: No such file or directory',
    'fifo.jpg': 'not a regular file',        # opening it would block forever
    'nested/deeper/n.png': 'decoded',        # subfolders of a class folder belong to the class
    'notes.txt': 'not an image file',        # skipped when listing, before decoding
}
# Never "found": hidden files are macOS/Jupyter metadata, ignored by the layout rules
# (jaxcls.data.items); a folder symlink back to its parent is walked once.
IGNORED = ('.DS_Store', '.hidden.jpg', 'loop')


def huge_png(w=20000, h=20000):
    """A valid 1-bit black PNG of w x h = 400 M pixels, written row by row: ~50 KB on disk."""
    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    row = b'\x00' * (1 + (w + 7) // 8)
    co = zlib.compressobj(9)
    body = b''.join(co.compress(row) for _ in range(h)) + co.flush()
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 1, 0, 0, 0, 0))
            + chunk(b'IDAT', body) + chunk(b'IEND', b''))


def encoded(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def noise(rng, c, size=40):
    """A red (class 0) or blue (class 1) square on dark noise, as test_learner.make_folder."""
    x = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
    r, col = rng.integers(2, size - 18, 2)
    x[r:r + 16, col:col + 16, 0 if c == 0 else 2] = 230
    return x


def write(folder, name, data):
    p = os.path.join(os.fsencode(folder), os.fsencode(name))
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, 'wb') as f:
        f.write(data)


def hostile(folder, rng):
    """Writes every entry of EXPECT and IGNORED into `folder` (a class folder)."""
    red = Image.fromarray(noise(rng, 0))
    jpg = encoded(red, 'JPEG', quality=90)
    write(folder, 'empty.jpg', b'')
    write(folder, 'truncated.jpg', jpg[:len(jpg) // 2])
    write(folder, 'text.jpg', b'this is a text file, not a JPEG\n' * 20)
    write(folder, 'png_named.jpg', encoded(red, 'PNG'))
    write(folder, 'deep16.png', encoded(Image.fromarray(np.full((30, 20), 32768, np.uint16)), 'PNG'))
    write(folder, 'cmyk.jpg', encoded(Image.new('RGB', (24, 24), (200, 30, 40)).convert('CMYK'),
                                      'JPEG', quality=95))
    pal = Image.new('P', (16, 16), 0)
    pal.putpalette([200, 10, 10, 0, 0, 0] + [0] * 762)
    pal.paste(1, (8, 0, 16, 16))                     # right half: the transparent index
    write(folder, 'palette_alpha.png', encoded(pal, 'PNG', transparency=1))
    write(folder, 'one_pixel.png', encoded(Image.new('RGB', (1, 1), (10, 200, 30)), 'PNG'))
    write(folder, 'huge.png', huge_png())
    hdr = bytearray(jpg)                             # a small JPEG whose header says 20000 x 20000
    i = hdr.index(b'\xff\xc0')
    hdr[i + 5:i + 9] = struct.pack('>HH', 20000, 20000)
    write(folder, 'huge_header.jpg', bytes(hdr))
    half = np.zeros((20, 40, 3), np.uint8)           # stored: left red, right blue
    half[:, :20, 0] = 255
    half[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6                                 # displayed rotated 90 degrees clockwise
    write(folder, 'exif_rotated.jpg', encoded(Image.fromarray(half), 'JPEG', quality=95, exif=exif))
    write(folder, 'grey.png', encoded(Image.fromarray(noise(rng, 0)).convert('L'), 'PNG'))
    frames = [Image.new('RGB', (20, 20), c) for c in ((250, 0, 0), (0, 0, 250))]
    write(folder, 'animated.gif', encoded(frames[0], 'GIF', save_all=True,
                                          append_images=frames[1:], duration=50, loop=0))
    write(folder, 'with space.png', encoded(Image.fromarray(noise(rng, 0)), 'PNG'))
    write(folder, 'bad\udcff.png', encoded(Image.fromarray(noise(rng, 0)), 'PNG'))
    os.symlink('loop_b.jpg', os.path.join(folder, 'loop_a.jpg'))
    os.symlink('loop_a.jpg', os.path.join(folder, 'loop_b.jpg'))
    os.symlink('no/such/file.png', os.path.join(folder, 'dangling.png'))
    os.mkfifo(os.path.join(folder, 'fifo.jpg'))
    os.symlink('.', os.path.join(folder, 'loop'))    # a folder symlink loop
    write(folder, 'nested/deeper/n.png', encoded(Image.fromarray(noise(rng, 0)), 'PNG'))
    write(folder, 'notes.txt', b'shot on a phone\n')
    write(folder, '.DS_Store', b'\x00\x00\x00\x01Bud1' + bytes(100))
    write(folder, '.hidden.jpg', jpg)


def good(root, n_train=8, n_valid=4, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (('train', n_train), ('valid', n_valid)):
        for c, cls in enumerate(('cats', 'dogs')):
            for i in range(n):
                write(f'{root}/{split}/{cls}', f'{cls}.{i}.png', encoded(Image.fromarray(noise(rng, c)), 'PNG'))


# Lists and decodes the folder in a child process: a hang is a timeout, not a stuck suite, and
# the child reports how much memory decoding took.
CHILD = textwrap.dedent('''
    import json, resource, sys, warnings
    from jaxcls.data.items import folder_items
    from jaxcls.data.decode import decode_files
    root, size = sys.argv[1], int(sys.argv[2])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    lay = folder_items(root)
    out = {'layout_skipped': lay.skipped}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        for name, split in (('train', lay.train), ('valid', lay.valid)):
            d = decode_files(split.fnames, root, size, name=name, cache_dir=root + '/tmp', quiet=True)
            out[name] = {'found': list(split.fnames), 'decoded': list(d.fnames),
                         'skipped': [list(s) for s in d.skipped], 'shape': list(d.x.shape)}
    out['warnings'] = [str(x.message) for x in w]
    out['rss_growth_mb'] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps(out))
''')


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('hostile'))
    good(root)
    rng = np.random.default_rng(1)
    hostile(f'{root}/train/cats', rng)
    for name in ('empty.jpg', 'grey.png', 'truncated.jpg'):   # a few in valid and in the other class
        write(f'{root}/valid/dogs', name, open(f'{root}/train/cats/{name}', 'rb').read())
    write(f'{root}/train/dogs', 'text.jpg', b'not an image')
    r = subprocess.run([sys.executable, '-c', CHILD, root, str(37)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return root, json.loads(r.stdout.strip().splitlines()[-1])


def test_every_file_is_decoded_or_skipped_with_its_reason(corpus):
    root, out = corpus
    trn = out['train']
    cats = {f[len('train/cats/'):]: 'decoded' for f in trn['decoded'] if f.startswith('train/cats/')}
    reasons = {f[len('train/cats/'):]: r for f, r in trn['skipped'] + out['layout_skipped']
               if f.startswith('train/cats/')}
    assert not set(cats) & set(reasons)
    got = {**cats, **reasons}
    good_cats = {f'cats.{i}.png' for i in range(8)}
    assert set(got) == set(EXPECT) | good_cats, sorted(set(got) ^ (set(EXPECT) | good_cats))
    for name, want in EXPECT.items():
        assert want in got[name], (name, got[name])
    # decoded + skipped = found, per split and in total
    for split in ('train', 'valid'):
        s = out[split]
        assert len(s['decoded']) + len(s['skipped']) == len(s['found'])
        assert s['shape'] == [len(s['decoded']), 37, 37, 3]
    assert sorted(s for s, _ in out['valid']['skipped']) == ['valid/dogs/empty.jpg',
                                                            'valid/dogs/truncated.jpg']
    assert [s for s, _ in out['train']['skipped'] if s.startswith('train/dogs/')] == ['train/dogs/text.jpg']
    for name in IGNORED:
        full = f'train/cats/{name}'
        assert name not in got and not any(f == full or f.startswith(full + '/') for f in trn['found'])
    # one summary warning per split, each naming its count
    assert len(out['warnings']) == 2 and 'skipped 9 of' in out['warnings'][0]
    # the 400-megapixel PNG was refused from its header: decoding took well under 200 MB
    assert out['rss_growth_mb'] < 200, out['rss_growth_mb']


def test_hostile_images_decode_to_the_right_pixels(corpus):
    root, _ = corpus
    data = ImageClassifierData.from_paths(root, bs=8, cache_size=16, quiet=True)
    x = {f[len('train/cats/'):]: data.trn_ds.x[i] for i, f in enumerate(data.trn_ds.fnames)
         if f.startswith('train/cats/')}
    assert (x['deep16.png'] == 128).all()                        # 16 bit: 32768 -> 128
    np.testing.assert_allclose(x['cmyk.jpg'].mean((0, 1)), (200, 30, 40), atol=6)
    assert x['palette_alpha.png'][8, 2].tolist() == [200, 10, 10]
    assert x['palette_alpha.png'][8, 13].tolist() == [255, 255, 255]   # transparent -> white
    assert (x['one_pixel.png'] == (10, 200, 30)).all()
    # EXIF orientation 6: the stored left (red) half is displayed on top
    top, bottom = x['exif_rotated.jpg'][2, 8], x['exif_rotated.jpg'][13, 8]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60
    g = x['grey.png'].astype(int)
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all() and g.std() > 5
    assert x['animated.gif'][..., 0].min() > 200 and x['animated.gif'][..., 2].max() < 40  # frame 0
    png = np.asarray(Image.open(os.path.join(root, 'train/cats/png_named.jpg')).convert('RGB'))
    assert Image.open(os.path.join(root, 'train/cats/png_named.jpg')).format == 'PNG'
    from jaxcls.data.decode import square_resize
    assert (x['png_named.jpg'] == np.asarray(square_resize(Image.fromarray(png), 16))).all()
    # A JPEG whose header says 20000x20000 but whose scan holds 40x40 pixels' worth ends in a
    # proper EOI marker, so libjpeg fills the missing blocks with grey (as Pillow and fastai
    # would); the draft decode at 1/8 scale keeps it to 2500x2500 pixels.
    assert (x['huge_header.jpg'] == 128).all()
    assert 'bad\udcff.png' in x and 'with space.png' in x and 'nested/deeper/n.png' in x
    # the cache (and its manifest) round-trips the non-UTF-8 name
    again = ImageClassifierData.from_paths(root, bs=8, cache_size=16, quiet=True)
    assert again.trn_ds.from_cache and again.trn_ds.fnames == data.trn_ds.fnames


# Run as root, a chmod 000 file stays readable; the child then gives up root (setuid to
# nobody) once everything it needs is imported, so the file really is unreadable to it.
UNREADABLE = textwrap.dedent('''
    import json, os, sys, warnings
    import tqdm.auto
    from jaxcls.data.items import folder_items
    from jaxcls.data.decode import decode_files
    root = sys.argv[1]
    decode_files(['train/cats/cats.0.png'], root, 8, quiet=True)   # loads the PNG plugin
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
    if os.access(os.path.join(root, 'train/cats/noperm.png'), os.R_OK):
        print(json.dumps({'readable': True}))
        sys.exit()
    lay = folder_items(root)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        d = decode_files(lay.train.fnames, root, 8, quiet=True)
    print(json.dumps({'readable': False, 'skipped': d.skipped, 'decoded': len(d.fnames),
                      'found': len(lay.train)}))
''')


def test_unreadable_file_is_skipped():
    root = tempfile.mkdtemp(prefix='jaxcls-noperm-')  # not under pytest's root-only tmp folder
    os.chmod(root, 0o755)
    good(root, n_train=2, n_valid=1)
    p = os.path.join(root, 'train', 'cats', 'noperm.png')
    write(os.path.dirname(p), 'noperm.png', encoded(Image.new('RGB', (8, 8)), 'PNG'))
    os.chmod(p, 0)
    try:
        r = subprocess.run([sys.executable, '-c', UNREADABLE, root], capture_output=True,
                           text=True, timeout=120)
    finally:
        shutil.rmtree(root)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if out['readable']:
        pytest.skip('the file stays readable after chmod 000 (root that cannot give up root, '
                    'or CAP_DAC_OVERRIDE): there is no unreadable file to test')
    assert out['skipped'] == [['train/cats/noperm.png', 'unreadable: Permission denied']]
    assert out['decoded'] == 4 and out['found'] == 5


def _fit(root):
    tfms = tfms_from_model(TINY, SZ, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_paths(root, bs=8, tfms=tfms, quiet=True, key=3)
    learn = ConvLearner.pretrained(TINY, data, pretrained=False, quiet=True)
    learn.fit(1e-2, 1)
    return data, learn


def test_training_ignores_the_bad_files(corpus, tmp_path):
    """The same good images in the same order give the same batches, hence the same model."""
    root, out = corpus
    clean = str(tmp_path / 'clean')
    for split in ('train', 'valid'):
        for f in out[split]['decoded']:
            src, dst = os.fsencode(os.path.join(root, f)), os.fsencode(os.path.join(clean, f))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst)
    bad_data, bad = _fit(root)
    clean_data, ok = _fit(clean)
    assert bad_data.trn_ds.fnames == clean_data.trn_ds.fnames
    assert len(bad_data.trn_ds) == len(out['train']['decoded']) == 8 + 8 + sum(v == 'decoded' for v in EXPECT.values())
    assert np.array_equal(bad_data.trn_ds.x, clean_data.trn_ds.x)
    assert np.array_equal(bad_data.trn_y, clean_data.trn_y)
    leaves = lambda l: jax.tree_util.tree_leaves((l.state.params, l.state.batch_stats))
    assert all(np.array_equal(a, b) for a, b in zip(leaves(bad), leaves(ok)))
    assert bad.history[-1]['val_loss'] == ok.history[-1]['val_loss']
    assert len(bad_data.skipped) == len(out['train']['skipped']) + len(out['valid']['skipped']) + 1
