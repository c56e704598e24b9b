"""The `jaxcls` command: help, train -> predict / interpret / lr-find on a tiny folder dataset,
and one-line errors (status 2, no traceback) for user mistakes.

Commands run in-process through `jaxcls.cli.main` (one JAX start-up for the file);
one test runs the installed entry point in a subprocess.
"""
import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxcls.cli import main

from helpers import HtmlPage, make_folder

TRAIN_FLAGS = ['--arch', 'resnet18', '--sz', '32', '--bs', '8', '--no-pretrained']


def run(argv):
    """(exit status, stdout, stderr) of `jaxcls *argv`, in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse: --help (0) and bad command lines (2)
            rc = e.code if isinstance(e.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope='module')
def path(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp('cli') / 'pets', n_train=12, n_valid=6)


@pytest.fixture(scope='module')
def trained(path, tmp_path_factory):
    out = tmp_path_factory.mktemp('train-out')
    rc, stdout, stderr = run(['train', path, *TRAIN_FLAGS, '--epochs', '2', '--precompute',
                              '--out', out])
    assert rc == 0, stderr
    return {'out': str(out), 'stdout': stdout, 'stderr': stderr,
            'summary': json.load(open(out / 'summary.json'))}


@pytest.mark.parametrize('command', [[], ['train'], ['lr-find'], ['predict'], ['interpret'],
                                     ['demo']])
def test_help(command):
    rc, out, _ = run([*command, '--help'])
    assert rc == 0
    assert out.startswith('usage: jaxcls')
    if command == ['train']:
        for flag in ('--arch', '--sz', '--bs', '--lr', '--epochs', '--precompute', '--aug',
                     '--max-zoom', '--cycle-len', '--unfreeze', '--weights', '--no-pretrained',
                     '--out'):
            assert flag in out


def test_train_saves_model_plots_and_summary(trained, path):
    s, out = trained['summary'], trained['out']
    assert 'trn_loss' in trained['stdout'] and 'validation accuracy' in trained['stdout']
    assert s['classes'] == ['cats', 'dogs'] and (s['n_train'], s['n_valid']) == (24, 12)
    assert [h['epoch'] for h in s['history']] == [0, 1]
    for h in s['history']:
        assert set(h) >= {'trn_loss', 'val_loss', 'accuracy', 'time'}
        assert np.isfinite(h['trn_loss']) and 0 <= h['accuracy'] <= 1
    cm = np.array(s['confusion_matrix'])
    assert cm.shape == (2, 2) and cm.sum() == 12
    assert s['final']['accuracy'] == pytest.approx(np.trace(cm) / 12)
    assert s['final']['accuracy'] == pytest.approx(s['history'][-1]['accuracy'])
    assert s['settings']['precompute'] and not s['settings']['pretrained']
    assert s['timing']['total_s'] > 0
    model = s['outputs']['model']
    assert model == os.path.join(path, 'models', 'resnet18_32')
    from jaxcls.train.checkpoint import load_meta
    assert load_meta(model)['classes'] == ['cats', 'dogs']
    assert set(s['outputs']['plots']) == {'lr', 'loss', 'confusion_matrix', 'top_losses'}
    for p in s['outputs']['plots'].values():
        assert os.path.dirname(p) == out and os.path.getsize(p) > 1000
    assert s['outputs']['summary'] == os.path.join(out, 'summary.json')


def test_predict_prints_one_line_per_file_and_reports_bad_files(trained, path, tmp_path):
    model = trained['summary']['outputs']['model']
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'not a jpeg at all')
    one = os.path.join(path, 'valid', 'cats', 'cats.0.png')
    rc, out, err = run(['predict', model, one, bad, os.path.join(path, 'valid', 'dogs')])
    assert rc == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1 + 6                       # one cat, the six dogs; not the bad file
    assert lines[0].split()[0] == one
    for line in lines:
        fname, cls, prob = line.split()
        assert os.path.isfile(fname) and cls in ('cats', 'dogs')
        assert 0.5 <= float(prob) <= 1.0             # the arg-max of two classes
    assert 'broken.jpg' in err and 'broken.jpg' not in out
    # the same numbers as the library's Predictor
    from jaxcls.train.inference import Predictor
    probs, kept, _ = Predictor.load(model).predict_files([one])
    assert float(lines[0].split()[2]) == pytest.approx(probs[0].max(), abs=1e-4)


def test_predict_csv(trained, path, tmp_path):
    model = trained['summary']['outputs']['model']
    rc, out, _ = run(['predict', model, os.path.join(path, 'valid'), '--csv'])
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 12 and set(rows[0]) == {'path', 'class', 'probability'}
    assert {r['class'] for r in rows} <= {'cats', 'dogs'}
    assert all(0.5 <= float(r['probability']) <= 1 for r in rows)
    dest = tmp_path / 'preds.csv'
    rc, out, _ = run(['predict', model, os.path.join(path, 'valid'), '--csv', dest])
    assert rc == 0 and 'wrote 12 predictions' in out
    assert list(csv.DictReader(open(dest))) == rows


def test_interpret_prints_confusion_matrix_and_report(trained, path, tmp_path):
    # a copy outside the dataset folder: learn.load reaches it through a relative name
    model = shutil.copytree(trained['summary']['outputs']['model'], tmp_path / 'elsewhere' / 'm')
    out_dir = tmp_path / 'plots'
    rc, out, err = run(['interpret', model, path, '--out', out_dir])
    assert rc == 0, err
    lines = out.splitlines()
    i = lines.index('actual \\ predicted')
    assert lines[i + 1].split() == ['cats', 'dogs']
    cm = np.array([[int(v) for v in lines[i + k].split()[1:]] for k in (2, 3)])
    # the same model on the same images: the matrix train saved
    assert cm.tolist() == trained['summary']['confusion_matrix']
    assert f"accuracy {np.trace(cm) / 12:.4f}" in lines[0]
    assert 'precision' in out and 'f1-score' in out
    assert os.path.getsize(out_dir / 'confusion_matrix.png') > 1000
    assert os.path.getsize(out_dir / 'top_losses.png') > 1000
    assert not (out_dir / 'top_losses_cam.png').exists()
    for k, c in enumerate(['cats', 'dogs']):
        assert (out_dir / f'most_incorrect_{c}.png').is_file() == (cm[k].sum() > cm[k, k])
    assert not os.path.exists(os.path.join(path, 'models', 'm'))  # nothing copied or linked


def test_cam_overlays_from_the_command_line(trained, path, tmp_path):
    model = trained['summary']['outputs']['model']
    rc, out, err = run(['interpret', model, path, '--out', tmp_path / 'p', '--cam'])
    assert rc == 0, err
    assert os.path.getsize(tmp_path / 'p' / 'top_losses_cam.png') > 1000
    png = tmp_path / 'cam.png'
    rc, out, err = run(['predict', model, os.path.join(path, 'valid', 'dogs'), '--cam', png])
    assert rc == 0, err
    assert 'class activation maps of 6 images' in out and os.path.getsize(png) > 1000


def test_lr_find_saves_plot_and_prints_a_rate(path, tmp_path):
    rc, out, err = run(['lr-find', path, *TRAIN_FLAGS, '--precompute', '--num-it', '30',
                        '--out', tmp_path])
    assert rc == 0, err
    line = [ln for ln in out.splitlines() if ln.startswith('suggested learning rate:')]
    assert len(line) == 1
    assert 1e-5 <= float(line[0].split()[3]) <= 10
    assert os.path.getsize(tmp_path / 'lr_find.png') > 1000


def _mistakes(path, model_like):
    return {
        'missing folder': ['train', os.path.join(path, 'nope'), *TRAIN_FLAGS],
        'unknown arch': ['train', path, '--arch', 'resnet99'],
        'bad --aug': ['train', path, '--aug', 'sideways'],
        'bad --lr': ['train', path, '--lr', '-1'],
        'bad --max-zoom': ['lr-find', path, '--max-zoom', '0.5'],
        'no train folder': ['train', os.path.join(path, 'valid'), *TRAIN_FLAGS],
        'precompute and unfreeze': ['train', path, '--precompute', '--unfreeze'],
        'predict with a non-checkpoint MODEL': ['predict', model_like,
                                                os.path.join(path, 'valid')],
        'interpret with a non-checkpoint MODEL': ['interpret', model_like, path],
        'predict a missing file': ['predict', model_like, os.path.join(path, 'nope.png')],
        'missing weights file': ['train', path, '--weights', os.path.join(path, 'nope.pth')],
    }


@pytest.mark.parametrize('case', list(_mistakes('P', 'M')))
def test_user_mistakes_are_one_line_and_status_2(case, path, tmp_path):
    not_a_model = tmp_path / 'not-a-model'
    not_a_model.mkdir()
    (not_a_model / 'notes.txt').write_text('hello')
    rc, out, err = run(_mistakes(path, not_a_model)[case])
    assert rc == 2
    assert err.startswith('jaxcls: error: ') and err.count('\n') == 1, err
    assert 'Traceback' not in err
    # nothing was written into a folder the command rejected
    assert sorted(os.listdir(os.path.join(path, 'valid'))) == ['cats', 'dogs']


def test_entry_point_error_in_a_subprocess(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), 'jaxcls')
    cmd = [exe] if os.path.exists(exe) else [sys.executable, '-m', 'jaxcls.cli']
    p = subprocess.run(cmd + ['train', str(tmp_path / 'missing')], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"jaxcls: error: dataset folder '{tmp_path / 'missing'}' does not exist; pass the "
        'folder that holds train/ and valid/']


def test_train_refuses_a_one_class_folder(tmp_path):
    for split in ('train', 'valid'):
        os.makedirs(tmp_path / split / 'cats')
        for i in range(2):
            Image.new('RGB', (12, 12), (40 * i, 0, 0)).save(tmp_path / split / 'cats' / f'{i}.png')
    rc, out, err = run(['train', tmp_path, *TRAIN_FLAGS])
    assert rc == 2, err
    assert err.startswith("jaxcls: error: train/ has one class, 'cats'; a classifier needs two")
    assert err.count('\n') == 1 and 'Traceback' not in err
    assert sorted(os.listdir(tmp_path)) == ['train', 'valid']     # nothing decoded or saved


def test_interpret_html_report_of_a_trained_run(trained, path, tmp_path):
    """--html finds the run's summary.json (in --out) and lr-find's plot beside it, and
    inlines everything: parsed with the standard library's html.parser."""
    import base64
    out = shutil.copytree(trained['out'], tmp_path / 'out')
    rc, _, err = run(['lr-find', path, *TRAIN_FLAGS, '--precompute', '--num-it', '30', '--out', out])
    assert rc == 0, err
    model, report = trained['summary']['outputs']['model'], tmp_path / 'report.html'
    rc, stdout, err = run(['interpret', model, path, '--out', out, '--html', report])
    assert rc == 0, err
    page = HtmlPage(report.read_text())
    assert page.sections == ['epochs', 'lr-find', 'accuracy', 'confusion-matrix', 'top-losses',
                             'most-confused']
    tables = dict(page.tables)
    epochs = tables['epochs']
    assert epochs[0][:3] == ['epoch', 'trn_loss', 'val_loss'] and len(epochs) == 3
    for row, h in zip(epochs[1:], trained['summary']['history']):
        assert int(row[0]) == h['epoch'] and float(row[2]) == pytest.approx(h['val_loss'], abs=1e-4)
    cm = np.array(trained['summary']['confusion_matrix'])
    assert [[int(v) for v in r[1:]] for r in tables['confusion-matrix'][1:]] == cm.tolist()
    pairs = [(a, p, str(cm[i, j])) for i, a in enumerate(['cats', 'dogs'])
             for j, p in enumerate(['cats', 'dogs']) if i != j and cm[i, j]]
    got = [tuple(r) for r in tables.get('most-confused', [])[1:]]
    assert sorted(got) == sorted(pairs)
    # lr_find, the matrix, and each of the 9 top losses as seen and with its Grad-CAM
    assert len(page.imgs) == 1 + 1 + 2 * 9 and not page.external
    for src in page.imgs:
        head, data = src.split(',', 1)
        assert head == 'data:image/png;base64' and base64.b64decode(data)[:4] == b'\x89PNG'
    assert stdout.splitlines()[-1] == f'report: {report}'
