"""ConvLearner: the lesson-1 workflow, built from the public pure functions.

The learner holds state (data, network, TrainState, layer-group settings, precomputed
features) and runs the same pieces a JAX user can import: the network of
`jaxcls.models.convnet`, the steps of `jaxcls.train.steps` (one compiled train step per
configuration of trainable groups, precompute, BatchNorm mode, dtype, transforms and
recipe; rates are step arguments, so lr_find, any fit and SGDR reuse it), the `HParams` tables of
`jaxcls.train.schedules`, and the loop of `jaxcls.train.loop` (`jaxcls.train.fit` wires them).

    >>> data = ImageClassifierData.from_paths(PATH, tfms=tfms_from_model(resnet34, 224))  # doctest: +SKIP
    >>> learn = ConvLearner.pretrained(resnet34, data, precompute=True)                     # doctest: +SKIP
    >>> learn.fit(0.01, 3)                                                                   # doctest: +SKIP
"""
from __future__ import annotations

import uuid
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcls import compile_cache
from jaxcls.archs import ArchSpec, get_arch
from jaxcls.data.loader import DataLoader, replicate
from jaxcls.models.convnet import compute_dtype, convnet, with_dtype
from jaxcls.models.head import ConvNet

from . import fit as fitting
from . import lr_find as lrf
from . import memory as mem
from . import progressive
from .callbacks import Callback, Recorder, TrainingDiverged  # noqa: F401 (TrainingDiverged re-exported)
from .memory import BatchSizeChoice, OutOfDeviceMemory  # noqa: F401 (re-exported)
from .metrics import accuracy, accuracy_thresh
from .optim import layer_group_labels, per_group
from .compiled import LearnerSteps, canonical
from .learner_files import LearnerFiles
from .learner_predict import LearnerPredictions
from .learner_recipe import LearnerRecipe
from .precompute import Features
from .recipe import Recipe
from .resume import ModelCheckpoint, ResumeMismatch, SaveBest  # noqa: F401 (re-exported)
from .schedules import DIV, DIV_FINAL, MOMS, PCT_START, fit_schedule, one_cycle_schedule
from .state import TrainState, create_train_state, with_head

_BN_MODES = ('eval', 'train')


