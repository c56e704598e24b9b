"""Saving and loading a model folder with Orbax: arrays, a JSON description and their digest,
written so that nothing saved is lost and read so that nothing damaged loads.

A model folder holds three Orbax items: 'state' (params, batch statistics and, optionally,
optimizer state), 'meta' (arch, classes, head shape, ...) and 'digest' (the XXH3 hash of each
array and of the description, `jaxcls.train.integrity`). A save locks the name against a
second writer, checks the disk has room, writes into a temporary sibling and swaps it in
for the old folder in one step (`jaxcls.train.safe_write`). A load checks the digest and
turns every way a folder can be damaged or foreign into one `ModelFileError` that names the
folder, the part and the fix, with Orbax's or TensorStore's own error chained.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from . import safe_write as sw
from .integrity import (DamagedModelError, ModelFileError, digest_item, verify_json,
                        verify_shapes, verify_tree)

# Orbax's OCDBT files hold the arrays (zstd level 1: float weights barely shrink, so their
# raw bytes are the bound) plus about 0.1 MiB of metadata for a ResNet34 (_METADATA,
# _sharding, manifests): the free space a save asks for is the arrays' bytes and this margin.
_ORBAX_OVERHEAD = 4 << 20


_UNVERIFIED: set[str] = set()  # folders without a digest already warned about


def _checkpointer() -> ocp.Checkpointer:
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def saved_size(tree: Any) -> int:
    """Bytes a save of `tree` needs on disk (see _ORBAX_OVERHEAD)."""
    return sum(int(getattr(x, 'nbytes', 0)) for x in jax.tree_util.tree_leaves(tree)) \
        + _ORBAX_OVERHEAD


def save_checkpoint(folder: str, tree: Any, meta: dict, what: str = 'model') -> str:
    """Write `tree` (a pytree of arrays), `meta` (JSON-able) and their digest to `folder`,
    replacing what is there only once the new folder is complete (see the module docstring).
    Raises FolderBusyError while another process writes `folder`, NotEnoughSpaceError when
    the disk is too full (nothing is left behind either way)."""
    folder = os.path.abspath(os.fspath(folder))
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    digest = digest_item({'state': tree}, {'meta': meta})
    with sw.replacing(folder, saved_size(tree), what) as tmp:
        _checkpointer().save(tmp, ocp.args.Composite(
            state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta),
            digest=ocp.args.JsonSave(digest)))
    return folder


def _missing(folder: str) -> FileNotFoundError:
    parent = os.path.dirname(folder)
    have = sorted(n for n in os.listdir(parent) if not n.startswith('.')) \
        if os.path.isdir(parent) else []
    return FileNotFoundError(f'no checkpoint at {folder}; saved models there: {have or "none"}')


def _check_folder(folder: str, items: tuple[str, ...]) -> str:
    """The absolute folder, after checking it exists and holds `items` (else the error)."""
    folder = os.path.abspath(os.fspath(folder))
    sw.recover(folder)
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise ModelFileError(f'{folder} is a file, not a jaxcls model folder; pass the folder '
                                 'learn.save(name) or jaxcls train wrote, e.g. PATH/models/NAME')
        raise _missing(folder)
    have = set(os.listdir(folder))
    if not have & {'meta', 'state', '_CHECKPOINT_METADATA'}:
        raise ModelFileError(f'{folder!r} is not a jaxcls model folder (it holds '
                             f'{sorted(have)[:8] or "nothing"}); pass a folder saved by jaxcls '
                             'train or learn.save(name), e.g. PATH/models/resnet34_224')
    lost = [i for i in items if i not in have]
    if lost:
        parts = {'state': 'state (the arrays)', 'meta': 'meta (the description)'}
        raise ModelFileError(f'{folder} is incomplete: its {" and ".join(parts[i] for i in lost)} '
                             f'{"is" if len(lost) == 1 else "are"} missing (a copy or a write '
                             'that did not finish?); use another copy of the model, or save it '
                             'again')
    return folder


@contextlib.contextmanager
def reading(folder: str, what: str, fix: str = 'Use another copy of the model, or save it again'):
    """Turn what Orbax, TensorStore and json raise while reading `what` of `folder` into one
    ModelFileError naming both (the original chained); ModelFileError and a missing folder
    pass through."""
    try:
        yield
    except (ModelFileError, FileNotFoundError):
        raise
    except json.JSONDecodeError as e:
        raise ModelFileError(f'{folder} is damaged: its {what} is not readable JSON ({e}). '
                             f'{fix}') from e
    except Exception as e:  # noqa: BLE001 -- Orbax and TensorStore raise plain Exception
        text = ' '.join(str(e).split()).split(' See full TensorStore details')[0]
        raise ModelFileError(f'{folder} is damaged: its {what} cannot be read ({text[:160]}). '
                             f'{fix}') from e


def _restore(folder: str, what: str, **args) -> dict:
    """Orbax's restore of some items, its errors turned into ModelFileError."""
    with reading(folder, what):
        return _checkpointer().restore(folder, ocp.args.Composite(**args))


def read_digest(folder: str) -> Optional[dict]:
    """The digest saved in `folder`, or None (with a warning) for a folder written before
    jaxcls saved digests."""
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(os.path.join(folder, 'digest')):
        if folder not in _UNVERIFIED:
            _UNVERIFIED.add(folder)
            warnings.warn(f'{folder} was saved without a digest (by an older jaxcls), so its '
                          'arrays cannot be checked; save it again to add one', stacklevel=3)
        return None
    digest = _restore(folder, 'digest', digest=ocp.args.JsonRestore())['digest']
    if not isinstance(digest, dict) or 'arrays' not in digest:
        raise DamagedModelError(f'{folder} is damaged: its digest is not one jaxcls wrote; use '
                                'another copy of the model, or save it again')
    return digest


def load_meta(folder: str) -> dict:
    """The JSON description saved with a model, checked against its digest."""
    folder = _check_folder(folder, ('meta',))
    meta = _restore(folder, 'description (meta)', meta=ocp.args.JsonRestore())['meta']
    verify_json(meta, read_digest(folder), folder, 'meta')
    return meta


def load_checkpoint(folder: str, target: Optional[Any] = None, verify: bool = True) -> Any:
    """The saved arrays, restored into the structure, shapes and shardings of `target` (or as
    saved), each checked against the digest (`verify=False` skips that: for measuring it)."""
    folder = _check_folder(folder, ('state',))
    digest = read_digest(folder) if verify else None
    if digest is not None and target is not None:
        verify_shapes(target, digest, folder)
    restore = ocp.args.StandardRestore(target) if target is not None else ocp.args.StandardRestore()
    state = _restore(folder, 'arrays (state)', state=restore)['state']
    verify_tree(state, digest, folder, 'state')
    return state
