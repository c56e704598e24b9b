"""The modern training recipe as pure, jittable functions: MixUp, CutMix, label smoothing, an
exponential moving average (EMA) of the weights, and gradient accumulation.

`jaxcls.train.steps.make_train_step(..., mixup=, cutmix=, label_smoothing=, ema=,
accumulate=)` runs them inside the jitted step (all off by default, and then the compiled
program is the one without them); `ConvLearner.pretrained(..., mixup=0.4)` or
`learn.set_recipe(...)` turn them on for the learner. Each works on its own too:

    >>> images, targets = mixup(key, images, labels, alpha=0.4)            # doctest: +SKIP
    >>> per_example = mixed_loss(softmax_loss, logits, targets)            # doctest: +SKIP
    >>> ema = ema_update(ema, new_variables, 0.999)                         # doctest: +SKIP

MixUp and CutMix follow fastai 2: a permutation of the batch is each row's partner; MixUp
draws one lam ~ Beta(alpha, alpha) per row and keeps max(lam, 1 - lam) (the row's own image
dominates), CutMix draws one lam per batch, pastes a box of the partner's image covering
about 1 - lam of the picture, and recomputes lam from the box actually pasted. The targets
come back as `Mixed(a, b, lam)` and the loss is lam * loss(a) + (1 - lam) * loss(b) per row.
They mix the whole batch, after augmentation and before the forward pass.

Gradient accumulation: `accumulate_gradients` scans over N micro-batches of one batch of
N * B rows (micro-batch i holds rows i, i + N, i + 2N, ...), summing gradients whose loss is
divided by the real-row count of the whole batch, so the update is the big batch's masked
mean (padded rows included) to float tolerance, with the activations of B rows in memory.
One call is one optimizer update, so the step counter, the rate tables and resume count
updates, never micro-batches. BatchNorm in train mode normalises each micro-batch by its own
statistics and updates the running statistics once per micro-batch, as N forward passes do
in every framework: that part is not the big batch's.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

# The EMA's warm-up: at step t the average moves with decay min(ema, (1 + t) / (10 + t)), so
# early on (and in short fine-tunes) it follows the weights instead of the initial ones.
EMA_WARMUP = 10.0


class Mixed(NamedTuple):
    """Mixed targets: row i is lam[i] of its own target `a[i]` and 1 - lam[i] of `b[i]`, its
    partner's. A pytree, so it passes through jit and `split_micro` like an array."""

    a: jax.Array
    b: jax.Array
    lam: jax.Array


def _check_float(images: jax.Array, what: str) -> None:
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f'{what} mixes float images (after augmentation and normalisation); '
                        f'got {images.dtype}: convert them first, or give the step a preprocess')


def _partners(key: jax.Array, n: int) -> jax.Array:
    return jax.random.permutation(key, n)


def mixup(key: jax.Array, images: jax.Array, targets: jax.Array, alpha: float
          ) -> tuple[jax.Array, Mixed]:
    """fastai 2's MixUp: each row blended with a random partner row of the batch.

    lam ~ Beta(alpha, alpha) per row, kept as max(lam, 1 - lam); the images become
    lam * x + (1 - lam) * x[perm] and the targets `Mixed(targets, targets[perm], lam)`.
    `key` is split into (lam, permutation) keys.
    """
    _check_float(images, 'mixup')
    k_lam, k_perm = jax.random.split(key)
    n = images.shape[0]
    lam = jax.random.beta(k_lam, alpha, alpha, (n,), jnp.float32)
    lam = jnp.maximum(lam, 1.0 - lam)
    perm = _partners(k_perm, n)
    w = lam.astype(images.dtype).reshape((n,) + (1,) * (images.ndim - 1))
    mixed = w * images + (1 - w) * images[perm]
    return mixed, Mixed(targets, targets[perm], lam)


