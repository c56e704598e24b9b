"""What verifying a saved model costs: loading a ResNet34 model folder with and without checking
its digest, side by side in one run.

    python bench/bench_load.py                  # ResNet34 + SGD momentum, 5 alternating repeats
    python bench/bench_load.py --repeats 9 --dir /some/disk

The folder is what `learn.save` writes for a ResNet34 learner with every layer group
trainable: params, BatchNorm statistics and the momentum buffers (170 MB of float32), via
`jaxcls.train.checkpoint.save_checkpoint`. Each repeat loads it with
`load_checkpoint(folder, target)` -- the digest read and every restored array hashed and
compared -- and with `verify=False` (Orbax's restore alone), in alternating order, after a
first untimed load of each so both read from the page cache. Prints the median of each and
their difference; since two loads of 0.4 s differ by +-30 ms from run to run, it also times
the check on its own (reading the digest, the shape check, hashing and comparing every
restored array), and gives the share of the checked load that is (goal: under 10%); then
the time of the digest on the save side.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--dir', default=None, help='where to write the model (default: a temp dir)')
    args = ap.parse_args()

    import jax
    from jaxcls.models import resnet34
    from jaxcls.train import checkpoint as ckpt
    from jaxcls.train.integrity import tree_digest, verify_shapes, verify_tree
    from jaxcls.train.optim import sgd
    from jaxcls.train.state import create_train_state

    module, variables = resnet34(num_classes=2)
    state = create_train_state(module.apply, variables, sgd(0.01))
    tree = {'params': state.params, 'batch_stats': state.batch_stats,
            'opt_state': jax.tree_util.tree_map(lambda a: a + 0.5, state.opt_state),
            'step': state.step}
    nbytes = sum(a.nbytes for a in jax.tree_util.tree_leaves(tree))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = os.path.join(tmp, 'resnet34')
        t = time.perf_counter()
        ckpt.save_checkpoint(folder, tree, {'arch': 'resnet34'})
        save_s = time.perf_counter() - t
        t = time.perf_counter()
        tree_digest(tree)
        digest_s = time.perf_counter() - t

        def load(verify):
            t = time.perf_counter()
            out = ckpt.load_checkpoint(folder, tree, verify=verify)
            jax.block_until_ready(out)
            return time.perf_counter() - t

        load(True), load(False)                           # page cache warm for both
        on, off, check = [], [], []
        for i in range(args.repeats):
            for verify in ((True, False) if i % 2 == 0 else (False, True)):
                (on if verify else off).append(load(verify))
            restored = ckpt.load_checkpoint(folder, tree, verify=False)
            t = time.perf_counter()
            digest = ckpt.read_digest(folder)
            verify_shapes(tree, digest, folder)
            verify_tree(restored, digest, folder, 'state')
            check.append(time.perf_counter() - t)
    m_on, m_off, m_check = statistics.median(on), statistics.median(off), statistics.median(check)
    print(f'ResNet34 model folder, {nbytes / 2**20:.0f} MiB of arrays; {os.cpu_count()} cores, '
          f'jax {jax.__version__} on {jax.default_backend()}; median of {args.repeats} '
          'alternating loads')
    print(f'  load, digest checked   {m_on * 1e3:7.0f} ms')
    print(f'  load, not checked      {m_off * 1e3:7.0f} ms')
    print(f'  difference             {(m_on - m_off) * 1e3:7.0f} ms')
    print(f'  the check on its own   {m_check * 1e3:7.0f} ms = '
          f'{100 * m_check / (m_off + m_check):.1f}% of a checked load (goal < 10%)')
    print(f'  save (digest included) {save_s * 1e3:7.0f} ms, of which the digest '
          f'{digest_s * 1e3:.0f} ms')


if __name__ == '__main__':
    main()
