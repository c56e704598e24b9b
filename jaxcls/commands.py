"""The `jaxcls` command's commands: train, lr-find, predict, interpret and demo.

Each is the Python workflow (`ImageClassifierData.from_paths`, `ConvLearner.pretrained`,
`fit`, ...) with its arguments taken from the parsed flags (jaxcls.cli builds the parser).
A user mistake becomes a `UserError`, which `jaxcls.cli.main` prints as one line and exits
with status 2. Library errors are turned into that line only around the calls that read
what the user named (folders, weight files, checkpoints), so a bug elsewhere still shows its
traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import sys
import time
from typing import Iterator, Sequence

from jaxcls.interrupts import Guard

EXIT_USAGE = 2
OUT_DIRNAME = 'jaxcls-out'


class UserError(Exception):
    """A mistake in what the user asked for; `main` prints it as one line and exits 2."""



# ----------------------------------------------------------------------------- errors

def fail(message: str) -> None:
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


def _guard(args: argparse.Namespace, path: str, *more: str) -> Guard:
    """The run's Ctrl-C guard, told which folders a cut-short write may leave files in (the
    decode and precompute caches, the models folder, and `more`)."""
    guard = getattr(args, 'guard', None) or Guard()
    guard.sweep = [os.path.join(path, 'tmp'), os.path.join(path, 'tmp', 'precompute'),
                   os.path.join(path, 'models'), *more]
    return guard


def _build_learner(args: argparse.Namespace, path: str):
    """(data, learner) from the shared model flags; user mistakes become UserError."""
    from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model
    if args.precompute and args.unfreeze:
        raise UserError('--precompute trains the head on stored activations of a frozen body, '
                        '--unfreeze trains the body too; use one of them')
    if args.precompute and (args.mixup or args.cutmix):
        raise UserError('--mixup and --cutmix mix images; --precompute trains the head on stored '
                        'activations of unmixed images; use one of them')
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
                                       seed=args.seed, mixup=args.mixup, cutmix=args.cutmix,
                                       label_smoothing=args.label_smoothing, ema=args.ema,
                                       accumulate=args.accumulate)
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

def train(args: argparse.Namespace) -> int:
    """jaxcls train: fit, save the model, the plots and summary.json."""
    from jaxcls import __version__
    from jaxcls.demo import save_interpretation, write_json
    from jaxcls.interpret import ClassificationInterpretation
    from jaxcls.train.learner import TrainingDiverged
    from jaxcls.train.memory import OutOfDeviceMemory
    from jaxcls.train.resume import ModelCheckpoint, ResumeMismatch
    if args.cycle_mult != 1 and not args.cycle_len:
        raise UserError('--cycle-mult needs --cycle-len (SGDR cycles); add e.g. --cycle-len 1')
    t0 = time.time()
    path = _need_dir(args.path, 'dataset folder', 'pass the folder that holds train/ and valid/')
    out = _out_dir(args, path)
    name = args.name or f'{args.arch}_{args.sz}'
    ck_dir = os.path.join(path, 'models', f'{name}-checkpoints')
    _check_resume(args, ck_dir)
    guard = _guard(args, path, ck_dir)
    guard.message = lambda: _interrupted_line(args, ck_dir)
    data, learn = _build_learner(args, path)
    os.makedirs(out, exist_ok=True)
    t_model = time.time()
    lrs = _group_lrs(args, args.lr)
    ck = ModelCheckpoint(ck_dir, keep=2)
    try:
        history = learn.fit(lrs, args.epochs, cycle_len=args.cycle_len,
                            cycle_mult=args.cycle_mult, checkpoint=ck, resume=args.resume)
    except ResumeMismatch as e:
        raise UserError(f'--resume: {e}') from e
    except OutOfDeviceMemory as e:
        raise UserError(f'{e} -- on the command line: --bs {e.bs}' if e.bs else str(e)) from e
    except TrainingDiverged as e:
        raise UserError(f'{e} (jaxcls lr-find {args.path} suggests one; pass it as --lr)') from e
    t_fit = time.time()
    with _user_errors():
        model_dir = learn.save(name)
    ck.close()
    shutil.rmtree(ck_dir, ignore_errors=True)    # the run is complete: its model is saved
    guard.message = lambda: f'the model was saved to {model_dir}; the plots were not all written'
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


def _resume_command(args: argparse.Namespace) -> str:
    argv = [a for a in getattr(args, 'argv', None) or sys.argv[1:] if a != '--resume']
    return shlex.join(['jaxcls', *argv, '--resume'])


def _check_resume(args: argparse.Namespace, ck_dir: str) -> None:
    """--resume needs the checkpoints of an interrupted run; a fresh run must not meet them."""
    from jaxcls.interrupts import complete_steps
    steps = complete_steps(ck_dir)
    if args.resume and not steps:
        raise UserError(f'--resume: {ck_dir} holds no checkpoint of an interrupted run; run '
                        f'without --resume to start (the same flags and --name as that run '
                        f'find its checkpoints)')
    if not args.resume and steps:
        raise UserError(f'{ck_dir} holds the checkpoints of an interrupted run (last: step '
                        f'{steps[-1]}); continue it with: {_resume_command(args)} -- or delete '
                        f'the folder to start over')


def _interrupted_line(args: argparse.Namespace, ck_dir: str) -> str:
    """What an interrupted `jaxcls train` says it saved, and how to go on."""
    from jaxcls.interrupts import complete_steps
    steps = complete_steps(ck_dir)
    if not steps:
        return ('no checkpoint was complete yet, nothing to resume; run the command again to '
                'start over')
    return (f'the last complete checkpoint is step {steps[-1]} in {ck_dir}; resume with: '
            f'{_resume_command(args)}')


def lr_find(args: argparse.Namespace) -> int:
    """jaxcls lr-find: the range test, its plot, and the suggested rate."""
    if args.end_lr <= args.start_lr:
        raise UserError(f'--end-lr {args.end_lr:g} must be above --start-lr {args.start_lr:g}')
    path = _need_dir(args.path, 'dataset folder', 'pass the folder that holds train/ and valid/')
    out = _out_dir(args, path)
    _guard(args, path)
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


def _checkpoint_meta(model: str) -> tuple[str, dict]:
    """(absolute path, saved description) of a model folder or an exported model file;
    UserError if it is neither."""
    from jaxcls.train import modelfile
    if os.path.isfile(model):
        folder = os.path.abspath(model)
    else:
        folder = _need_dir(model, 'model folder', 'pass a folder saved by jaxcls train or '
                           'learn.save(name), e.g. PATH/models/resnet34_224, or a file from '
                           'learn.export(name)')
    try:
        return folder, modelfile.read(folder)
    except modelfile.ModelFileError as e:
        raise UserError(str(e)) from e


def _load_predictor(model: str):
    from jaxcls.train.inference import Predictor
    folder, _ = _checkpoint_meta(model)
    with _user_errors():
        return Predictor.load(folder)


def predict(args: argparse.Namespace) -> int:
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


def interpret(args: argparse.Namespace) -> int:
    """jaxcls interpret: confusion matrix, report and plots of a saved model on a valid folder."""
    from jaxcls.demo import save_interpretation
    from jaxcls.interpret import ClassificationInterpretation
    if args.html and os.path.isdir(args.html):
        raise UserError(f'--html {args.html!r} is a folder; give a file name, e.g. report.html')
    data, learn = _learner_for_checkpoint(args.model, args.path, args.valid_name, args.bs)
    out = _out_dir(args, os.path.abspath(args.path))
    os.makedirs(out, exist_ok=True)
    interp = ClassificationInterpretation.from_learner(learn)
    plots = save_interpretation(interp, out, cam=args.cam)
    if args.html:
        from jaxcls import htmlpage, report
        model = os.path.abspath(args.model)
        search = [out, os.path.join(data.path, OUT_DIRNAME),
                  os.path.join(os.path.dirname(os.path.dirname(model)), OUT_DIRNAME)]
        with _user_errors():
            page = report.model_report(interp, model, search=search, summary_file=args.summary,
                                       k=args.top, where=os.path.join(data.path, args.valid_name))
            report_path = htmlpage.write(args.html, page)
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
    if args.html:
        print(f'report: {report_path}')
    return 0


def demo(args: argparse.Namespace) -> int:
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
