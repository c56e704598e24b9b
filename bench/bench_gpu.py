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

The sections live in bench/gpu/, one measurement per file (bench/gpu/__init__.py lists
them), the torch peer in bench/peers/torch_gpu.py; this file runs them in order and prints
the summary. Every number is the median of several timed repeats after warm-up, with the
device synchronised (block_until_ready / torch.cuda.synchronize) around each timed block.
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
import shutil
import sys
import tempfile
import time

from gpu import forward, lesson, train_aug, train_synthetic
from gpu.checks import check_imports, nvidia_smi
from gpu.common import arch_spec, fail, say
from gpu.context import Context
from gpu.jpegs import make_jpegs
from gpu.sizes import FULL, FULL_BUDGET_S, TINY
from gpu.table import print_table, summary_rows
from gpu.torch_peer import TorchPeer


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


def prepare_workdir(args, S) -> str:
    """The --workdir, checked writable and with room for the lesson's JPEGs and cache."""
    workdir = os.path.abspath(args.workdir or os.path.join(
        tempfile.gettempdir(), 'jaxcls-bench-gpu' + ('-tiny' if args.tiny else '')))
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f'.write-test-{os.getpid()}')
        open(probe, 'w').close()
        os.remove(probe)
    except OSError as e:
        fail(f'cannot write to --workdir {workdir} ({e}); pass a writable folder')
    # JPEGs (~40 KB) + the decode cache (round(1.15 * sz)^2 * 3 bytes) per image, + 1 GB slack.
    side = round(1.15 * S.sz)
    need = S.n_jpegs * (40_000 + side * side * 3) + (1 << 30)
    free = shutil.disk_usage(workdir).free
    if free < need:
        fail(f'--workdir {workdir} has {free / 2**30:.1f} GB free; the lesson section needs about '
             f'{need / 2**30:.1f} GB (JPEGs and their decode cache); pass --workdir on a bigger disk')
    return workdir


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
    workdir = prepare_workdir(args, S)
    w, h = S.jpeg_wh

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
    results: dict = {'sizes': dataclasses.asdict(S), 'versions': versions,
                     'devices': [str(d) for d in devices], 'nvidia_smi': smi, 'failed': {}}
    ctx = Context(S, peer, modes, setup_timeout, step_timeout, t_start, results, workdir,
                  arch_spec(S))

    j1_rate = j3_rate = None
    t1, t3 = [], []
    if sections & {'1', '2', '3'}:
        j1_rate, t1 = train_synthetic.run(ctx)
        r2 = train_aug.run(ctx)
        j3_rate, t3 = forward.run(ctx, r2)
        del r2
        peer.close()
    passes = lesson.run(ctx, jpeg_root) if '4' in sections else [None, None]
    rows = summary_rows(S, sections, results, j1_rate, t1, j3_rate, t3, passes)
    elapsed = time.perf_counter() - t_start
    results['elapsed_s'] = elapsed
    results['notes'] = notes
    with open(os.path.join(workdir, 'bench_gpu.json'), 'w') as f:
        json.dump(results, f, indent=1, default=str)

    say('\nNotes:')
    for n in notes:
        say(f'  - {n}')
    say(f'  - {ctx.arch_desc}; ratio = jaxcls / pytorch (> 1: jaxcls faster); torch is torchvision\'s '
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
