"""How much memory a compiled step needs, how much a device has, and the largest batch that fits.

Pure helpers: `step_bytes` reads XLA's own memory analysis of a compiled executable
(`jax.jit(f).lower(...).compile().memory_analysis()`), so a batch size is judged before
anything of that size is allocated. The learner uses them for `bs='auto'`.

    >>> choose_batch_size(lambda bs: 1000 + 100 * bs, start=64, budget=5000).bs
    32
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable, Optional

import jax

__all__ = ['BatchSizeChoice', 'OutOfDeviceMemory', 'choose_batch_size', 'device_budget',
           'step_bytes', 'is_out_of_memory', 'GPU_FRACTION', 'HOST_FRACTION']

# Share of an accelerator's memory (its allocator's bytes_limit) a training step may plan for.
GPU_FRACTION = 0.9
# On CPU the "device" is host RAM, which also holds the decoded images, the precomputed
# features and Python: plan for half of physical RAM, divided among the CPU devices.
HOST_FRACTION = 0.5


class OutOfDeviceMemory(MemoryError):
    """A training step needs more memory than the device has (names the batch size and a fix).

    `bs`: the batch size the message proposes (None when it names none)."""

    def __init__(self, message: str, bs: Optional[int] = None):
        super().__init__(message)
        self.bs = bs


@dataclasses.dataclass
class BatchSizeChoice:
    """The outcome of `choose_batch_size`.

    Attributes:
      bs: the chosen batch size.
      need: bytes the step needs at that size.
      budget: the budget it was judged against (bytes per device).
      tried: [(bs, need)] for every size compiled, largest first.
    """
    bs: int
    need: int
    budget: int
    tried: list

    def __str__(self) -> str:
        mib = lambda b: f'{b / 2 ** 20:.0f} MiB'
        return (f'bs={self.bs} (needs {mib(self.need)} of a {mib(self.budget)} budget; tried '
                + ', '.join(f'{b}: {mib(n)}' for b, n in self.tried) + ')')


def step_bytes(compiled: Any) -> int:
    """Peak bytes of a compiled executable per device: arguments + outputs not aliased to
    (donated) arguments + temporaries + generated code."""
    m = compiled.memory_analysis()
    if m is None:
        raise RuntimeError('this backend reports no memory analysis for compiled steps; pass an '
                           'explicit bs instead of bs="auto"')
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
               + m.temp_size_in_bytes + m.generated_code_size_in_bytes)


def device_budget(device: Any = None, fraction: Optional[float] = None) -> int:
    """Bytes a training step may use on `device` (default: the first device).

    An accelerator: `fraction` (default GPU_FRACTION) of its allocator's limit. CPU:
    `fraction` (default HOST_FRACTION) of physical RAM, shared among the CPU devices.
    """
    device = jax.devices()[0] if device is None else device
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # some backends do not implement it
        pass
    if stats and stats.get('bytes_limit'):
        return int(stats['bytes_limit'] * (GPU_FRACTION if fraction is None else fraction))
    ram = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    n = max(1, sum(d.platform == device.platform for d in jax.devices()))
    return int(ram * (HOST_FRACTION if fraction is None else fraction) / n)


def choose_batch_size(need: Callable[[int], int], start: int, budget: int, multiple: int = 1
                      ) -> BatchSizeChoice:
    """The largest of start, start/2, start/4, ... (multiples of `multiple`) whose `need(bs)`
    fits `budget`. Raises OutOfDeviceMemory when even `multiple` does not fit.

    >>> c = choose_batch_size(lambda bs: 1000 + 100 * bs, start=64, budget=5000)
    >>> c.bs, c.tried
    (32, [(64, 7400), (32, 4200)])
    """
    multiple = max(1, int(multiple))
    bs = max(multiple, int(start) // multiple * multiple)
    tried = []
    while True:
        n = int(need(bs))
        tried.append((bs, n))
        if n <= budget:
            return BatchSizeChoice(bs, n, int(budget), tried)
        if bs <= multiple:
            raise OutOfDeviceMemory(
                f'even bs={bs} needs {n / 2 ** 20:.0f} MiB per device, more than the budget of '
                f'{budget / 2 ** 20:.0f} MiB; use a smaller image size (sz), precompute=True, '
                'fewer trainable layer groups, or a larger mem_budget')
        bs = max(multiple, bs // 2 // multiple * multiple)


def is_out_of_memory(error: BaseException) -> bool:
    """An XLA RESOURCE_EXHAUSTED error (a failed device allocation)."""
    return isinstance(error, jax.errors.JaxRuntimeError) and 'RESOURCE_EXHAUSTED' in str(error)


def fitting_bs(learn, budget: Optional[int] = None) -> Optional[BatchSizeChoice]:
    """The largest of bs/2, bs/4, ... whose training step (the learner's current layer groups
    and precompute) fits `budget` (default `device_budget`), judged from XLA's memory
    analysis of the compiled step as bs='auto' judges; None when it cannot be judged."""
    bs, mesh = int(learn.data.bs), learn.data.trn_dl.mesh
    budget = device_budget(mesh.devices.flat[0]) if budget is None else int(budget)
    ndev = mesh.shape['data']
    if bs <= ndev:
        return None
    try:
        return choose_batch_size(lambda b: learner_step_bytes(learn, b, unfrozen=False),
                                 max(ndev, bs // 2 // ndev * ndev), budget, ndev)
    except Exception:  # noqa: BLE001 -- even the smallest does not fit, or no analysis
        return None


def oom_message(learn, what: str, err: Any, budget: Optional[int] = None) -> tuple[str, int]:
    """What a learner's out-of-memory error says (the batch size, the largest smaller one that
    fits by XLA's memory analysis, as bs='auto' judges, and how to set it), and that size."""
    bs = int(learn.data.bs)
    ndev = learn.data.trn_dl.mesh.shape['data']
    fit = fitting_bs(learn, budget)
    if fit is not None:
        lower, judged = fit.bs, f'; bs={fit.bs} fits ({fit})'
    else:
        lower, judged = max(ndev, bs // 2 // ndev * ndev), ''
    first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
    return (f'out of device memory {what} with bs={bs} (sz={learn.data.sz}, {ndev} device(s), '
            f'layer groups trainable {list(learn.trainable)}, precompute={learn.precompute})'
            f'{judged}. Use a smaller batch: learn.set_bs({lower}), or build the data with '
            f'bs={lower} (ImageClassifierData.from_paths(PATH, bs={lower}, ...)), or let '
            f"ConvLearner.pretrained(..., bs='auto') pick one that fits. XLA said: {first}",
            lower)


def check_budget(learn, what: str) -> None:
    """With `learn.mem_budget` set, refuse a training step that needs more (before it runs):
    OutOfDeviceMemory naming the batch size that fits, the learner untouched."""
    budget = getattr(learn, 'mem_budget', None)
    if budget is None:
        return
    need = learner_step_bytes(learn, int(learn.data.bs), unfrozen=False)
    if need > int(budget):
        mib = lambda b: f'{b / 2 ** 20:.1f} MiB'  # noqa: E731
        raise OutOfDeviceMemory(*oom_message(
            learn, what, f'the step needs {mib(need)} per device, over learn.mem_budget = '
                         f'{mib(int(budget))} (judged before running it: the learner is '
                         f'unchanged)', budget))


@contextlib.contextmanager
def guard(learn, what: str):
    """Around a call that leaves the learner as it was (lr_find trains a copy; predict and TTA
    only read): turn an XLA out-of-memory error into OutOfDeviceMemory (`oom_message`), and
    note on a KeyboardInterrupt that nothing changed, so the notebook goes on without a
    restart."""
    try:
        yield
    except KeyboardInterrupt as err:
        err.add_note(f'jaxcls: interrupted {what}; the learner is as it was before the call '
                     f'(its weights, optimizer state and learn.sched), so any call can follow')
        raise
    except Exception as err:
        if is_out_of_memory(err):
            raise OutOfDeviceMemory(*oom_message(learn, what, err)) from err
        raise


def learner_step_bytes(learn, bs: int, unfrozen: bool = True) -> int:
    """Bytes per device a learner's training step needs at batch size `bs`, from XLA's memory
    analysis of the compiled step (compiled, not run). See `ConvLearner.step_memory`."""
    trainable = (True,) * learn.n_groups if unfrozen else learn.trainable
    precompute = False if unfrozen else learn.precompute
    dl = learn.data.trn_dl
    # One compile per configuration: the analysis of a step depends on nothing else.
    key = (int(bs), tuple(trainable), bool(precompute), str(learn.dtype),
           tuple(learn.data.trn_ds.x.shape[1:]), learn.precompute_aug, dl.mesh.shape['data'],
           learn.recipe)
    known = learn.__dict__.setdefault('_step_bytes', {})
    if key not in known:
        known[key] = _step_bytes_of(learn, int(bs), trainable, precompute, dl)
    return known[key]


def _step_bytes_of(learn, bs: int, trainable: tuple, precompute: bool, dl) -> int:
    from jax.sharding import NamedSharding, PartitionSpec as P
    rep, shard = NamedSharding(dl.mesh, P()), NamedSharding(dl.mesh, P('data'))
    bs *= learn.recipe.accumulate  # a step takes accumulate micro-batches of bs rows
    with configured(learn, trainable, precompute):
        fn = learn.steps.get('train')
        state = jax.eval_shape(lambda s: learn.steps.fit_view(s.with_tx(learn.steps.tx())), learn.state)
        state = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), state)
        if precompute:
            learn._features.ensure()
            x = learn._features['train_aug0' if learn.precompute_aug else 'train']
            image = jax.ShapeDtypeStruct((bs,) + tuple(x.shape[1:]), x.dtype, sharding=shard)
        else:
            x = learn.data.trn_ds.x
            image = jax.ShapeDtypeStruct((bs,) + tuple(x.shape[1:]), 'uint8', sharding=shard)
        y = dl.y
        batch = {'image': image,
                 'label': jax.ShapeDtypeStruct((bs,) + tuple(y.shape[1:]), y.dtype, sharding=shard),
                 'mask': jax.ShapeDtypeStruct((bs,), 'float32', sharding=shard)}
        # Unplaced, as the loop's numpy rows are: then this program is the one `fit` runs, and
        # XLA's persistent cache hands the compiled step to the fit that follows.
        group = jax.ShapeDtypeStruct((learn.n_groups,), 'float32')
        from .optim import HParams
        return step_bytes(fn.lower(state, batch, HParams(group, group, group)).compile())


@contextlib.contextmanager
def configured(learn, trainable: tuple, precompute: bool):
    """The learner with these layer groups trainable and precompute set, within the block."""
    was = learn.trainable, learn._precompute
    learn.trainable, learn._precompute = tuple(trainable), bool(precompute)
    try:
        yield
    finally:
        learn.trainable, learn._precompute = was


def learner_auto_bs(learn, start: Optional[int], budget: Optional[int], unfrozen: bool
                    ) -> BatchSizeChoice:
    """`ConvLearner.auto_bs`'s choice: `choose_batch_size` over `learner_step_bytes`."""
    mesh = learn.data.trn_dl.mesh
    budget = device_budget(mesh.devices.flat[0]) if budget is None else int(budget)
    return choose_batch_size(lambda b: learner_step_bytes(learn, b, unfrozen),
                             learn.data.bs if start is None else int(start), budget,
                             mesh.shape['data'])
