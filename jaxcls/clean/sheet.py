"""The contact sheet of `jaxcls clean`: the ranked files as thumbnails with their label, the
model's prediction and loss, in one self-contained HTML file (thumbnails inlined as JPEG
data URIs; no script, no server, nothing fetched).

    >>> from jaxcls.clean.ranking import CleanRow
    >>> html = contact_sheet([CleanRow('train/a/1.png', 'train', 'a', 'b', .9, 2.3, 'label != predicted')],
    ...                      {}, title='pets', how_to='edit clean.csv')
    >>> html.count('class="card ')
    1
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from jaxcls import htmlpage as H

from .ranking import DISAGREES, CleanRow

__all__ = ['contact_sheet', 'THUMB_MIME']

THUMB_MIME = 'image/jpeg'


def _card(i: int, r: CleanRow, thumb: bytes | None) -> str:
    kind = 'bad' if r.unreadable else 'disagrees' if r.note == DISAGREES else ''
    if thumb is not None:
        pic = H.img(thumb, r.path, THUMB_MIME)
    else:
        pic = f'<div class="missing">{H.esc(r.note or "no thumbnail")}</div>'
    lines = [f'<b>#{i}</b> {H.esc(r.path)}', f'label <b>{H.esc(r.label or "?")}</b>']
    if not r.unreadable:
        lines.append(f'predicted <b>{H.esc(r.predicted)}</b> {r.probability:.2f}')
        lines.append(f'loss {r.loss:.3f}' if math.isfinite(r.loss) else 'loss inf')
    if r.note and thumb is not None:
        lines.append(f'<i>{H.esc(r.note)}</i>')
    return (f'<div class="card {kind}" id="r{i}">{pic}<div>' + '<br>'.join(lines) +
            '</div></div>')


def contact_sheet(rows: Sequence[CleanRow], thumbs: Mapping[str, bytes], *, title: str,
                  how_to: str, limit: int | None = None) -> str:
    """The HTML page: a summary, `how_to` (what to do next, as text), then one card per row
    (the first `limit`), in rank order. `thumbs` maps a row's path to its JPEG bytes."""
    shown = list(rows if limit is None else rows[:int(limit)])
    n_bad = sum(r.unreadable for r in rows)
    n_wrong = sum(r.note == DISAGREES for r in rows)
    summary = (f'<p>{len(rows)} files ranked: {n_wrong} whose label and prediction disagree '
               f'(first, highest loss first), {n_bad} unreadable, then the rest by loss. '
               f'{"All are shown." if len(shown) == len(rows) else f"The first {len(shown)} are shown; the CSV has all."}'
               f'</p>\n<p class="note">{H.esc(how_to)}</p>\n')
    cards = '\n'.join(_card(i, r, thumbs.get(r.path)) for i, r in enumerate(shown))
    return H.page(title, H.section('files', 'Files, most suspicious first',
                                   summary + f'<div class="cards">\n{cards}\n</div>'))
