"""Saving and loading a model with Orbax: arrays and a JSON description, written atomically.

A checkpoint folder holds two items: 'state' (params, batch statistics and,
optionally, optimizer state) and 'meta' (arch, classes, head shape, ...). Orbax
writes to a temporary folder and renames it when complete, so a crash mid-save
never leaves a half-written checkpoint under the final name.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import orbax.checkpoint as ocp


def _checkpointer() -> ocp.Checkpointer:
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def save_checkpoint(folder: str, tree: Any, meta: dict) -> str:
    """Write `tree` (a pytree of arrays) and `meta` (JSON-able) to `folder`, replacing it."""
    folder = os.path.abspath(os.fspath(folder))
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    _checkpointer().save(folder, ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                    meta=ocp.args.JsonSave(meta)), force=True)
    return folder


def load_meta(folder: str) -> dict:
    """The JSON description saved with a checkpoint."""
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        have = sorted(os.listdir(parent)) if os.path.isdir(parent) else []
        raise FileNotFoundError(f'no checkpoint at {folder}; saved models there: {have or "none"}')
    return _checkpointer().restore(folder, ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']


def load_checkpoint(folder: str, target: Optional[Any] = None) -> Any:
    """The saved arrays, restored into the structure, shapes and shardings of `target`."""
    folder = os.path.abspath(os.fspath(folder))
    restore = ocp.args.StandardRestore(target) if target is not None else ocp.args.StandardRestore()
    return _checkpointer().restore(folder, ocp.args.Composite(state=restore))['state']
