"""DataLoader: fixed-size uint8 batches from a decoded cache, shuffled per epoch from a key, prefetched to the devices.

Every batch is a dict with the same shapes, so a jitted step compiles once:

* ``'image'``: uint8 (bs, S, S, 3) -- augmentation/normalisation happen on device;
* ``'label'``: int32 (bs,) class indices, or float32 (bs, c) multi-hot targets
  (zeros for an unlabelled split);
* ``'mask'``: float32 (bs,), 1 for real rows and 0 for padding.

The last partial batch is padded to ``bs`` by repeating rows of the epoch
(mask 0), so evaluation counts every image exactly once and nothing
recompiles; ``drop_last=True`` drops it instead (fastai 0.7 trained on every
image, so the default keeps and masks it).

Order: with ``shuffle=True`` epoch ``e`` visits the images in
``numpy.random.default_rng(key_data(fold_in(key, e))).permutation(n)``: the
same key gives the same order on any machine and any device count (threefry
and PCG64 are both platform-independent). Without shuffle the order is 0..n-1.

Transfer: a background thread gathers rows on the host and ``jax.device_put``\\ s
them, keeping ``prefetch`` (default 2) finished batches queued ahead of the
consumer. Batches are placed with ``NamedSharding(mesh, P('data'))`` over
``Mesh(jax.devices(), ('data',))``: with several devices each gets ``bs /
n_devices`` rows (bs must divide evenly), with one it is an ordinary
single-device array. Single-process only for now.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ['DataLoader', 'data_mesh', 'epoch_order']


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over `devices` (default: all of them) with the axis name 'data'."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), ('data',))


def _as_key(key: Any) -> jax.Array:
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key))
    return key


def epoch_order(key: Any, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of `n` items in `epoch` for `key` (an int seed or a PRNG key).

    >>> epoch_order(0, 0, 5).tolist() == epoch_order(0, 0, 5).tolist() != epoch_order(0, 1, 5).tolist()
    True
    """
    with jax.default_device(jax.devices('cpu')[0]):
        k = jax.random.fold_in(_as_key(key), epoch)
        data = k if not jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key) else jax.random.key_data(k)
        seed = np.asarray(data).astype(np.uint32).reshape(-1).tolist()
    return np.random.default_rng(seed).permutation(n)


class _End:
    pass


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


class DataLoader:
    """Batches of a uint8 image array and its targets, as device arrays.

    Args:
      x: uint8 (N, S, S, 3) images (an array or a read-only memory map).
      y: int class indices (N,), float targets (N, c), or None (unlabelled).
      bs: batch size (global, over all devices).
      shuffle: a new order every epoch (training); False keeps 0..N-1.
      key: int seed or PRNG key for the shuffle.
      drop_last: drop the last partial batch instead of padding it.
      prefetch: batches kept ready on device ahead of use (0: no thread).
      mesh: a Mesh with a 'data' axis to shard batches over; default
        ``Mesh(jax.devices(), ('data',))``.

    Iterating runs the next epoch (``loader.epoch`` counts them); ``iter_epoch(e)``
    runs a given one, optionally from a batch index, e.g. to resume.

    >>> x = np.zeros((10, 4, 4, 3), np.uint8); y = np.arange(10)
    >>> dl = DataLoader(x, y, bs=4)
    >>> [(b['image'].shape, b['mask'].tolist()) for b in dl][-1]
    ((4, 4, 4, 3), [1.0, 1.0, 0.0, 0.0])
    >>> len(dl)
    3
    """

    def __init__(self, x: np.ndarray, y: np.ndarray | None = None, bs: int = 64, *,
                 shuffle: bool = False, key: Any = 0, drop_last: bool = False,
                 prefetch: int = 2, mesh: Mesh | None = None):
        if y is not None and len(y) != len(x):
            raise ValueError(f'x has {len(x)} images but y has {len(y)} targets; pass one per image')
        if int(bs) < 1:
            raise ValueError(f'bs must be >= 1; got {bs}')
        self.x, self.bs = x, int(bs)
        self.n = len(x)
        if y is None:
            self.y = np.zeros((self.n,), np.int32)
        else:
            y = np.asarray(y)
            self.y = y.astype(np.float32) if y.ndim == 2 else y.astype(np.int32)
        if jax.process_count() > 1:
            raise NotImplementedError(
                f'DataLoader feeds one process; this run has {jax.process_count()} '
                f'(jax.distributed). Multi-host loading (each host reading its slice and '
                f'jax.make_array_from_process_local_data) is not implemented yet.')
        self.shuffle, self.key, self.drop_last = shuffle, key, drop_last
        self.prefetch = int(prefetch)
        self.mesh = data_mesh() if mesh is None else mesh
        if 'data' not in self.mesh.axis_names:
            raise ValueError(f"mesh axes are {self.mesh.axis_names}; the loader shards batches on "
                             f"an axis named 'data': build it as Mesh(devices, ('data',))")
        ndev = self.mesh.shape['data']
        if self.bs % ndev:
            lo = max(ndev, self.bs // ndev * ndev)
            raise ValueError(
                f'bs={self.bs} is not divisible by the {ndev} devices on the mesh\'s data axis; '
                f'use bs={lo} or bs={lo + ndev} (a multiple of {ndev})')
        self.sharding = NamedSharding(self.mesh, P('data'))
        self.epoch = 0
        self.produced = 0  # batches put on device so far (for tests and diagnostics)

    def __len__(self) -> int:
        return self.n // self.bs if self.drop_last else -(-self.n // self.bs)

    def order(self, epoch: int) -> np.ndarray:
        """Indices of the images in `epoch`'s order (before batching and padding)."""
        if not self.shuffle:
            return np.arange(self.n)
        return epoch_order(self.key, epoch, self.n)

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        """The real (unpadded) image indices of every batch of `epoch`."""
        order = self.order(epoch)
        return [order[s:s + self.bs] for s in range(0, len(self) * self.bs, self.bs)]

    def host_batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The numpy batch for image indices `idx` (at most bs), padded to bs with mask 0."""
        real = len(idx)
        full = np.resize(idx, self.bs) if real < self.bs else idx
        mask = np.zeros((self.bs,), np.float32)
        mask[:real] = 1.0
        return {'image': np.asarray(self.x[full]), 'label': self.y[full], 'mask': mask}

    def _put(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        out = jax.device_put(batch, self.sharding)
        self.produced += 1
        return out

    def __iter__(self) -> Iterator[dict[str, jax.Array]]:
        epoch = self.epoch
        self.epoch += 1
        return self.iter_epoch(epoch)

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[dict[str, jax.Array]]:
        """Batches of `epoch`, from batch number `start` on."""
        batches = self.batch_indices(epoch)[start:]
        if self.prefetch <= 0:
            for idx in batches:
                yield self._put(self.host_batch(idx))
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    pass
            return False

        def produce():
            try:
                for idx in batches:
                    if stop.is_set() or not put(self._put(self.host_batch(idx))):
                        return
                put(_End())
            except BaseException as e:  # re-raised in the consumer
                put(_Failed(e))

        t = threading.Thread(target=produce, name='jaxcls-prefetch', daemon=True)
        t.start()
        try:
            while True:
                item = q.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, _Failed):
                    raise item.exc
                yield item
        finally:
            stop.set()
            t.join()
