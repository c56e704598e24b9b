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

Transfer: a background thread gathers rows on the host and places them on the
devices, keeping ``prefetch`` (default 2) finished batches queued ahead of the
consumer. Batches are placed with ``NamedSharding(mesh, P('data'))`` over
``Mesh(jax.devices(), ('data',))``: with several devices each gets ``bs /
n_devices`` rows (bs must divide evenly), with one it is an ordinary
single-device array.

Several processes (``jax.distributed.initialize()``, one per host): the mesh
spans every process's devices and ``bs`` is the *global* batch size. Each
process holds only its own rows (``x`` and ``y`` are this process's share;
:class:`~jaxcls.data.imagedata.ImageClassifierData` gives process ``p`` of
``P`` the images ``p, p + P, p + 2P, ...`` of each split, see
:func:`shard_indices`) and fills its own contiguous slice of every global
batch -- the rows of its devices, ``bs * local_devices / devices`` of them --
which ``jax.make_array_from_process_local_data`` assembles into one global
array. No image crosses the network. Process ``p`` shuffles its share with
``fold_in(key, p)``, so the data order is still a pure function of the key,
but it depends on the process count: the same key on 1 and on 4 hosts gives
different batches. The processes exchange their row counts once, when the
loader is built (a collective: every process must build its loaders in the
same order), so that all agree on the number of batches; a process that runs
out of rows early pads its slice with mask 0. :meth:`DataLoader.collect` and
:meth:`DataLoader.targets` bring per-batch outputs and targets back to every
process as numpy arrays in split order, the same order one process gives.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ['DataLoader', 'all_processes', 'data_mesh', 'epoch_order', 'process_key', 'replicate',
           'shard_indices', 'to_host']


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over `devices` (default: all of them, of every process) with the axis name 'data'."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), ('data',))


def shard_indices(n: int, index: int | None = None, count: int | None = None) -> np.ndarray:
    """The items of a split of `n` that process `index` of `count` reads: index, index + count, ...

    Defaults to this process (``jax.process_index()`` of ``jax.process_count()``).
    Striding (rather than blocks) keeps the shards within one item of the same size
    and, for folders sorted by class, with the same class balance.

    >>> shard_indices(7, 1, 3).tolist(), shard_indices(7, 0, 1).tolist()
    ([1, 4], [0, 1, 2, 3, 4, 5, 6])
    """
    index = jax.process_index() if index is None else int(index)
    count = jax.process_count() if count is None else int(count)
    if not 0 <= index < count:
        raise ValueError(f'process index {index} is outside 0..{count - 1} (process count {count})')
    return np.arange(index, int(n), count)


def _as_key(key: Any) -> jax.Array:
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key))
    return key


def _host_device():
    """A device of this process for small host-side key arithmetic (never another host's)."""
    try:
        return jax.local_devices(backend='cpu')[0]
    except RuntimeError:  # no CPU backend (e.g. JAX_PLATFORMS=cuda)
        return jax.local_devices()[0]


def process_key(key: Any, index: int, count: int) -> Any:
    """The shuffle key of process `index` of `count`: `key` itself for one process, else
    ``fold_in(key, index)``, so that shards sized alike are not shuffled alike."""
    if int(count) == 1:
        return key
    with jax.default_device(_host_device()):
        return jax.random.fold_in(_as_key(key), int(index))