class ConvLearner(LearnerPredictions, LearnerFiles, LearnerRecipe):
    """A pretrained body + fastai's head, trained the fastai 0.7 way. Build with `pretrained`.

    Attributes (fastai 0.7 names): data, model (the Flax ConvNet), sched (a Recorder of the
    last fit or lr_find), precompute, n_groups (layer groups: 3 for ResNets), state (the
    TrainState; during a fit, after its latest step), history (per-epoch logs of every fit),
    progress (the running fit's Loop, None outside a fit), mem_budget (bytes per device a
    training step may need; None: no check), recipe (MixUp, label smoothing, EMA,
    accumulation: `set_recipe`).

    Split by purpose: training and configuration here, predictions in `LearnerPredictions`
    (learner_predict.py), saved models and checkpoints in `LearnerFiles` (learner_files.py),
    the recipe (MixUp, label smoothing, EMA, accumulation) in `LearnerRecipe` (learner_recipe.py).
    """

    mem_budget: Optional[int] = None

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
        net = canonical(net)  # learners built the same way share compiled steps
        self.data, self.spec, self.model = data, spec, net
        self.arch_name, self.head_desc = arch_name or spec.name, head_desc or {}
        self.pretrained_body = False  # the body started from ImageNet weights (metadata only)
        self.bn_frozen, self.quiet, self.seed = bn_frozen, quiet, seed
        self.is_multi = bool(data.is_multi)
        self.loss = 'sigmoid' if self.is_multi else 'softmax'
        self.metrics = list(metrics) if metrics is not None else (
            [accuracy_thresh(0.5)] if self.is_multi else [accuracy])
        self.precompute_aug, self.dtype = int(precompute_aug), jnp.float32
        self.labels = layer_group_labels(variables['params'], spec.layer_groups[0])
        self.n_groups, self.trainable = 3, (False, False, True)  # freeze(): only the head trains
        self.steps = LearnerSteps(self)  # the compiled public steps (jaxcls.train.compiled)
        self._recipe = Recipe()  # MixUp, label smoothing, EMA, accumulation: all off
        self._features = Features(self)
        self._state = self._place(create_train_state(net.apply, variables, self.steps.tx(),
                                                     rng=seed))
        self._epoch = 0  # epochs trained so far: the data order of the next epoch
        self.history, self._history_fits = [], []  # epoch logs, and the fit each came from
        self.sched: Optional[Recorder] = None
        self.progress = self._fit_base = None  # the running fit's Loop, and (head-only fits)
        # the whole-network state whose head it trains
        self.run_id = uuid.uuid4().hex  # names this training run in its checkpoints
        self._fits = 0  # fit/fit_one_cycle calls so far: the index of the next in the sequence
        self.bs_choice: Optional[BatchSizeChoice] = None
        self._precompute, self.precompute = False, precompute

    @classmethod
    def pretrained(cls, arch: Any, data, ps: Optional[Sequence[float]] = None,
                   xtra_fc: Optional[Sequence[int]] = None, xtra_cut: int = 0,
                   custom_head: Any = None, precompute: bool = False, pretrained: bool = True,
                   bn_frozen: str = 'eval', weights: Any = None, seed: int = 0,
                   metrics: Optional[Sequence[Callable]] = None, quiet: bool = False,
                   precompute_aug: int = 0, bs: Any = None,
                   mem_budget: Optional[int] = None, dtype: Any = None,
                   kernels: str = 'auto', mixup: float = 0.0, cutmix: float = 0.0,
                   label_smoothing: float = 0.0, ema: float = 0.0,
                   accumulate: int = 1) -> 'ConvLearner':
        """A learner with an ImageNet-pretrained body (`pretrained=False`: random) and a new head.

        Args:
          arch: `resnet34` (the constructor), 'resnet34', or an ArchSpec.
          data: an ImageClassifierData.
          ps, xtra_fc, xtra_cut, custom_head, pretrained, weights: the network, as
            `jaxcls.models.convnet.convnet` builds it (defaults: fastai's head, dropout
            [0.25, 0.5] and one 512-unit layer; ImageNet weights from a local file).
          precompute: train the head on stored body activations.
          bn_frozen: 'eval' (frozen groups' BatchNorms use running statistics) or 'train'.
          seed: seeds the head's initialisation, dropout and augmentation.
          metrics: functions `f(preds, targs) -> float` shown per epoch (default accuracy);
            quiet: no progress bars or tables.
          precompute_aug: with precompute, store this many augmented views of every
            training image (epoch e trains on view e mod K); 0 stores the plain centre crop.
          bs: None keeps data.bs; an int trains and predicts with that batch size; 'auto'
            picks the largest that fits the device (`auto_bs`).
          mem_budget: bytes per device a training step may need: bs='auto' picks within it,
            and fit / lr_find refuse a step over it before running it (OutOfDeviceMemory
            naming the batch size that fits); None: no check, the device's own limit.
          dtype: 'float32' (default) or 'bfloat16' compute (as `half()`); precompute then
            runs in it. kernels: 'auto', 'xla' or 'cpu' (jaxcls.models.ops).
          mixup, cutmix, label_smoothing, ema, accumulate: the recipe (`set_recipe`,
            jaxcls.train.recipe): MixUp's or CutMix's alpha, label smoothing's eps, the decay
            of the weights' average used to validate, predict and save, micro-batches of bs
            per update. 0 (accumulate 1) is off.
        """
        compile_cache.enable()  # the second run of a script loads its compiled steps
        recipe = Recipe(mixup, cutmix, label_smoothing, ema, accumulate)  # checked first
        dtype = None if dtype is None else compute_dtype(dtype)
        spec = get_arch(arch)
        net, variables, desc = convnet(
            spec, data.c, ps=ps, xtra_fc=xtra_fc, xtra_cut=xtra_cut, custom_head=custom_head,
            pretrained=pretrained, weights=weights, key=jax.random.PRNGKey(seed),
            kernels=kernels, devices=list(data.trn_dl.mesh.devices.flat))
        later = dtype is not None and dtype != jnp.dtype(jnp.float32)
        learn = cls(data, spec, net, variables, precompute=precompute and not later,
                    bn_frozen=bn_frozen, seed=seed, metrics=metrics, quiet=quiet,
                    precompute_aug=precompute_aug, head_desc=desc)
        learn.pretrained_body = bool(pretrained or weights is not None)
        learn.mem_budget = None if mem_budget is None else int(mem_budget)
        learn.recipe = recipe
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

    @property
    def state(self) -> TrainState:
        """The TrainState of the whole network (during a fit: after its latest step)."""
        return self._state if self.progress is None else self._merge(self.progress.state)

    @state.setter
    def state(self, value: TrainState) -> None:
        self._state = value  # outside a fit (a fit's step owns its state)

    @property
    def epoch(self) -> int:
        """Epochs trained so far: the data epoch (batch order) of the next."""
        return self._epoch if self.progress is None else self.progress.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch = int(value)

    def freeze_to(self, n: int) -> None:
        """Train layer groups n.. only (fastai's freeze_to); earlier groups are frozen."""
        if not -self.n_groups <= n < self.n_groups:
            raise ValueError(f'freeze_to({n}): there are {self.n_groups} layer groups; '
                             f'use 0 (train all) to {self.n_groups - 1} (head only)')
        self.trainable = tuple(i >= n % self.n_groups for i in range(self.n_groups))
        if self._precompute and any(self.trainable[:-1]):
            self._precompute = False  # a trainable body cannot use stored activations

    def freeze(self) -> None:
        """Train the head only (the state after construction)."""
        self.freeze_to(self.n_groups - 1)

    def unfreeze(self) -> None:
        """Train every layer group; also turns precompute off."""
        self.freeze_to(0)

    @property
    def precompute(self) -> bool:
        """Train the head on stored body activations (set False to train on augmented images)."""
        return self._precompute

    @precompute.setter
    def precompute(self, value: bool) -> None:
        if value and any(self.trainable[:-1]):
            raise ValueError('precompute=True needs a frozen body, but layer groups '
                             f'{[i for i, t in enumerate(self.trainable[:-1]) if t]} are trainable; '
                             'call learn.freeze() first')
        if value:
            self._features.ensure()
        self._precompute = bool(value)

    def half(self) -> 'ConvLearner':
        """Compute in bfloat16 (parameters and BatchNorm statistics stay float32)."""
        return self._set_dtype(jnp.bfloat16)

    def float(self) -> 'ConvLearner':  # noqa: A003 (fastai's name)
        """Compute in float32 again."""
        return self._set_dtype(jnp.float32)

    def _set_dtype(self, dtype) -> 'ConvLearner':
        if dtype == self.dtype:
            return self
        self.model, self.dtype = canonical(with_dtype(self.model, dtype)), dtype
        self.state = self.state.replace(apply_fn=self.model.apply)
        self.steps.clear()
        if self._precompute:
            self._features.ensure()
        return self

    def _merge(self, trained: TrainState) -> TrainState:
        """The whole network's state from what a fit's step trained (see `_fit_view`)."""
        return trained if self._fit_base is None else with_head(self._fit_base, trained)

    def _batches(self, epoch: int, start: int = 0):
        return self._train_loader(epoch).iter_epoch(epoch, start=start)

    def _train_loader(self, epoch: int) -> DataLoader:
        return self._features.train_loader(epoch) if self._precompute else self._image_loader()

    def _place(self, tree: Any) -> Any:
        """Replicate a pytree over the data mesh: one consistent placement for every input of
        the compiled steps, so that no call sees a new sharding and recompiles."""
        return replicate(tree, self.data.trn_dl.mesh)

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
          callbacks: Callback objects notified per batch and epoch (jaxcls.train.loop events).
          checkpoint: a ModelCheckpoint (or a folder for `ModelCheckpoint(folder)`) that
            saves the training state while the fit runs.
          resume: continue the checkpointed run (`checkpoint`, or the first ModelCheckpoint in
            `callbacks`): a fit it completed returns its logs, the interrupted one continues
            at the exact step, bitwise; other arguments than its raise ResumeMismatch.

        Returns this fit's epoch logs (epoch, trn_loss, val_loss, metrics, time). Each call
        gets a fresh optimizer, as in fastai 0.7; the rates are `schedules.fit_schedule`'s.
        """
        lrs = per_group(lrs, self.n_groups, 'lrs')
        wds = per_group(0.0 if wds is None else wds, self.n_groups, 'wds')
        epochs, table = fit_schedule(lrs, n_cycle, len(self._train_loader(self.epoch)),
                                     cycle_len, cycle_mult, wds)
        desc = {'kind': 'fit', 'lrs': lrs.tolist(), 'n_cycle': int(n_cycle),
                'cycle_len': None if not cycle_len else int(cycle_len),
                'cycle_mult': int(cycle_mult), 'wds': wds.tolist()}
        return fitting.run(self, epochs, table, callbacks, desc, checkpoint, resume)

    def fit_one_cycle(self, epochs: int, lr_max: Any = 3e-3, pct_start: float = PCT_START,
                      div: float = DIV, div_final: float = DIV_FINAL,
                      moms: tuple[float, float, float] = MOMS, wds: Any = None,
                      callbacks: Optional[Sequence[Callback]] = None, checkpoint: Any = None,
                      resume: bool = False) -> list[dict]:
        """fastai 2's one-cycle policy: rates rise from lr_max/div to lr_max over pct_start,
        then fall to lr_max/div_final; momentum mirrors them (0.95 -> 0.85 -> 0.95).
        `checkpoint` and `resume` as in `fit`; the schedule is `schedules.one_cycle_schedule`."""
        lr_max = per_group(lr_max, self.n_groups, 'lr_max')
        wds = per_group(0.0 if wds is None else wds, self.n_groups, 'wds')
        table = one_cycle_schedule(epochs, len(self._train_loader(self.epoch)), lr_max,
                                   pct_start, div, div_final, moms, wds)
        desc = {'kind': 'fit_one_cycle', 'epochs': int(epochs), 'lr_max': lr_max.tolist(),
                'pct_start': float(pct_start), 'div': float(div), 'div_final': float(div_final),
                'moms': [float(v) for v in moms], 'wds': wds.tolist()}
        return fitting.run(self, int(epochs), table, callbacks, desc, checkpoint, resume)

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

    def lr_find(self, start_lr: Any = 1e-5, end_lr: float = 10, wds: Any = None,
                linear: bool = False, num_it: Optional[int] = None,
                stop_div: bool = True) -> dict[str, float]:
        """The LR range test (jaxcls.train.lr_find.run): rates from start_lr to end_lr over an
        epoch (or num_it batches) on a copy of the state, stopped when the smoothed loss
        exceeds 4x its best. See `learn.sched.plot()`; returns fastai 2's suggestions."""
        return lrf.run(self, start_lr, end_lr, wds, linear, num_it, stop_div)

    def set_bs(self, bs: int) -> None:
        """Train and predict with batches of `bs` from now on (new loaders over the same decoded
        images; `learn.data` becomes a copy with that bs, the data object passed in is unchanged)."""
        if int(bs) != self.data.bs:
            self.data = self.data.with_bs(int(bs))
            self._features.forget_loaders()

    def set_data(self, data, precompute: Optional[bool] = None) -> None:
        """Train and predict on `data` from now on (the same classes, e.g. at another size:
        progressive resizing), keeping the weights, freeze state, layer groups and precompute
        setting; `precompute=True` freezes and precomputes as fastai's did (train.progressive)."""
        progressive.set_data(self, data, precompute)

    def step_memory(self, bs: int, unfrozen: bool = True) -> int:
        """Bytes per device the training step needs at batch size `bs`, from XLA's memory
        analysis of the compiled (not run) step; `unfrozen`: of the lesson's largest step,
        every group trainable on augmented images, else of the current configuration."""
        return mem.learner_step_bytes(self, bs, unfrozen)

    def auto_bs(self, start: Optional[int] = None, budget: Optional[int] = None,
                unfrozen: bool = True, apply: bool = True) -> BatchSizeChoice:
        """Use the largest of start, start/2, ... (default data.bs; multiples of the device
        count) whose training step fits `budget` bytes per device (`step_memory`; default
        `jaxcls.train.memory.device_budget`: 90% of an accelerator's memory, on CPU half the
        RAM), one compilation each. Returns the BatchSizeChoice, kept as `learn.bs_choice`."""
        self.bs_choice = mem.learner_auto_bs(self, start, budget, unfrozen)
        if apply:
            self.set_bs(self.bs_choice.bs)
        self._print(f'auto batch size: {self.bs_choice}')
        return self.bs_choice

    def __repr__(self) -> str:
        return (f'ConvLearner({self.arch_name}, {self.data.c} classes, layer groups trainable '
                f'{list(self.trainable)}, precompute={self._precompute})')
