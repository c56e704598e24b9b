"""The frozen ResNet34 body's forward pass (what precompute runs): jaxcls vs torchvision, one run.

    python bench/bench_forward.py                    # 64, 128, 224 px, batch 32 (CPU)
    python bench/bench_forward.py --sizes 64 --steps 5

The options and the torch peer are bench_step.py's (bench/peers/torch_resnet.py in its own
venv, `--torch-python`, default .venv-torch/bin/python); its import is awaited before
anything of jaxcls runs. Both sides run the ResNet34 body in eval mode, float32, no
gradients, then concat pooling (max and mean over the map), on the same random batch:
jaxcls jitted (`concat_pool(module.apply(variables, x, False))`), torch eager under no_grad
(on the GPU when torch sees one, synchronised after each pass). For each size and repeat,
jaxcls runs `--steps` passes, then torch does; the median pass of each repeat is kept and
the median of repeats printed, with images/s and the ratio jaxcls / torch (> 1 means jaxcls
is faster). jaxcls's 'first pass' includes its compile.
"""
from __future__ import annotations

import argparse
import os
import statistics

import resnet34_peer
from timing import ratio, timed


def jax_forward_runner(sz: int, bs: int):
    """The frozen body's forward pass as precompute runs it: eval-mode ResNet34 body and
    concat pooling, jitted, float32. Returns (run(n) -> median seconds, first pass seconds)."""
    import jax.numpy as jnp
    import numpy as np
    from jaxcls import xla
    from jaxcls.models import resnet34
    from jaxcls.models.head import concat_pool

    module, variables = resnet34(num_classes=None)
    fn = xla.jit(lambda v, x: concat_pool(module.apply(v, x, False)))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((bs, sz, sz, 3), np.float32))

    def one():
        fn(variables, x).block_until_ready()

    return timed(one)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    resnet34_peer.add_options(ap)
    args = ap.parse_args()
    jax, peer = resnet34_peer.setup(args)
    print(f'Frozen ResNet34 body forward + concat pool (what precompute runs), eval mode, batch '
          f'{args.bs}, float32, no gradients; {os.cpu_count()} cores, jax {jax.__version__} on '
          f'{jax.devices()[0].platform}; load average {os.getloadavg()[0]:.1f}; median of '
          f'{args.repeats} repeats x {args.steps} passes')
    for sz in args.sizes:
        run, first = jax_forward_runner(sz, args.bs)
        jx, tc = [], []
        for _ in range(args.repeats):
            jx.append(run(args.steps))
            tc.append(peer.ask(sz, 'forward', args.steps)['median'])
        j, t = statistics.median(jx), statistics.median(tc)
        print(f'{sz:>4}px  jaxcls {args.bs / j:7.1f} img/s (first pass {first:5.1f} s) | torch eager '
              f'{args.bs / t:7.1f} img/s, jaxcls/torch {ratio(args.bs / j, args.bs / t)}', flush=True)
    peer.close()


if __name__ == '__main__':
    main()
