"""One prepared single-GPU benchmark of jaxcls against PyTorch, ending with one summary table.

Run it through bench/bench_gpu.sh (which puts the checkout on PYTHONPATH); see the usage
comment there. What it measures, in one process (PyTorch in a worker subprocess with its
own python, so the two frameworks never share a process):

  1. ResNet34 training images/s, 224 px, batch 256, bfloat16 compute with float32
     parameters and BatchNorm statistics, on synthetic data already on the device
     (jaxcls.models.build + make_train_step + sgd + create_train_state, jit, donated state).
  2. The same training fed from a uint8 cache with on-device augmentation
     (ImageClassifierData.from_arrays + ConvLearner, half(), unfreeze(), fit), images/s
     over an epoch after a warm-up epoch, timed by a callback.
  3. The frozen body's forward pass (what precompute runs), bfloat16, large batch.
  4. The lesson on generated 500x375 JPEGs: from_paths (decoding to the uint8 cache),
     ConvLearner.pretrained(precompute=True, pretrained=False, dtype='bfloat16'),
     fit(0.01, 3); twice: once
     as the process finds the compilation cache, once more with it warm.
  5. torchvision's ResNet (AMP bfloat16 autocast, channels_last, torch.compile unless it
     fails, SGD momentum 0.9): training and frozen-body forward images/s, timed in
     alternation with 1 and 3.

Every number is the median of several timed repeats after warm-up, with the device
synchronised (block_until_ready / torch.cuda.synchronize) around each timed block.
`--tiny` runs the same code with sizes that finish in well under a minute on a 2-core
CPU (the test suite runs it), so the script cannot rot between GPU runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Optional

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JPEG_MARKER = '.bench_gpu_jpegs.json'
# Bump when the generated images change, so an old folder in --workdir is regenerated.
JPEG_VERSION = 2
CLASSES = ('cats', 'dogs')
# The full run must fit a device session: 8 minutes on one H100, all compiles included.
FULL_BUDGET_S = 480


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Everything that differs between the full run and --tiny (the code path is the same)."""

    name: str
    stages: tuple[int, ...]  # blocks per ResNet stage: (3, 4, 6, 3) is ResNet34
    sz: int                  # training image size
    cache: int               # side of the uint8 cache images of section 2 and 3
    bs: int                  # training batch, sections 1 and 2 (and torch's)
    warmup: int              # untimed steps after the first (compiling) one
    steps: int               # steps per timed repeat
    repeats: int             # timed repeats; the median is reported
    aug_batches: int         # training batches per epoch in section 2
    aug_epochs: int          # timed epochs in section 2 (after one warm-up epoch)
    fwd_bs: int              # batch of the frozen-body forward, section 3
    fwd_steps: int           # forward batches per timed repeat
    n_jpegs: int             # images in the lesson's folder tree, section 4
    jpeg_wh: tuple[int, int]
    fit_epochs: int          # learn.fit(0.01, fit_epochs)
    torch_compile: bool      # default of --torch-compile


FULL = Sizes(
    name='full',
    stages=(3, 4, 6, 3), sz=224,
    # A 256 px cache around 224 px crops (the 'resize to 256, crop 224' of ImageNet
    # training); from_arrays keeps squares between sz and round(1.15 * sz) = 258 as they are.
    cache=256,
    bs=256,
    # 3 untimed steps after the compile let cuDNN/XLA autotuning and the allocator settle;
    # 20 steps of ~28 ms (at the 9000 img/s target) make a repeat of ~0.6 s, long enough
    # that launch jitter and the final sync are < 1 %; 5 repeats give a stable median.
    warmup=3, steps=20, repeats=5,
    # 24 batches (6144 images, 1.2 GB of uint8 in host RAM) make an epoch of ~0.7 s at the
    # target: the loader's unoverlapped first batch (~25 ms) costs < 4 % of it.
    aug_batches=24, aug_epochs=3,
    # 1024 images per forward batch: large enough to fill an H100 in inference (no saved
    # activations), small enough (200 MB of uint8 input) to leave room for torch.
    fwd_bs=1024, fwd_steps=10,
    # The brief's dataset: 20,000 JPEGs of 500x375 (the dogs-vs-cats photos' usual size).
    n_jpegs=20000, jpeg_wh=(500, 375),
    fit_epochs=3,
    torch_compile=True,
)

TINY = Sizes(
    name='tiny',
    stages=(1, 1, 1, 1), sz=32,
    cache=36,  # between sz=32 and round(1.15 * 32) = 37: from_arrays keeps it as is
    bs=8,
    warmup=1, steps=2, repeats=2,
    aug_batches=4, aug_epochs=2,
    fwd_bs=32, fwd_steps=2,
    n_jpegs=200, jpeg_wh=(50, 38),
    fit_epochs=1,
    # torch.compile of even this tiny ResNet takes ~40 s on a 2-core CPU: eager by default.
    torch_compile=False,
)

# JPEG content: a per-class tint blended with an 8x6 random field, upsampled (smooth like a
# photo), plus +-8 grain; quality 85 gives files of ~35 KB at 500x375, close to the
# dogs-vs-cats photos (decode cost tracks the compressed size).
JPEG_QUALITY = 85
JPEG_GRAIN = 8
TINTS = ((200, 90, 60), (60, 110, 200))
# One image in this many goes to valid/: the lesson's dogscats has 2,000 of 25,000 (8 %).
VALID_EVERY = 10


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------

def fail(msg: str) -> None:
    """An error the user can fix: one message, exit status 2."""
    print(f'bench_gpu: error: {msg}', file=sys.stderr, flush=True)
    sys.exit(2)


def say(msg: str = '') -> None:
    print(msg, flush=True)


