"""Content digests of saved models and checkpoints, and the one error type for a folder that
cannot be read (or written) as what it claims to be.

A save writes, next to the arrays and the JSON items, a 'digest' item: the 128-bit XXH3 hash
of every array's bytes (with its shape and dtype) and of every JSON item's canonical text,
computed from the values in memory before they go to disk. Reading restores the arrays,
hashes what came back and compares: a flipped bit anywhere in an array file, a truncated
file or a changed description is an error that names the folder and the part, never a model
that silently computes something else. XXH3 is a checksum against damage, not a signature
against forgery; it hashes about 9 GB/s a core where SHA-256 manages 1.5, which keeps the
check at a few percent of a load (bench/bench_load.py measures it).

    >>> d = tree_digest({'w': np.zeros(3, np.float32)})                      # doctest: +SKIP
    >>> verify_tree({'w': np.zeros(3, np.float32)}, d, 'models/m', 'state')  # doctest: +SKIP
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import jax
import numpy as np
import xxhash

__all__ = ['ModelFileError', 'DamagedModelError', 'FolderBusyError', 'NotEnoughSpaceError',
           'DIGEST_VERSION', 'tree_digest', 'json_digest', 'verify_tree', 'verify_json',
           'verify_shapes', 'digest_item', 'leaf_paths', 'tree_shapes']

DIGEST_VERSION = 1
ALGORITHM = 'xxh3_128'


class ModelFileError(ValueError):
    """A saved model or checkpoint folder that is not a jaxcls model, is damaged, or cannot be
    written: the message names the path, what is wrong and what to do; the original error (an
    Orbax, TensorStore or JSON one) is chained as its cause."""


class DamagedModelError(ModelFileError):
    """Saved bytes differ from what was written (their digest does not match)."""


class FolderBusyError(ModelFileError):
    """Another process is writing the same model or checkpoint folder."""


class NotEnoughSpaceError(ModelFileError):
    """The disk has too little free space for a save; nothing was written."""


def _leaf_bytes(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    a = np.asarray(x)
    return a if a.flags.c_contiguous else a.copy(order='C')  # (ascontiguousarray makes 0-d 1-d)


def leaf_paths(tree: Any) -> list[tuple[str, Any]]:
    """(path string, leaf) for every leaf, paths as 'params/body/conv1/kernel'."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path]
        out.append(('/'.join(names), leaf))
    return out


def _hash(data: Any) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def _hash_array(a: np.ndarray) -> str:
    return _hash(a.reshape(-1).view(np.uint8))


# Arrays from this size on are hashed two at a time (xxhash releases the GIL): 1.7x on a
# ResNet34's 162 MiB (bench/bench_load.py); below it a thread costs more than it saves.
_POOL_BYTES = 1 << 20


def _hash_arrays(arrays: list[np.ndarray]) -> list[str]:
    big = [i for i, a in enumerate(arrays) if a.nbytes >= _POOL_BYTES]
    out = [None if a.nbytes >= _POOL_BYTES else _hash_array(a) for a in arrays]
    if len(big) > 1:
        with ThreadPoolExecutor(2) as pool:
            for i, h in zip(big, pool.map(lambda i: _hash_array(arrays[i]), big)):
                out[i] = h
    else:
        for i in big:
            out[i] = _hash_array(arrays[i])
    return out


def tree_shapes(tree: Any) -> dict:
    """{path: {'shape', 'dtype'}} of a pytree of arrays, as a digest records them."""
    return {p: {'shape': [int(d) for d in np.shape(x)], 'dtype': np.dtype(x.dtype).name}
            for p, x in leaf_paths(tree)}


def tree_digest(tree: Any) -> dict:
    """{path: {'shape', 'dtype', 'hash'}} of a pytree of arrays (device arrays are copied to
    the host; PRNG keys are hashed as their key data)."""
    pairs = [(p, _leaf_bytes(x)) for p, x in leaf_paths(tree)]
    hashes = _hash_arrays([a for _, a in pairs])
    return {p: {'shape': list(a.shape), 'dtype': a.dtype.name, 'hash': h}
            for (p, a), h in zip(pairs, hashes)}


