"""The `jaxcls` command: train, lr-find, predict, interpret and demo from a shell.

    jaxcls train data/dogscats --arch resnet34 --sz 224 --epochs 3 --precompute
    jaxcls lr-find data/dogscats
    jaxcls predict data/dogscats/models/resnet34_224 photos/ --csv
    jaxcls interpret data/dogscats/models/resnet34_224 data/dogscats
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
import contextlib
import math
import os
import sys
import time
from typing import Iterator, Optional, Sequence

EXIT_USAGE = 2
AUG_CHOICES = ('side_on', 'top_down', 'basic', 'none')
OUT_DIRNAME = 'jaxcls-out'


class UserError(Exception):
    """A mistake in what the user asked for; `main` prints it as one line and exits 2."""


# ----------------------------------------------------------------------------- parsing

class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one `jaxcls: error: ...` line (no usage dump)."""

    def error(self, message: str):  # type: ignore[override]
        sub = self.prog.split(' ', 1)[1] if ' ' in self.prog else ''
        hint = f"; see 'jaxcls {sub} --help'" if sub else "; see 'jaxcls --help'"
        _fail(f'{message}{hint}')
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
    t.set_defaults(func=_train)

    f = sub.add_parser('lr-find', help='the learning-rate range test: plot and suggested rate',
                       description='Train for one epoch (or --num-it batches) with the rate rising '
                       'from --start-lr to --end-lr, on a copy of the model; save the loss/rate '
                       'plot under --out and print the suggested learning rate.')
    _model_args(f)
    f.add_argument('--start-lr', type=_positive_float, default=1e-5, help='first rate (default 1e-5)')
    f.add_argument('--end-lr', type=_positive_float, default=10.0, help='last rate (default 10)')
    f.add_argument('--num-it', type=_positive_int, metavar='N',
                   help='batches to run (default one epoch; about 100 gives a smoother curve)')
    f.set_defaults(func=_lr_find)

    pr = sub.add_parser('predict', help='classify image files or folders with a saved model',
                        description='Print one line per image: path, predicted class, '
                        'probability. Folders are searched for images (recursively). Files '
                        'that cannot be decoded are reported on stderr and skipped.')
    pr.add_argument('model', metavar='MODEL', help='a model folder saved by jaxcls train / '
                    'learn.save (e.g. PATH/models/resnet34_224)')
    pr.add_argument('inputs', metavar='IMAGE_OR_FOLDER', nargs='+', help='images or folders')
    pr.add_argument('--csv', nargs='?', const='-', metavar='FILE',
                    help='write CSV (path,class,probability) to FILE, or to stdout without FILE')
    pr.add_argument('--bs', type=_positive_int, default=64, help='batch size (default 64)')
    pr.add_argument('--cam', metavar='OUT.png', help='also save the images (up to 16) with the '
                    'class activation map (Grad-CAM) of the predicted class overlaid')
    pr.set_defaults(func=_predict)

    it = sub.add_parser('interpret', help='confusion matrix, per-class report and plots of a '
                        "saved model's mistakes on a validation folder",
                        description='Load MODEL, predict PATH/valid/<class>/ images, print the '
                        'confusion matrix and the per-class report, and save plots (confusion '
                        'matrix, top losses, most incorrect images per class) under --out.')
    it.add_argument('model', metavar='MODEL', help='a model folder saved by jaxcls train / learn.save')
    it.add_argument('path', metavar='PATH', help='dataset folder holding the validation folder')
    it.add_argument('--valid-name', default='valid', metavar='NAME',
                    help='name of the validation folder inside PATH (default valid)')
    it.add_argument('--bs', type=_positive_int, default=64, help='batch size (default 64)')
    it.add_argument('--out', metavar='DIR', help=f'where plots go (default PATH/{OUT_DIRNAME})')
    it.add_argument('--cam', action='store_true', help='also save the top-loss and most-incorrect '
                    'images with class activation maps (Grad-CAM) overlaid')
    it.set_defaults(func=_interpret)

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
    d.set_defaults(func=_demo)
    return p


# ----------------------------------------------------------------------------- errors

def _fail(message: str) -> None:
    print(f'jaxcls: error: {_one_line(message)}', file=sys.stderr, flush=True)


def _one_line(text: str) -> str:
    return ' '.join(str(text).split())


