"""Precomputed activations: the frozen body runs once over the images, the head trains on the result.

The on-disk cache is keyed by everything the features depend on (arch, body
cut, image size, crop, a digest of the body's weights and batch statistics,
the data's fingerprint, the augmentation view), so a changed image or a body
that was trained since is never served stale features, as fastai 0.7 (keyed
by arch and size only) did.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import weakref
from typing import Any, Callable, Optional

import jax
import numpy as np

from jaxcls.data.loader import DataLoader

from . import integrity
from . import memory as mem

# Bump when the feature layout or the key's meaning changes.
FORMAT_VERSION = 1
# Stored features up to this size are copied to the device once, and training batches are
# gathered there (see DataLoader): 20,000 ResNet34 features are 80 MB. Larger sets stay on
# the host and are sent batch by batch, so they never compete with the model for memory.
DEVICE_FEATURES_MAX_BYTES = 1 << 30
# Folded into the run's key, plus the view index, for precompute_aug's augmented views.
AUG_VIEW_SALT = 1000


def tree_digest(tree: Any) -> str:
    """A weights identity: the hash (hex, first 16) of a pytree's paths, shapes, dtypes and
    bytes, from the digests a save writes (jaxcls.train.integrity)."""
    return integrity.json_digest(integrity.tree_digest(tree))[:16]


def features_key(**parts: Any) -> str:
    """A stable hex key from named parts (sorted, JSON-encoded, hashed)."""
    blob = json.dumps({'format': FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


#: Images per forward pass of precompute on an accelerator (on a CPU: the data's bs): a
#: forward pass keeps no activations, and a batch this large hides the per-batch dispatch and
#: the next batch's copy behind device work (`bash bench/bench_gpu.sh`, bench/README.md).
ACCELERATOR_BATCH = 256


def batch_size(bs: int, platform: str) -> int:
    """Batch of precompute's forward passes: `bs` on a CPU, at least ACCELERATOR_BATCH elsewhere.

    >>> batch_size(64, 'cpu'), batch_size(64, 'gpu'), batch_size(512, 'gpu')
    (64, 256, 512)
    """
    return int(bs) if platform == 'cpu' else max(int(bs), ACCELERATOR_BATCH)


def compute_features(feature_fn: Callable, x: np.ndarray, bs: int,
                     progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Run the jitted `feature_fn(uint8 batch) -> (B, F)` over all of x, in order.

    The last batch is padded to bs (so one compiled shape serves all) and cut back. One
    batch stays in flight: batch k + 1 is gathered and dispatched (JAX runs it
    asynchronously) before batch k's features are copied back, so on an accelerator the
    host's gathering and copying overlap the device's forward pass.
    """
    n = len(x)
    out = None
    pending = None  # (start, real, device features) of the batch in flight

    def collect(start: int, real: int, f: Any) -> None:
        nonlocal out
        f = np.asarray(f)[:real]
        if out is None:
            out = np.empty((n,) + f.shape[1:], np.float32)
        out[start:start + real] = f
        if progress:
            progress(real)

    for s in range(0, n, bs):
        real = min(bs, n - s)
        # A full batch is a contiguous slice, handed to the device without a host copy.
        batch = np.asarray(x[s:s + bs]) if real == bs else np.asarray(x[np.resize(np.arange(s, n), bs)])
        f = feature_fn(batch)
        if pending is not None:
            collect(*pending)
        pending = (s, real, f)
    if pending is not None:
        collect(*pending)
    return np.zeros((0,), np.float32) if out is None else out


class FeatureCache:
    """Feature arrays in memory and as .npy files under `folder`, written atomically."""

    def __init__(self, folder: Optional[str]):
        self.folder = folder
        self.memory: dict[str, np.ndarray] = {}

    def _file(self, key: str) -> Optional[str]:
        return None if self.folder is None else os.path.join(self.folder, f'{key}.npy')

    def get(self, key: str) -> Optional[np.ndarray]:
        if key in self.memory:
            return self.memory[key]
        f = self._file(key)
        if f is not None and os.path.exists(f):
            try:
                arr = np.load(f, mmap_mode='r')
            except (OSError, ValueError):
                return None  # unreadable file: recompute and overwrite it
            self.memory[key] = arr
            return arr
        return None

    def put(self, key: str, arr: np.ndarray) -> None:
        self.memory[key] = arr
        f = self._file(key)
        if f is None:
            return
        try:
            os.makedirs(self.folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix='.tmp')
            with os.fdopen(fd, 'wb') as fh:
                np.save(fh, arr)
            os.replace(tmp, f)
        except OSError as e:  # e.g. a read-only dataset folder
            warnings.warn(f'could not write the precompute cache {f} ({e}); the features stay '
                          'in memory for this session only. Pass a writable cache folder to '
                          'keep them across runs.')


def _bar(quiet: bool, total: int, desc: str):
    if quiet or total == 0:
        return None
    import sys
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, leave=False, file=sys.stdout)


