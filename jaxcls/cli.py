"""The `jaxcls` command line."""
from __future__ import annotations

import argparse
import sys
import time


def _demo(args: argparse.Namespace) -> int:
    """Train a small ResNet on generated images with the functional API; print the loss falling."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcls.models import ResNet
    from jaxcls.train.optim import sgd
    from jaxcls.train.state import create_train_state
    from jaxcls.train.steps import make_eval_step, summarize, train_step

    rng = np.random.default_rng(args.seed)
    n, sz = 256, 32

    def make(n):
        # Three classes a ResNet must tell apart by shape, not by mean colour:
        # a bright square, a bright horizontal bar, a bright vertical bar, on noise.
        y = rng.integers(0, 3, n)
        x = rng.normal(0, 0.3, (n, sz, sz, 3)).astype(np.float32)
        for i, c in enumerate(y):
            r, col = rng.integers(4, sz - 12, 2)
            if c == 0:
                x[i, r:r + 8, col:col + 8] += 1.5
            elif c == 1:
                x[i, r:r + 3, 4:sz - 4] += 1.5
            else:
                x[i, 4:sz - 4, col:col + 3] += 1.5
        return x, y.astype(np.int32)

    (xt, yt), (xv, yv) = make(n), make(128)
    module = ResNet((1, 1, 1, 1), 'basic', num_classes=3)
    variables = module.init(jax.random.PRNGKey(args.seed), jnp.zeros((1, sz, sz, 3)))
    state = create_train_state(module.apply, variables, sgd(0.01), rng=args.seed)
    print(f'jaxcls demo: a small ResNet on {n} generated {sz}x{sz} images, 3 classes '
          f'(devices: {jax.devices()})')
    bs, t0 = 32, time.time()
    for step in range(args.steps):
        idx = rng.choice(n, bs, replace=False)
        state, m = train_step(state, {'image': xt[idx], 'label': yt[idx]})
        if step % 5 == 0 or step == args.steps - 1:
            print(f'step {step:3d}  loss {float(m["loss"]):.4f}  accuracy {float(m["accuracy"]):.2f}')
    ev = jax.jit(make_eval_step())
    val = summarize([ev(state, {'image': xv[i:i + 64], 'label': yv[i:i + 64]})
                     for i in range(0, 128, 64)])
    print(f'validation: loss {val["loss"]:.4f}  accuracy {val["accuracy"]:.3f}  '
          f'({time.time() - t0:.1f}s)')
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='jaxcls', description='Image classification in JAX, '
                                'the fast.ai lesson-1 way.')
    sub = p.add_subparsers(dest='command', required=True)
    d = sub.add_parser('demo', help='train a small model on built-in demo data',
                       description='Train a small ResNet on generated images and print the loss.')
    d.add_argument('--steps', type=int, default=60, help='training steps (default 60)')
    d.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