def _user_error_types() -> tuple[type, ...]:
    from jaxcls.data.items import LayoutError
    from jaxcls.models.weights import UnsafePickleError, WeightsNotFoundError
    return (LayoutError, WeightsNotFoundError, UnsafePickleError, FileNotFoundError,
            NotADirectoryError, PermissionError, ValueError)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the library's complaints about what the user named into a UserError (exit 2)."""
    try:
        yield
    except UserError:
        raise
    except _user_error_types() as e:
        from jaxcls.models.weights import WeightsNotFoundError
        msg = str(e) or type(e).__name__
        if isinstance(e, WeightsNotFoundError):
            msg += ' Or pass --no-pretrained to start from random weights.'
        raise UserError(msg) from e


def _need_dir(path: str, what: str, fix: str) -> str:
    if not os.path.exists(path):
        raise UserError(f'{what} {path!r} does not exist; {fix}')
    if not os.path.isdir(path):
        raise UserError(f'{what} {path!r} is a file, not a folder; {fix}')
    return os.path.abspath(path)


# ----------------------------------------------------------------------------- helpers

def _out_dir(args: argparse.Namespace, path: str) -> str:
    """The output folder (checked, not yet created: nothing is written before the data loads)."""
    out = os.path.abspath(args.out) if args.out else os.path.join(path, OUT_DIRNAME)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f'--out {out!r} is a file; give a folder (it is created if missing)')
    return out


def _aug_tfms(aug: str):
    from jaxcls import transforms_basic, transforms_side_on, transforms_top_down
    return {'side_on': transforms_side_on, 'top_down': transforms_top_down,
            'basic': transforms_basic, 'none': None}[aug]


def _build_learner(args: argparse.Namespace, path: str):
    """(data, learner) from the shared model flags; user mistakes become UserError."""
    from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model
    if args.precompute and args.unfreeze:
        raise UserError('--precompute trains the head on stored activations of a frozen body, '
                        '--unfreeze trains the body too; use one of them')
    if args.weights is not None and not args.pretrained:
        raise UserError('--weights gives ImageNet weights but --no-pretrained asks for random '
                        'ones; drop one of them')
    if args.weights is not None and not os.path.isfile(args.weights):
        raise UserError(f'--weights {args.weights!r} is not a file; pass the path of a .pth or '
                        '.safetensors file')
    tfms = tfms_from_model(args.arch, args.sz, aug_tfms=_aug_tfms(args.aug),
                           max_zoom=args.max_zoom if args.max_zoom > 1 else None)
    with _user_errors():
        data = ImageClassifierData.from_paths(path, bs=args.bs, tfms=tfms, key=args.seed)
    for name, why in data.skipped[:5]:
        print(f'skipped {name}: {why}', file=sys.stderr)
    if len(data.skipped) > 5:
        print(f'... and {len(data.skipped) - 5} more files skipped', file=sys.stderr)
    with _user_errors():
        learn = ConvLearner.pretrained(args.arch, data, precompute=args.precompute,
                                       pretrained=args.pretrained, weights=args.weights,
                                       seed=args.seed)
    if args.unfreeze:
        learn.unfreeze()
    elif not args.pretrained:
        print('note: --no-pretrained without --unfreeze trains only the head on a random body; '
              'add --unfreeze to train every layer', file=sys.stderr)
    return data, learn


def _group_lrs(args: argparse.Namespace, lr: float):
    """One rate, or the lesson's lr/100, lr/10, lr when a pretrained body is unfrozen."""
    import numpy as np
    if args.unfreeze and args.pretrained:
        return np.array([lr / 100, lr / 10, lr])
    return lr


# ----------------------------------------------------------------------------- commands

