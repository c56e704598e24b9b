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
from typing import Any, Callable, Optional

import jax
import numpy as np

# Bump when the feature layout or the key's meaning changes.
FORMAT_VERSION = 1


def tree_digest(tree: Any) -> str:
    """SHA-256 (hex, first 16) of a pytree's paths, shapes, dtypes and bytes: a weights identity."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.asarray(leaf)
        h.update(jax.tree_util.keystr(path).encode())
        h.update(f'{a.shape}{a.dtype}'.encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def features_key(**parts: Any) -> str:
    """A stable hex key from named parts (sorted, JSON-encoded, hashed)."""
    blob = json.dumps({'format': FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


#: Images per forward pass of precompute on an accelerator (on a CPU: the data's bs). The
#: pass keeps no activations for a backward pass, so a batch several times a training batch
#: fits: 256 uint8 images at 258 px are 51 MB. At the ~43,000 img/s an H200 runs ResNet34's
#: frozen body (bench/bench_gpu.sh), a batch is ~6 ms of device work, long enough to hide the
#: per-batch dispatch and the copy of the next batch; at bs=64 the device waited on the host.
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
