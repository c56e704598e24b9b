"""ImageClassifierData: the lesson's data object -- items, the decoded uint8 cache and the loaders, together.

    data = ImageClassifierData.from_paths(PATH, tfms=tfms_from_model(resnet34, 224))
    data.classes, data.c, data.val_y, data.trn_ds.fnames[:3], len(data.trn_dl)

Each constructor (folders, CSV, arrays, TFDS) lists and validates the layout
first (:mod:`jaxcls.data.items`), then decodes every split once into a uint8
cache of side ``S`` (:mod:`jaxcls.data.decode`, default ``S = round(1.15 *
sz)``, reused across runs from ``{path}/tmp/``), then wraps the arrays in
:class:`~jaxcls.data.loader.DataLoader`\\ s: ``trn_dl`` shuffles (a new order per
epoch from ``key``), ``val_dl`` and ``test_dl`` keep file order. Images reach the
device as uint8; augmentation and normalisation (the ``tfms`` configs) run there.

Several processes (after ``jax.distributed.initialize()``): process ``p`` of
``P`` lists the whole layout (cheap, and every process must agree on the
classes) but decodes only its share of each split, the items ``p, p + P, ...``
(:func:`jaxcls.data.loader.shard_indices`), into its own cache
(``{name}-p{p}of{P}-...npy``, so processes sharing a disk never collide). The
datasets and ``skipped`` then describe this process's share only, and
``ds.ids`` says where each of its rows sits in the whole split; ``bs`` stays
the global batch size. :meth:`DataLoader.collect` and :meth:`DataLoader.targets`
give whole-split results. Datasets handed to the constructor whole (TFDS) are
cut to the process's share there, after decoding.

To look at the images: :meth:`ImageClassifierData.preview_batch` (a batch as
the model sees it) and :meth:`ImageClassifierData.aug_samples` (augmented
versions of one image) return them as 0..1 float arrays, ready to draw.

:meth:`ImageClassifierData.resize` (fastai 0.7's ``data.resize``) writes a copy of the
files at a smaller size once and returns data that reads it (:mod:`jaxcls.data.resize`).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np

from jaxcls.data import decode as dec
from jaxcls.data import items as it
from jaxcls.data.csv_labels import csv_items
from jaxcls.data import transforms as T
from jaxcls.data.dataset import ImageDataset, check_tfms, resolve_size
from jaxcls.data.loader import all_processes, shard_indices
from jaxcls.data.resize import resized_layout
from jaxcls.data.tfds import read_tfds
from jaxcls.data.tfm_loader import TfmDataLoader, jitted

# ImageDataset lives in jaxcls.data.dataset; it is importable from here as before.
__all__ = ['ImageDataset', 'ImageClassifierData']


def _no_regression(continuous: bool) -> None:
    if continuous:
        raise NotImplementedError('continuous=True (regression targets) is not supported: jaxcls '
                                  'classifies; pass class labels (continuous=False)')


def _preview_key(key: Any) -> jax.Array:
    """The previews' PRNG key from a seed (int) or a key: ``PRNGKey(seed)``, as the plots
    drew them before they moved here (the same seed shows the same images)."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.PRNGKey(int(key))
    return key