class Features:
    """A learner's precomputed activations: computed (or read from the cache) when first asked
    for, recomputed when the body, the dtype or the validation transform changes.

    `features['train']` (or 'train_aug0', ... with precompute_aug), 'valid' and 'test' are
    float32 arrays, one row per image; `train_loader(epoch)` and `predict_loader(is_test)`
    serve them in batches as the image loaders serve images.
    """

    def __init__(self, learn):
        self.learn = learn
        self.cache = FeatureCache(os.path.join(learn.data.path, 'tmp', 'precompute'))
        self.arrays: dict = {}
        self.base: Optional[dict] = None
        self.placed: dict = {}   # stored features copied to the device, by split name
        self.loaders: dict = {}
        self._memo = None

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __iter__(self):
        return iter(self.arrays)

    def body_digest(self) -> str:
        """tree_digest of the body's parameters and statistics, remembered while its arrays
        stay the same objects (jax arrays are immutable, and hashing ResNet34's 87 MB body on
        every validation after precompute would cost a device copy each time). The memo
        holds weak references, so it never keeps an old body alive on the device."""
        state = self.learn.state
        body = {'params': state.params['body'], 'batch_stats': state.batch_stats.get('body')}
        leaves = jax.tree_util.tree_leaves(body)
        seen = self._memo
        if seen is not None and len(seen[0]) == len(leaves) and all(
                r() is a for r, a in zip(seen[0], leaves)):
            return seen[1]
        digest = tree_digest(body)
        try:
            self._memo = ([weakref.ref(a) for a in leaves], digest)
        except TypeError:  # a leaf that takes no weak reference (numpy): no memo
            self._memo = None
        return digest

    def ensure(self) -> None:
        """Compute (or load) the body's activations for train, valid and test."""
        learn, data = self.learn, self.learn.data
        base = dict(arch=learn.arch_name, stages=list(learn.model.body.stage_sizes),
                    dtype=np.dtype(learn.dtype).name, val_cfg=repr(data.tfms[1]),
                    body=self.body_digest())
        if self.base == base:
            return
        model = learn.steps.model_state(images=True, raw=True)  # the body the head trains on
        todo = ([(f'train_aug{v}', data.trn_ds, v) for v in range(learn.precompute_aug)]
                or [('train', data.trn_ds, None)])
        todo += [(n, ds, None) for n, ds in (('valid', data.val_ds), ('test', data.test_ds))
                 if ds is not None]
        bar = _bar(learn.quiet, sum(len(ds) for _, ds, _ in todo), 'precompute')
        bs = batch_size(data.bs, jax.default_backend())
        arrays = {}
        try:
            with mem.guard(learn, 'precomputing the activations'):
                for name, ds, view in todo:
                    key = features_key(**base, split=name, data=ds.fingerprint, n=len(ds),
                                       trn_cfg=repr(data.tfms[0]) if view is not None else None,
                                       seed=learn.seed if view is not None else None)
                    arr = self.cache.get(key) if ds.fingerprint else None
                    if arr is None:
                        if view is None:
                            f = learn.steps.get('features')
                            fn = lambda x, f=f: f(model, {'image': x})
                        else:
                            f = learn.steps.get('aug_features')
                            k = jax.random.fold_in(jax.random.PRNGKey(learn.seed),
                                                   AUG_VIEW_SALT + view)
                            counter = iter(range(10 ** 9))
                            fn = lambda x, f=f, k=k: f(model, {'image': x},
                                                       jax.random.fold_in(k, next(counter)))
                        arr = compute_features(fn, ds.x, bs, progress=bar.update if bar else None)
                        if ds.fingerprint:
                            self.cache.put(key, arr)
                    elif bar:
                        bar.update(len(ds))
                    arrays[name] = arr
        finally:
            if bar:
                bar.close()
        self.arrays, self.base, self.placed, self.loaders = arrays, base, {}, {}

    def placed_array(self, name: str) -> Any:
        """Stored features for a loader: copied to the device once when they are small
        enough (the loader then gathers batches there), else the host array."""
        arr = self.arrays[name]
        if (jax.process_count() > 1 or arr.nbytes > DEVICE_FEATURES_MAX_BYTES or len(arr) == 0):
            return arr
        if name not in self.placed:
            self.placed[name] = jax.device_put(arr, self.learn.data.trn_dl.mesh.devices.flat[0])
        return self.placed[name]

    def train_loader(self, epoch: int) -> DataLoader:
        """The shuffled training features of data epoch `epoch` (view epoch mod K)."""
        aug = self.learn.precompute_aug
        name = f'train_aug{epoch % aug}' if aug else 'train'
        if name not in self.loaders:
            data = self.learn.data
            dl = data.trn_dl
            bs = data.bs * self.learn.recipe.accumulate  # micro-batches of bs per update
            self.loaders[name] = DataLoader(
                self.placed_array(name), data.trn_ds.y, bs, shuffle=True, key=dl.key,
                drop_last=dl.drop_last, mesh=dl.mesh, ids=data.trn_ds.ids)
        return self.loaders[name]

    def predict_loader(self, is_test: bool) -> DataLoader:
        data = self.learn.data
        ds = data.test_ds if is_test else data.val_ds
        return DataLoader(self.placed_array('test' if is_test else 'valid'), ds.y, data.bs,
                          mesh=data.val_dl.mesh, ids=ds.ids)

    def forget_loaders(self) -> None:
        """Drop the loaders (a new batch size)."""
        self.loaders = {}