def median_rate(images: int, seconds: list[float]) -> float:
    return images / statistics.median(seconds)


# --------------------------------------------------------------------------------------
# Generated JPEGs (not timed)
# --------------------------------------------------------------------------------------

def _jpeg_job(job: tuple[str, list[tuple[str, int, int]], tuple[int, int]]) -> int:
    """Write one chunk of JPEGs: (root, [(relative path, class index, seed)], (w, h))."""
    from PIL import Image
    root, items, (w, h) = job
    for rel, cls, seed in items:
        rng = np.random.default_rng(seed)
        field = rng.integers(0, 256, (6, 8, 3)).astype(np.float32)
        small = 0.5 * field + 0.5 * np.asarray(TINTS[cls], np.float32)
        im = Image.fromarray(small.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        a = np.asarray(im).astype(np.int16) + rng.integers(-JPEG_GRAIN, JPEG_GRAIN + 1,
                                                           (h, w, 3), dtype=np.int16)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(
            os.path.join(root, rel), 'JPEG', quality=JPEG_QUALITY)
    return len(items)


def jpeg_layout(n: int) -> list[tuple[str, int, int]]:
    """(relative path, class, seed) of every image: train/<class>/ and valid/<class>/."""
    out = []
    k = len(CLASSES)
    for i in range(n):
        cls = i % k
        split = 'valid' if (i // k) % VALID_EVERY == VALID_EVERY - 1 else 'train'
        out.append((os.path.join(split, CLASSES[cls], f'{CLASSES[cls][:-1]}.{i}.jpg'), cls, i))
    return out


def make_jpegs(root: str, n: int, wh: tuple[int, int], workers: int) -> tuple[float, bool]:
    """The folder-per-class tree under `root`, generated in parallel processes, or reused
    when a previous run made the same one. Returns (seconds, reused)."""
    want = {'version': JPEG_VERSION, 'n': n, 'wh': list(wh), 'quality': JPEG_QUALITY}
    marker = os.path.join(root, JPEG_MARKER)
    layout = jpeg_layout(n)
    try:
        with open(marker) as f:
            if json.load(f) == want and all(os.path.exists(os.path.join(root, r))
                                            for r, _, _ in layout[::max(1, n // 100)]):
                return 0.0, True
    except (OSError, ValueError):
        pass
    t = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    for split in ('train', 'valid'):
        for c in CLASSES:
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
    # ~100 images per task: big enough to amortise the pickling, small enough to balance.
    chunk = 100
    jobs = [(root, layout[s:s + chunk], tuple(wh)) for s in range(0, n, chunk)]
    import concurrent.futures as cf
    import multiprocessing as mp
    # 'spawn': nothing of this process (threads, a JAX runtime) is inherited by the workers.
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context('spawn')) as ex:
        done = sum(ex.map(_jpeg_job, jobs))
    assert done == n, (done, n)
    with open(marker, 'w') as f:
        json.dump(want, f)
    return time.perf_counter() - t, False


# --------------------------------------------------------------------------------------
# The PyTorch peer: a worker subprocess with its own python
# --------------------------------------------------------------------------------------

TORCH_WORKER = r'''
import json, os, sys, time
def out(d):
    sys.stdout.write(json.dumps(d) + '\n'); sys.stdout.flush()
try:
    import torch, torchvision
    from torch import nn
    from torchvision.models.resnet import ResNet, BasicBlock
except Exception as e:
    out({'error': 'cannot import torch and torchvision: ' + repr(e)[:200]}); sys.exit(0)
dev = sys.argv[1]
if dev == 'cuda' and not torch.cuda.is_available():
    out({'error': 'torch %s sees no CUDA device (torch.cuda.is_available() is False)' % torch.__version__})
    sys.exit(0)
if dev == 'cpu':
    torch.set_num_threads(os.cpu_count() or 1)
torch.backends.cudnn.benchmark = True
info = {'torch': torch.__version__, 'torchvision': torchvision.__version__, 'device': dev,
        'device_name': torch.cuda.get_device_name(0) if dev == 'cuda' else 'cpu'}
out(info)

def sync():
    if dev == 'cuda':
        torch.cuda.synchronize()

class ConcatPool(nn.Module):  # fastai's AdaptiveConcatPool2d + flatten: what precompute stores
    def forward(self, x):
        return torch.cat([x.amax((2, 3)), x.mean((2, 3))], 1)

runners = {}

def setup(req):
    torch.manual_seed(0)
    m = ResNet(BasicBlock, req['stages'], num_classes=2).to(dev).to(memory_format=torch.channels_last)
    x = torch.randn(req['bs'], 3, req['sz'], req['sz'], device=dev).contiguous(
        memory_format=torch.channels_last)
    autocast = lambda: torch.autocast(dev, dtype=torch.bfloat16)
    if req['kind'] == 'train':
        m.train()
        y = torch.randint(0, 2, (req['bs'],), device=dev)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        target = m
        def build(fwd):
            def step():
                opt.zero_grad(set_to_none=True)
                with autocast():
                    loss = nn.functional.cross_entropy(fwd(x), y)
                loss.backward()
                opt.step()
            return step
    else:
        target = nn.Sequential(*list(m.children())[:-2], ConcatPool()).eval()
        def build(fwd):
            def step():
                with torch.no_grad(), autocast():
                    return fwd(x)
            return step
    # Eager and torch.compile are measured as two separate setups (eager first, so a
    # compile that fails or hangs still leaves the eager numbers); a setup replaces the
    # previous runner of its kind, whose memory is given back first.
    runners.pop(req['kind'], None)
    if dev == 'cuda':
        torch.cuda.empty_cache()
    t = time.perf_counter()
    step = build(torch.compile(target) if req['compile'] else target)
    step(); sync()
    first = time.perf_counter() - t
    for _ in range(req['warmup']):
        step()
    sync()
    runners[req['kind']] = step
    return {'first': first}

for line in sys.stdin:
    req = json.loads(line)
    try:
        if req['op'] == 'setup':
            out(setup(req))
        else:
            step = runners[req['kind']]
            sync()
            t = time.perf_counter()
            for _ in range(req['steps']):
                step()
            sync()
            out({'seconds': time.perf_counter() - t})
    except Exception as e:
        lines = str(e).strip().splitlines()
        out({'error': (type(e).__name__ + ': ' + (lines[0] if lines else ''))[:300]})
'''


class TorchPeer:
    """The torch worker: JSON lines in and out, every answer awaited with a timeout, so a
    hung compile or a crash turns into 'not available' instead of a hung benchmark. A worker
    stopped that way is started again for the next measurement (`revive`)."""

    def __init__(self, python: str, device: str, log_path: str):
        self.error: Optional[str] = None
        self.fatal = False  # no torch at all: never retried
        self.info: dict = {}
        self.python, self.device, self.log_path = python, device, log_path
        self.proc = None
        self.log = None
        self._spawn()

    def _spawn(self) -> None:
        self.error = None
        self.lines: queue.Queue = queue.Queue()
        exe = shutil.which(self.python) or (self.python if os.path.exists(self.python) else None)
        if exe is None:
            self.error = (f'--torch-python {self.python!r} not found; pass the python that has '
                          f'torch and torchvision (e.g. --torch-python /path/to/venv/bin/python)')
            self.fatal = True
            return
        env = dict(os.environ)
        env.pop('PYTHONPATH', None)  # the worker needs nothing of the checkout
        try:
            self.log = open(self.log_path, 'a')
            self.proc = subprocess.Popen([exe, '-c', TORCH_WORKER, self.device],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self.log, text=True, bufsize=1, env=env)
        except OSError as e:
            self.error = f'cannot start {exe}: {e}'
            self.fatal = True
            return
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()

    @staticmethod
    def _read(proc, lines) -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def _answer(self, timeout: float) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.close()
            return {'error': f'no answer from the torch worker in {timeout:.0f} s (stopped)'}
        if line is None:
            tail = ''
            try:
                with open(self.log_path) as f:
                    tail = ' '.join(f.read().strip().splitlines()[-3:])[-300:]
            except OSError:
                pass
            return {'error': f'the torch worker exited ({tail or "no message"}; log: {self.log_path})'}
        return json.loads(line)

    def start(self, timeout: float) -> None:
        """Wait for the worker's import and its version line."""
        if self.error:
            return
        r = self._answer(timeout)
        if 'error' in r:
            self.error = r['error']
            self.fatal = True  # torch cannot be imported or sees no device: retrying won't help
        else:
            self.info = r

    def revive(self, timeout: float) -> None:
        """A new worker when the last one was stopped (a hung compile, a crash)."""
        if self.error and not self.fatal:
            self.close()
            self._spawn()
            self.start(timeout)

    def ask(self, req: dict, timeout: float) -> dict:
        if self.error:
            return {'error': self.error}
        try:
            self.proc.stdin.write(json.dumps(req) + '\n')
            self.proc.stdin.flush()
        except (OSError, ValueError) as e:
            self.error = f'the torch worker is gone ({e})'
            return {'error': self.error}
        r = self._answer(timeout)
        if 'error' in r and ('exited' in r['error'] or 'no answer' in r['error']):
            self.error = r['error']
        return r

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class TorchSide:
    """One torch measurement (train or forward; eager or torch.compile): setup once, then
    timed repeats."""

    def __init__(self, peer: TorchPeer, kind: str, S: Sizes, bs: int, steps: int,
                 compile_: bool, setup_timeout: float, step_timeout: float):
        self.peer, self.kind, self.bs, self.steps = peer, kind, bs, steps
        self.mode = 'compile' if compile_ else 'eager'
        self.step_timeout = step_timeout
        self.times: list[float] = []
        self.first = None
        self.error: Optional[str] = None
        peer.revive(setup_timeout)
        r = peer.ask({'op': 'setup', 'kind': kind, 'stages': list(S.stages), 'sz': S.sz, 'bs': bs,
                      'compile': compile_, 'warmup': S.warmup}, setup_timeout)
        if 'error' in r:
            self.error = r['error']
        else:
            self.first = r['first']

    def repeat(self) -> None:
        if self.error:
            return
        r = self.peer.ask({'op': 'time', 'kind': self.kind, 'steps': self.steps}, self.step_timeout)
        if 'error' in r:
            self.error = r['error']
        else:
            self.times.append(r['seconds'])

    def rate(self) -> Optional[float]:
        return median_rate(self.bs * self.steps, self.times) if self.times else None

    def summary(self) -> dict:
        return {'rate': self.rate(), 'first_s': self.first, 'error': self.error,
                'repeats': len(self.times)}


def best_torch(sides: list) -> tuple[Any, str]:
    """The faster torch mode, the one the ratio is taken against: (rate, mode), or
    ('not available', '') when none was measured."""
    done = [s for s in sides if s is not None and s.rate()]
    if not done:
        return 'not available', ''
    s = max(done, key=lambda s: s.rate())
    return s.rate(), s.mode


# --------------------------------------------------------------------------------------
# Environment checks (before anything heavy)
# --------------------------------------------------------------------------------------

NEEDED = {'jax': 'jax[cuda12] (or jax on CPU for --tiny)', 'flax': 'flax', 'optax': 'optax',
          'orbax.checkpoint': 'orbax-checkpoint', 'PIL': 'pillow', 'numpy': 'numpy'}


def check_imports() -> list[str]:
    """Import what jaxcls needs; fail with the missing packages named. Returns notes."""
    missing = []
    for mod, pkg in NEEDED.items():
        try:
            importlib.import_module(mod)
        except Exception as e:  # ImportError, or a broken install raising something else
            missing.append(f'{mod} ({pkg}): {type(e).__name__}: {e}')
    if missing:
        fail('this python cannot import: ' + '; '.join(missing) + f'. Install them into '
             f'{sys.executable} (this benchmark installs nothing itself).')
    notes = []
    try:
        import jaxcls
    except Exception as e:
        fail(f'cannot import jaxcls from the checkout {REPO} ({type(e).__name__}: {e}); run '
             f'`bash bench/bench_gpu.sh` from the repository root, or set PYTHONPATH={REPO}')
    where = os.path.dirname(os.path.dirname(os.path.abspath(jaxcls.__file__)))
    if os.path.realpath(where) != os.path.realpath(REPO):
        notes.append(f'jaxcls was imported from {where}, not from this checkout {REPO}')
    return notes


def ram_gb() -> float:
    from jaxcls.data.decode import ram_budget, RAM_FRACTION
    return ram_budget() / RAM_FRACTION / 2**30


def nvidia_smi() -> Optional[str]:
    exe = shutil.which('nvidia-smi')
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, '--query-gpu=name,driver_version,memory.total,clocks.max.sm,'
                            'power.limit', '--format=csv,noheader'], capture_output=True,
                           text=True, timeout=20)
        return r.stdout.strip() or r.stderr.strip() or None
    except (OSError, subprocess.TimeoutExpired) as e:
        return f'nvidia-smi failed: {e}'


# --------------------------------------------------------------------------------------
# The jaxcls measurements
# --------------------------------------------------------------------------------------

def arch_spec(S: Sizes):
    from jaxcls.archs import ArchSpec, get_arch
    if S.stages == (3, 4, 6, 3):
        return get_arch('resnet34')
    # The tests' tiny ResNet: one basic block per stage, ResNet34's channels.
    return ArchSpec('resnet_tiny', 'basic', S.stages, 512)


class JaxTrainSynthetic:
    """Section 1: build + create_train_state + make_train_step under jit, donated state."""

    def __init__(self, S: Sizes, spec):
        import jax
        import jax.numpy as jnp
        from jaxcls.models import build
        from jaxcls.train.optim import sgd
        from jaxcls.train.state import create_train_state
        from jaxcls.train.steps import make_train_step
        self.jax, self.S = jax, S
        module, variables = build(spec, num_classes=2, dtype=jnp.bfloat16)
        self.state = create_train_state(module.apply, variables, sgd(0.01))
        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        # Normalised-looking images made on the device: nothing crosses PCIe while timing.
        self.batch = {'image': jax.random.normal(k1, (S.bs, S.sz, S.sz, 3), jnp.float32),
                      'label': jax.random.randint(k2, (S.bs,), 0, 2, jnp.int32)}
        jitted = jax.jit(make_train_step(), donate_argnums=0)
        t = time.perf_counter()
        self.step = jitted.lower(self.state, self.batch).compile()
        self.compile_s = time.perf_counter() - t
        t = time.perf_counter()
        self._steps(1)
        self.first_s = time.perf_counter() - t
        self._steps(S.warmup)
        self.times: list[float] = []

    def _steps(self, n: int) -> None:
        for _ in range(n):
            self.state, metrics = self.step(self.state, self.batch)
        self.jax.block_until_ready((self.state, metrics))
        self.loss = float(metrics['loss'])

    def repeat(self) -> None:
        self.jax.block_until_ready(self.state)
        t = time.perf_counter()
        self._steps(self.S.steps)
        self.times.append(time.perf_counter() - t)

    def rate(self) -> float:
        return median_rate(self.S.bs * self.S.steps, self.times)


def epoch_timer():
    """A Callback timing each training epoch (without the validation fit runs after it):
    from on_epoch_begin to the end of the epoch's last step, the state synchronised."""
    import jax
    from jaxcls.train.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self):
            self.times: list[float] = []
            self.t0 = 0.0

        def on_epoch_begin(self, learner, epoch):
            self.t0 = time.perf_counter()

        def on_batch_end(self, learner, iteration, logs):
            p = learner.progress
            if p.batch == p.batches:
                jax.block_until_ready(learner.state)
                self.times.append(time.perf_counter() - self.t0)
    return EpochTimer()


def jax_train_aug(S: Sizes, spec, workdir: str) -> dict:
    """Section 2: the lesson's unfrozen training, uint8 cache -> on-device augmentation."""
    import jax.numpy as jnp
    from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model, transforms_side_on
    n = S.bs * S.aug_batches
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n, S.cache, S.cache, 3), dtype=np.uint8)
    y = np.arange(n) % 2
    tfms = tfms_from_model(spec, S.sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    # One validation batch: fit validates after every epoch; it is outside the timed span.
    data = ImageClassifierData.from_arrays(workdir, (x, y), (x[:S.bs], y[:S.bs]), bs=S.bs,
                                           tfms=tfms)
    assert data.cache_size == S.cache, (data.cache_size, S.cache)
    learn = ConvLearner.pretrained(spec, data, pretrained=False, quiet=True)
    learn.half()
    learn.unfreeze()
    assert learn.dtype == jnp.bfloat16
    timer = epoch_timer()
    hist = learn.fit(0.01, 1 + S.aug_epochs, callbacks=[timer])
    warm = timer.times[1:]
    return {'rate': median_rate(n, warm), 'first_epoch_s': timer.times[0],
            'epoch_s': statistics.median(warm), 'images': n,
            'val_loss': hist[-1]['val_loss'], 'learn': learn, 'data': data}


class JaxForward:
    """Section 3: the frozen body's pooled features of uint8 batches (centre crop and
    normalisation on the device, then the body in bfloat16): the function precompute jits."""

    def __init__(self, S: Sizes, learn, data):
        import jax
        import jax.numpy as jnp
        from jaxcls.data import transforms as T
        from jaxcls.models.head import ConvNet
        self.jax, self.S = jax, S
        net, cfg = learn.model, data.tfms[1]
        assert net.body.dtype == jnp.bfloat16
        fn = jax.jit(lambda v, x: net.apply(v, T.val_transform(x, cfg), method=ConvNet.features)
                     .astype(jnp.float32))
        self.variables = learn.state.variables
        self.x = jax.random.bits(jax.random.PRNGKey(3), (S.fwd_bs, S.cache, S.cache, 3), jnp.uint8)
        t = time.perf_counter()
        self.fn = fn.lower(self.variables, self.x).compile()
        self.compile_s = time.perf_counter() - t
        t = time.perf_counter()
        self._run(1)
        self.first_s = time.perf_counter() - t
        self._run(S.warmup)
        self.times: list[float] = []

    def _run(self, n: int) -> None:
        outs = [self.fn(self.variables, self.x) for _ in range(n)]
        self.jax.block_until_ready(outs)
        self.features = outs[-1].shape if outs else None

    def repeat(self) -> None:
        t = time.perf_counter()
        self._run(self.S.fwd_steps)
        self.times.append(time.perf_counter() - t)

    def rate(self) -> float:
        return median_rate(self.S.fwd_bs * self.S.fwd_steps, self.times)


def decode_probe(path: str, cache_size: int, n: int = 500) -> float:
    """Milliseconds per JPEG that one thread needs to decode and resize (no cache, no pool):
    with T decode threads the decode cannot beat n_images * this / T."""
    from jaxcls.data.decode import decode_image
    names = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(path, 'train'))
                   for f in fs if f.endswith('.jpg'))[:n]
    for f in names[:20]:  # warm the file cache and Pillow
        decode_image(f, cache_size)
    t = time.perf_counter()
    for f in names:
        decode_image(f, cache_size)
    return (time.perf_counter() - t) / max(1, len(names)) * 1e3