def _train(args: argparse.Namespace) -> int:
    """jaxcls train: fit, save the model, the plots and summary.json."""
    from jaxcls import __version__
    from jaxcls.demo import save_interpretation, write_json
    from jaxcls.interpret import ClassificationInterpretation
    from jaxcls.train.learner import TrainingDiverged
    if args.cycle_mult != 1 and not args.cycle_len:
        raise UserError('--cycle-mult needs --cycle-len (SGDR cycles); add e.g. --cycle-len 1')
    t0 = time.time()
    path = _need_dir(args.path, 'dataset folder', 'pass the folder that holds train/ and valid/')
    out = _out_dir(args, path)
    data, learn = _build_learner(args, path)
    os.makedirs(out, exist_ok=True)
    t_model = time.time()
    lrs = _group_lrs(args, args.lr)
    try:
        history = learn.fit(lrs, args.epochs, cycle_len=args.cycle_len, cycle_mult=args.cycle_mult)
    except TrainingDiverged as e:
        raise UserError(f'{e} (jaxcls lr-find {args.path} suggests one; pass it as --lr)') from e
    t_fit = time.time()
    name = args.name or f'{args.arch}_{args.sz}'
    with _user_errors():
        model_dir = learn.save(name)
    plots = {'lr': os.path.join(out, 'lr.png'), 'loss': os.path.join(out, 'loss.png')}
    learn.sched.plot_lr(fname=plots['lr'])
    learn.sched.plot_loss(fname=plots['loss'])
    interp = ClassificationInterpretation.from_learner(learn)
    plots.update(save_interpretation(interp, out, per_class=False))
    _close_figures()
    summary_path = os.path.join(out, 'summary.json')
    final = history[-1] if history else {}
    summary = {
        'command': 'train', 'jaxcls': __version__, 'path': path,
        'classes': data.classes, 'n_train': len(data.trn_ds), 'n_valid': len(data.val_ds),
        'skipped': [list(s) for s in data.skipped],
        'settings': {'arch': args.arch, 'sz': args.sz, 'bs': args.bs, 'lr': args.lr,
                     'lrs': lrs, 'epochs': args.epochs, 'cycle_len': args.cycle_len,
                     'cycle_mult': args.cycle_mult, 'aug': args.aug, 'max_zoom': args.max_zoom,
                     'precompute': args.precompute, 'unfreeze': args.unfreeze,
                     'pretrained': args.pretrained, 'weights': args.weights, 'seed': args.seed},
        'history': history,
        'final': {'val_loss': final.get('val_loss'), 'accuracy': interp.accuracy()},
        'confusion_matrix': interp.confusion_matrix(),
        'timing': {'data_and_model_s': t_model - t0, 'fit_s': t_fit - t_model,
                   'total_s': time.time() - t0},
        'outputs': {'model': model_dir, 'summary': summary_path, 'plots': plots},
    }
    write_json(summary_path, summary)
    print(f'validation accuracy {interp.accuracy():.4f} on {len(data.val_ds)} images')
    print(f'model:   {model_dir}')
    print(f'plots:   {", ".join(sorted(os.path.basename(p) for p in plots.values()))} in {out}')
    print(f'summary: {summary_path}')
    return 0


def _lr_find(args: argparse.Namespace) -> int:
    """jaxcls lr-find: the range test, its plot, and the suggested rate."""
    if args.end_lr <= args.start_lr:
        raise UserError(f'--end-lr {args.end_lr:g} must be above --start-lr {args.start_lr:g}')
    path = _need_dir(args.path, 'dataset folder', 'pass the folder that holds train/ and valid/')
    out = _out_dir(args, path)
    _, learn = _build_learner(args, path)
    os.makedirs(out, exist_ok=True)
    sug = learn.lr_find(start_lr=args.start_lr, end_lr=args.end_lr, num_it=args.num_it)
    plot = os.path.join(out, 'lr_find.png')
    learn.sched.plot(fname=plot)
    _close_figures()
    print(f'plot: {plot}')
    if not sug:
        print('too few iterations to suggest a rate; pass --num-it 100 (or more images)')
        return 1
    print(f"suggested learning rate: {sug['valley']:.2e}  (then: jaxcls train {args.path} "
          f"--lr {sug['valley']:.2g} ...)")
    return 0


def _image_list(inputs: Sequence[str]) -> list[str]:
    """The files named, and every image file below the folders named, in the order given."""
    from jaxcls.data.items import list_images
    files: list[str] = []
    for p in inputs:
        if os.path.isdir(p):
            found, _ = list_images(p)
            if not found:
                raise UserError(f'folder {p!r} holds no image files; pass images or folders of them')
            files += [os.path.join(p, f) for f in found]
        elif os.path.exists(p):
            files.append(p)
        else:
            raise UserError(f'{p!r} does not exist; pass image files or folders of images')
    return files


_NOT_A_MODEL = ('is not a jaxcls model folder; pass a folder saved by jaxcls train or '
                'learn.save(name), e.g. PATH/models/resnet34_224')


