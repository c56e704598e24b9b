"""The interpretation report: one self-contained HTML file of how a model was trained and what
it gets wrong (`jaxcls interpret MODEL PATH --html report.html`).

Sections, each with an id: ``epochs`` (the epoch table of the run that trained the model,
from its summary.json), ``lr-find`` (the range test's plot, when one was saved), ``accuracy``
(the per-class report), ``confusion-matrix``, ``top-losses`` (each image as the model saw it
beside its Grad-CAM overlay for the predicted class) and ``most-confused`` (the pairs). A
section whose source is missing says so and how to get it. Every picture is inlined (PNG
data URIs): the figures are drawn by :mod:`jaxcls.plots` into memory, the images are
encoded by :mod:`jaxcls.htmlpage`.

    >>> interp = learn.interpretation()                                     # doctest: +SKIP
    >>> htmlpage.write('report.html', interpretation_report(interp, title='pets'))  # doctest: +SKIP
"""
from __future__ import annotations

import io
import json
import os
from typing import Any, Optional, Sequence

from jaxcls import htmlpage as H
from jaxcls import plots

__all__ = ['SECTIONS', 'find_summary', 'lr_find_plot', 'interpretation_report', 'model_report']

SECTIONS = ('epochs', 'lr-find', 'accuracy', 'confusion-matrix', 'top-losses', 'most-confused')


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def find_summary(model: str, candidates: Sequence[str]) -> tuple[Optional[dict], str]:
    """(the summary.json of the run that saved `model`, where it was), or (None, why not):
    the first candidate file that exists, reads as JSON and names `model` as its output."""
    tried = []
    for c in candidates:
        if not c or not os.path.isfile(c) or any(_same_file(c, t) for t in tried):
            continue
        tried.append(c)
        try:
            with open(c, encoding='utf-8') as f:
                s = json.load(f)
        except (OSError, ValueError):
            continue
        saved = (s.get('outputs') or {}).get('model') if isinstance(s, dict) else None
        if saved and _same_file(saved, model):
            return s, c
    looked = (f'{", ".join(tried)} name(s) another model' if tried else
              f'there is none at {", ".join(c for c in candidates if c)}')
    return None, (f'no summary.json of the run that trained {model} was found ({looked}); '
                  'jaxcls train writes one into its --out folder; pass it with --summary FILE')


def lr_find_plot(summary: Optional[dict], summary_path: Optional[str],
                 extra: Sequence[str] = ()) -> tuple[Optional[bytes], str]:
    """(PNG bytes, where) of the lr_find plot the run saved (the summary's plots, or
    lr_find.png beside the summary or in `extra` folders), or (None, why not)."""
    places = [((summary or {}).get('outputs') or {}).get('plots', {}).get('lr_find')]
    places += [os.path.join(os.path.dirname(summary_path), 'lr_find.png')] if summary_path else []
    places += [os.path.join(d, 'lr_find.png') for d in extra]
    for p in places:
        if p and os.path.isfile(p):
            with open(p, 'rb') as f:
                return f.read(), p
    return None, ('no lr_find plot was found; jaxcls lr-find PATH saves one (lr_find.png, '
                  'beside the summary.json of jaxcls train)')


def _note(text: str) -> str:
    return f'<p class="note">{H.esc(text)}</p>'


def _epochs(summary: Optional[dict], where: str) -> str:
    hist = (summary or {}).get('history') or []
    if not hist:
        return _note(where if summary is None else f'{where} holds no epoch table')
    keys = ['epoch', 'trn_loss', 'val_loss']
    keys += [k for h in hist for k in h if k not in keys and k != 'time']
    keys = list(dict.fromkeys(keys)) + (['time'] if any('time' in h for h in hist) else [])
    rows = [[h.get(k, '') if k != 'epoch' else int(h.get(k, i)) for k in keys]
            for i, h in enumerate(hist)]
    settings = summary.get('settings') or {}
    said = ', '.join(f'{k} {settings[k]}' for k in ('arch', 'sz', 'bs', 'lr', 'epochs', 'cycle_len',
                                                    'precompute', 'unfreeze', 'pretrained')
                     if settings.get(k) not in (None, False))
    return H.table(keys, rows) + _note(f'from {where}' + (f'; trained with {said}' if said else ''))


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=100)
    plots.plt.close(fig)
    return buf.getvalue()