class ImageClassifierData:
    """Training, validation (and test) images, decoded once, with their loaders.

    Attributes (fastai 0.7 names):
      path: dataset root (caches go to ``{path}/tmp`` by default).
      classes, c: class names (sorted) and their number.
      is_multi: multi-label targets (float multi-hot) instead of class indices.
      trn_ds, val_ds, test_ds: :class:`ImageDataset` (test_ds may be None).
      trn_dl, val_dl, test_dl: the loaders of the three splits (test_dl may be None);
      fix_dl (training images, validation transforms), aug_dl (validation images,
        training transforms), test_aug_dl (test images, training transforms): as
        fastai 0.7. Each is a :class:`~jaxcls.data.tfm_loader.TfmDataLoader`:
        ``x, y = next(iter(data.aug_dl))`` gives transformed images, and
        ``iter_epoch(e)`` the uint8 batches the train step reads.
      trn_y, val_y: targets of the training and validation images.
      bs, sz, tfms: batch size, training image size, (trn_cfg, val_cfg).
      cache_size: side of the decoded uint8 squares.
      skipped: (path, reason) of every file found but not used.

    Construct with :meth:`from_paths`, :meth:`from_csv`, :meth:`from_arrays` or
    :meth:`from_tfds`.
    """

    def __init__(self, path: str, trn_ds: ImageDataset, val_ds: ImageDataset,
                 test_ds: ImageDataset | None = None, *, bs: int = 64, tfms=(None, None),
                 key: Any = 0, drop_last: bool = False, prefetch: int = 2, mesh=None,
                 skipped: Sequence[tuple[str, str]] = ()):
        self.path = os.fspath(path)
        self.tfms = check_tfms(tfms)
        p, n_proc = jax.process_index(), jax.process_count()
        if n_proc > 1:  # whole splits (e.g. TFDS, decoded by every process): keep this one's share
            trn_ds, val_ds, test_ds = (ds if ds is None or ds.ids is not None else ds.shard(p, n_proc)
                                       for ds in (trn_ds, val_ds, test_ds))
        t_trn, t_val = self.tfms
        # each split's dataset knows its loaders' transform, for ds.denorm (fastai 0.7's)
        self.trn_ds, self.val_ds, self.test_ds = (
            None if ds is None else ds.with_transform(t)
            for ds, t in ((trn_ds, t_trn), (val_ds, t_val), (test_ds, t_val)))
        self.classes = list(trn_ds.classes)
        self.is_multi = trn_ds.is_multi
        it.check_classes(self.classes, self.is_multi, 'the training set',
                         'give the data two classes or more')
        self.bs = int(bs)
        szs = [int(t.sz) for t in self.tfms if t is not None]
        self.sz = max(szs) if szs else trn_ds.cache_size
        self.cache_size = trn_ds.cache_size
        self.key, self.drop_last, self.prefetch, self.mesh = key, drop_last, prefetch, mesh
        self._source: dict | None = None  # how files were decoded (from_paths, from_csv): resize
        self._make_loaders()
        self.skipped = list(skipped) + [s for ds in (trn_ds, val_ds, test_ds) if ds is not None
                                        for s in ds.skipped]

    def _make_loaders(self) -> None:
        kw = dict(bs=self.bs, prefetch=self.prefetch, mesh=self.mesh)
        trn, val, test = self.trn_ds, self.val_ds, self.test_ds
        t_trn, t_val = self.tfms

        def make(ds, aug, **more):  # aug: the training transforms (random), else validation's
            return TfmDataLoader(ds.x, ds.y, ids=ds.ids, tfm=t_trn if aug else t_val,
                                 augment=aug, **kw, **more)
        self.trn_dl = make(trn, True, shuffle=True, key=self.key, drop_last=self.drop_last)
        self.val_dl, self.fix_dl, self.aug_dl = make(val, False), make(trn, False), make(val, True)
        self.test_dl = None if test is None else make(test, False)
        self.test_aug_dl = None if test is None else make(test, True)
        if jax.process_count() > 1:
            for nm, dl in (('train', self.trn_dl), ('valid', self.val_dl), ('test', self.test_dl)):
                if dl is not None and dl.n_total == 0:  # the counts are shared: all processes raise
                    raise ValueError(f'none of the {nm} images could be decoded on any of the '
                                     f'{jax.process_count()} processes; check the files (see '
                                     f'.skipped) or on_bad')

    def with_bs(self, bs: int) -> 'ImageClassifierData':
        """A copy with batch size `bs`: new loaders (same key, drop_last, mesh, and each process's
        share) over the same decoded images; this object is unchanged.

        >>> x = np.zeros((6, 8, 8, 3), np.uint8); y = np.arange(6) % 2
        >>> d = ImageClassifierData.from_arrays('.', (x, y), (x, y), bs=4, cache_size=8)
        >>> len(d.with_bs(2).trn_dl), len(d.trn_dl)
        (3, 2)
        """
        import copy
        if int(bs) < 1:
            raise ValueError(f'bs must be >= 1; got {bs}')
        new = copy.copy(self)
        new.bs = int(bs)
        new._make_loaders()
        return new

    @property
    def c(self) -> int:
        return len(self.classes)

    @property
    def trn_y(self) -> np.ndarray:
        return self.trn_ds.y

    @property
    def val_y(self) -> np.ndarray:
        return self.val_ds.y

    def denorm(self, x):
        """Normalised float images from a loader back to 0..1 float HWC, for plotting
        (``val_ds.denorm``: NHWC or fastai's NCHW, one image or a batch)."""
        return self.val_ds.denorm(x)

    def label_text(self, y: Any) -> str:
        """The class name of one target; multi-label: its labels, space-separated ('none').

        >>> x = np.zeros((2, 8, 8, 3), np.uint8)
        >>> d = ImageClassifierData.from_arrays('.', (x, [0, 1]), (x, [1, 0]), cache_size=8,
        ...                                     classes=['cats', 'dogs'])
        >>> d.label_text(d.trn_y[1])
        'dogs'
        """
        if self.is_multi:
            return ' '.join(self.classes[j] for j in np.flatnonzero(np.asarray(y) > 0.5)) or 'none'
        return str(self.classes[int(y)])

    def preview_batch(self, n: int = 16, is_train: bool = True, key: Any = 0
                      ) -> tuple[np.ndarray, list[str], np.ndarray]:
        """n images of a split as the model sees them, for display.

        Picks n images of the training split (validation with ``is_train=False``; at
        most all of them) with `key` (a seed or PRNG key), sends the training ones
        through `transforms.augment` and the validation ones through `val_transform`,
        and denormalises both.

        Returns:
          (images 0..1 float32 (n, sz, sz, 3), their class names, their indices in
          the split, ascending).

        >>> x = np.zeros((4, 12, 12, 3), np.uint8)
        >>> d = ImageClassifierData.from_arrays('.', (x, [0, 1, 0, 1]), (x, [0, 1, 0, 1]),
        ...                                     tfms=T.tfms_from_stats(((0.,) * 3, (1.,) * 3), 8))
        >>> imgs, titles, idxs = d.preview_batch(3, is_train=False)
        >>> imgs.shape, float(imgs.max()), len(titles), idxs.tolist() == sorted(idxs.tolist())
        ((3, 8, 8, 3), 0.0, 3, True)
        """
        ds = self.trn_ds if is_train else self.val_ds
        cfg = self.tfms[0 if is_train else 1]
        if cfg is None:
            raise ValueError('the data has no transforms; build it with tfms=tfms_from_model(arch, sz)')
        n = int(n)
        if n < 1:
            raise ValueError(f'n={n}; show at least one image (n >= 1)')
        n = min(n, len(ds))
        k_pick, k_aug = jax.random.split(_preview_key(key))
        idxs = np.sort(np.asarray(jax.random.choice(k_pick, len(ds), (n,), replace=False)))
        x = np.asarray(ds.x[idxs])
        out = jitted('augment')(k_aug, x, cfg) if is_train else T.val_transform(x, cfg)
        return T.denorm(np.asarray(out), cfg), [self.label_text(ds.y[i]) for i in idxs], idxs

    def aug_samples(self, idx: int = 0, n: int = 8, key: Any = 0) -> np.ndarray:
        """n augmented versions of training image `idx` (`transforms.aug_samples` with `key`,
        a seed or PRNG key), denormalised: 0..1 float32 (n, sz, sz, 3), for display.
        A negative `idx` counts from the end.
        """
        ds, cfg = self.trn_ds, self.tfms[0]
        if cfg is None:
            raise ValueError('the data has no transforms; build it with tfms=tfms_from_model(arch, sz)')
        if not -len(ds) <= int(idx) < len(ds):
            raise ValueError(f'idx={idx} is out of range for {len(ds)} training images; use 0..'
                             f'{len(ds) - 1}')
        idx = int(idx) % len(ds)
        imgs = jitted('aug_samples')(_preview_key(key), np.asarray(ds.x[idx]), cfg, int(n))
        return T.denorm(np.asarray(imgs), cfg)

    def __repr__(self) -> str:
        test = f', test={len(self.test_ds)}' if self.test_ds is not None else ''
        return (f'ImageClassifierData(path={self.path!r}, classes={self.c}, '
                f'train={len(self.trn_ds)}, valid={len(self.val_ds)}{test}, bs={self.bs}, '
                f'sz={self.sz}, cache_size={self.cache_size}'
                f'{", multi-label" if self.is_multi else ""})')

    # ------------------------------------------------------------------ constructors

    @classmethod
    def _from_layout(cls, lay: it.Layout, *, bs, tfms, num_workers, cache_dir, on_bad,
                     cache_size, key, quiet, drop_last, prefetch, mesh, names):
        tfms = check_tfms(tfms)
        _, size = resolve_size(tfms, cache_size)
        cdir = os.path.join(lay.root, 'tmp') if cache_dir is None else cache_dir
        kw = dict(cache_dir=cdir, num_workers=num_workers, on_bad=on_bad, quiet=quiet)
        p, n_proc = jax.process_index(), jax.process_count()
        dss = []
        for split, nm in zip((lay.train, lay.valid, lay.test), names):
            if split is None:
                dss.append(None)
                continue
            if n_proc == 1:
                d = dec.decode_files(split.fnames, lay.root, size, name=nm, **kw)
                if len(d.kept) == 0:
                    raise ValueError(f'none of the {len(split)} images in {nm} could be decoded, '
                                     f'e.g. {d.skipped[:2]}; check the files (or on_bad)')
                dss.append(ImageDataset.from_decoded(d, split.y, lay.classes, is_multi=lay.is_multi))
                continue
            # Several processes: decode this process's share only, into its own cache file.
            # (An empty share is allowed; the loaders check that some process has images.)
            idx = shard_indices(len(split), p, n_proc)
            err = None
            try:
                d = dec.decode_files([split.fnames[i] for i in idx], lay.root, size,
                                     name=f'{nm}-p{p}of{n_proc}', **kw)
            except Exception as e:  # e.g. on_bad='raise': tell the others instead of leaving
                err = e             # them waiting in the loaders' collectives
            failed = np.flatnonzero(all_processes(np.asarray([err is not None]))[:, 0]).tolist()
            if err is not None:
                raise err
            if failed:
                raise RuntimeError(f'process(es) {failed} of {n_proc} failed to decode their share '
                                   f'of {nm}; their own error says why')
            dss.append(ImageDataset.from_decoded(d, None if split.y is None else split.y[idx],
                                                 lay.classes, is_multi=lay.is_multi, ids=idx))
        data = cls(lay.root, *dss, bs=bs, tfms=tfms, key=key, drop_last=drop_last,
                   prefetch=prefetch, mesh=mesh, skipped=lay.skipped)
        data._source = dict(num_workers=num_workers, cache_dir=cache_dir, on_bad=on_bad,
                            cache_size=cache_size, quiet=quiet, names=names)
        return data

    def resize(self, targ_sz: int, new_path: str = 'tmp', resume: bool = True,
               num_workers: int | None = None) -> 'ImageClassifierData':
        """fastai 0.7's ``data.resize``: writes every image file once more with its shorter side
        scaled to `targ_sz`, under ``{path}/{new_path}/{targ_sz}/`` (in parallel; resumable:
        copies newer than their file are kept unless ``resume=False``; files that cannot be
        decoded are skipped and reported as this data's `on_bad` says), and returns data that
        reads the copy: the same classes, splits, transforms and batch size. Its decode cache
        lives under the copy (or in memory when this data's does). See :mod:`jaxcls.data.resize`.
        """
        if self._source is None:
            raise ValueError('data.resize writes a resized copy of image files, and this data was '
                             'not read from files (from_arrays, from_tfds); build it with a '
                             'smaller cache_size= instead')
        src = dict(self._source)
        lay = resized_layout(self, targ_sz, new_path, resume=resume,
                             num_workers=num_workers or src['num_workers'], on_bad=src['on_bad'],
                             quiet=src['quiet'])
        src['cache_dir'] = False if src['cache_dir'] is False else None
        return type(self)._from_layout(lay, bs=self.bs, tfms=self.tfms, key=self.key,
                                       drop_last=self.drop_last, prefetch=self.prefetch,
                                       mesh=self.mesh, **src)

    @classmethod
    def from_paths(cls, path: str, bs: int = 64, tfms=(None, None), trn_name: str = 'train',
                   val_name: str = 'valid', test_name: str | None = None,
                   test_with_labels: bool = False, num_workers: int | None = None,
                   cache_dir: str | None | bool = None, on_bad: str = 'skip', *,
                   cache_size: int | None = None, key: Any = 0, quiet: bool = False,
                   drop_last: bool = False, prefetch: int = 2, mesh=None
                   ) -> 'ImageClassifierData':
        """Images in ``{path}/{trn_name}/<class>/`` and ``{path}/{val_name}/<class>/``.

        Args:
          path: dataset root.
          bs: batch size.
          tfms: ``tfms_from_model(arch, sz, ...)``; its sz sets the cache size.
          trn_name, val_name, test_name, test_with_labels: folder names; see
            :func:`jaxcls.data.items.folder_items`.
          num_workers: decode threads (default os.cpu_count()).
          cache_dir: where decoded caches live (default ``{path}/tmp``); False
            keeps them in memory only.
          on_bad: 'skip' (default: leave undecodable files out, warn once) or 'raise'.
          cache_size: decoded square size (default ``round(1.15 * sz)``).
          key: seed or PRNG key of the training shuffle.
          quiet: no progress bars.
          drop_last: drop the last partial training batch (default: pad and mask).
          prefetch: batches kept ready on device.
          mesh: device mesh with a 'data' axis (default: all devices).

        >>> import tempfile, pathlib; from PIL import Image
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for s in ('train', 'valid'):
        ...     for c, col in (('cats', 'red'), ('dogs', 'blue')):
        ...         (d / s / c).mkdir(parents=True)
        ...         for i in range(3): Image.new('RGB', (24, 16), col).save(d / s / c / f'{i}.png')
        >>> data = ImageClassifierData.from_paths(str(d), bs=4, cache_size=20)
        >>> data.classes, data.val_y.tolist(), data.trn_ds.x.shape, len(data.trn_dl)
        (['cats', 'dogs'], [0, 0, 0, 1, 1, 1], (6, 20, 20, 3), 2)
        """
        lay = it.folder_items(path, trn_name, val_name, test_name, test_with_labels)
        return cls._from_layout(lay, bs=bs, tfms=tfms, num_workers=num_workers,
                                cache_dir=cache_dir, on_bad=on_bad, cache_size=cache_size,
                                key=key, quiet=quiet, drop_last=drop_last, prefetch=prefetch,
                                mesh=mesh, names=(trn_name, val_name, test_name))

    @classmethod
    def from_csv(cls, path: str, folder: str, csv_fname: str, bs: int = 64, tfms=(None, None),
                 val_idxs: Sequence[int] | None = None, suffix: str = '',
                 test_name: str | None = None, continuous: bool = False, skip_header: bool = True,
                 num_workers: int | None = None, cat_separator: str = ' ',
                 cache_dir: str | None | bool = None, on_bad: str = 'skip', *,
                 cache_size: int | None = None, key: Any = 0, quiet: bool = False,
                 drop_last: bool = False, prefetch: int = 2, mesh=None
                 ) -> 'ImageClassifierData':
        """Images in ``{path}/{folder}`` labelled by a CSV (fname, labels); see
        :mod:`jaxcls.data.csv_labels` for the CSV rules, the bad rows (`on_bad` applies to
        them as to bad image files) and the default 20 % validation split (fastai's seed
        42). The positional order is fastai 0.7's; `continuous` (regression) must stay
        False. Other arguments as in :meth:`from_paths`.

        >>> import tempfile, pathlib; from PIL import Image
        >>> d = pathlib.Path(tempfile.mkdtemp()); (d / 'imgs').mkdir()
        >>> for i in range(10): Image.new('RGB', (16, 16), 'red').save(d / 'imgs' / f'{i}.png')
        >>> rows = ''.join(f'{i},{"cat" if i % 2 else "dog"}\\n' for i in range(10))
        >>> _ = (d / 'labels.csv').write_text('id,label\\n' + rows)
        >>> data = ImageClassifierData.from_csv(str(d), 'imgs', 'labels.csv', suffix='.png', cache_size=16)
        >>> data.classes, len(data.trn_ds), data.val_ds.fnames
        (['cat', 'dog'], 8, ['imgs/1.png', 'imgs/8.png'])
        """
        _no_regression(continuous)
        lay = csv_items(path, folder, csv_fname, val_idxs, suffix, test_name, skip_header,
                        cat_separator, on_bad)
        return cls._from_layout(lay, bs=bs, tfms=tfms, num_workers=num_workers,
                                cache_dir=cache_dir, on_bad=on_bad, cache_size=cache_size,
                                key=key, quiet=quiet, drop_last=drop_last, prefetch=prefetch,
                                mesh=mesh, names=(f'{folder}-train', f'{folder}-valid', test_name))

    @classmethod
    def from_arrays(cls, path: str, trn: tuple, val: tuple, bs: int = 64, tfms=(None, None),
                    classes: Sequence | None = None, num_workers: int | None = None,
                    test: np.ndarray | None = None, continuous: bool = False, *,
                    cache_size: int | None = None,
                    key: Any = 0, drop_last: bool = False, prefetch: int = 2, mesh=None
                    ) -> 'ImageClassifierData':
        """Images already in memory: ``trn=(x, y)``, ``val=(x, y)``, optional unlabelled `test` x.

        x is NHWC (or NHW) uint8 0..255 or float 0..1, of any size; it is
        resized/cropped to the cache size like files are. If the images are
        squares whose side lies between sz and the default cache size (e.g.
        CIFAR's 32 px at sz=32), they are kept at their own size instead of
        being resampled. y is 1-D class indices or 2-D multi-hot targets;
        `classes` defaults to ``['0', '1', ...]``. Nothing is written under
        `path`.

        >>> x = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
        >>> y = np.arange(10) % 2
        >>> data = ImageClassifierData.from_arrays('.', (x, y), (x[:4], y[:4]), bs=4, cache_size=32)
        >>> data.classes, data.c, bool((data.trn_ds.x == x).all())
        (['0', '1'], 2, True)
        """
        _no_regression(continuous)
        tfms = check_tfms(tfms)
        (xt, yt), (xv, yv) = trn, val
        yt, yv, classes, is_multi = it.array_labels(yt, yv, classes)
        if cache_size is None:
            sz, size = resolve_size(tfms, None)
            shape = np.shape(xt)
            if len(shape) >= 3 and shape[1] == shape[2] and sz <= shape[1] <= size:
                size = int(shape[1])
        else:
            _, size = resolve_size(tfms, cache_size)

        p, n_proc = jax.process_index(), jax.process_count()

        def ds(x, y, nm):
            if y is not None and len(x) != len(y):
                raise ValueError(f'{nm} has {len(x)} images but {len(y)} labels; pass one per image')
            # Several processes: each resizes and keeps only its share (items p, p + P, ...).
            idx = shard_indices(len(x), p, n_proc)
            if n_proc > 1:
                x, y = np.asarray(x)[idx], None if y is None else y[idx]
            xa = dec.decode_arrays(x, size, num_workers=num_workers)
            return ImageDataset(xa, y, [f'{nm}[{i}]' for i in idx], classes,
                                is_multi=is_multi, fingerprint=dec.array_fingerprint(xa),
                                ids=idx if n_proc > 1 else None)

        trn_ds, val_ds = ds(xt, yt, 'trn'), ds(xv, yv, 'val')
        test_ds = None if test is None else ds(test, None, 'test')
        return cls(path, trn_ds, val_ds, test_ds, bs=bs, tfms=tfms, key=key,
                   drop_last=drop_last, prefetch=prefetch, mesh=mesh)

    @classmethod
    def from_tfds(cls, name: str, data_dir: str | None = None, split=('train', 'test'),
                  bs: int = 64, tfms=(None, None), *, image_key: str = 'image',
                  label_key: str = 'label', cache_dir: str | None | bool = None,
                  cache_size: int | None = None, num_workers: int | None = None,
                  on_bad: str = 'skip', quiet: bool = False, download: bool = False,
                  key: Any = 0, drop_last: bool = False, prefetch: int = 2, mesh=None
                  ) -> 'ImageClassifierData':
        """A prepared TensorFlow Datasets dataset (no TensorFlow for array_record); see
        :mod:`jaxcls.data.tfds` for how it is read.

        Args:
          name: TFDS name, e.g. 'cats_vs_dogs' or 'tf_flowers' (optionally 'name:version').
          data_dir: TFDS data folder (default TFDS's own, ~/tensorflow_datasets).
          split: (train, valid) or (train, valid, test) split strings -- TFDS slicing
            works, e.g. ('train[:90%]', 'train[90%:]') -- or a dict with keys
            'train', 'valid', optional 'test'.
          image_key, label_key: feature names of the image and its ClassLabel.
          cache_dir: decoded caches (default ``{dataset folder}/jaxcls-cache``; in
            memory only when the dataset is not on local disk); False: memory only.
          download: let TFDS download and prepare the dataset if missing.
          Others as in :meth:`from_paths`.

        Returns an ImageClassifierData whose ``path`` is the dataset folder and whose
        classes are the label feature's names.

        Example (needs the dataset prepared as array_record under data_dir)::

            data = ImageClassifierData.from_tfds('tf_flowers', split=('train[:90%]', 'train[90%:]'),
                                                 tfms=tfms_from_model(resnet34, 224))
        """
        tfms = check_tfms(tfms)
        _, size = resolve_size(tfms, cache_size)
        classes, is_multi, splits, ds_dir = read_tfds(
            name, size, data_dir=data_dir, split=split, image_key=image_key, label_key=label_key,
            cache_dir=cache_dir, num_workers=num_workers, on_bad=on_bad, quiet=quiet,
            download=download)
        dss = {r: ImageDataset.from_decoded(s.decoded, s.y, classes, is_multi=is_multi)
               for r, s in splits.items()}
        for r, ds in dss.items():
            if len(ds) == 0:
                raise ValueError(f'TFDS split {splits[r].split!r} of {name!r} has no decodable images')
        return cls(ds_dir or (data_dir or '.'), dss['train'], dss['valid'], dss.get('test'),
                   bs=bs, tfms=tfms, key=key, drop_last=drop_last, prefetch=prefetch, mesh=mesh)