def _checkpoint_meta(model: str) -> tuple[str, dict]:
    """(absolute folder, saved description) of a model folder; UserError if it is not one."""
    from jaxcls.train.checkpoint import load_meta
    folder = _need_dir(model, 'model folder', 'pass a folder saved by jaxcls train or '
                       'learn.save(name), e.g. PATH/models/resnet34_224')
    try:
        meta = load_meta(folder)
    except (KeyError, ValueError, OSError) as e:  # what Orbax raises for a foreign folder
        raise UserError(f'{model!r} {_NOT_A_MODEL}') from e
    need = ('arch_spec', 'head', 'sz', 'cache_size', 'classes', 'stages', 'val_tfms')
    if not isinstance(meta, dict) or any(k not in meta for k in need):
        raise UserError(f'{model!r} {_NOT_A_MODEL} (an older one? save it again with this '
                        'version of jaxcls)')
    return folder, meta


def _load_predictor(model: str):
    from jaxcls.train.inference import Predictor
    folder, _ = _checkpoint_meta(model)
    with _user_errors():
        return Predictor.load(folder)


def _predict(args: argparse.Namespace) -> int:
    """jaxcls predict: one line (or CSV row) per image."""
    import csv
    import numpy as np
    files = _image_list(args.inputs)
    pred = _load_predictor(args.model)
    probs, kept, skipped = pred.predict_files(files, bs=args.bs)
    for p, why in skipped:
        print(f'jaxcls: skipped {p}: {_one_line(why)}', file=sys.stderr)
    rows = []
    for path, pr in zip(kept, probs):
        if pred.is_multi:
            idx = [int(i) for i in np.flatnonzero(pr > 0.5)]
            rows.append((path, ' '.join(pred.classes[i] for i in idx),
                         ' '.join(f'{pr[i]:.4f}' for i in idx)))
        else:
            i = int(np.argmax(pr))
            rows.append((path, pred.classes[i], f'{pr[i]:.4f}'))
    if args.csv is not None:
        f = sys.stdout if args.csv == '-' else open(args.csv, 'w', newline='')
        try:
            w = csv.writer(f)
            w.writerow(['path', 'class', 'probability'])
            w.writerows(rows)
        finally:
            if f is not sys.stdout:
                f.close()
        if args.csv != '-':
            print(f'wrote {len(rows)} predictions to {args.csv}')
    else:
        width = max([len(r[0]) for r in rows] + [0])
        for path, cls, prob in rows:
            print(f'{path:<{width}}  {cls}  {prob}')
    if args.cam and kept:
        _save_predict_cam(pred, kept[:16], probs[:16], args.cam)
        print(f'class activation maps of {min(len(kept), 16)} images: {args.cam}')
    if skipped:
        print(f'jaxcls: {len(skipped)} of {len(files)} files could not be read', file=sys.stderr)
    return 0 if rows else 1


def _save_predict_cam(pred, paths, probs, fname: str) -> None:
    """A grid of the images as the model sees them, the predicted class's Grad-CAM overlaid."""
    import numpy as np
    from jaxcls import plots
    from jaxcls.data import transforms as T
    from jaxcls.data.decode import decode_image
    x = np.stack([decode_image(p, pred.cache_size) for p in paths])
    cls = np.argmax(probs, 1)
    maps = pred.heatmaps(x, cls)
    shown = T.denorm(np.asarray(T.val_transform(x, pred.tfm)), pred.tfm)
    titles = [f'{pred.classes[c]} {p[c]:.2f}\n{os.path.basename(f)}' for c, p, f in zip(cls, probs, paths)]
    plots.plot_images(shown, titles, rows=max(1, int(np.ceil(len(paths) / 4))), heatmaps=maps,
                      fname=fname)
    _close_figures()


