"""The `jaxcls` command: train, lr-find, predict, interpret, clean and demo from a shell.

    jaxcls train data/dogscats --arch resnet34 --sz 224 --epochs 3 --precompute
    jaxcls lr-find data/dogscats
    jaxcls predict data/dogscats/models/resnet34_224 photos/ --csv
    jaxcls interpret data/dogscats/models/resnet34_224 data/dogscats --html report.html
    jaxcls clean data/dogscats/models/resnet34_224 data/dogscats
    jaxcls demo

Every command is the Python workflow (`ImageClassifierData.from_paths`,
`ConvLearner.pretrained`, `fit`, ...) with its arguments taken from flags.

A user mistake (a missing folder, an unknown arch, a bad flag value, a model
folder that is not a checkpoint, weights that cannot be found) prints one line,
``jaxcls: error: <what is wrong and how to fix it>``, to stderr and exits with
status 2. Library errors are turned into that line only around the calls that
read what the user named (folders, weight files, checkpoints), so a bug
elsewhere still shows its traceback.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Optional, Sequence

from jaxcls import clean_commands
from jaxcls import commands as C
from jaxcls.commands import EXIT_USAGE, OUT_DIRNAME, UserError

AUG_CHOICES = ('side_on', 'top_down', 'basic', 'none')


# ----------------------------------------------------------------------------- parsing

class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one `jaxcls: error: ...` line (no usage dump)."""

    def error(self, message: str):  # type: ignore[override]
        sub = self.prog.split(' ', 1)[1] if ' ' in self.prog else ''
        hint = f"; see 'jaxcls {sub} --help'" if sub else "; see 'jaxcls --help'"
        C.fail(f'{message}{hint}')
        sys.exit(EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a whole number; give e.g. 3') from None
    if v < 1:
        raise argparse.ArgumentTypeError(f'{v} must be at least 1')
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number; give e.g. 0.01') from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f'{text} must be a positive number, e.g. 0.01')
    return v


def _zoom(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number; give e.g. 1.1') from None
    if not (math.isfinite(v) and v >= 1):
        raise argparse.ArgumentTypeError(
            f'{text} is below 1; it is the largest magnification (1.1 zooms in up to 10%, '
            '1 disables zoom)')
    return v


def _arch(text: str) -> str:
    from jaxcls.archs import ARCHS
    if text not in ARCHS:
        raise argparse.ArgumentTypeError(f'unknown arch {text!r}; use one of {", ".join(sorted(ARCHS))}')
    return text


def _model_args(p: argparse.ArgumentParser, *, default_lr: bool = True) -> None:
    """The flags that build the data and the learner (shared by train and lr-find)."""
    p.add_argument('path', metavar='PATH',
                   help='dataset folder with train/<class>/ and valid/<class>/ image folders')
    p.add_argument('--arch', type=_arch, default='resnet34',
                   help='resnet18, resnet34 (default) or resnet50')
    p.add_argument('--sz', type=_positive_int, default=224, help='image size in pixels (default 224)')
    p.add_argument('--bs', type=_positive_int, default=64, help='batch size (default 64)')
    p.add_argument('--aug', choices=AUG_CHOICES, default='side_on',
                   help='training augmentation: side_on (default: small rotations, lighting, '
                        'left-right flips; photos taken from the side), top_down (also the 8 '
                        'dihedral flips; satellite, microscopy), basic (rotation and lighting '
                        'only: text, digits), none')
    p.add_argument('--max-zoom', type=_zoom, default=1.1,
                   help='random zoom up to this factor (default 1.1; 1 disables)')
    p.add_argument('--precompute', action='store_true',
                   help='train the head on stored activations of the frozen body (fast; no '
                        'augmentation)')
    p.add_argument('--unfreeze', action='store_true',
                   help='train every layer group, not just the head (rates lr/100, lr/10, lr '
                        'with pretrained weights; lr everywhere with --no-pretrained)')
    p.add_argument('--weights', metavar='FILE',
                   help='ImageNet weight file (.pth or .safetensors) for the body; default: '
                        'looked up in $JAXCLS_WEIGHTS and the torch hub cache, then downloaded')
    p.add_argument('--pretrained', action=argparse.BooleanOptionalAction, default=True,
                   help='start from ImageNet weights (default) or, with --no-pretrained, from '
                        'a random initialisation')
    p.add_argument('--seed', type=int, default=0, help='seed of the head, shuffling and '
                   'augmentation (default 0)')
    p.add_argument('--mixup', type=float, default=0.0, metavar='ALPHA',
                   help='MixUp inside the training step (fastai 2 uses 0.4; default off)')
    p.add_argument('--cutmix', type=float, default=0.0, metavar='ALPHA',
                   help='CutMix instead (fastai 2 uses 1.0; default off)')
    p.add_argument('--label-smoothing', type=float, default=0.0, metavar='EPS',
                   help='label smoothing (fastai 2 uses 0.1; default off)')
    p.add_argument('--ema', type=float, default=0.0, metavar='DECAY',
                   help='validate, predict and save with a moving average of the weights '
                        '(e.g. 0.999; default off)')
    p.add_argument('--accumulate', type=_positive_int, default=1, metavar='N',
                   help='gradient accumulation: N micro-batches of --bs per update (default 1)')
    p.add_argument('--out', metavar='DIR',
                   help=f'where plots and the JSON summary go (default PATH/{OUT_DIRNAME})')


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the `jaxcls` command (one subparser per command)."""
    p = _Parser(prog='jaxcls', description='Image classification in JAX, the fast.ai lesson-1 '
                'way. Run "jaxcls COMMAND --help" for the options of each command.')
    sub = p.add_subparsers(dest='command', required=True, metavar='COMMAND')

    t = sub.add_parser('train', help='train a classifier on a folder of images, one folder per class',
                       description='Train a classifier on PATH/train/<class>/ images, validate on '
                       'PATH/valid/<class>/, print the epoch table, save the model under '
                       'PATH/models/NAME and plots plus summary.json under --out.')
    _model_args(t)
    t.add_argument('--lr', type=_positive_float, default=0.01,
                   help='learning rate (default 0.01; find one with jaxcls lr-find)')
    t.add_argument('--epochs', type=_positive_int, default=3,
                   help='epochs at a constant rate; with --cycle-len, the number of cycles '
                        '(fit(lr, epochs, cycle_len=N)) (default 3)')
    t.add_argument('--cycle-len', type=_positive_int, metavar='N',
                   help='SGDR: cosine-annealed cycles of N epochs, restarting at lr')
    t.add_argument('--cycle-mult', type=_positive_int, default=1, metavar='M',
                   help='with --cycle-len: each cycle M times longer than the last (default 1)')
    t.add_argument('--name', help='model name under PATH/models (default ARCH_SZ)')
    t.add_argument('--resume', action='store_true',
                   help='continue the interrupted run from its last checkpoint (the run '
                        'checkpoints every epoch into PATH/models/NAME-checkpoints; give the '
                        'same flags as the interrupted run)')
    t.set_defaults(func=C.train)

    f = sub.add_parser('lr-find', help='the learning-rate range test: plot and suggested rate',
                       description='Train for one epoch (or --num-it batches) with the rate rising '
                       'from --start-lr to --end-lr, on a copy of the model; save the loss/rate '
                       'plot under --out and print the suggested learning rate.')
    _model_args(f)
    f.add_argument('--start-lr', type=_positive_float, default=1e-5, help='first rate (default 1e-5)')
    f.add_argument('--end-lr', type=_positive_float, default=10.0, help='last rate (default 10)')
    f.add_argument('--num-it', type=_positive_int, metavar='N',
                   help='batches to run (default one epoch; about 100 gives a smoother curve)')
    f.set_defaults(func=C.lr_find)

    pr = sub.add_parser('predict', help='classify image files or folders with a saved model',
                        description='Print one line per image: path, predicted class, '
                        'probability. Folders are searched for images (recursively). Files '
                        'that cannot be decoded are reported on stderr and skipped.')
    pr.add_argument('model', metavar='MODEL', help='a model folder saved by jaxcls train / '
                    'learn.save (e.g. PATH/models/resnet34_224), or a file from learn.export')
    pr.add_argument('inputs', metavar='IMAGE_OR_FOLDER', nargs='+', help='images or folders')
    pr.add_argument('--csv', nargs='?', const='-', metavar='FILE',
                    help='write CSV (path,class,probability) to FILE, or to stdout without FILE')
    pr.add_argument('--bs', type=_positive_int, default=64, help='batch size (default 64)')
    pr.add_argument('--cam', metavar='OUT.png', help='also save the images (up to 16) with the '
                    'class activation map (Grad-CAM) of the predicted class overlaid')
    pr.set_defaults(func=C.predict)

    it = sub.add_parser('interpret', help='confusion matrix, per-class report and plots of a '
                        "saved model's mistakes on a validation folder",
                        description='Load MODEL, predict PATH/valid/<class>/ images, print the '
                        'confusion matrix and the per-class report, and save plots (confusion '
                        'matrix, top losses, most incorrect images per class) under --out.')
    it.add_argument('model', metavar='MODEL', help='a model folder saved by jaxcls train / '
                    'learn.save, or a file from learn.export')
    it.add_argument('path', metavar='PATH', help='dataset folder holding the validation folder')
    it.add_argument('--valid-name', default='valid', metavar='NAME',
                    help='name of the validation folder inside PATH (default valid)')
    it.add_argument('--bs', type=_positive_int, default=64, help='batch size (default 64)')
    it.add_argument('--out', metavar='DIR', help=f'where plots go (default PATH/{OUT_DIRNAME})')
    it.add_argument('--cam', action='store_true', help='also save the top-loss and most-incorrect '
                    'images with class activation maps (Grad-CAM) overlaid')
    it.add_argument('--html', metavar='REPORT.html', help='also write one self-contained HTML '
                    'report (images inlined): the epoch table and lr_find plot of the run that '
                    'trained MODEL (when its summary.json is found), the confusion matrix, the '
                    'top losses with Grad-CAM overlays, the most confused pairs')
    it.add_argument('--summary', metavar='FILE', help="with --html: the training run's "
                    'summary.json (default: looked up in --out, PATH/jaxcls-out and beside '
                    "MODEL's models folder)")
    it.add_argument('--top', type=_positive_int, default=9, metavar='K',
                    help='with --html: top losses shown (default 9)')
    it.set_defaults(func=C.interpret)

    cl = sub.add_parser('clean', help='rank the files a model disagrees with (CSV, contact sheet); '
                        'move the ones you mark, with an undo', usage=clean_commands.USAGE,
                        description='With MODEL PATH: predict every image of PATH/train and '
                        'PATH/valid with the model, rank them (label and prediction disagree '
                        'first, highest loss first; unreadable files flagged) and write clean.csv '
                        'and clean.html (a contact sheet) under --out. With --apply CSV PATH: '
                        'move the files whose action is delete to PATH/quarantine/ and those '
                        'marked relabel:<class> into that class folder, writing an undo '
                        'manifest. With --undo MANIFEST: move them back. Nothing is deleted.')
    cl.add_argument('paths', nargs='*', metavar='MODEL PATH',
                    help='a saved model and its dataset folder; with --apply only PATH')
    cl.add_argument('--apply', metavar='DECISIONS.csv', help='act on the action column '
                    '(keep, delete, relabel:<class>) of the CSV jaxcls clean wrote')
    cl.add_argument('--undo', metavar='MANIFEST', help='put back the files of an --apply (its '
                    'undo-*.json in PATH/quarantine/)')
    cl.add_argument('--out', metavar='DIR', help=f'where clean.csv and clean.html go (default '
                    f'PATH/{OUT_DIRNAME})')
    cl.add_argument('--bs', type=_positive_int, default=64, help='batch size (default 64)')
    cl.add_argument('--sheet', type=_positive_int, default=500, metavar='N',
                    help='files shown in the contact sheet (default 500; the CSV has all)')
    cl.set_defaults(func=clean_commands.clean)

    from jaxcls import demo as demo_mod
    d = sub.add_parser('demo', help="the lesson workflow on scikit-learn's handwritten digits",
                       description="Build scikit-learn's 1,797 handwritten-digit scans into "
                       'train/valid folders of PNGs, then run the lesson workflow on them: '
                       'lr_find, fit with rotation+zoom augmentation, interpretation plots. '
                       'Uses ImageNet weights when a weight file is found locally, otherwise '
                       'trains from scratch.')
    d.add_argument('--out', metavar='DIR', help='where plots and summary.json go '
                   f'(default DATA/{OUT_DIRNAME})')
    d.add_argument('--data', metavar='DIR', help='where the digits folders are built '
                   '(default $JAXCLS_DATA/digits or ~/.cache/jaxcls/digits)')
    d.add_argument('--epochs', type=_positive_int, default=demo_mod.DEMO_EPOCHS,
                   help=f'training epochs (default {demo_mod.DEMO_EPOCHS})')
    d.add_argument('--lr', type=_positive_float,
                   help='learning rate (default: the recipe\'s, checked against lr_find)')
    d.add_argument('--arch', type=_arch, default=demo_mod.DEMO_ARCH,
                   help=f'architecture (default {demo_mod.DEMO_ARCH})')
    d.add_argument('--sz', type=_positive_int, default=demo_mod.DEMO_SZ,
                   help=f'image size (default {demo_mod.DEMO_SZ})')
    d.add_argument('--pretrained', action=argparse.BooleanOptionalAction, default=None,
                   help='force (or, with --no-pretrained, skip) ImageNet weights; default: use '
                        'them when a weight file is found locally')
    d.add_argument('--seed', type=int, default=0, help='seed (default 0)')
    d.set_defaults(func=C.demo)
    return p


# ----------------------------------------------------------------------------- entry point

def main(argv: Optional[Sequence[str]] = None, guard=None) -> int:
    """Run the `jaxcls` command; returns the exit status (0 ok, 2 user mistake, 130 Ctrl-C).

    `guard`: the entry point's :class:`jaxcls.interrupts.Guard` (SIGINT handling, which
    ends the process itself on Ctrl-C); without one, an interrupt returns 130.
    """
    from jaxcls.interrupts import EXIT_INTERRUPTED, Guard
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv, args.guard = argv, guard if guard is not None else Guard()
    try:
        from jaxcls import compile_cache
        compile_cache.enable()  # a second run of the same command skips XLA compilation
        return int(args.func(args) or 0)
    except UserError as e:
        C.fail(str(e))
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.guard.active:
            args.guard.exit()          # prints what was saved and ends the process
        print(args.guard.say(), file=sys.stderr)
        return EXIT_INTERRUPTED


def entry() -> None:
    """The `jaxcls` console script: :func:`main` under a SIGINT guard."""
    from jaxcls.interrupts import Guard
    with Guard() as guard:
        guard.finish(main(guard=guard))


if __name__ == '__main__':
    entry()