def cutmix_box(key: jax.Array, height: int, width: int, lam: jax.Array) -> jax.Array:
    """fastai 2's CutMix box (y1, y2, x1, x2), int32: sides round(H * sqrt(1 - lam)) and
    round(W * sqrt(1 - lam)) centred on a uniform pixel, clipped to the picture."""
    ky, kx = jax.random.split(key)
    cut = jnp.sqrt(1.0 - lam)
    ch = jnp.round(height * cut).astype(jnp.int32)
    cw = jnp.round(width * cut).astype(jnp.int32)
    cy = jax.random.randint(ky, (), 0, height)
    cx = jax.random.randint(kx, (), 0, width)
    return jnp.stack([jnp.clip(cy - ch // 2, 0, height), jnp.clip(cy + ch // 2, 0, height),
                      jnp.clip(cx - cw // 2, 0, width), jnp.clip(cx + cw // 2, 0, width)])


def cutmix(key: jax.Array, images: jax.Array, targets: jax.Array, alpha: float
           ) -> tuple[jax.Array, Mixed]:
    """fastai 2's CutMix on NHWC images: one lam ~ Beta(alpha, alpha) for the batch, a box of
    about (1 - lam) of the picture (`cutmix_box`) pasted from each row's partner, and lam
    recomputed as 1 - box area / picture area (the same for every row). `key` is split into
    (lam, permutation, box) keys."""
    _check_float(images, 'cutmix')
    k_lam, k_perm, k_box = jax.random.split(key, 3)
    n, h, w = images.shape[:3]
    lam = jax.random.beta(k_lam, alpha, alpha, (), jnp.float32)
    perm = _partners(k_perm, n)
    y1, y2, x1, x2 = cutmix_box(k_box, h, w, lam)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    inside = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
    mixed = jnp.where(inside[None, :, :, None], images[perm], images)
    lam = 1.0 - ((y2 - y1) * (x2 - x1)).astype(jnp.float32) / (h * w)
    return mixed, Mixed(targets, targets[perm], jnp.full((n,), lam))


def mixed_loss(loss_fn: Callable[[jax.Array, Any], jax.Array], logits: jax.Array,
               targets: Any) -> jax.Array:
    """Per-example loss: `loss_fn(logits, targets)`, or for `Mixed` targets
    lam * loss_fn(logits, a) + (1 - lam) * loss_fn(logits, b)."""
    if not isinstance(targets, Mixed):
        return loss_fn(logits, targets)
    return (targets.lam * loss_fn(logits, targets.a)
            + (1.0 - targets.lam) * loss_fn(logits, targets.b))


def smooth_labels(labels: jax.Array, eps: float, c: int) -> jax.Array:
    """Soft targets for integer class labels: (1 - eps) on the label plus eps / c on every
    class (fastai 2's LabelSmoothingCrossEntropy). Float (..., c) targets (one-hot, or
    another mixture) are smoothed the same way."""
    onehot = (labels.astype(jnp.float32) if jnp.issubdtype(labels.dtype, jnp.floating)
              else jax.nn.one_hot(labels, c, dtype=jnp.float32))
    return onehot * (1.0 - eps) + eps / c


def smooth_binary(targets: jax.Array, eps: float) -> jax.Array:
    """Multi-label targets smoothed per class towards 1/2: t * (1 - eps) + eps / 2."""
    return targets.astype(jnp.float32) * (1.0 - eps) + eps / 2


def smoothed_softmax_loss(logits: jax.Array, labels: jax.Array, eps: float) -> jax.Array:
    """Per-example cross-entropy against `smooth_labels(labels, eps, classes)`; equal to
    (1 - eps) * nll + eps * mean over classes of -log p."""
    return optax.softmax_cross_entropy(logits.astype(jnp.float32),
                                       smooth_labels(labels, eps, logits.shape[-1]))


def smoothed_sigmoid_loss(logits: jax.Array, targets: jax.Array, eps: float) -> jax.Array:
    """Per-example binary cross-entropy against `smooth_binary(targets, eps)`, class mean."""
    return optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                              smooth_binary(targets, eps)).mean(-1)


SMOOTHED = {'softmax': smoothed_softmax_loss, 'sigmoid': smoothed_sigmoid_loss}


def ema_decay(step: Any, decay: float) -> jax.Array:
    """The decay used at optimizer step `step`: min(decay, (1 + step) / (10 + step))."""
    t = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + t) / (EMA_WARMUP + t))


def ema_update(ema: Any, new: Any, decay: Any, old: Any = None) -> Any:
    """decay * ema + (1 - decay) * new, leaf by leaf (any pytree, e.g. {'params',
    'batch_stats'}). With `old` (the tree `new` came from), a leaf of `new` that is the very
    array of `old` (a frozen parameter a step returned as it came in) keeps its average as
    it is: nothing is computed for it."""
    e_leaves, treedef = jax.tree_util.tree_flatten(ema)
    n_leaves = treedef.flatten_up_to(new)
    o_leaves = [None] * len(e_leaves) if old is None else treedef.flatten_up_to(old)
    out = [e if o is not None and n is o else (decay * e + (1 - decay) * n).astype(e.dtype)
           for e, n, o in zip(e_leaves, n_leaves, o_leaves)]
    return jax.tree_util.tree_unflatten(treedef, out)


def init_ema(variables: Any) -> Any:
    """A new average: a copy of `variables` (its own buffers, so a step may donate both)."""
    return jax.device_put(variables, may_alias=False)   # a copy, with no program to compile


def split_micro(tree: Any, n: int) -> Any:
    """Every array (N * B, ...) -> (N, B, ...): micro-batch i holds rows i, i + N, i + 2N, ...
    (strided, so a batch sharded by rows over devices gives each micro-batch rows on every
    device, and the padded rows at the end spread over the micro-batches)."""
    def one(x):
        rows = x.shape[0]
        if rows % n:
            raise ValueError(f'a batch of {rows} rows does not split into accumulate={n} '
                             f'micro-batches; give the step batches of a multiple of {n} rows '
                             '(the learner loads bs * accumulate rows per update)')
        return jnp.swapaxes(x.reshape((rows // n, n) + x.shape[1:]), 0, 1)
    return jax.tree_util.tree_map(one, tree)


def join_micro(x: jax.Array) -> jax.Array:
    """The inverse of `split_micro` for one array: (N, B, ...) -> (N * B, ...) in row order."""
    return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])


def accumulate_gradients(loss_and_grad: Callable, n: int, params: Any, batch_stats: Any,
                         batch: Any, key: jax.Array, frozen: Any = None
                         ) -> tuple[jax.Array, jax.Array, Any, Any]:
    """Gradients of one batch computed as `n` micro-batches in a `lax.scan`.

    `loss_and_grad(params, batch_stats, micro, key) -> ((loss, (logits, batch_stats)), grads)`
    is `jax.value_and_grad(..., has_aux=True)` of a micro-batch's loss *sum* divided by the
    real-row count of the whole batch, so the summed losses and gradients are the whole
    batch's masked mean. `batch` is any pytree of (n * B, ...) arrays (`split_micro`);
    micro-batch i gets key `fold_in(key, i)`; BatchNorm statistics are threaded through
    the micro-batches in order. `frozen` (True for parameters without gradient) keeps those
    out of the running sum. Returns (loss, logits in row order, batch_stats, grads).

    The scan is unrolled: XLA:CPU ran a ResNet34 step's convolutions (kernels='xla') inside
    a while loop about 20x slower than the same program unrolled (64 px, batch 32 as 4
    micro-batches: 11.5 s against 0.53 s a step, compiling in 10.2 and 9.2 s).
    """
    trim = (lambda g: g) if frozen is None else (lambda g: jax.tree_util.tree_map(
        lambda a, f: jnp.zeros((), a.dtype) if f else a, g, frozen))

    def body(carry, xs):
        stats, gsum, lsum = carry
        micro, i = xs
        (loss, (logits, stats)), grads = loss_and_grad(params, stats, micro,
                                                       jax.random.fold_in(key, i))
        return (stats, jax.tree_util.tree_map(jnp.add, gsum, trim(grads)), lsum + loss), logits

    zeros = trim(jax.tree_util.tree_map(jnp.zeros_like, params))
    (stats, gsum, loss), logits = jax.lax.scan(
        body, (batch_stats, zeros, jnp.zeros((), jnp.float32)),
        (split_micro(batch, n), jnp.arange(n)),
        unroll=True)
    if frozen is not None:
        gsum = jax.tree_util.tree_map(lambda g, p, f: jnp.zeros_like(p) if f else g,
                                      gsum, params, frozen)
    return loss, join_micro(logits), stats, gsum


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Which parts of the recipe a training step runs (hashable: part of a compiled step's
    configuration). 0 (or 1 for `accumulate`) is off.

      mixup: MixUp's Beta(alpha, alpha) parameter (fastai 2: 0.4).
      cutmix: CutMix's alpha (fastai 2: 1.0); one of mixup and cutmix at a time.
      label_smoothing: eps (fastai 2: 0.1).
      ema: the decay of the weights' moving average (e.g. 0.999); the learner validates,
        predicts and saves with the average when it is on.
      accumulate: micro-batches per optimizer update.
    """

    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0
    ema: float = 0.0
    accumulate: int = 1

    def __post_init__(self):
        for name in ('mixup', 'cutmix', 'label_smoothing', 'ema'):
            v = getattr(self, name)
            v = 0.0 if v is None or v is False else v
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f'{name}={v!r}: give a number ({_HINTS[name]})')
            object.__setattr__(self, name, float(v))
        for name in ('mixup', 'cutmix'):
            if getattr(self, name) < 0:
                raise ValueError(f'{name}={getattr(self, name)}: the Beta(alpha, alpha) '
                                 f'parameter must be > 0, or 0 for off ({_HINTS[name]})')
        if self.mixup and self.cutmix:
            raise ValueError(f'mixup={self.mixup} and cutmix={self.cutmix}: a step mixes one way; '
                             'set one of them to 0')
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f'label_smoothing={self.label_smoothing}: use 0 <= eps < 1 '
                             f'({_HINTS["label_smoothing"]})')
        if not 0 <= self.ema < 1:
            raise ValueError(f'ema={self.ema}: the decay must be in (0, 1), or 0 for off '
                             f'({_HINTS["ema"]})')
        acc = self.accumulate
        if isinstance(acc, bool) or not isinstance(acc, int) or acc < 1:
            raise ValueError(f'accumulate={acc!r}: give the number of micro-batches per update, '
                             'an int >= 1 (1: off)')

    @property
    def mixes(self) -> bool:
        """MixUp or CutMix is on (the step needs images, not stored features)."""
        return bool(self.mixup or self.cutmix)

    def replace(self, **changes) -> 'Recipe':
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f'unknown recipe option(s) {unknown}; the recipe has mixup, cutmix, '
                            'label_smoothing, ema and accumulate')
        return dataclasses.replace(self, **changes)

    def options(self) -> dict:
        """All five as the keyword arguments of `make_train_step`."""
        return dataclasses.asdict(self)

    def describe(self) -> dict:
        """The options that are on (what a checkpoint records of the fit): {} when all are off."""
        default = Recipe()
        return {k: v for k, v in self.options().items() if v != getattr(default, k)}


_HINTS = {'mixup': 'fastai 2 uses 0.4', 'cutmix': 'fastai 2 uses 1.0',
          'label_smoothing': 'fastai 2 uses 0.1', 'ema': 'e.g. 0.999'}


def check_features(recipe: Recipe) -> None:
    """Refuse MixUp/CutMix on stored features (precompute): they mix images."""
    if recipe.mixes:
        which = f'mixup={recipe.mixup}' if recipe.mixup else f'cutmix={recipe.cutmix}'
        raise ValueError(f'{which} mixes images, but precompute=True trains the head on stored '
                         'activations of unmixed images; set learn.precompute = False (the '
                         'augmented images then go through the body), or '
                         f'learn.set_recipe({which.split("=")[0]}=0) for the precompute fits')

