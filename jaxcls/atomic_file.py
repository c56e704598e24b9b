"""Files written whole or not at all.

`replaced(fname)` opens a temporary sibling of `fname`, named as the command's Ctrl-C guard
sweeps (`<fname>.<pid>.<hex>.tmp`, jaxcls.interrupts.remove_partial); when the block ends it
takes `fname`'s place in one rename, and when the block raises it is removed, so a reader
finds the old file or the new one, never a part. Standard library only: every room may use it.

    >>> import json, os, tempfile
    >>> fname = os.path.join(tempfile.mkdtemp(), 'summary.json')
    >>> with replaced(fname) as f:
    ...     json.dump({'accuracy': 0.99}, f)
    >>> open(fname).read()
    '{"accuracy": 0.99}'
"""
from __future__ import annotations

import contextlib
import os
import uuid
from typing import IO, Any, Iterator

__all__ = ['replaced']


@contextlib.contextmanager
def replaced(fname: str, mode: str = 'w', **open_kwargs: Any) -> Iterator[IO]:
    """`with replaced(fname) as f:` write the new `fname` to `f` (`open(tmp, mode, **open_kwargs)`);
    see the module docstring."""
    fname = os.fspath(fname)
    tmp = f'{fname}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp'
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, fname)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
