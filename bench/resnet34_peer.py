"""What bench_step.py and bench_forward.py share: their options, the jax setup, and the
torch peer (bench/peers/torch_resnet.py) they time jaxcls against.

PyTorch runs in its own venv, never next to jaxcls (`--torch-python`, default
.venv-torch/bin/python):

    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch==2.14.1 torchvision==0.29.1
    (or `make parity`, which builds the same venv)
"""
from __future__ import annotations

import argparse
import os
import sys

from timing import Worker, WorkerError, script

TORCH_VENV = os.path.join('.venv-torch', 'bin', 'python')


def add_options(ap: argparse.ArgumentParser) -> None:
    """The options both scripts take: sizes, batch, steps and repeats, the torch python and
    XLA's persistent compilation cache."""
    ap.add_argument('--sizes', type=int, nargs='+', default=[64, 128, 224])
    ap.add_argument('--bs', type=int, default=None,
                    help='batch size (default 32 on a CPU, 256 on a GPU)')
    ap.add_argument('--steps', type=int, default=3, help='timed steps per repeat (default 3)')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--torch-python', default=TORCH_VENV)
    ap.add_argument('--compile-cache', metavar='DIR',
                    help="keep XLA's persistent compilation cache in DIR (default: off, so every "
                         'compile is timed cold); run twice with the same DIR to see a cache hit')


class TorchResnet:
    """The torch peer, started and ready (torch imported) before anything of jaxcls is timed."""

    def __init__(self, python: str, bs: int):
        if not os.path.exists(python):
            sys.exit(f'no torch venv at {python}; make one with: python3 -m venv .venv-torch '
                     f'&& .venv-torch/bin/pip install torch==2.14.1 torchvision==0.29.1 '
                     f'(or pass --torch-python)')
        self.bs = bs
        self.worker = Worker([python, script('peers', 'torch_resnet.py')], name='the torch worker')
        # torch's import takes seconds of CPU: wait for it, or it lands in jaxcls's compile time.
        try:
            self.worker.ready()
        except WorkerError:
            sys.exit(f'the torch worker ({python}) exited before it was ready')

    def ask(self, sz: int, mode: str, steps: int) -> dict:
        """{'median': s, 'first': s, 'torch': version} of `steps` steps, or {'error': ...}."""
        return self.worker.ask({'sz': sz, 'bs': self.bs, 'mode': mode, 'steps': steps})

    def close(self) -> None:
        self.worker.close(timeout=None)


def setup(args: argparse.Namespace):
    """Import jax, default the batch size to the platform, turn the compilation cache on if
    asked, then start the torch peer; returns (jax, the peer)."""
    import jax
    if args.bs is None:
        args.bs = 32 if jax.devices()[0].platform == 'cpu' else 256
    if args.compile_cache:
        from jaxcls import compile_cache
        compile_cache.enable(args.compile_cache)
    return jax, TorchResnet(args.torch_python, args.bs)