def epoch_order(key: Any, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of `n` items in `epoch` for `key` (an int seed or a PRNG key).

    >>> epoch_order(0, 0, 5).tolist() == epoch_order(0, 0, 5).tolist() != epoch_order(0, 1, 5).tolist()
    True
    """
    with jax.default_device(_host_device()):
        k = jax.random.fold_in(_as_key(key), epoch)
        data = k if not jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key) else jax.random.key_data(k)
        seed = np.asarray(data).astype(np.uint32).reshape(-1).tolist()
    return np.random.default_rng(seed).permutation(n)


def to_host(a: Any) -> np.ndarray:
    """The whole value of a jax array as numpy, on every process.

    An array sharded over several processes' devices is all-gathered (a
    collective: every process must call this for the same array).
    """
    if not isinstance(a, jax.Array) or a.is_fully_addressable or a.is_fully_replicated:
        return np.asarray(a)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """`tree` whole on every device of `mesh` (``NamedSharding(mesh, P())``), e.g. a train state.

    With one process this is ``jax.device_put``. With several, each process
    copies its own value to its own devices and the copies are declared one
    global array: no communication. ``jax.device_put`` would instead all-gather
    every leaf to check that the processes agree (one collective and one compile
    per leaf shape: seconds for a small model; bench/README.md, notes on the data
    pipeline); here they must agree by construction (same seed, same checkpoint).
    Leaves already replicated on `mesh` are returned as they are.

    >>> t = replicate({'w': np.ones(3, np.float32)}, data_mesh()); t['w'].sharding.spec == P()
    True
    """
    s = NamedSharding(mesh, P())
    if jax.process_count() == 1:
        return jax.device_put(tree, s)
    local = sorted(s.addressable_devices, key=lambda d: d.id)

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return a if a.sharding == s else jax.device_put(a, s)
        if not isinstance(a, jax.Array):
            a = np.asarray(a)
        return jax.make_array_from_single_device_arrays(
            a.shape, s, [jax.device_put(a, d) for d in local])
    return jax.tree_util.tree_map(one, tree)


def all_processes(tree: Any) -> Any:
    """This process's host values (numpy leaves, the same shapes on every process) -> each leaf
    stacked over the processes, (P, ...), on every process. A collective with several processes.

    >>> all_processes({'n': np.asarray([3])})['n'].tolist()
    [[3]]
    """
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(lambda a: np.asarray(a)[None], tree)
    from jax.experimental import multihost_utils
    return jax.tree_util.tree_map(np.asarray, multihost_utils.process_allgather(tree, tiled=False))


_allgather = all_processes


def _process_rows(sharding: NamedSharding, bs: int) -> list[tuple[int, int]]:
    """(start, stop) of each process's rows in a global batch of `bs` placed with `sharding`."""
    spans: dict[int, set] = {}
    for d, idx in sharding.devices_indices_map((bs,)).items():
        start, stop, _ = idx[0].indices(bs)
        spans.setdefault(d.process_index, set()).add((start, stop))
    procs = sorted(spans)
    if procs != list(range(jax.process_count())):
        raise ValueError(f'the mesh holds devices of processes {procs}, but this run has '
                         f'{jax.process_count()}; build it over every process\'s devices: '
                         f"Mesh(jax.devices(), ('data',)) (the default)")
    out = []
    for p in procs:
        s = sorted(spans[p])
        start, stop = s[0]
        for a, b in s[1:]:
            if a != stop:
                raise ValueError(
                    f"process {p}'s devices hold rows {s} of a batch, not one contiguous block: "
                    f"order the mesh's 'data' axis by process, e.g. Mesh(jax.devices(), ('data',))")
            stop = b
        out.append((start, stop))
    return out


@jax.jit
def _gather_rows(x: jax.Array, y: jax.Array, idx: jax.Array, real: jax.Array) -> dict:
    """One batch from device-resident rows: images, labels and the mask of real rows."""
    return {'image': x[idx], 'label': y[idx],
            'mask': (jnp.arange(idx.shape[0]) < real).astype(jnp.float32)}


class _End:
    pass


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


