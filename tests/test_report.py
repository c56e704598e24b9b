"""The interpretation report from arrays (no model, no jax): which summary.json and lr_find
plot it takes, its sections, tables and inlined images, parsed with html.parser. The report
of a real `jaxcls train` run, with Grad-CAM, is in tests/e2e/test_cli.py."""
import base64
import contextlib
import io
import json

import numpy as np
import pytest

from jaxcls import htmlpage, report
from jaxcls.cli import main
from jaxcls.interpret import ClassificationInterpretation

from helpers import HtmlPage

PROBS = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
TARGS = np.array([0, 0, 1, 1, 1])
HISTORY = [{'epoch': 0, 'trn_loss': 0.7, 'val_loss': 0.61, 'accuracy': 0.6, 'time': 1.5},
           {'epoch': 1, 'trn_loss': 0.5, 'val_loss': 0.42, 'accuracy': 0.8, 'time': 1.2}]


@pytest.fixture
def interp():
    images = np.random.default_rng(0).integers(0, 255, (5, 12, 12, 3), np.uint8)
    return ClassificationInterpretation(PROBS, TARGS, ['cats', 'dogs'], images=images,
                                        fnames=[f'valid/x/{i}.png' for i in range(5)])


def _images(page):
    for src in page.imgs:
        head, data = src.split(',', 1)
        assert head == 'data:image/png;base64' and base64.b64decode(data)[:4] == b'\x89PNG'
    return len(page.imgs)


def test_report_takes_the_summary_that_names_the_model(interp, tmp_path):
    model = tmp_path / 'pets' / 'models' / 'm'
    other, mine = tmp_path / 'other', tmp_path / 'pets' / 'jaxcls-out'
    for folder, saved in ((other, tmp_path / 'x'), (mine, model)):
        folder.mkdir(parents=True)
        (folder / 'summary.json').write_text(json.dumps({
            'history': HISTORY, 'settings': {'arch': 'resnet34', 'sz': 224, 'precompute': True},
            'outputs': {'model': str(saved)}}))
    (mine / 'lr_find.png').write_bytes(htmlpage.image_bytes(np.zeros((4, 4, 3), np.uint8)))
    page = HtmlPage(report.model_report(interp, str(model), search=[other, mine], k=3))
    assert page.sections == list(report.SECTIONS) and not page.external
    tables = dict(page.tables)
    assert tables['epochs'] == [['epoch', 'trn_loss', 'val_loss', 'accuracy', 'time'],
                                ['0', '0.7000', '0.6100', '0.6000', '1.5000'],
                                ['1', '0.5000', '0.4200', '0.8000', '1.2000']]
    assert tables['confusion-matrix'] == [['actual \\ predicted', 'cats', 'dogs'],
                                          ['cats', '1', '1'], ['dogs', '1', '2']]
    assert tables['most-confused'] == [['actual', 'predicted', 'images'], ['cats', 'dogs', '1'],
                                       ['dogs', 'cats', '1']]
    # lr_find, the confusion matrix, the 3 top losses (no Grad-CAM without the model)
    assert _images(page) == 1 + 1 + 3
    assert len(page.cards) == 3


def test_report_says_what_is_missing_and_how_to_get_it(interp, tmp_path):
    other = tmp_path / 'out'
    other.mkdir()
    (other / 'summary.json').write_text(json.dumps({'outputs': {'model': '/elsewhere'}}))
    text = report.model_report(interp, str(tmp_path / 'm'), search=[other, tmp_path / 'none'], k=2)
    page = HtmlPage(text)
    assert page.sections == list(report.SECTIONS) and _images(page) == 1 + 2
    assert f"{other / 'summary.json'} name(s) another model" in text
    assert 'pass it with --summary FILE' in text and 'jaxcls lr-find PATH saves one' in text
    assert 'no Grad-CAM: heatmaps need the model' in text
    # --summary FILE is taken as given, lr_find.png beside it
    given = tmp_path / 'given.json'
    given.write_text(json.dumps({'history': HISTORY[:1]}))
    page = HtmlPage(report.model_report(interp, str(tmp_path / 'm'), summary_file=str(given), k=2))
    assert len(dict(page.tables)['epochs']) == 2
    given.write_text('{not json')
    with pytest.raises(ValueError, match='is not JSON'):
        report.model_report(interp, str(tmp_path / 'm'), summary_file=str(given))


def test_html_into_a_folder_is_refused_before_any_work(tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(['interpret', str(tmp_path / 'm'), str(tmp_path), '--html', str(tmp_path)])
    assert rc == 2 and 'is a folder; give a file name, e.g. report.html' in err.getvalue()