def jax_lesson(S: Sizes, spec, path: str) -> dict:
    """Section 4: the lesson's first three lines on a folder of JPEGs, each phase timed.
    The decode cache and stored features of an earlier pass are deleted first, so every
    pass decodes every JPEG. `pretrained(precompute=True)` is timed in its two parts (the
    model, then the features: the same work), fit per epoch (the first compiles)."""
    from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model
    from jaxcls.data.decode import wait_for_cache_writes
    shutil.rmtree(os.path.join(path, 'tmp'), ignore_errors=True)
    t0 = time.perf_counter()
    data = ImageClassifierData.from_paths(path, tfms=tfms_from_model(spec, S.sz), quiet=True)
    t1 = time.perf_counter()
    # bfloat16 compute as in every other section: the body's forward runs once, in bf16.
    learn = ConvLearner.pretrained(spec, data, precompute=False, pretrained=False, quiet=True,
                                   dtype='bfloat16')
    t_model = time.perf_counter()
    learn.precompute = True
    t2 = time.perf_counter()
    timer = epoch_timer()
    hist = learn.fit(0.01, S.fit_epochs, callbacks=[timer])
    t3 = time.perf_counter()
    # The decode cache goes to disk in the background while the lesson runs; how much longer
    # it took is reported (Python waits for it at exit), and the next pass needs it done.
    wait_for_cache_writes()
    t4 = time.perf_counter()
    assert not data.trn_ds.from_cache and not data.skipped, 'expected a fresh decode of every file'
    return {'decode_s': t1 - t0, 'precompute_s': t2 - t1, 'model_s': t_model - t1,
            'features_s': t2 - t_model, 'fit_s': t3 - t2, 'fit_epochs_s': timer.times,
            'total_s': t3 - t0, 'cache_write_after_s': t4 - t3,
            'n_train': len(data.trn_ds), 'n_valid': len(data.val_ds), 'bs': data.bs,
            'cache_size': data.cache_size, 'in_ram': not isinstance(data.trn_ds.x, np.memmap),
            'hist': hist}


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Row:
    key: str            # short id the test looks for: '1', '2', '3', '4a', ...
    what: str
    jax: Optional[float]
    torch: Any = None   # a number, or a string ('not available', '-')
    torch_mode: str = ''
    higher_better: bool = True
    target: Optional[float] = None          # absolute target on the jaxcls value
    target_ratio: Optional[float] = None    # jaxcls / torch must be >= this
    unit: str = 'img/s'
    skipped: bool = False   # its section was left out (--sections)

    def cells(self, judge: bool) -> list[str]:
        if self.skipped:
            return [f'{self.key:<3}{self.what}', 'skipped', '-', '-', '-', '-']
        fmt = (lambda v: f'{v:.0f}' if v >= 100 else f'{v:.1f}') if self.unit == 'img/s' \
            else (lambda v: f'{v:.2f}')
        jv = 'failed' if self.jax is None else fmt(self.jax)
        if isinstance(self.torch, (int, float)):
            tv = fmt(self.torch) + (f' ({self.torch_mode})' if self.torch_mode else '')
            ratio = (f'{self.jax / self.torch:.2f}x' if self.higher_better
                     else f'{self.torch / self.jax:.2f}x') if self.jax else '-'
        else:
            tv, ratio = (self.torch or '-'), '-'
        parts = []
        if self.target is not None:
            parts.append(f'{">=" if self.higher_better else "<"} {self.target:g} '
                         f'{"img/s" if self.unit == "img/s" else "s"}')
        if self.target_ratio is not None:
            parts.append(f'>= {self.target_ratio:g}x torch')
        target = ' and '.join(parts) or '(none)'
        if not parts:
            met = '-'
        elif not judge:
            met = 'not judged (--tiny)'
        elif self.jax is None:
            met = 'NOT MET (failed)'
        else:
            ok = True
            if self.target is not None:
                ok = self.jax >= self.target if self.higher_better else self.jax < self.target
            untested = False
            if self.target_ratio is not None:
                if isinstance(self.torch, (int, float)):
                    ok = ok and self.jax / self.torch >= self.target_ratio
                else:
                    untested = True
            met = ('met' if ok else 'NOT MET') + (' (ratio untested: no torch)' if untested else '')
        return [f'{self.key:<3}{self.what}', jv, tv, ratio, target, met]


