"""What several test files share: the tiny arch, generated image folders and arrays, the
learner they build, tree comparisons, fastai 0.7's CosAnneal as a reference, a safetensors
writer, a parser of the HTML pages jaxcls writes, readers of the CSV and TensorBoard logs, a
counter of what jax compiles.
tests/conftest.py puts this folder on sys.path, so `from helpers import ...` works from every
subfolder (and from the scripts the subprocess tests run)."""
import contextlib
import csv
import glob
import json
import os
import struct
from html.parser import HTMLParser
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from jaxcls import ConvLearner
from jaxcls.archs import ArchSpec
from jaxcls.data.decode_cache import default_cache_size

# One basic block per stage: every code path of ResNet34 at a fraction of the compile time.
TINY = ArchSpec('resnet_tiny', 'basic', (1, 1, 1, 1), 512)


SZ = 32
# The side at which test data built from arrays is stored: what from_paths caches for SZ
# (37 px), so the steps compiled for array-built and folder-built data are the same programs
# and a test reuses what another compiled (tests/conftest.py's shared XLA cache).
CACHE = default_cache_size(SZ)


def make_folder(root, n_train=24, n_valid=12, size=40, seed=0, classes=('cats', 'dogs')):
    """Two visually separable classes: a red or a blue square at a random place on dark noise."""
    rng = np.random.default_rng(seed)
    for split, n in (('train', n_train), ('valid', n_valid)):
        for c, cls in enumerate(classes):
            os.makedirs(f'{root}/{split}/{cls}', exist_ok=True)
            for i in range(n):
                x = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
                r, col = rng.integers(2, size - 18, 2)
                x[r:r + 16, col:col + 16, 0 if c == 0 else 2] = 230
                Image.fromarray(x).save(f'{root}/{split}/{cls}/{cls}.{i}.png')
    return str(root)


def normal(seed, shape):
    """A float32 jax array of standard normal values from numpy's generator: test inputs
    without compiling jax.random's sampler anew for each shape (0.1-0.2 s a shape)."""
    import jax.numpy as jnp
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def colour_square_arrays(n, seed=0, side=36):
    """(x, y): n `side` px uint8 images of dark noise with a fixed red (class 0) or blue
    (class 1) square, for from_arrays."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 80, (n, side, side, 3)).astype(np.uint8)
    x[y == 1, 8:24, 8:24, 2] = 230
    x[y == 0, 8:24, 8:24, 0] = 230
    return x, y


def square_data(path, n, n_train, seed=0, bs=10):
    """ImageClassifierData of `colour_square_arrays(n, seed)`: the first n_train to train, the
    rest to validate, tiny-arch transforms at SZ px from CACHE px images."""
    from jaxcls import ImageClassifierData, tfms_from_model
    x, y = colour_square_arrays(n, seed=seed, side=CACHE)
    return ImageClassifierData.from_arrays(str(path), (x[:n_train], y[:n_train]),
                                           (x[n_train:], y[n_train:]), bs=bs,
                                           tfms=tfms_from_model(TINY, SZ), cache_size=CACHE)


@contextlib.contextmanager
def lowerings():
    """The names of the functions jax lowers while the block runs ('jit(train_step)', ...):
    one per miss of a jitted function's cache, whether XLA then compiles the program or the
    persistent cache serves it. An empty list: nothing compiled."""
    seen = []

    def listen(event, duration, **kw):
        if event == '/jax/core/compile/jaxpr_to_mlir_module_duration':
            seen.append(kw.get('fun_name'))
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


@contextlib.contextmanager
def cache_use():
    """(name, served from XLA's persistent cache?) of each program compiled in the block,
    e.g. ('jit(train_step)', True). jax reports the cache's hit or miss just before the
    compile's duration event, which carries the name."""
    used, last = [], []
    listen_hit = lambda event, **kw: last.append(event.endswith('/cache_hits')) if event in (
        '/jax/compilation_cache/cache_hits', '/jax/compilation_cache/cache_misses') else None

    def listen(event, duration, **kw):
        if event == '/jax/core/compile/backend_compile_duration':
            used.append((kw.get('fun_name'), bool(last and last[-1])))
            last.clear()
    jax.monitoring.register_event_listener(listen_hit)
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield used
    finally:
        jax.monitoring.unregister_event_listener(listen_hit)
        jax.monitoring.unregister_event_duration_listener(listen)


def learner(data, **kw):
    return ConvLearner.pretrained(TINY, data, pretrained=False, quiet=True, **kw)


def params_copy(learn):
    return jax.tree_util.tree_map(np.array, (learn.state.params, learn.state.batch_stats,
                                             learn.state.opt_state))


def trees_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                    jax.tree_util.tree_leaves(b)))