def json_digest(value: Any) -> str:
    """The hash of a JSON value's canonical text (sorted keys, no spaces), taken after one
    round trip through JSON, so the value saved and the value read back hash alike (tuples
    become lists, integer keys strings)."""
    value = json.loads(json.dumps(value))
    text = json.dumps(value, sort_keys=True, separators=(',', ':'))
    return _hash(text.encode())


def digest_item(arrays: dict[str, Any], jsons: dict[str, Any]) -> dict:
    """The 'digest' item a save writes: each array item's tree digest, each JSON item's hash."""
    return {'version': DIGEST_VERSION, 'algorithm': ALGORITHM,
            'arrays': {k: tree_digest(v) for k, v in arrays.items()},
            'json': {k: json_digest(v) for k, v in jsons.items()}}


def _damaged(folder: str, what: str, fix: Optional[str]) -> DamagedModelError:
    return DamagedModelError(
        f'{folder} is damaged: {what}. ' + (fix or 'Its bytes changed after it was written '
                                           '(disk or copy error); use another copy of it, or '
                                           'save the model again'))


def verify_tree(tree: Any, digest: Optional[dict], folder: str, item: str,
                fix: Optional[str] = None) -> None:
    """Raise DamagedModelError unless every leaf of `tree` (a restored item, or part of one)
    has the shape, dtype and bytes `digest` recorded for it. `digest` None: nothing to check
    (a folder written before digests existed)."""
    if digest is None:
        return
    _check_algorithm(digest, folder)
    recorded = digest.get('arrays', {}).get(item)
    if recorded is None:
        raise _damaged(folder, f"its digest lists no '{item}' arrays", fix)
    pairs = [(p, _leaf_bytes(x)) for p, x in leaf_paths(tree)]
    for p, a in pairs:
        want = recorded.get(p)
        if want is None:
            raise _damaged(folder, f"'{item}/{p}' is not among the arrays it was saved with", fix)
        _check_shape(folder, item, p, want, a.shape, a.dtype.name)
    for (p, a), h in zip(pairs, _hash_arrays([a for _, a in pairs])):
        if h != recorded[p]['hash']:
            raise _damaged(folder, f"the bytes of array '{item}/{p}' {a.dtype.name}"
                                   f"{list(a.shape)} differ from those saved", fix)


def verify_shapes(target: Any, digest: dict, folder: str, item: str = 'state') -> None:
    """ModelFileError naming the first array of `target` (the network to load into) that
    `digest` does not list, or lists with another shape or dtype: checked before anything is
    restored."""
    saved = digest['arrays'].get(item, {})
    for p, t in leaf_paths(target):
        if p not in saved:
            raise ModelFileError(f"{folder} has no array '{item}/{p}': it was saved from another "
                                 'network; load it into a learner built the same way')
        _check_shape(folder, item, p, saved[p], t.shape, np.dtype(t.dtype).name)


def _check_shape(folder: str, item: str, path: str, saved: dict, shape, dtype: str) -> None:
    if list(shape) != list(saved['shape']) or dtype != saved['dtype']:
        raise ModelFileError(
            f"{folder}: array '{item}/{path}' was saved as {saved['dtype']}{list(saved['shape'])}, "
            f'and this network needs {dtype}{list(shape)}; load it into a learner built the '
            'same way')


def _check_algorithm(digest: dict, folder: str) -> None:
    if digest.get('algorithm') != ALGORITHM:
        raise ModelFileError(f"{folder} was saved with digests of kind {digest.get('algorithm')!r}; "
                             f'this jaxcls checks {ALGORITHM!r}: upgrade jaxcls to load it')


def verify_json(value: Any, digest: Optional[dict], folder: str, item: str,
                fix: Optional[str] = None) -> None:
    """Raise DamagedModelError unless the JSON item `item` hashes to its recorded digest."""
    if digest is None:
        return
    _check_algorithm(digest, folder)
    want = digest.get('json', {}).get(item)
    if want is None or json_digest(value) != want:
        raise _damaged(folder, f"its '{item}' description differs from the one saved", fix)
