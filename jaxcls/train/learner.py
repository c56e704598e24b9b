"""ConvLearner: the lesson-1 workflow on top of the pure steps.

The learner holds state (data, network, TrainState, layer-group settings, the
precomputed features) and calls jitted pure functions. One compiled train step
exists per (trainable layer groups, precompute, BatchNorm mode, dtype,
transforms) configuration; learning rates and momentum change through the
optimizer state, so lr_find, fit with any rates and SGDR reuse it.

    >>> data = ImageClassifierData.from_paths(PATH, tfms=tfms_from_model(resnet34, 224))  # doctest: +SKIP
    >>> learn = ConvLearner.pretrained(resnet34, data, precompute=True)                     # doctest: +SKIP
    >>> learn.fit(0.01, 3)                                                                   # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import sys
import time
import uuid
import weakref
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxcls import compile_cache, xla
from jaxcls.data import transforms as T
from jaxcls.data.loader import DataLoader, replicate
from jaxcls.archs import ArchSpec, get_arch
from jaxcls.models.head import XTRA_FC, ConvNet, Head
from jaxcls.models.resnet import ResNet, out_channels, random_variables, variable_shapes
from jaxcls.models import ops
from jaxcls.models.zoo import merge_variables

from . import checkpoint as ckpt
from . import lr_find as lrf
from . import memory as mem
from . import precompute as pre
from . import resume as rs
from .callbacks import Callback, Recorder, smooth
from .memory import BatchSizeChoice, OutOfDeviceMemory
from .resume import ModelCheckpoint, Progress, ResumeMismatch, SaveBest  # noqa: F401 (re-exported)
from .metrics import accuracy, accuracy_thresh, bce_loss, nll_loss
from .optim import (MOMENTUM, layer_group_sgd, set_group_hyperparams, set_hyperparam_unless_nan)
from .schedules import (DIV, DIV_FINAL, MOMS, PCT_START, lr_range, one_cycle, one_cycle_momentum,
                        sgdr, sgdr_epochs, table)
from .state import TrainState, create_train_state
from .steps import make_train_step

# Parameters are initialised on a 64 px input: the shapes do not depend on the size.
_INIT_SIZE = 64
_BN_MODES = ('eval', 'train')
# Stored features up to this size are copied to the device once, and training batches are
# gathered there (see DataLoader): 20,000 ResNet34 features are 80 MB. Larger sets stay on
# the host and are sent batch by batch, so they never compete with the model for memory.
DEVICE_FEATURES_MAX_BYTES = 1 << 30


class TrainingDiverged(FloatingPointError):
    """The training loss stopped being a finite number."""


def _body_of(state: TrainState) -> dict:
    """The body's parameters and BatchNorm statistics of a ConvNet state."""
    return {'params': state.params['body'], 'batch_stats': state.batch_stats.get('body')}


def _without_body(state: TrainState) -> TrainState:
    return state.replace(params={k: v for k, v in state.params.items() if k != 'body'},
                         batch_stats={k: v for k, v in state.batch_stats.items() if k != 'body'})


def _with_body(state: TrainState, body: dict) -> TrainState:
    stats = dict(state.batch_stats)
    if body['batch_stats'] is not None:
        stats['body'] = body['batch_stats']
    return state.replace(params={**state.params, 'body': body['params']}, batch_stats=stats)


def _pretrained_variables(net: ConvNet, key: jax.Array, loaded: dict) -> Optional[dict]:
    """The net's variables with the body from `loaded` (a weight file's, or `random_variables`
    for pretrained=False) and a freshly initialised head, without ever running the body's
    Flax init (its shapes come from `variable_shapes`, untraced). The head's
    values are the same as a whole-network init with `key` gives (Flax derives each module's
    key from its path). Random-initialising ResNet34's body only to overwrite it compiled for
    ~5 s on a 2-core CPU. None when `loaded` does not cover the whole body (the caller then
    inits it all)."""
    stages, block = tuple(net.body.stage_sizes), net.body.block
    shapes = variable_shapes(stages, block, None)
    if net.pool:  # concat pooling: max and mean of every channel
        feats = jax.ShapeDtypeStruct((1, 2 * out_channels(stages, block)), jnp.float32)
    else:  # a custom head sees the feature map: trace the body for its shape
        feats = jax.eval_shape(lambda k: net.init_with_output(
            {'params': k, 'dropout': k}, jnp.zeros((1, _INIT_SIZE, _INIT_SIZE, 3)),
            method=ConvNet.features)[0], key)
    body = {c: merge_variables(shapes[c], loaded[c]) for c in ('params', 'batch_stats')}
    if any(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree_util.tree_leaves(body)):
        return None
    head = xla.jit(lambda k: net.init({'params': k, 'dropout': k},
                                      jnp.zeros(feats.shape, feats.dtype),
                                      method=ConvNet.head_only))(key)
    return {c: {**head.get(c, {}), 'body': body.get(c, {})} for c in ('params', 'batch_stats')}