class FastaiCosAnneal:
    """fastai 0.7 `CosAnneal.calc_lr` with LR_Updater's bookkeeping, transcribed (float64).

    LR_Updater calls calc_lr once at train begin and again after every batch; call k
    sets the rate used by batch k.
    """

    def __init__(self, nb, cycle_mult=1):
        self.nb, self.cycle_mult = nb, cycle_mult
        self.cycle_iter, self.cycle_count, self.iteration = 0, 0, 0

    def calc_lr(self, init_lrs):
        if self.iteration < self.nb / 20:
            self.cycle_iter += 1
            return init_lrs / 100.
        cos_out = np.cos(np.pi * self.cycle_iter / self.nb) + 1
        self.cycle_iter += 1
        if self.cycle_iter == self.nb:
            self.cycle_iter = 0
            self.nb *= self.cycle_mult
            self.cycle_count += 1
        return init_lrs / 2 * cos_out

    def run(self, init_lrs, n):
        out = []
        for _ in range(n):
            out.append(self.calc_lr(init_lrs))
            self.iteration += 1
        return np.array(out)


def write_safetensors(path, tensors, metadata=None):
    """Minimal safetensors writer (numpy) for tests."""
    codes = {'float32': 'F32', 'float16': 'F16', 'int64': 'I64', 'uint8': 'U8'}
    header, blobs, off = {}, [], 0
    if metadata:
        header['__metadata__'] = metadata
    for k, v in tensors.items():
        b = np.ascontiguousarray(v).astype(v.dtype.newbyteorder('<')).tobytes()
        header[k] = {'dtype': codes[v.dtype.name], 'shape': list(v.shape),
                     'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    Path(path).write_bytes(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def read_csv(fname):
    """A CSVLogger file's rows without the wall-time column."""
    rows = list(csv.reader(open(fname)))
    col = rows[0].index('time')
    return [r[:col] + r[col + 1:] for r in rows]   # everything but the wall time


def read_events(folder):
    """Sorted (tag, step, value) of every scalar in a folder's TensorBoard event files, but
    the wall time, read with tensorboardX's own protobuf classes (an independent reader)."""
    from tensorboardX.proto import event_pb2
    from jaxcls.train.event_file import read_records
    out = []
    for path in glob.glob(os.path.join(folder, '*tfevents*')):
        for _, _, payload in read_records(open(path, 'rb').read()):
            ev = event_pb2.Event()
            ev.ParseFromString(payload)
            out += [(v.tag, ev.step, v.simple_value) for v in ev.summary.value
                    if v.tag != 'epoch/time']
    return sorted(out)


class HtmlPage(HTMLParser):
    """What a page jaxcls writes holds, parsed with the standard library: section ids, image
    sources, the tags of the cards (class 'card'), the tables ((section id, rows of cell
    texts)), and anything that would fetch from elsewhere (a src or href that is not a data
    URI, a script, link or iframe)."""

    def __init__(self, text):
        super().__init__()
        self.sections, self.imgs, self.cards, self.tables, self.external = [], [], [], [], []
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'section':
            self.sections.append(a['id'])
        elif tag == 'img':
            self.imgs.append(a['src'])
        elif tag == 'div' and 'card' in (a.get('class') or '').split():
            self.cards.append(a)
        elif tag == 'table':
            self.tables.append((self.sections[-1] if self.sections else None, []))
        elif tag == 'tr':
            self.tables[-1][1].append([])
        elif tag in ('td', 'th'):
            self._cell = ''
        if tag in ('script', 'link', 'iframe'):
            self.external.append(tag)
        self.external += [a[k] for k in ('src', 'href') if k in a and not a[k].startswith('data:')]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ('td', 'th'):
            self.tables[-1][1][-1].append(self._cell)
            self._cell = None