def print_table(rows: list[Row], judge: bool) -> None:
    head = ['measurement', 'jaxcls', 'pytorch', 'ratio', 'target', 'met/not met']
    body = [r.cells(judge) for r in rows]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    line = lambda cells: ' | '.join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    say(line(head))
    say('-+-'.join('-' * w for w in widths))
    for b in body:
        say(line(b))


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--tiny', action='store_true',
                    help='every section at toy sizes on the CPU (well under a minute); the test '
                         'suite runs this')
    ap.add_argument('--torch-python', default='python3',
                    help='python with torch and torchvision for the PyTorch side (default python3); '
                         'without them the torch columns say "not available"')
    ap.add_argument('--torch-compile', choices=('on', 'off'), default=None,
                    help='torch.compile the torch models (default: on; off with --tiny, where it '
                         'would take ~40 s on a 2-core CPU)')
    ap.add_argument('--workdir', default=None,
                    help='folder for the generated JPEGs (reused across runs), their decode cache '
                         'and bench_gpu.json (default $TMPDIR/jaxcls-bench-gpu[-tiny])')
    ap.add_argument('--sections', default='1,2,3,4',
                    help='the sections to run, comma-separated (default all: 1,2,3,4); naming any of '
                         '1, 2, 3 runs those three (3 uses 2\'s learner); `--sections 4` runs the '
                         'lesson alone')
    ap.add_argument('--jpeg-workers', type=int, default=None,
                    help='processes generating the JPEGs (default: the CPU count)')
    return ap.parse_args(argv)