class ConvLearner:
    """A pretrained body + fastai's head, trained the fastai 0.7 way. Build with `pretrained`.

    Attributes (fastai 0.7 names): data, model (the Flax ConvNet), sched (a Recorder
    of the last fit or lr_find), precompute, n_groups (layer groups: 3 for ResNets),
    state (the TrainState), history (per-epoch logs of every fit).
    """

    def __init__(self, data, spec: ArchSpec, net: ConvNet, variables: dict, *,
                 precompute: bool = False, bn_frozen: str = 'eval', seed: int = 0,
                 metrics: Optional[Sequence[Callable]] = None, quiet: bool = False,
                 precompute_aug: int = 0, arch_name: Optional[str] = None,
                 head_desc: Optional[dict] = None):
        if bn_frozen not in _BN_MODES:
            raise ValueError(f"bn_frozen={bn_frozen!r}; use 'eval' (frozen layer groups use their "
                             "running statistics, fastai's default) or 'train' (they keep updating)")
        if data.tfms[0] is None or data.tfms[1] is None:
            raise ValueError('the data has no transforms; build it with '
                             'tfms=tfms_from_model(arch, sz) so images are cropped and normalised '
                             "with the arch's statistics")
        self.data, self.spec, self.model = data, spec, net
        self.arch_name = arch_name or spec.name
        self.head_desc = head_desc or {}
        self.pretrained_body = False  # the body started from ImageNet weights (metadata only)
        self.bn_frozen, self.quiet = bn_frozen, quiet
        self.seed = seed
        self.is_multi = bool(data.is_multi)
        self.loss = 'sigmoid' if self.is_multi else 'softmax'
        self.metrics = list(metrics) if metrics is not None else (
            [accuracy_thresh(0.5)] if self.is_multi else [accuracy])
        self.precompute_aug = int(precompute_aug)
        self.dtype = jnp.float32
        self.labels = self._group_labels(variables['params'])
        self.n_groups = 3
        self.trainable = (False, False, True)  # freeze(): only the head trains
        self._txs: dict = {}
        self._fns: dict = {}
        self._features: dict = {}
        self._placed: dict = {}  # stored features copied to the device, by split name
        self._feature_cache = pre.FeatureCache(os.path.join(data.path, 'tmp', 'precompute'))
        self.state = self._place(create_train_state(net.apply, variables, self._tx(), rng=seed))
        self.epoch = 0  # epochs trained so far: the data order of the next epoch
        self.history: list[dict] = []
        self._history_fits: list[int] = []  # which fit each history row came from
        self.sched: Optional[Recorder] = None
        self.progress: Optional[Progress] = None  # the running fit's position (None outside)
        self.run_id = uuid.uuid4().hex  # names this training run in its checkpoints
        self._fits = 0  # fit/fit_one_cycle calls so far: the index of the next in the sequence
        self.bs_choice: Optional[BatchSizeChoice] = None
        self._precompute = False
        self.precompute = precompute

    # ------------------------------------------------------------------ construction

    @classmethod
    def pretrained(cls, arch: Any, data, ps: Optional[Sequence[float]] = None,
                   xtra_fc: Optional[Sequence[int]] = None, xtra_cut: int = 0,
                   custom_head: Any = None, precompute: bool = False, pretrained: bool = True,
                   bn_frozen: str = 'eval', weights: Any = None, seed: int = 0,
                   metrics: Optional[Sequence[Callable]] = None, quiet: bool = False,
                   precompute_aug: int = 0, bs: Any = None,
                   mem_budget: Optional[int] = None, dtype: Any = None,
                   kernels: str = 'auto') -> 'ConvLearner':
        """A learner with an ImageNet-pretrained body (`pretrained=False`: random) and a new head.

        Args:
          arch: `resnet34` (the constructor), 'resnet34', or an ArchSpec.
          data: an ImageClassifierData.
          ps: dropout before each head layer (default [0.25, 0.5]).
          xtra_fc: sizes of the extra head layers (default [512]).
          xtra_cut: cut this many more stages off the end of the body.
          custom_head: a Flax module taking the body's feature map and returning logits.
          precompute: train the head on stored body activations.
          pretrained: load ImageNet weights (a local file, then a download).
          bn_frozen: 'eval' (frozen groups' BatchNorms use running statistics) or 'train'.
          weights: explicit weight file for the body.
          seed: seeds the head's initialisation, dropout and augmentation.
          metrics: functions `f(preds, targs) -> float` shown per epoch (default accuracy).
          quiet: no progress bars or tables.
          precompute_aug: with precompute, store this many augmented views of every
            training image (epoch e trains on view e mod K); 0 stores the plain centre crop.
          bs: None keeps data.bs; an int trains and predicts with that batch size;
            'auto' picks the largest of data.bs, data.bs/2, ... whose unfrozen training
            step (every layer group trainable, on augmented images: the most memory-hungry
            step of the lesson) fits the device, judged from XLA's memory analysis of the
            compiled step before any batch is allocated (see `auto_bs`).
          mem_budget: bytes per device for bs='auto' (default: 90% of an accelerator's
            memory; on CPU half the RAM, shared among the CPU devices).
          dtype: computation dtype, 'float32' (default) or 'bfloat16' (as `half()`;
            parameters and BatchNorm statistics stay float32). Set here, precompute runs
            its forward passes in that dtype from the start.
          kernels: 'auto' (default: 'cpu' when the data's mesh is one CPU device, else 'xla'),
            'xla' or 'cpu': how the network's layers are computed (jaxcls.models.ops); the
            same function either way, fixed for this learner.
        """
        compile_cache.enable()  # the second run of a script loads its compiled steps
        if dtype is not None:
            try:
                dt = jnp.dtype(dtype)
            except TypeError:
                dt = None
            if dt not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
                raise ValueError(f"dtype={dtype!r}; use 'float32' or 'bfloat16' (parameters and "
                                 'BatchNorm statistics stay float32 either way)')
            dtype = dt
        spec = get_arch(arch)
        n_stages = len(spec.stage_sizes) - int(xtra_cut)
        if not 1 <= n_stages <= len(spec.stage_sizes):
            raise ValueError(f'xtra_cut={xtra_cut}: {spec.name} has {len(spec.stage_sizes)} stages; '
                             f'use 0 to {len(spec.stage_sizes) - 1}')
        kernels = ops.resolve(kernels, list(data.trn_dl.mesh.devices.flat))
        body = ResNet(tuple(spec.stage_sizes[:n_stages]), spec.block, None, kernels=kernels)
        if custom_head is None:
            xtra = tuple(XTRA_FC if xtra_fc is None else xtra_fc)
            head = Head(data.c, xtra, None if ps is None else tuple(ps), kernels=kernels)
            desc = {'xtra_fc': list(xtra), 'ps': None if ps is None else list(ps)}
        else:
            head, desc = custom_head, {'custom_head': type(custom_head).__name__}
        net = ConvNet(body, head, pool=custom_head is None)
        key = jax.random.PRNGKey(seed)
        if pretrained or weights is not None:
            from jaxcls.models.weights import load_pretrained
            loaded = load_pretrained(spec, weights, include_fc=False)
        else:  # drawn on the host: jitting net.init for a random body compiled for 5-13 s
            loaded = random_variables(body.stage_sizes, body.block, None, key)
        variables = _pretrained_variables(net, key, loaded)
        if variables is None:
            variables = xla.jit(lambda k: net.init(
                {'params': k, 'dropout': k}, jnp.zeros((1, _INIT_SIZE, _INIT_SIZE, 3))))(key)
            variables = {'params': variables['params'], 'batch_stats': variables['batch_stats']}
        desc.update(xtra_cut=int(xtra_cut))
        later = dtype is not None and dtype != jnp.dtype(jnp.float32)
        learn = cls(data, spec, net, variables, precompute=precompute and not later,
                    bn_frozen=bn_frozen, seed=seed, metrics=metrics, quiet=quiet,
                    precompute_aug=precompute_aug, head_desc=desc)
        learn.pretrained_body = bool(pretrained or weights is not None)
        if later:  # features computed once, in the dtype asked for
            learn._set_dtype(dtype)
            learn.precompute = precompute
        if isinstance(bs, str):
            if bs != 'auto':
                raise ValueError(f"bs={bs!r}; use an int, None (data.bs) or 'auto'")
            learn.auto_bs(budget=mem_budget)
        elif bs is not None:
            learn.set_bs(bs)
        return learn

    def _group_labels(self, params: dict) -> dict:
        first = set(self.spec.layer_groups[0])
        body = {k: jax.tree_util.tree_map(lambda _, g=(0 if k in first else 1): g, v)
                for k, v in params['body'].items()}
        return {'body': body, 'head': jax.tree_util.tree_map(lambda _: 2, params['head'])}

    # ------------------------------------------------------------------ layer groups

    def freeze_to(self, n: int) -> None:
        """Train layer groups n.. only (fastai's freeze_to); earlier groups are frozen."""
        if not -self.n_groups <= n < self.n_groups:
            raise ValueError(f'freeze_to({n}): there are {self.n_groups} layer groups; '
                             f'use 0 (train all) to {self.n_groups - 1} (head only)')
        n %= self.n_groups
        self.trainable = tuple(i >= n for i in range(self.n_groups))
        if self._precompute and any(self.trainable[:-1]):
            self._precompute = False  # a trainable body cannot use stored activations

    def freeze(self) -> None:
        """Train the head only (the state after construction)."""
        self.freeze_to(self.n_groups - 1)

    def unfreeze(self) -> None:
        """Train every layer group; also turns precompute off."""
        self.freeze_to(0)
        self._precompute = False

    @property
    def precompute(self) -> bool:
        """Train the head on stored body activations (set False to train on augmented images)."""
        return self._precompute

    @precompute.setter
    def precompute(self, value: bool) -> None:
        value = bool(value)
        if value and any(self.trainable[:-1]):
            raise ValueError('precompute=True needs a frozen body, but layer groups '
                             f'{[i for i, t in enumerate(self.trainable[:-1]) if t]} are trainable; '
                             'call learn.freeze() first')
        if value:
            self._ensure_features()
        self._precompute = value

    def half(self) -> 'ConvLearner':
        """Compute in bfloat16 (parameters and BatchNorm statistics stay float32)."""
        return self._set_dtype(jnp.bfloat16)

    def float(self) -> 'ConvLearner':
        """Compute in float32 again."""
        return self._set_dtype(jnp.float32)

    def _set_dtype(self, dtype) -> 'ConvLearner':
        if dtype == self.dtype:
            return self
        body = self.model.body.clone(dtype=dtype)
        head = self.model.head.clone(dtype=dtype) if hasattr(self.model.head, 'dtype') else self.model.head
        self.model = self.model.clone(body=body, head=head)
        self.dtype = dtype
        self.state = self.state.replace(apply_fn=self.model.apply)
        self._fns.clear()
        if self._precompute:
            self._ensure_features()
        return self

    # ------------------------------------------------------------------ compiled functions

    def _tx(self):
        if self.trainable not in self._txs:
            self._txs[self.trainable] = layer_group_sgd(self.labels, self.trainable, MOMENTUM)
        return self._txs[self.trainable]

    def _bn_eval(self) -> tuple[str, ...]:
        if self.bn_frozen == 'train':
            return ()
        names: list[str] = []
        for g, trainable in enumerate(self.trainable[:-1]):
            if not trainable:
                names += self.spec.layer_groups[g]
        return tuple(names)

    def _fn(self, kind: str, **extra):
        cfg = self.data.tfms[0] if kind in ('train', 'tta', 'aug_features') else self.data.tfms[1]
        key = (kind, self.trainable if kind == 'train' else None,
               self._precompute if kind in ('train', 'predict') else None,
               self.bn_frozen, jnp.dtype(self.dtype).name, cfg, tuple(sorted(extra.items())))
        if key not in self._fns:
            self._fns[key] = self._build_fn(kind, cfg, **extra)
        return self._fns[key]

    def _build_fn(self, kind: str, cfg, **extra):
        net = self.model
        if kind == 'train':
            frozen = jax.tree_util.tree_map(lambda g: not self.trainable[g], self.labels)
            if self._precompute:
                inner = make_train_step(self.loss, None, frozen, {'method': ConvNet.head_only},
                                        skip_nonfinite=True)
            else:
                inner = make_train_step(self.loss, lambda k, x: T.augment(k, x, cfg), frozen,
                                        {'bn_eval': self._bn_eval()}, skip_nonfinite=True)
            n = self.n_groups
            # After precompute the step takes and returns only the live part of the state
            # (`_live`): the frozen body's ~200 arrays would otherwise cross every call, and
            # on a GPU that dispatch cost more than the head's step itself. Inside, the body
            # is zeros that nothing reads, which XLA removes.
            body = self._body_shapes() if self._precompute else None

            def step(state, batch, lrs, mom):
                # This step's rates (float32, one per layer group) and momentum (NaN: keep
                # the current one) arrive as arguments and are written into the optimizer
                # state inside the compiled step, so the host places nothing per step.
                if body is not None:
                    state = _with_body(state, jax.tree_util.tree_map(
                        lambda a: jnp.zeros(a.shape, a.dtype), body))
                opt = set_group_hyperparams(state.opt_state, 'learning_rate',
                                            [lrs[g] for g in range(n)])
                opt = set_hyperparam_unless_nan(opt, 'momentum', mom)
                state, metrics = inner(state.replace(opt_state=opt), batch)
                return (_without_body(state) if body is not None else state), metrics
            return xla.jit(step, donate_argnums=0)
        final = jax.nn.sigmoid if self.is_multi else jax.nn.log_softmax
        if kind == 'predict':
            if self._precompute:
                return xla.jit(lambda v, f: final(net.apply(v, f, method=ConvNet.head_only)
                                                  .astype(jnp.float32)))
            return xla.jit(lambda v, x: final(net.apply(v, T.val_transform(x, cfg))
                                              .astype(jnp.float32)))
        if kind == 'predict_uint8':
            return xla.jit(lambda v, x: final(net.apply(v, T.val_transform(x, cfg))
                                              .astype(jnp.float32)))
        if kind == 'predict_float':
            return xla.jit(lambda v, x: final(net.apply(v, x.astype(jnp.float32))
                                              .astype(jnp.float32)))
        if kind == 'features':
            return xla.jit(lambda v, x: net.apply(v, T.val_transform(x, cfg),
                                                  method=ConvNet.features).astype(jnp.float32))
        if kind == 'aug_features':
            return xla.jit(lambda v, k, x: net.apply(v, T.augment(k, x, cfg),
                                                     method=ConvNet.features).astype(jnp.float32))
        if kind == 'tta':
            def tta(v, keys, x):
                one = lambda k: final(net.apply(v, T.augment(k, x, cfg)).astype(jnp.float32))
                return jax.vmap(one)(keys)
            return xla.jit(tta)
        raise ValueError(kind)

    # ------------------------------------------------------------------ precompute

    def _body_shapes(self) -> dict:
        """Shapes of the body's parameters and statistics (what `_live` leaves out)."""
        return jax.eval_shape(_body_of, self.state)

    def _live(self, state: TrainState) -> TrainState:
        """The part of `state` the compiled train step takes: all of it, or after precompute
        everything but the frozen body (see `_build_fn`)."""
        return _without_body(state) if self._precompute else state

    def _merged(self, live: TrainState, state: TrainState) -> TrainState:
        """The whole state again: `live` from the train step, the body from `state`."""
        return _with_body(live, _body_of(state)) if self._precompute else live

    def _body_digest(self) -> str:
        body = _body_of(self.state)
        leaves = jax.tree_util.tree_leaves(body)
        # jax arrays are immutable: the same array objects have the same digest. Hashing the
        # body (ResNet34: 87 MB copied from the device) took 0.19 s on a GPU machine, and
        # every validation after precompute asks for it again. The memo holds weak
        # references, so it never keeps an old body alive on the device.
        seen = getattr(self, '_digest_memo', None)
        if seen is not None and len(seen[0]) == len(leaves) and all(
                r() is a for r, a in zip(seen[0], leaves)):
            return seen[1]
        digest = pre.tree_digest(body)
        try:
            self._digest_memo = ([weakref.ref(a) for a in leaves], digest)
        except TypeError:  # a leaf that takes no weak reference (numpy): no memo
            self._digest_memo = None
        return digest

    def _ensure_features(self) -> None:
        """Compute (or load) the body's activations for train, valid and test."""
        digest = self._body_digest()
        base = dict(arch=self.arch_name, stages=list(self.model.body.stage_sizes),
                    dtype=jnp.dtype(self.dtype).name, val_cfg=repr(self.data.tfms[1]),
                    body=digest)
        if self._features.get('base') == base:
            return
        variables = self.state.variables
        feats = {'base': base}
        splits = [('valid', self.data.val_ds), ('test', self.data.test_ds)]
        todo = []
        if self.precompute_aug:
            for v in range(self.precompute_aug):
                todo.append((f'train_aug{v}', self.data.trn_ds, v))
        else:
            todo.append(('train', self.data.trn_ds, None))
        todo += [(n, ds, None) for n, ds in splits if ds is not None]
        bar = self._bar(sum(len(ds) for _, ds, _ in todo), 'precompute')
        pre_bs = pre.batch_size(self.data.bs, jax.default_backend())
        for name, ds, view in todo:
            key = pre.features_key(**base, split=name, data=ds.fingerprint, n=len(ds),
                                   trn_cfg=repr(self.data.tfms[0]) if view is not None else None,
                                   seed=self.seed if view is not None else None)
            arr = self._feature_cache.get(key) if ds.fingerprint else None
            if arr is None:
                if view is None:
                    f = self._fn('features')
                    fn = lambda x, f=f: f(variables, x)
                else:
                    f = self._fn('aug_features')
                    k = jax.random.fold_in(jax.random.PRNGKey(self.seed), 1000 + view)
                    counter = iter(range(10 ** 9))
                    fn = lambda x, f=f, k=k: f(variables, jax.random.fold_in(k, next(counter)), x)
                arr = pre.compute_features(fn, ds.x, pre_bs, progress=bar.update if bar else None)
                if ds.fingerprint:
                    self._feature_cache.put(key, arr)
            elif bar:
                bar.update(len(ds))
            feats[name] = arr
        if bar:
            bar.close()
        self._features = feats
        self._placed = {}
        self._feature_loaders: dict = {}

    def _placed_features(self, name: str) -> Any:
        """Stored features for a loader: copied to the device once when they are small
        enough (the loader then gathers batches there), else the host array."""
        arr = self._features[name]
        if (jax.process_count() > 1 or arr.nbytes > DEVICE_FEATURES_MAX_BYTES
                or len(arr) == 0):
            return arr
        if name not in self._placed:
            self._placed[name] = jax.device_put(arr, self.data.trn_dl.mesh.devices.flat[0])
        return self._placed[name]

    def _train_loader(self, epoch: int) -> DataLoader:
        if not self._precompute:
            return self.data.trn_dl
        name = f'train_aug{epoch % self.precompute_aug}' if self.precompute_aug else 'train'
        if name not in self._feature_loaders:
            dl = self.data.trn_dl
            self._feature_loaders[name] = DataLoader(
                self._placed_features(name), self.data.trn_ds.y, self.data.bs, shuffle=True, key=dl.key,
                drop_last=dl.drop_last, mesh=dl.mesh, ids=self.data.trn_ds.ids)
        return self._feature_loaders[name]

    # ------------------------------------------------------------------ training

    def _per_group(self, values: Any, what: str) -> np.ndarray:
        arr = np.atleast_1d(np.asarray(values, np.float64))
        if arr.size == 1:
            return np.full(self.n_groups, float(arr[0]))
        if arr.size != self.n_groups:
            raise ValueError(f'{what}={arr.tolist()} has {arr.size} values but there are '
                             f'{self.n_groups} layer groups; give one value or {self.n_groups}')
        return arr

    def _bar(self, total: int, desc: str):
        if self.quiet or total == 0:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=desc, leave=False, file=sys.stdout)

    def _print(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def fit(self, lrs: Any, n_cycle: int, wds: Any = None, cycle_len: Optional[int] = None,
            cycle_mult: int = 1, callbacks: Optional[Sequence[Callback]] = None,
            checkpoint: Any = None, resume: bool = False) -> list[dict]:
        """Train for `n_cycle` cycles (epochs, without `cycle_len`) with SGD, momentum 0.9.

        Args:
          lrs: one learning rate, or one per layer group (e.g. np.array([1e-4, 1e-3, 1e-2])).
          n_cycle: number of cycles; without cycle_len, the number of epochs at constant rates.
          wds: L2 weight decay, one value or one per group (default 0).
          cycle_len: epochs per SGDR cycle (cosine annealing with restarts, fastai 0.7's
            CosAnneal, including its lr/100 warm start over the first 1/20 of the first cycle).
          cycle_mult: each cycle lasts this many times longer than the one before.
          callbacks: Callback objects notified per batch and epoch.
          checkpoint: a ModelCheckpoint (or a folder for `ModelCheckpoint(folder)`) that
            saves the training state while the fit runs.
          resume: continue from the newest checkpoint of `checkpoint` (or of the first
            ModelCheckpoint in `callbacks`): run the same script again with resume=True and
            each fit the checkpointed run completed returns its logs without training, the
            interrupted one continues at the exact step, rate, random keys and batch, and
            the ones after it run as usual. The result is bitwise the uninterrupted run's
            on the same machine and device count. A fit whose arguments differ from the
            checkpointed one's raises ResumeMismatch.

        Returns the per-epoch logs of this fit (epoch, trn_loss, val_loss, metrics, time).
        A fresh optimizer (momentum buffers at zero) is made per call, as in fastai 0.7
        (a resumed fit restores the saved one instead).
        """
        lrs = self._per_group(lrs, 'lrs')
        wds = self._per_group(0.0 if wds is None else wds, 'wds')
        nb = len(self._train_loader(self.epoch))
        if cycle_len:
            epochs = sgdr_epochs(n_cycle, cycle_len, cycle_mult)
            factor = table(sgdr(int(cycle_len) * nb, int(cycle_mult)), epochs * nb)
        else:
            epochs = int(n_cycle)
            factor = np.ones(epochs * nb, np.float32)
        lr_table = factor[:, None].astype(np.float64) * lrs[None, :]
        desc = {'kind': 'fit', 'lrs': lrs.tolist(), 'n_cycle': int(n_cycle),
                'cycle_len': None if not cycle_len else int(cycle_len),
                'cycle_mult': int(cycle_mult), 'wds': wds.tolist()}
        return self._run(epochs, lr_table, None, wds, callbacks, desc, checkpoint, resume)

    def fit_one_cycle(self, epochs: int, lr_max: Any = 3e-3, pct_start: float = PCT_START,
                      div: float = DIV, div_final: float = DIV_FINAL,
                      moms: tuple[float, float, float] = MOMS, wds: Any = None,
                      callbacks: Optional[Sequence[Callback]] = None, checkpoint: Any = None,
                      resume: bool = False) -> list[dict]:
        """fastai 2's one-cycle policy: rates rise from lr_max/div to lr_max over pct_start,
        then fall to lr_max/div_final; momentum mirrors them (0.95 -> 0.85 -> 0.95).
        `checkpoint` and `resume` as in `fit`."""
        lr_max = self._per_group(lr_max, 'lr_max')
        wds = self._per_group(0.0 if wds is None else wds, 'wds')
        nb = len(self._train_loader(self.epoch))
        total = int(epochs) * nb
        f = table(one_cycle(total, 1.0, pct_start, div, div_final), total)
        m = table(one_cycle_momentum(total, pct_start, moms), total)
        desc = {'kind': 'fit_one_cycle', 'epochs': int(epochs), 'lr_max': lr_max.tolist(),
                'pct_start': float(pct_start), 'div': float(div), 'div_final': float(div_final),
                'moms': [float(v) for v in moms], 'wds': wds.tolist()}
        return self._run(int(epochs), f[:, None].astype(np.float64) * lr_max[None, :], m, wds,
                         callbacks, desc, checkpoint, resume)

    def fine_tune(self, epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1,
                  lr_mult: float = 100, pct_start: float = 0.3, div: float = 5.0,
                  callbacks: Optional[Sequence[Callback]] = None, checkpoint: Any = None,
                  resume: bool = False) -> list[dict]:
        """fastai 2's fine_tune: one-cycle the head for freeze_epochs, then unfreeze and
        one-cycle everything with rates from base_lr/2/lr_mult (first group) to base_lr/2.
        Two fits of the learner's sequence; `checkpoint` and `resume` as in `fit`."""
        self.freeze()
        hist = self.fit_one_cycle(freeze_epochs, base_lr, pct_start=0.99, callbacks=callbacks,
                                  checkpoint=checkpoint, resume=resume)
        base_lr /= 2
        self.unfreeze()
        lrs = np.geomspace(base_lr / lr_mult, base_lr, self.n_groups)
        return hist + self.fit_one_cycle(epochs, lrs, pct_start=pct_start, div=div,
                                         callbacks=callbacks, checkpoint=checkpoint,
                                         resume=resume)

    def _place(self, tree: Any) -> Any:
        """Replicate a pytree over the data mesh: one consistent placement for every input of
        the compiled steps, so that no call sees a new sharding and recompiles."""
        return replicate(tree, self.data.trn_dl.mesh)

    def _fresh_state(self, wds: np.ndarray) -> TrainState:
        state = self.state.with_tx(self._tx())
        state = state.replace(opt_state=set_group_hyperparams(
            state.opt_state, 'weight_decay', self._place(list(np.float32(wds)))))
        return self._place(state)

    @staticmethod
    def _rates(lrs: np.ndarray, mom: Optional[float] = None) -> tuple[np.ndarray, np.float32]:
        """The (learning rates, momentum) arguments of the compiled train step."""
        return np.asarray(lrs, np.float32), np.float32(np.nan if mom is None else mom)
    def _run(self, epochs: int, lr_table: np.ndarray, mom_table: Optional[np.ndarray],
             wds: np.ndarray, callbacks: Optional[Sequence[Callback]], desc: dict,
             checkpoint: Any = None, resume: bool = False) -> list[dict]:
        callbacks = list(callbacks or [])
        if checkpoint is not None:
            if not isinstance(checkpoint, ModelCheckpoint):
                checkpoint = ModelCheckpoint(checkpoint)
            if checkpoint not in callbacks:
                callbacks.append(checkpoint)
        # Which fit of the sequence this is; counted once it trains (or is found complete), so a
        # refused call (a mismatch, a folder of another run) does not shift the later ones.
        fit_index = self._fits
        nb = len(self._train_loader(self.epoch))
        desc = dict(desc, fit_index=fit_index, iterations=int(len(lr_table)),
                    fit_epochs=int(epochs), batches_per_epoch=int(nb), bs=int(self.data.bs),
                    n_train=int(getattr(self.data.trn_dl, 'n_total', len(self.data.trn_ds))), trainable=list(self.trainable),
                    precompute=self._precompute)
        state = self._fresh_state(wds)
        step_fn = self._fn('train')
        rec = Recorder('fit')
        ema, hist, t_it, e0, b0, losses0, its0 = (0.0, 0), [], 0, 0, 0, [], []
        if resume:
            src = rs.resume_source(checkpoint, callbacks)
            if src is None:
                raise ValueError('resume=True needs the checkpoints to resume from: pass '
                                 'checkpoint=ModelCheckpoint(folder) (or a folder) as in the '
                                 'interrupted run')
            action, step, record, arrays = rs.find_resume_point(
                src.bind(self), fit_index, desc, rs.state_arrays(state))
            if record is not None:
                self.run_id = record['run']  # this process continues that run
            if action == 'skip':
                self._fits = fit_index + 1
                self._print(f'fit #{fit_index} was completed by the checkpointed run '
                            f'({src.directory}); skipped')
                return [h for h, f in zip(record['history'], record['history_fits'])
                        if f == fit_index]
            if action == 'restore':
                state = self._place(state.replace(**arrays))
                ema, hist = (float(record['ema'][0]), int(record['ema'][1])), list(record['hist'])
                t_it, e0, b0 = int(record['iteration']), int(record['fit_epoch']), int(record['batch'])
                losses0 = [np.float32(v) for v in record['losses']]
                its0 = [int(v) for v in record['its']]
                self.epoch = int(record['epoch'])
                self.history = list(record['history'])
                self._history_fits = [int(v) for v in record['history_fits']]
                sched = record['sched']
                rec.lrs, rec.losses = list(sched['lrs']), list(sched['losses'])
                rec.moms, rec.iterations = list(sched['moms']), list(sched['iterations'])
                rec.epochs = hist
                if self._precompute:
                    self.state = state
                    self._ensure_features()  # features of the restored body
                self._print(f'resuming fit #{fit_index} from {src.directory}/{step}: epoch '
                            f'{e0 + 1}/{epochs}, batch {b0}/{nb}, iteration {t_it}')
                if record['done']:
                    self._fits = fit_index + 1
                    self.state, self.sched = state, rec
                    self.history += hist
                    self._history_fits += [fit_index] * len(hist)
                    return hist
        self.sched = rec
        self.state = state
        p = self.progress = Progress(fit=desc, step=int(state.step), iteration=t_it, fit_epoch=e0,
                                     epoch=self.epoch, batch=b0, batches=nb, losses=losses0,
                                     its=its0, ema=ema, hist=hist)
        names = ['epoch', 'trn_loss', 'val_loss'] + [_name(m) for m in self.metrics] + ['time']
        self._print('  '.join(f'{n:>10}' for n in names))
        try:
            stop = any(cb.on_train_begin(self) for cb in callbacks)
            self._fits = fit_index + 1
            for e in range(e0, epochs):
                if stop:
                    break
                t0 = time.time()
                loader = self._train_loader(self.epoch)
                start = b0 if e == e0 else 0
                stop = any(cb.on_epoch_begin(self, self.epoch) for cb in callbacks) or stop
                bar = self._bar(len(loader) - start, f'epoch {e + 1}/{epochs}')
                losses, its = (losses0, its0) if e == e0 else ([], [])
                p.epoch, p.batch, p.losses, p.its = self.epoch, start, losses, its
                # The step leaves the state unchanged when its loss is not finite; the host checks
                # each loss one step late (while the next step runs), so no step waits for it.
                prev, bad = None, None
                live = self._live(state)
                for batch in loader.iter_epoch(self.epoch, start=start):
                    i = min(t_it, len(lr_table) - 1)
                    live, metrics = step_fn(live, batch, *self._rates(
                        lr_table[i], None if mom_table is None else mom_table[i]))
                    self.state = state = self._merged(live, state)
                    losses.append(metrics['loss'])
                    its.append(i)
                    t_it += 1
                    p.iteration, p.step, p.batch = t_it, p.step + 1, p.batch + 1
                    if bar:
                        bar.update(1)
                    if prev is not None and not math.isfinite(float(prev[0])):
                        bad = prev
                        break
                    prev = (metrics['loss'], i)
                    if callbacks and any(cb.on_batch_end(self, t_it, {'loss': metrics['loss']})
                                         for cb in callbacks):
                        stop = True
                        break
                if bar:
                    bar.close()
                if bad is None and prev is not None and not math.isfinite(float(prev[0])):
                    bad = prev
                if bad is not None:
                    raise TrainingDiverged(
                        f'the training loss became {float(bad[0])} at iteration {bad[1]} (epoch '
                        f'{self.epoch}, learning rates [{", ".join(f"{v:.3g}" for v in lr_table[bad[1]])}]'
                        '); the model keeps its last finite parameters. Run learn.lr_find() and '
                        'pick a lower rate.')
                raw = np.asarray(jnp.stack(losses)) if losses else np.zeros(0)
                smoothed, ema = smooth(raw, start=ema)
                rec.record(lr_table[its, -1], smoothed,
                           mom_table[its] if mom_table is not None else [MOMENTUM] * len(its))
                self.epoch += 1
                logs = {'epoch': self.epoch - 1, 'trn_loss': float(smoothed[-1]) if len(smoothed)
                        else math.nan}
                logs.update(self._validate())
                logs['time'] = time.time() - t0
                hist.append(logs)
                rec.epochs = hist
                p.fit_epoch, p.epoch, p.batch, p.losses, p.its = e + 1, self.epoch, 0, [], []
                p.ema, p.done = ema, e + 1 == epochs
                self._print('  '.join(_fmt(logs.get(n)) for n in names))
                stop = any(cb.on_epoch_end(self, logs['epoch'], logs) for cb in callbacks) or stop
            p.done = True
            for cb in callbacks:
                cb.on_train_end(self)
        except BaseException as err:
            # The last finite parameters (a bad step changed nothing); checkpoints in flight land.
            self.state = state
            for cb in callbacks:
                cb.on_train_abort(self, err)
            self.progress = None
            if mem.is_out_of_memory(err):
                raise OutOfDeviceMemory(self._oom_message('training', err)) from err
            raise
        self.state = state
        self.history += hist
        self._history_fits += [fit_index] * len(hist)
        self.progress = None
        return hist

    def checkpoint_record(self) -> dict:
        """What a checkpoint stores besides the arrays (JSON): the running fit's description
        and position, the loss-EMA state, the epoch logs and history, `sched`'s record and the
        run id. Read by ModelCheckpoint during a fit."""
        p = self.progress
        rec = self.sched
        return {'version': rs.RECORD_VERSION, 'run': self.run_id, 'fit': p.fit, 'step': int(p.step),
                'iteration': int(p.iteration), 'fit_epoch': int(p.fit_epoch),
                'epoch': int(p.epoch), 'batch': int(p.batch), 'batches': int(p.batches),
                'losses': rs.record_floats(p.losses), 'its': [int(v) for v in p.its],
                'ema': [float(p.ema[0]), int(p.ema[1])], 'hist': _jsonable(p.hist),
                'done': bool(p.done), 'history': _jsonable(self.history),
                'history_fits': list(self._history_fits),
                'sched': {'lrs': list(rec.lrs), 'losses': list(rec.losses),
                          'moms': list(rec.moms), 'iterations': list(rec.iterations)}}

    def restore_checkpoint(self, source: Any, step: Optional[int] = None) -> dict:
        """Load a ModelCheckpoint/SaveBest checkpoint (a callback or its folder; default the
        newest step) into this learner outside a fit: parameters, BatchNorm statistics, step,
        random key, data epoch and history, and the optimizer state when the same layer
        groups are trainable now. Returns the checkpoint's record.

        >>> learn.restore_checkpoint(best)           # a SaveBest: its best step   # doctest: +SKIP
        """
        ck = source if isinstance(source, ModelCheckpoint) else ModelCheckpoint(source)
        ck.bind(self)
        if step is None:
            if isinstance(ck, SaveBest):
                step = ck.best_step()
            else:
                found = ck.latest()
                step = None if found is None else found[0]
            if step is None:
                raise FileNotFoundError(f'no checkpoint in {ck.directory}')
        record = ck.read_record(step)
        self._check_meta(ck.read_meta(step), f'{ck.directory}/{step}')
        if list(record['fit']['trainable']) == list(self.trainable):
            fresh = self._place(self.state.with_tx(self._tx()))
            state = fresh.replace(**ck.read_state(step, rs.state_arrays(fresh)))
        else:  # another optimizer structure: everything but the optimizer state
            rep = NamedSharding(self.data.trn_dl.mesh, P())
            md = ck.state_metadata(step)
            target = jax.tree_util.tree_map(
                lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=rep), md)
            arrays = ck.read_state(step, target)
            state = self.state.replace(**{k: arrays[k] for k in ('params', 'batch_stats', 'step',
                                                                 'rng')})
        self.state = self._place(state)
        self.epoch = int(record['epoch'])
        self.history = list(record['history']) + list(record['hist'])
        self.run_id = record['run']
        if self._precompute:
            self._ensure_features()
        return record

    # ------------------------------------------------------------------ batch size and memory

    def set_bs(self, bs: int) -> None:
        """Train and predict with batches of `bs` from now on (new loaders over the same decoded
        images; `learn.data` becomes a copy with that bs, the data object passed in is unchanged)."""
        bs = int(bs)
        if bs == self.data.bs:
            return
        if hasattr(self.data, 'with_bs'):
            self.data = self.data.with_bs(bs)
        else:
            old, d = self.data, copy.copy(self.data)
            kw = dict(bs=bs, prefetch=old.trn_dl.prefetch, mesh=old.trn_dl.mesh)
            d.bs = bs
            d.trn_dl = DataLoader(old.trn_ds.x, old.trn_ds.y, shuffle=True, key=old.trn_dl.key,
                                  drop_last=old.trn_dl.drop_last, **kw)
            d.val_dl = DataLoader(old.val_ds.x, old.val_ds.y, **kw)
            d.test_dl = None if old.test_ds is None else DataLoader(old.test_ds.x, old.test_ds.y, **kw)
            self.data = d
        self._feature_loaders = {}

    @contextlib.contextmanager
    def _configured(self, trainable: tuple, precompute: bool):
        was = self.trainable, self._precompute
        self.trainable, self._precompute = tuple(trainable), bool(precompute)
        try:
            yield
        finally:
            self.trainable, self._precompute = was

    def step_memory(self, bs: int, unfrozen: bool = True) -> int:
        """Bytes per device the training step needs at batch size `bs`, from XLA's memory
        analysis of the compiled step (compiled, not run: nothing of that size is allocated).

        Args:
          bs: the batch size (global, over all devices).
          unfrozen: judge the step with every layer group trainable on augmented images
            (the lesson's largest); False judges the current configuration.
        """
        trainable = (True,) * self.n_groups if unfrozen else self.trainable
        precompute = False if unfrozen else self._precompute
        dl = self.data.trn_dl
        mesh = dl.mesh
        rep, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
        with self._configured(trainable, precompute):
            fn = self._fn('train')
            tx = self._tx()
            abstract = jax.eval_shape(lambda s: s.with_tx(tx), self.state)
            abstract = jax.tree_util.tree_map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), abstract)
            if precompute:
                self._ensure_features()
                x = self._features['train_aug0' if self.precompute_aug else 'train']
                image = jax.ShapeDtypeStruct((bs,) + tuple(x.shape[1:]), x.dtype, sharding=shard)
            else:
                x = self.data.trn_ds.x
                image = jax.ShapeDtypeStruct((bs,) + tuple(x.shape[1:]), np.uint8, sharding=shard)
            y = dl.y
            batch = {'image': image,
                     'label': jax.ShapeDtypeStruct((bs,) + tuple(y.shape[1:]), y.dtype, sharding=shard),
                     'mask': jax.ShapeDtypeStruct((bs,), np.float32, sharding=shard)}
            rates = (jax.ShapeDtypeStruct((self.n_groups,), np.float32, sharding=rep),
                     jax.ShapeDtypeStruct((), np.float32, sharding=rep))
            return mem.step_bytes(fn.lower(self._live(abstract), batch, *rates).compile())

    def auto_bs(self, start: Optional[int] = None, budget: Optional[int] = None,
                unfrozen: bool = True, apply: bool = True) -> BatchSizeChoice:
        """Pick the largest of start, start/2, ... (default start: data.bs; multiples of the
        device count) whose training step fits `budget` bytes per device, and use it.

        The need of each size is XLA's memory analysis of the compiled step (`step_memory`):
        arguments + non-donated outputs + temporaries. The default budget is 90% of an
        accelerator's memory, or on CPU half the RAM shared among the CPU devices
        (`jaxcls.train.memory.device_budget`). Each size tried costs one compilation.

        Returns a BatchSizeChoice (bs, need, budget, tried); also kept as `learn.bs_choice`.

        >>> learn.auto_bs(budget=2 * 2**30).bs        # doctest: +SKIP
        32
        """
        ndev = self.data.trn_dl.mesh.shape['data']
        budget = mem.device_budget(self.data.trn_dl.mesh.devices.flat[0]) if budget is None \
            else int(budget)
        choice = mem.choose_batch_size(lambda b: self.step_memory(b, unfrozen),
                                       self.data.bs if start is None else int(start), budget, ndev)
        self.bs_choice = choice
        if apply:
            self.set_bs(choice.bs)
        self._print(f'auto batch size: {choice}')
        return choice

    def _oom_message(self, what: str, err: BaseException) -> str:
        bs = int(self.data.bs)
        ndev = self.data.trn_dl.mesh.shape['data']
        lower = max(ndev, bs // 2 // ndev * ndev)
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        return (f'out of device memory {what} with bs={bs} (sz={self.data.sz}, {ndev} device(s), '
                f'layer groups trainable {list(self.trainable)}, precompute={self._precompute}). '
                f'Use a smaller batch: learn.set_bs({lower}), or build the data with bs={lower} '
                f"(ImageClassifierData.from_paths(PATH, bs={lower}, ...)), or let "
                f"ConvLearner.pretrained(..., bs='auto') pick one that fits. XLA said: {first}")

    @contextlib.contextmanager
    def _memory_guard(self, what: str):
        try:
            yield
        except Exception as err:
            if mem.is_out_of_memory(err):
                raise OutOfDeviceMemory(self._oom_message(what, err)) from err
            raise

    def _validate(self) -> dict:
        preds, targs = self.predict_with_targs()
        loss = bce_loss(preds, targs) if self.is_multi else nll_loss(preds, targs)
        return {'val_loss': loss, **{_name(m): float(m(preds, targs)) for m in self.metrics}}

    # ------------------------------------------------------------------ lr_find

    def lr_find(self, start_lr: Any = 1e-5, end_lr: float = 10, wds: Any = None,
                linear: bool = False, num_it: Optional[int] = None,
                stop_div: bool = True) -> dict[str, float]:
        """The LR range test: rates from start_lr to end_lr over one epoch (or num_it batches).

        Stops when the smoothed loss exceeds 4x its best or is not finite. Runs on a
        copy of the state: afterwards the learner is exactly as before. Look at the
        result with `learn.sched.plot()`; returns fastai 2's suggestions
        ({'valley', 'steep', 'minimum'}).
        """
        start = self._per_group(start_lr, 'start_lr')
        nb = int(num_it or len(self._train_loader(self.epoch)))
        ratio = end_lr / start[-1]
        factor = table(lr_range(1.0, ratio, nb, linear), nb)
        lr_table = factor[:, None].astype(np.float64) * start[None, :]
        state = self._live(self._place(jax.tree_util.tree_map(jnp.copy, self._fresh_state(
            self._per_group(0.0 if wds is None else wds, 'wds')))))
        step_fn = self._fn('train')
        rec = Recorder('lr_find')
        best, ema, it = math.inf, (0.0, 0), 0
        bar = self._bar(nb, 'lr_find')
        epoch = self.epoch
        with self._memory_guard('in lr_find'):
            while it < nb:
                for batch in self._train_loader(epoch).iter_epoch(epoch):
                    # `state` is the part the compiled step takes (see `_live`)
                    state, metrics = step_fn(state, batch, *self._rates(lr_table[it]))
                    sm, ema = smooth([float(metrics['loss'])], start=ema)
                    loss = float(sm[0])
                    rec.record([lr_table[it, -1]], [loss], [MOMENTUM])
                    it += 1
                    if bar:
                        bar.update(1)
                    if stop_div and lrf.should_stop(loss, best):
                        it = nb
                    if loss < best and it > lrf.BEST_AFTER:
                        best = loss
                    if it >= nb:
                        break
                epoch += 1
        if bar:
            bar.close()
        del state  # the copy; self.state was never touched
        finite = [(lr, l) for lr, l in zip(rec.lrs, rec.losses) if math.isfinite(l)]
        rec.suggestions = lrf.suggestions(*zip(*finite)) if len(finite) >= 2 else {}
        self.sched = rec
        if rec.suggestions:
            self._print('lr_find: suggested learning rate {valley:.2e} (valley), steepest '
                        '{steep:.2e}, minimum/10 {minimum:.2e}; see learn.sched.plot()'
                        .format(**rec.suggestions))
        return rec.suggestions

    # ------------------------------------------------------------------ prediction

    def _predict_loader(self, is_test: bool):
        ds = self.data.test_ds if is_test else self.data.val_ds
        if ds is None:
            raise ValueError('there is no test set; build the data with test_name=... '
                             'to predict on one')
        if self._precompute:
            self._ensure_features()
            dl = self.data.val_dl
            return DataLoader(self._placed_features('test' if is_test else 'valid'), ds.y,
                              self.data.bs, mesh=dl.mesh, ids=ds.ids), ds
        return (self.data.test_dl if is_test else self.data.val_dl), ds

    def predict(self, is_test: bool = False) -> np.ndarray:
        """Log-probabilities (sigmoid probabilities for multi-label) for valid or test, in order."""
        return self.predict_with_targs(is_test)[0]

    def predict_with_targs(self, is_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(predictions, targets) for valid (or test: targets are zeros when unlabelled)."""
        loader, ds = self._predict_loader(is_test)
        fn = self._fn('predict')
        variables = self.state.variables
        with self._memory_guard('predicting'):
            outs = [fn(variables, batch['image']) for batch in loader.iter_epoch(0)]
            # Real rows only, in split order, on every process (a collective with several).
            preds = loader.collect(outs)
        return preds, loader.targets()

    def predict_array(self, x: Any) -> np.ndarray:
        """Predictions for a batch: uint8 images (N, H, W, 3), H and W >= sz, are centre-cropped
        and normalised; float arrays must already be normalised (N, sz, sz, 3)."""
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f'predict_array takes a batch (N, H, W, 3); got shape {x.shape}')
        kind = 'predict_uint8' if x.dtype == np.uint8 else 'predict_float'
        return np.asarray(self._fn(kind)(self.state.variables, x))

    def TTA(self, n_aug: int = 4, is_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Test-time augmentation, as fastai 0.7: (predictions, targets), predictions stacked as
        ceil(n_aug/4) copies of the plain pass followed by n_aug augmented passes.

        The augmented passes run as one jitted, vmapped call per batch (training
        transforms, keys from the learner's seed). Average with np.mean(np.exp(p), 0).
        """
        ds = self.data.test_ds if is_test else self.data.val_ds
        if ds is None:
            raise ValueError('there is no test set; build the data with test_name=...')
        was = self._precompute
        self._precompute = False  # augmentation needs images, not stored activations
        try:
            plain, targs = self.predict_with_targs(is_test)
            loader = self.data.test_dl if is_test else self.data.val_dl
            fn = self._fn('tta')
            keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(self.seed), 7), n_aug)
            variables = self.state.variables
            outs = []
            for b, batch in enumerate(loader.iter_epoch(0)):
                bkeys = jax.vmap(lambda k: jax.random.fold_in(k, b))(keys)
                outs.append(fn(variables, bkeys, batch['image']))
            aug = loader.collect(outs, axis=1)
        finally:
            self._precompute = was
        return np.concatenate([np.stack([plain] * math.ceil(n_aug / 4)), aug]), targs

    def interpretation(self):
        """A ClassificationInterpretation of the validation predictions (jaxcls.interpret):
        most correct / incorrect / uncertain, top losses, confusion matrix, report.

        >>> learn.interpretation().most_confused()     # doctest: +SKIP
        """
        from jaxcls.interpret import ClassificationInterpretation
        return ClassificationInterpretation.from_learner(self)

    def plot_cam(self, idxs: Any, classes: Any = None, is_test: bool = False, fname: Any = None):
        """Validation images `idxs` with the class activation map (Grad-CAM) of `classes`
        (default: each image's predicted class) overlaid, titled like the lesson's plots.

        >>> learn.plot_cam([0, 1, 2, 3])   # doctest: +SKIP
        """
        from jaxcls import plots
        interp = self.interpretation() if not is_test else None
        if interp is None:
            from jaxcls.interpret import ClassificationInterpretation
            interp = ClassificationInterpretation.from_learner(self, is_test=True)
        idxs = np.asarray(idxs, np.int64).ravel()
        title = 'Class activation maps' + ('' if classes is None else ' (asked classes)')
        return plots.plot_interpretation(interp, idxs, title, fname,
                                         heatmaps=interp.heatmaps(idxs, classes),
                                         rows=max(1, int(math.ceil(len(idxs) / 4))))

    # ------------------------------------------------------------------ save / load

    def _models_dir(self) -> str:
        return os.path.join(self.data.path, 'models')

    def _meta(self) -> dict:
        from jaxcls import __version__
        return {'arch': self.arch_name, 'classes': [str(c) for c in self.data.classes],
                'c': int(self.data.c), 'is_multi': self.is_multi, 'head': self.head_desc,
                'stages': list(self.model.body.stage_sizes), 'trainable': list(self.trainable),
                'sz': int(self.data.sz), 'cache_size': int(self.data.cache_size),
                'pretrained': self.pretrained_body,
                'val_tfms': tfm_to_json(self.data.tfms[1]),
                'arch_spec': self.spec.to_json(),
                'jaxcls': __version__}

    def save(self, name: str) -> str:
        """Save params, BatchNorm statistics and optimizer state to {path}/models/{name} (Orbax)."""
        tree = {'params': self.state.params, 'batch_stats': self.state.batch_stats,
                'opt_state': self.state.opt_state, 'step': self.state.step}
        return ckpt.save_checkpoint(os.path.join(self._models_dir(), name), tree, self._meta())

    def load(self, name: str) -> None:
        """Load a model saved with `save(name)`; its arch and classes must match this learner's."""
        folder = os.path.join(self._models_dir(), name)
        meta = ckpt.load_meta(folder)
        self._check_meta(meta, folder)
        same_opt = tuple(meta.get('trainable', ())) == self.trainable
        target = {'params': self.state.params, 'batch_stats': self.state.batch_stats,
                  'step': self.state.step}
        if same_opt:
            target['opt_state'] = self.state.opt_state
        restored = ckpt.load_checkpoint(folder, target) if same_opt else \
            _restore_subset(folder, target)
        self.state = self._place(self.state.replace(
            params=restored['params'], batch_stats=restored['batch_stats'], step=restored['step'],
            opt_state=restored.get('opt_state', self.state.opt_state)))
        if self._precompute:
            self._ensure_features()

    def _check_meta(self, meta: dict, folder: str) -> None:
        mine = self._meta()
        for k in ('arch', 'c', 'stages', 'head'):
            if meta.get(k) != mine[k]:
                raise ValueError(
                    f"checkpoint {folder} holds {meta.get('arch')} with {meta.get('c')} classes "
                    f"(stages {meta.get('stages')}, head {meta.get('head')}); this learner is "
                    f"{mine['arch']} with {mine['c']} classes (stages {mine['stages']}, head "
                    f"{mine['head']}). Load it into a learner built the same way.")

    def __repr__(self) -> str:
        return (f'ConvLearner({self.arch_name}, {self.data.c} classes, layer groups trainable '
                f'{list(self.trainable)}, precompute={self._precompute})')


def tfm_to_json(cfg) -> dict:
    """A TfmConfig as plain JSON values (tuples as lists, enums as ints)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else int(v) if isinstance(v, T.CropType) else v
    return out


def _restore_subset(folder: str, target: dict) -> dict:
    full = ckpt.load_checkpoint(folder)
    out = {}
    for k, v in target.items():
        out[k] = jax.tree_util.tree_map(lambda t, s: jnp.asarray(s, t.dtype), v, full[k])
    return out


def _jsonable(x: Any) -> Any:
    """Logs as plain JSON values (numpy scalars to Python numbers)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (np.floating, np.ndarray, jax.Array)):
        return np.asarray(x).item() if np.ndim(x) == 0 else np.asarray(x).tolist()
    return x


def _name(metric: Callable) -> str:
    return getattr(metric, '__name__', type(metric).__name__)


def _fmt(v: Any) -> str:
    if isinstance(v, (int, np.integer)):
        return f'{v:>10d}'
    if isinstance(v, (float, np.floating)):
        return f'{v:>10.6f}' if abs(v) < 1e4 else f'{v:>10.3e}'
    return f'{str(v):>10}'