def _learner_for_checkpoint(model: str, path: str, valid_name: str, bs: int):
    """A learner shaped like the checkpoint at `model`, on PATH's validation images, restored.

    The network is rebuilt from the checkpoint's own description (arch_spec, head,
    xtra_cut, sz, cache size, class list), never from flags, so it always fits
    the saved arrays. The validation folder is read as both the training and the
    validation split (interpretation needs no training images, and nothing is
    decoded twice). The weights are restored with `learn.load`, which takes a name
    relative to {PATH}/models: a model saved elsewhere is reached through a relative
    path, so nothing is copied or linked into the dataset folder.
    """
    from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model
    from jaxcls.archs import ArchSpec
    model, meta = _checkpoint_meta(model)
    path = _need_dir(path, 'dataset folder', f'pass the folder that holds {valid_name}/')
    head = meta['head']
    if 'custom_head' in head:
        raise UserError(f'{model} has a custom head ({head["custom_head"]}); rebuild that learner '
                        'in Python and use learn.load(name)')
    spec = ArchSpec.from_json(meta['arch_spec'])
    tfms = tfms_from_model(spec, int(meta['sz']))
    with _user_errors():
        data = ImageClassifierData.from_paths(path, bs=bs, tfms=tfms, trn_name=valid_name,
                                              val_name=valid_name,
                                              cache_size=int(meta['cache_size']), quiet=True)
    if list(data.classes) != list(meta['classes']):
        raise UserError(f'{model} was trained on the classes {meta["classes"]} but '
                        f'{os.path.join(path, valid_name)} has {data.classes}; interpret it on '
                        'a folder with the same class subfolders')
    learn = ConvLearner.pretrained(spec, data, pretrained=False, quiet=True,
                                   xtra_fc=head.get('xtra_fc'), ps=head.get('ps'),
                                   xtra_cut=int(head.get('xtra_cut', 0)))
    with _user_errors():
        learn.load(os.path.relpath(model, os.path.join(path, 'models')))
    return data, learn


def _format_cm(cm, classes: Sequence[str]) -> str:
    """The confusion matrix as text: rows actual, columns predicted."""
    labels = [str(c) for c in classes]
    w = max([len(lb) for lb in labels] + [len(str(int(cm.max()))) if cm.size else 1, 6])
    lines = ['actual \\ predicted',
             ' ' * w + ' ' + ' '.join(f'{lb:>{w}}' for lb in labels)]
    for lb, row in zip(labels, cm):
        lines.append(f'{lb:>{w}} ' + ' '.join(f'{int(v):>{w}}' for v in row))
    return '\n'.join(lines)


def _interpret(args: argparse.Namespace) -> int:
    """jaxcls interpret: confusion matrix, report and plots of a saved model on a valid folder."""
    from jaxcls.demo import save_interpretation
    from jaxcls.interpret import ClassificationInterpretation
    data, learn = _learner_for_checkpoint(args.model, args.path, args.valid_name, args.bs)
    out = _out_dir(args, os.path.abspath(args.path))
    os.makedirs(out, exist_ok=True)
    interp = ClassificationInterpretation.from_learner(learn)
    plots = save_interpretation(interp, out, cam=args.cam)
    _close_figures()
    print(f'{len(interp)} images in {os.path.join(data.path, args.valid_name)}, '
          f'accuracy {interp.accuracy():.4f}')
    if not interp.is_multi:
        print(_format_cm(interp.confusion_matrix(), interp.classes))
        confused = interp.most_confused(min_val=1)[:10]
        if confused:
            print('most confused (actual -> predicted, count): ' +
                  ', '.join(f'{a} -> {p} {n}' for a, p, n in confused))
    print()
    print(interp.report())
    print()
    print(f'plots: {", ".join(sorted(os.path.basename(p) for p in plots.values()))} in {out}')
    return 0


def _demo(args: argparse.Namespace) -> int:
    """jaxcls demo: the digits, the lesson workflow, a summary."""
    from jaxcls.demo import run_demo
    if args.data is not None and os.path.exists(args.data) and not os.path.isdir(args.data):
        raise UserError(f'--data {args.data!r} is a file; give a folder (it is created if missing)')
    if args.out is not None and os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f'--out {args.out!r} is a file; give a folder (it is created if missing)')
    if args.pretrained:
        from jaxcls.models.weights import find_weights
        with _user_errors():  # asked for ImageNet weights: they must be here (no download)
            find_weights(args.arch, download=False)
    run_demo(out=args.out, data_dir=args.data, epochs=args.epochs, arch=args.arch, sz=args.sz,
             lr=args.lr, pretrained=args.pretrained, seed=args.seed)
    return 0


def _close_figures() -> None:
    if 'matplotlib.pyplot' in sys.modules:
        sys.modules['matplotlib.pyplot'].close('all')


# ----------------------------------------------------------------------------- entry point

def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the `jaxcls` command; returns the exit status (0 ok, 2 user mistake)."""
    args = build_parser().parse_args(argv)
    from jaxcls import compile_cache
    compile_cache.enable()  # a second run of the same command skips XLA compilation
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        _fail(str(e))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print('jaxcls: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