class DataLoader:
    """Batches of a uint8 image array and its targets, as device arrays.

    Args:
      x: uint8 (N, S, S, 3) images (an array or a read-only memory map); with
        several processes, this process's share. A jax.Array (e.g. stored features on
        the device) is batched where it lives, without the prefetch thread.
      y: int class indices (N,), float targets (N, c), or None (unlabelled).
      bs: batch size (global, over all devices of all processes).
      shuffle: a new order every epoch (training); False keeps 0..N-1.
      key: int seed or PRNG key for the shuffle.
      drop_last: drop the last partial batch instead of padding it.
      prefetch: batches kept ready on device ahead of use (0: no thread).
      mesh: a Mesh with a 'data' axis to shard batches over; default
        ``Mesh(jax.devices(), ('data',))``.
      ids: the position of each row of `x` in the whole split (all processes
        together), used by :meth:`collect` and :meth:`targets` to return split
        order; default 0..N-1 with one process and :func:`shard_indices` with
        several.

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
                 prefetch: int = 2, mesh: Mesh | None = None, ids: Sequence[int] | None = None):
        if y is not None and len(y) != len(x):
            raise ValueError(f'x has {len(x)} images but y has {len(y)} targets; pass one per image')
        if int(bs) < 1:
            raise ValueError(f'bs must be >= 1; got {bs}')
        self.x, self.bs = x, int(bs)
        self.n = len(x)
        self._targets = np.zeros((self.n,), np.int64) if y is None else np.asarray(y)
        if y is None:
            self.y = np.zeros((self.n,), np.int32)
        else:
            y = np.asarray(y)
            self.y = y.astype(np.float32) if y.ndim == 2 else y.astype(np.int32)
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
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        #: (start, stop) of every process's rows in a global batch; this process fills its own.
        self.rows = _process_rows(self.sharding, self.bs) if self.process_count > 1 else [(0, self.bs)]
        start, stop = self.rows[self.process_index]
        self.local_bs = stop - start
        if ids is None:
            ids = shard_indices(self.n * self.process_count, self.process_index,
                                self.process_count)[:self.n]
        self.ids = np.asarray(ids, np.int64).reshape(-1)
        if len(self.ids) != self.n:
            raise ValueError(f'ids has {len(self.ids)} entries for {self.n} images; pass one per image')
        if self.process_count > 1:
            #: rows held by each process (exchanged once, when the loader is built)
            self.counts = [int(c) for c in _allgather(np.asarray([self.n], np.int64))[:, 0]]
        else:
            self.counts = [self.n]
        self.n_total = sum(self.counts)
        self._global = None  # every process's ids and targets, gathered on first use
        # x already on a device (a jax.Array, e.g. stored features): batches are gathered
        # there (one process only; with several, each process's rows come from the host).
        self._on_device = isinstance(x, jax.Array) and self.process_count == 1 and self.n > 0
        self._y_dev = None
        self.epoch = 0
        self.produced = 0  # batches put on device so far (for tests and diagnostics)

    def __len__(self) -> int:
        per = [(c, b - a) for c, (a, b) in zip(self.counts, self.rows)]
        if self.drop_last:
            return min(c // r for c, r in per)
        return max(-(-c // r) for c, r in per)

    def _order_of(self, process: int, epoch: int) -> np.ndarray:
        n = self.counts[process]
        if not self.shuffle:
            return np.arange(n)
        return epoch_order(process_key(self.key, process, self.process_count), epoch, n)

    def order(self, epoch: int) -> np.ndarray:
        """Indices of this process's images in `epoch`'s order (before batching and padding)."""
        return self._order_of(self.process_index, epoch)

    def _batches_of(self, process: int, epoch: int) -> list[np.ndarray]:
        order, r = self._order_of(process, epoch), self.rows[process][1] - self.rows[process][0]
        return [order[b * r:(b + 1) * r] for b in range(len(self))]

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        """The real (unpadded) indices of this process's images in every batch of `epoch`."""
        return self._batches_of(self.process_index, epoch)

    def host_batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """This process's numpy rows for image indices `idx` (at most its share of bs), padded
        with mask 0 (repeating `idx`, or the first images when `idx` is empty)."""
        real, lbs = len(idx), self.local_bs
        mask = np.zeros((lbs,), np.float32)
        mask[:real] = 1.0
        if self.n == 0:  # a process without images fills its slice with masked zeros
            return {'image': np.zeros((lbs,) + tuple(np.shape(self.x)[1:]), np.uint8),
                    'label': np.zeros((lbs,) + self.y.shape[1:], self.y.dtype), 'mask': mask}
        if real == 0:
            idx = np.arange(min(self.n, lbs))
        full = np.resize(idx, lbs) if len(idx) < lbs else idx
        return {'image': np.asarray(self.x[full]), 'label': self.y[full], 'mask': mask}

    def _device_batches(self, batches: list[np.ndarray]) -> Iterator[dict[str, jax.Array]]:
        """Batches gathered on the device from an `x` that lives there: one small jitted call
        per batch (its row indices are the only transfer), no thread. For stored features
        after precompute; faster per step on the 2-core CPU, not settled on a GPU (the runs
        are in bench/README.md, notes on the data pipeline). Set the learner's
        DEVICE_FEATURES_MAX_BYTES to 0 to compare."""
        if self._y_dev is None:
            self._y_dev = jax.device_put(self.y, next(iter(self.x.devices())))
        lbs = self.local_bs
        for idx in batches:
            real = len(idx)
            if real == 0:
                idx = np.arange(min(self.n, lbs))
            full = (np.resize(idx, lbs) if len(idx) < lbs else idx).astype(np.int32)
            out = _gather_rows(self.x, self._y_dev, full, np.int32(real))
            if len(self.mesh.devices.flat) > 1:
                out = jax.device_put(out, self.sharding)
            self.produced += 1
            yield out

    def _put(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        if self.process_count == 1:
            out = jax.device_put(batch, self.sharding)
        else:
            out = {k: jax.make_array_from_process_local_data(
                       self.sharding, v, (self.bs,) + v.shape[1:]) for k, v in batch.items()}
        self.produced += 1
        return out

    def __iter__(self) -> Iterator[dict[str, jax.Array]]:
        epoch = self.epoch
        self.epoch += 1
        return self.iter_epoch(epoch)

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[dict[str, jax.Array]]:
        """Batches of `epoch`, from batch number `start` on."""
        batches = self.batch_indices(epoch)[start:]
        if self._on_device:
            yield from self._device_batches(batches)
            return
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

    # ------------------------------------------------------------------ outputs back to numpy

    def _gathered(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Every process's ids and targets (a collective the first time, with several processes)."""
        if self._global is None:
            if self.process_count == 1:
                self._global = ([self.ids], [self._targets])
            else:
                m = max(self.counts)
                pad = lambda a: np.concatenate([a, np.zeros((m - len(a),) + a.shape[1:], a.dtype)])
                ids, ys = _allgather((pad(self.ids), pad(self._targets)))
                ids = [ids[p, :c] for p, c in enumerate(self.counts)]
                ys = [ys[p, :c] for p, c in enumerate(self.counts)]
                flat = np.concatenate(ids)
                if len(np.unique(flat)) != len(flat):
                    raise ValueError('two processes hold rows with the same id; give every row of '
                                     'the split a different ids= value (see shard_indices)')
                self._global = (ids, ys)
        return self._global

    def _real_rows(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every real row of `epoch`, sorted by id (split order): its position in the
        concatenated padded batches, its id, and (process, row in that process's x)."""
        ids, _ = self._gathered()
        pos, gid, proc, row = [], [], [], []
        for p, (start, _) in enumerate(self.rows):
            for b, idx in enumerate(self._batches_of(p, epoch)):
                pos.append(b * self.bs + start + np.arange(len(idx)))
                gid.append(ids[p][idx])
                proc.append(np.full(len(idx), p))
                row.append(idx)
        pos, gid, proc, row = (np.concatenate(a).astype(np.int64) for a in (pos, gid, proc, row))
        s = np.argsort(gid, kind='stable')
        return pos[s], gid[s], np.stack([proc[s], row[s]])

    def collect(self, outputs: Sequence[Any], axis: int = 0, epoch: int = 0) -> np.ndarray:
        """Per-batch outputs of `epoch` (e.g. predictions, batch axis `axis`) -> numpy, real rows
        only, in split order (by id), on every process.

        With several processes this is a collective: every process calls it with its
        outputs of the same batches.

        >>> x = np.zeros((5, 2, 2, 3), np.uint8); x[:, 0, 0, 0] = np.arange(5)
        >>> dl = DataLoader(x, None, bs=2, shuffle=True, key=1)
        >>> dl.collect([b['image'][:, 0, 0, 0] for b in dl.iter_epoch(0)]).tolist()
        [0, 1, 2, 3, 4]
        """
        outputs = list(outputs)
        if not outputs:
            return np.zeros((0,))
        if self.process_count == 1:
            cat = np.concatenate([np.asarray(o) for o in outputs], axis=axis)
        else:
            import jax.numpy as jnp
            cat = to_host(jnp.concatenate(outputs, axis=axis))
        pos, _, _ = self._real_rows(epoch)
        return np.take(cat, pos, axis=axis)

    def targets(self, epoch: int = 0) -> np.ndarray:
        """The targets (as given) of the rows :meth:`collect` returns, in the same order.

        With several processes, the first call is a collective.
        """
        _, ys = self._gathered()
        _, _, (proc, row) = self._real_rows(epoch)
        offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        return np.concatenate(ys)[offsets[proc] + row]
