"""Write the optimized HLO of bench_step.py's ResNet34 training step, to diff two checkouts.

When a speed ratio moves between two commits, this says whether the compiled program moved
too: run it in each checkout and diff the files. Source locations and the debug tables of
file and function names are stripped, so a file that only moved leaves no difference.

    PYTHONPATH=. python bench/step_hlo.py --sz 224 --out /tmp/after.hlo
    (in the other checkout) PYTHONPATH=. python bench/step_hlo.py --sz 224 --out /tmp/before.hlo
    diff /tmp/before.hlo /tmp/after.hlo && echo same program

The step is bench_step.py's: `jaxcls.xla.jit(make_train_step(), donate_argnums=0)` on
`resnet34(num_classes=2)` with `sgd(0.01)`, float32 images of batch --bs. Nothing runs;
the step is only lowered and compiled (about 10 s on a 2-core CPU).
"""
import argparse
import re


def step_hlo(sz: int, bs: int) -> str:
    import jax
    import jax.numpy as jnp
    from jaxcls import xla
    from jaxcls.models import resnet34
    from jaxcls.train.optim import sgd
    from jaxcls.train.state import create_train_state
    from jaxcls.train.steps import make_train_step

    module, variables = resnet34(num_classes=2)
    state = create_train_state(module.apply, variables, sgd(0.01))
    batch = {'image': jax.ShapeDtypeStruct((bs, sz, sz, 3), jnp.float32),
             'label': jax.ShapeDtypeStruct((bs,), jnp.int32)}
    text = xla.jit(make_train_step(), donate_argnums=0).lower(state, batch).compile().as_text()
    return strip_debug(text)


def strip_debug(text: str) -> str:
    """The HLO without metadata, stack frame ids and the file/function name tables."""
    text = re.sub(r', metadata=\{[^}]*\}', '', text)
    text = re.sub(r'stack_frame_id=\d+', '', text)
    keep = [line for line in text.splitlines()
            if not re.match(r'\s*\d+ ', line)
            and not line.startswith(('FileNames', 'FunctionNames', 'FileLocations', 'StackFrames'))]
    return '\n'.join(keep) + '\n'


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sz', type=int, default=224, help='image size in pixels (default 224)')
    ap.add_argument('--bs', type=int, default=32, help='batch size (default 32, as bench_step)')
    ap.add_argument('--out', required=True, help='file to write the HLO text to')
    args = ap.parse_args()
    text = step_hlo(args.sz, args.bs)
    with open(args.out, 'w') as f:
        f.write(text)
    print(f'wrote {args.out}: {text.count(chr(10))} lines, {text.count("fusion(")} fusion calls')


if __name__ == '__main__':
    main()