def _top_losses(interp, k: int) -> tuple[str, int]:
    """The k worst images, each as the model saw it and with its Grad-CAM overlay."""
    if interp.images is None:
        return _note('this interpretation has no images'), 0
    losses, idxs = interp.top_losses(k)
    shown = interp.display_images(idxs)
    try:
        maps = None if interp.is_multi else interp.heatmaps(idxs)
        why = 'multi-label images have no one predicted class to explain' if interp.is_multi else ''
    except ValueError as e:               # an interpretation built without its model
        maps, why = None, str(e)
    cards, n_img = [], 0
    for j, (i, loss) in enumerate(zip(idxs, losses)):
        name = interp.fnames[i] if interp.fnames is not None else f'#{int(i)}'
        pics = H.img(H.image_bytes(shown[j]), f'{name} as the model saw it')
        n_img += 1
        if maps is not None:
            pics += H.img(H.image_bytes(plots.overlay_heatmap(shown[j], maps[j])),
                          f'{name} with the Grad-CAM of its predicted class')
            n_img += 1
        cards.append(f'<div class="card wide">{pics}<div>{H.esc(interp.title(i))}<br>loss '
                     f'{float(loss):.3f}<br>{H.esc(name)}</div></div>')
    head = (_note('each image as the model saw it' + (
        ', and with the class activation map (Grad-CAM) of its predicted class: where the '
        'evidence for that class was' if maps is not None else f' (no Grad-CAM: {why})')))
    return head + '<div class="cards">' + '\n'.join(cards) + '</div>', n_img


def interpretation_report(interp: Any, *, title: str, summary: Optional[dict] = None,
                          summary_where: str = '', lr_find: tuple[Optional[bytes], str] = (None, ''),
                          k: int = 9, intro: str = '') -> str:
    """The HTML report of a ClassificationInterpretation (see the module docstring).

    summary / summary_where: the training run's summary.json and where it was (or None and
    why not); lr_find: (PNG bytes, where) or (None, why not); k: top losses shown; intro:
    a first paragraph (text).
    """
    body = [_note(intro)] if intro else []
    body.append(f'<p>{len(interp)} images, {interp.c} classes'
                f'{"" if interp.is_multi else f", accuracy {interp.accuracy():.4f}"}.</p>')
    body.append(H.section('epochs', 'Training: the epoch table', _epochs(summary, summary_where)))
    png, where = lr_find
    body.append(H.section('lr-find', 'The learning-rate finder', (
        H.img(png, 'lr_find: loss against learning rate') + _note(f'from {where}')) if png
        else _note(where)))
    body.append(H.section('accuracy', 'Per class', f'<pre>{H.esc(interp.report())}</pre>'))
    cm = _figure_png(plots.plot_confusion_matrix(interp))
    cm_table = '' if interp.is_multi else H.table(
        ['actual \\ predicted', *interp.classes],
        [[a, *[int(v) for v in row]] for a, row in zip(interp.classes, interp.confusion_matrix())])
    body.append(H.section('confusion-matrix', 'Confusion matrix',
                          H.img(cm, 'confusion matrix') + cm_table))
    tops, _ = _top_losses(interp, k)
    body.append(H.section('top-losses', f'Top {k} losses', tops))
    if interp.is_multi:
        confused = _note('multi-label images have no one true class to be confused with')
    else:
        pairs = interp.most_confused(min_val=1)
        confused = (H.table(['actual', 'predicted', 'images'], pairs) if pairs
                    else _note('no image was predicted as another class'))
    body.append(H.section('most-confused', 'Most confused pairs', confused))
    return H.page(title, '\n'.join(body), style='.card.wide { width: 280px; } '
                  '.card.wide img { width: 49%; display: inline-block; }')



def model_report(interp: Any, model: str, *, search: Sequence[str] = (),
                 summary_file: Optional[str] = None, k: int = 9, where: str = '') -> str:
    """The report of a saved model's interpretation: its run's summary.json is `summary_file`
    or the one among `search` folders that names `model` as its output; lr_find.png is
    looked for beside it and in `search`. `where`: what the images are (text)."""
    model = os.path.abspath(model)
    if summary_file is not None:
        try:
            with open(summary_file, encoding='utf-8') as f:
                summary, found = json.load(f), summary_file
        except ValueError as e:
            raise ValueError(f'--summary {summary_file!r} is not JSON ({e}); pass the '
                             'summary.json jaxcls train wrote') from e
        if not isinstance(summary, dict):
            raise ValueError(f'--summary {summary_file!r} is not a jaxcls summary.json')
    else:
        summary, found = find_summary(model, [os.path.join(d, 'summary.json') for d in search])
    lr = lr_find_plot(summary, found if summary is not None else None, search)
    return interpretation_report(interp, title=f'jaxcls interpret: {os.path.basename(model)}',
                                 summary=summary, summary_where=found, lr_find=lr, k=k,
                                 intro=f'model {model}' + (f'; images: {where}' if where else ''))