def main(argv=None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    S = TINY if args.tiny else FULL
    if args.tiny:
        # The tiny run is the CPU smoke test, also on a GPU machine (unless told otherwise).
        os.environ.setdefault('JAX_PLATFORMS', 'cpu')
    torch_compile = S.torch_compile if args.torch_compile is None else args.torch_compile == 'on'
    sections = set(args.sections.replace(' ', '').split(','))
    if not sections or not sections <= {'1', '2', '3', '4'}:
        fail(f'--sections {args.sections!r}: give some of 1,2,3,4, comma-separated (e.g. 4)')
    import tempfile
    workdir = os.path.abspath(args.workdir or os.path.join(
        tempfile.gettempdir(), 'jaxcls-bench-gpu' + ('-tiny' if args.tiny else '')))
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f'.write-test-{os.getpid()}')
        open(probe, 'w').close()
        os.remove(probe)
    except OSError as e:
        fail(f'cannot write to --workdir {workdir} ({e}); pass a writable folder')
    w, h = S.jpeg_wh
    # JPEGs (~40 KB) + the decode cache (round(1.15 * sz)^2 * 3 bytes) per image, + 1 GB slack.
    side = round(1.15 * S.sz)
    need = S.n_jpegs * (40_000 + side * side * 3) + (1 << 30)
    free = shutil.disk_usage(workdir).free
    if free < need:
        fail(f'--workdir {workdir} has {free / 2**30:.1f} GB free; the lesson section needs about '
             f'{need / 2**30:.1f} GB (JPEGs and their decode cache); pass --workdir on a bigger disk')

    say(f'bench_gpu ({S.name}): python {platform.python_version()} ({sys.executable}), '
        f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; workdir {workdir}')
    notes = check_imports()

    # 1. The JPEGs first: generation is not timed, and runs before JAX starts any thread.
    jpeg_root = os.path.join(workdir, f'jpegs-{S.n_jpegs}-{w}x{h}')
    gen_s, reused = make_jpegs(jpeg_root, S.n_jpegs, S.jpeg_wh, args.jpeg_workers or os.cpu_count() or 1)
    say(f'JPEGs: {S.n_jpegs} of {w}x{h} in {jpeg_root} '
        + ('(reused from an earlier run)' if reused else f'(generated in {gen_s:.1f} s, not timed)'))

    import jax
    from jaxcls import compile_cache
    cache_dir = compile_cache.enable()
    cache_entries = len(os.listdir(cache_dir)) if cache_dir and os.path.isdir(cache_dir) else 0
    devices = jax.devices()
    platform_name = devices[0].platform
    if not args.tiny and platform_name != 'gpu':
        fail(f'jax sees no GPU (jax.devices() = {devices}); the full run is for a GPU machine: '
             f"install jax with CUDA (pip install 'jax[cuda12]') or run `bash bench/bench_gpu.sh "
             f'--tiny` for the CPU smoke test')
    versions = {m: getattr(importlib.import_module(m), '__version__', '?')
                for m in ('jax', 'jaxlib', 'flax', 'optax', 'numpy')}
    say('versions: ' + ', '.join(f'{k} {v}' for k, v in versions.items()))
    say(f'jax.devices(): {devices}')
    smi = nvidia_smi()
    if smi:
        say(f'nvidia-smi: {smi}')
    say(f'XLA persistent compilation cache: {cache_dir or "off"}'
        + (f' ({cache_entries} entries at start)' if cache_dir else ''))

    # The torch worker imports torch while JAX compiles section 1.
    torch_device = 'cuda' if platform_name == 'gpu' else 'cpu'
    peer = TorchPeer(args.torch_python if sections & {'1', '3'} else '/nonexistent/python',
                     torch_device, os.path.join(workdir, 'torch_worker.log'))
    # A torch.compile of a ResNet34 training step takes 1-2 min; past these limits the worker
    # is stopped (its eager numbers are already in) and a new one serves the next section.
    setup_timeout = 120 if args.tiny else 240
    step_timeout = 60 if args.tiny else 120
    modes = (False, True) if torch_compile else (False,)

    spec = arch_spec(S)
    arch_desc = (f'{spec.name} {list(S.stages)}, {S.sz} px, batch {S.bs}, bfloat16 compute, '
                 f'float32 params and BatchNorm statistics')
    results: dict = {'sizes': dataclasses.asdict(S), 'versions': versions,
                     'devices': [str(d) for d in devices], 'nvidia_smi': smi, 'failed': {}}

    def guarded(section: str, fn, *a):
        """Run one section; an exception is reported and recorded, and the run goes on, so
        one broken section never costs the others' numbers (a GPU session is short)."""
        try:
            return fn(*a)
        except Exception as e:  # noqa: BLE001 - reported, recorded, and shown in the table
            import traceback
            traceback.print_exc()
            msg = f'{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ""}'
            say(f'    FAILED: {msg[:300]}')
            results['failed'][section] = msg[:1000]
            return None

    def stamp() -> str:
        return f'(at {time.perf_counter() - t_start:.0f} s)'

    def torch_timed(kind: str, bs: int, steps: int, jax_side) -> list:
        """Each torch mode set up in turn, then timed in alternation with `jax_side`."""
        sides = []
        for compiled in modes:
            t = TorchSide(peer, kind, S, bs, steps, compiled, setup_timeout, step_timeout)
            sides.append(t)
            if t.error:
                say(f'    torch ({t.mode}): not available ({t.error})')
                continue
            say(f'    torch ({t.mode}): first call {t.first:.1f} s {stamp()}')
            for _ in range(S.repeats):
                if jax_side is not None:
                    guarded(f'{kind} repeats', jax_side.repeat)
                t.repeat()
            say(f'    torch ({t.mode}): {t.rate() or 0:.1f} img/s'
                + (f' (then: {t.error})' if t.error else ''))
        return sides

    j1_rate = j3_rate = None
    t1, t3 = [], []
    if sections & {'1', '2', '3'}:
        # ---- 1 + 5: training on synthetic data, jaxcls and torch in alternation
        say(f'\n[1] training, synthetic data on the device: {arch_desc} {stamp()}')
        j1 = guarded('1', JaxTrainSynthetic, S, spec)
        if j1 is not None:
            say(f'    jaxcls: compile {j1.compile_s:.1f} s (cache load if warm), first step '
                f'{j1.first_s:.2f} s {stamp()}')
        peer.start(setup_timeout)
        if peer.error:
            say(f'    torch: not available ({peer.error})')
        else:
            say(f"    torch {peer.info['torch']} torchvision {peer.info['torchvision']} on "
                f"{peer.info['device_name']}")
        t1 = torch_timed('train', S.bs, S.steps, j1)
        if j1 is not None and not j1.times:  # no torch to alternate with
            for _ in range(S.repeats):
                guarded('1', j1.repeat)
        j1_rate = j1.rate() if j1 is not None and j1.times else None
        trace_dir = os.environ.get('JAXCLS_BENCH_TRACE')
        if trace_dir and j1 is not None:
            # A profiler trace of a few timed-size steps, for reading offline (xprof); untimed.
            def trace(side):
                import jax
                jax.profiler.start_trace(trace_dir)
                try:
                    side._steps(3)
                finally:
                    jax.profiler.stop_trace()
                say(f'    profiler trace of 3 steps in {trace_dir}')
            guarded('1 trace', trace, j1)
        if j1_rate:
            say(f'    jaxcls {j1_rate:.1f} img/s (median of {len(j1.times)}; loss {j1.loss:.3f})')
        results['train_synthetic'] = {'jax': j1_rate, 'jax_compile_s': j1 and j1.compile_s,
                                      'torch': {t.mode: t.summary() for t in t1}}
        del j1

        # ---- 2: the same training from the uint8 cache with on-device augmentation
        say(f'\n[2] training from the uint8 cache ({S.cache} px) with on-device augmentation '
            f'(transforms_side_on, max_zoom=1.1): ConvLearner, half(), unfreeze(), fit {stamp()}')
        r2 = guarded('2', jax_train_aug, S, spec, workdir)
        if r2 is not None:
            say(f"    {r2['images']} images per epoch: first epoch {r2['first_epoch_s']:.1f} s "
                f"(compiles), then {r2['epoch_s']:.3f} s = {r2['rate']:.1f} img/s (median of "
                f"{S.aug_epochs})")
            results['train_aug'] = {k: v for k, v in r2.items() if k not in ('learn', 'data')}

        # ---- 3 + 5: frozen-body forward
        say(f'\n[3] frozen-body forward (pooled features, what precompute runs), batch {S.fwd_bs}, '
            f'bfloat16, uint8 input cropped and normalised on the device {stamp()}')
        j3 = guarded('3', JaxForward, S, r2['learn'], r2['data']) if r2 is not None else None
        if j3 is not None:
            say(f'    jaxcls: compile {j3.compile_s:.1f} s, first batch {j3.first_s:.2f} s, features '
                f'{j3.features}')
        t3 = torch_timed('forward', S.fwd_bs, S.fwd_steps, j3)
        if j3 is not None and not j3.times:
            for _ in range(S.repeats):
                guarded('3', j3.repeat)
        j3_rate = j3.rate() if j3 is not None and j3.times else None
        if j3_rate:
            say(f'    jaxcls {j3_rate:.1f} img/s (median of {len(j3.times)})')
        results['forward_frozen'] = {'jax': j3_rate, 'jax_compile_s': j3 and j3.compile_s,
                                     'torch': {t.mode: t.summary() for t in t3}}
        del j3, r2
        peer.close()

    passes = [None, None]
    if '4' in sections:
        # ---- 4: the lesson on JPEGs, twice
        say(f'\n[4] the lesson on {S.n_jpegs} JPEGs: from_paths(tfms=tfms_from_model({spec.name}, '
            f'{S.sz})) + ConvLearner.pretrained(precompute=True, pretrained=False, '
            "dtype='bfloat16') + "
            f'fit(0.01, {S.fit_epochs}) {stamp()}')
        probe = guarded('4 probe', decode_probe, jpeg_root, round(1.15 * S.sz))
        if probe:
            threads = os.cpu_count() or 1
            say(f'    one thread decodes a JPEG in {probe:.2f} ms: {S.n_jpegs} on {threads} threads '
                f'take at least {S.n_jpegs * probe / threads / 1e3:.2f} s; RAM available '
                f'{ram_gb():.1f} GB')
        results['decode_ms_per_image_one_thread'] = probe
        passes = []
        for name in ('first pass', 'again, compile cache warm'):
            r = guarded(f'4 {name}', jax_lesson, S, spec, jpeg_root)
            passes.append(r)
            if r is None:
                continue
            last = r['hist'][-1]
            say(f"    {name}: decode {r['decode_s']:.2f} s ({r['n_train']} + {r['n_valid']} images, "
                f"{r['cache_size']} px, {'in RAM' if r['in_ram'] else 'memory-mapped'}) + "
                f"pretrained/precompute {r['precompute_s']:.2f} s (model {r['model_s']:.2f} + "
                f"features {r['features_s']:.2f}) + fit {r['fit_s']:.2f} s (epochs "
                f"{', '.join(f'{v:.2f}' for v in r['fit_epochs_s'])}) = {r['total_s']:.2f} s; "
                f"cache on disk {r['cache_write_after_s']:.1f} s after fit; last epoch val_loss "
                f"{last['val_loss']:.4f} accuracy {last.get('accuracy', float('nan')):.4f} {stamp()}")
        results['lesson'] = [r and {k: v for k, v in r.items() if k != 'hist'} for r in passes]
    warm = passes[1] or {}
    first = passes[0] or {}

    tr1, tm1 = best_torch(t1)
    tr3, tm3 = best_torch(t3)
    skip123, skip4 = not sections & {'1', '2', '3'}, '4' not in sections
    rows = [
        Row('1', 'train img/s, synthetic on device', j1_rate, tr1, tm1, target=9000,
            target_ratio=1.0, skipped=skip123),
        Row('2', 'train img/s, uint8 cache + device aug', results.get('train_aug', {}).get('rate'),
            '-', skipped=skip123),
        Row('3', 'frozen-body forward img/s', j3_rate, tr3, tm3, target=40000, skipped=skip123),
        Row('4a', 'lesson: from_paths (decode) s', warm.get('decode_s'), '-', unit='s',
            higher_better=False, skipped=skip4),
        Row('4b', 'lesson: pretrained(precompute) s', warm.get('precompute_s'), '-', unit='s',
            higher_better=False, skipped=skip4),
        Row('4c', f'lesson: fit(0.01, {S.fit_epochs}) s', warm.get('fit_s'), '-', unit='s',
            higher_better=False, skipped=skip4),
        Row('4', 'lesson: total s', warm.get('total_s'), '-', unit='s', higher_better=False,
            target=7, skipped=skip4),
        Row('4*', 'lesson: total s, first pass', first.get('total_s'), '-', unit='s',
            higher_better=False, skipped=skip4),
    ]
    elapsed = time.perf_counter() - t_start
    results['elapsed_s'] = elapsed
    results['notes'] = notes
    with open(os.path.join(workdir, 'bench_gpu.json'), 'w') as f:
        json.dump(results, f, indent=1, default=str)

    say('\nNotes:')
    for n in notes:
        say(f'  - {n}')
    say(f'  - {arch_desc}; ratio = jaxcls / pytorch (> 1: jaxcls faster); torch is torchvision\'s '
        f'ResNet with AMP bfloat16 autocast and channels_last, SGD momentum 0.9, '
        + ('eager and torch.compile each measured; the table shows the faster.'
           if torch_compile else 'eager (torch.compile off).'))
    for section, msg in results['failed'].items():
        say(f'  - section {section} FAILED: {msg[:300]}')
    say('  - rows 4a-4c and 4 are the second lesson pass (decode cache deleted, compile cache '
        'warm); 4* the first, compiles as the cache had them.')
    if args.tiny:
        say('  - --tiny: toy sizes on the CPU; the targets are for the full run on one H100 and '
            'are not judged.')
    say(f'  - results also in {os.path.join(workdir, "bench_gpu.json")}')
    say('\nSummary')
    print_table(rows, judge=not args.tiny)
    budget = '' if args.tiny else (f' (budget {FULL_BUDGET_S} s on one H100'
                                   + ('; OVER' if elapsed > FULL_BUDGET_S else '') + ')')
    say(f'\nelapsed {elapsed:.1f} s{budget}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
