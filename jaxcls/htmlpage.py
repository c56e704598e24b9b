"""Self-contained HTML pages: every image inlined as a data URI, the style inline, no script,
no server and nothing fetched, so a page opens from disk in any browser and can be mailed.

The building blocks of `jaxcls clean`'s contact sheet (:mod:`jaxcls.clean.sheet`) and
`jaxcls interpret --html`'s report (:mod:`jaxcls.report`). Images arrive as arrays (encoded
here with Pillow) or as PNG bytes (matplotlib figures, which :mod:`jaxcls.plots` renders);
of jaxcls this module imports only `jaxcls.atomic_file`, to write a page whole.

    >>> uri = data_uri(b'\\x89PNG...', 'image/png'); uri[:22]
    'data:image/png;base64,'
    >>> table(['class', 'n'], [['cats', 3], ['<dogs>', 4]])[:40]
    '<table><tr><th>class</th><th>n</th></tr>'
"""
from __future__ import annotations

import base64
import html
import io
import os
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from jaxcls.atomic_file import replaced

__all__ = ['esc', 'data_uri', 'image_bytes', 'img', 'table', 'section', 'page', 'write']

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .2em .6em; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; }
.note { color: #666; }
.cards { display: flex; flex-wrap: wrap; gap: .6em; }
.card { width: 180px; border: 1px solid #ccc; border-radius: 4px; padding: .3em; font-size: .8em;
        overflow-wrap: anywhere; }
.card img { width: 100%; image-rendering: auto; display: block; }
.card.bad { border-color: #d33; background: #fff4f4; }
.card.disagrees { border-color: #e90; }
.card .missing { height: 120px; display: flex; align-items: center; justify-content: center;
                 background: #eee; color: #a00; text-align: center; }
"""


def esc(text: Any) -> str:
    """`text` as HTML text (quotes escaped too, so it is safe in attributes)."""
    return html.escape(str(text), quote=True)


def data_uri(data: bytes, mime: str) -> str:
    """`data` inlined: 'data:<mime>;base64,...'."""
    return f'data:{mime};base64,{base64.b64encode(bytes(data)).decode("ascii")}'


def image_bytes(image: Any, fmt: str = 'PNG', max_side: Optional[int] = None,
                quality: int = 85) -> bytes:
    """One image (H, W, 3) or (H, W), uint8 or float 0..1, encoded as PNG or JPEG bytes;
    shrunk (aspect kept) so its longer side is at most `max_side`.

    >>> image_bytes(np.zeros((4, 4, 3), np.uint8))[:4]
    b'\\x89PNG'
    """
    from PIL import Image
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(np.round(np.asarray(a, np.float64) * 255.0), 0, 255).astype(np.uint8)
    im = Image.fromarray(a)
    if max_side is not None and max(im.size) > max_side:
        im.thumbnail((int(max_side), int(max_side)), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({'quality': int(quality)} if fmt.upper() == 'JPEG' else {}))
    return buf.getvalue()


def img(data: bytes, alt: str, mime: str = 'image/png', cls: str = '') -> str:
    """An <img> of the encoded image `data`, inlined."""
    c = f' class="{esc(cls)}"' if cls else ''
    return f'<img{c} alt="{esc(alt)}" src="{data_uri(data, mime)}">'


def _cell(tag: str, v: Any) -> str:
    text = isinstance(v, str)
    if isinstance(v, float):
        v = '' if not np.isfinite(v) else f'{v:.4f}'
    return f'<{tag}{" class=text" if text else ""}>{esc(v)}</{tag}>'


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A <table>: text cells left-aligned, numbers right-aligned, floats to 4 decimals
    (NaN and inf empty)."""
    out = ['<table><tr>' + ''.join(f'<th>{esc(h)}</th>' for h in header) + '</tr>']
    for r in rows:
        out.append('<tr>' + ''.join(_cell('td', v) for v in r) + '</tr>')
    return ''.join(out) + '</table>'


def section(ident: str, title: str, body: str) -> str:
    """<section id=...> with an <h2> title and `body` (HTML)."""
    return f'<section id="{esc(ident)}">\n<h2>{esc(title)}</h2>\n{body}\n</section>\n'


def page(title: str, body: str, style: str = '') -> str:
    """A whole HTML document: UTF-8, the inline style, `body` (HTML)."""
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>{esc(title)}</title><style>{STYLE}{style}</style></head>\n'
            f'<body>\n<h1>{esc(title)}</h1>\n{body}</body></html>\n')


def write(fname: str, document: str) -> str:
    """Write the document (a page, or any text such as a CSV: line ends are kept as given)
    atomically, UTF-8, through a temporary file renamed into place (named as the Ctrl-C
    guard's sweep expects); returns the absolute path."""
    fname = os.path.abspath(os.fspath(fname))
    os.makedirs(os.path.dirname(fname), exist_ok=True)
    with replaced(fname, encoding='utf-8', newline='') as f:
        f.write(document)
    return fname
