"""torchvision / timm weight files -> Flax ResNet variables, without torch.

Three layers, each usable on its own:

* parsing (jaxcls.models.weight_files, re-exported here): `load_torch_file` reads
  torchvision `.pth` files through a restricted unpickler that builds numpy arrays and
  refuses every global that is not tensor data; `load_safetensors` parses `.safetensors`.
* mapping: `torch_to_flax` turns a torchvision-named state dict into
  `{'params', 'batch_stats'}` for `jaxcls.models.resnet.ResNet`, checking every
  key and shape against the model.
* finding: `find_weights` looks for a file (explicit path, `$JAXCLS_WEIGHTS`,
  the torch hub cache) and downloads the official one with its hash checked
  when it is nowhere; `load_pretrained` chains the three.

This is the one module under `models/` that touches the file system and the
network (and prints a download progress bar): weights have to come from
somewhere, and keeping it here keeps `resnet.py` pure.
"""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from jaxcls.archs import ARCHS, ArchSpec, WeightFile, get_arch

# Reading the files is weight_files' (re-exported: one module for the whole loader).
from .weight_files import (UnsafePickleError, load_safetensors, load_state_dict,  # noqa: F401
                           load_torch_file)  # noqa: F401

PathLike = Union[str, os.PathLike]

# Module-level so tests (and users behind a proxy) can swap it:
# `monkeypatch.setattr(jaxcls.models.weights, 'urlopen', stub)`.
urlopen = urllib.request.urlopen

ENV_WEIGHTS = 'JAXCLS_WEIGHTS'
ENV_OFFLINE = 'JAXCLS_OFFLINE'  # set (not '0'/'false'/'no') to never download


class WeightsMismatchError(ValueError):
    """A state dict does not fit the model: wrong arch, wrong shapes, missing or extra keys."""


class WeightsNotFoundError(FileNotFoundError):
    """No weight file found locally and none could be downloaded."""


# ---------------------------------------------------------------------------
# torchvision names -> Flax variables
# ---------------------------------------------------------------------------

_LEAF_TO_TORCH = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias',
                  'mean': 'running_mean', 'var': 'running_var'}


def _layout(arch: Any) -> tuple[str, str, tuple[int, ...]]:
    """(name, block, stage_sizes) of an arch name / constructor / ArchSpec / ResNet module."""
    from jaxcls.models.resnet import ResNet
    if isinstance(arch, ResNet):
        return (f'ResNet{tuple(arch.stage_sizes)}/{arch.block}', arch.block,
                tuple(arch.stage_sizes))
    spec = get_arch(arch)
    return spec.name, spec.block, tuple(spec.stage_sizes)


@functools.lru_cache(maxsize=16)
def _model_shapes(block: str, stage_sizes: tuple[int, ...], num_classes: Optional[int]):
    """{torch key: (collection, flax path, flax shape)} for a ResNet (no trace: `variable_shapes`)."""
    from flax import traverse_util
    from jaxcls.models.resnet import variable_shapes

    shapes = variable_shapes(stage_sizes, block, num_classes)
    table = {}
    for col in ('params', 'batch_stats'):
        for path, leaf in traverse_util.flatten_dict(dict(shapes[col])).items():
            mods = [m.replace('downsample_', 'downsample.') for m in path[:-1]]
            key = '.'.join(mods + [_LEAF_TO_TORCH[path[-1]]])
            table[key] = (col, path, tuple(leaf.shape))
    return table


def _torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    if path[-1] == 'kernel' and len(shape) == 4:  # HWIO -> OIHW
        return (shape[3], shape[2], shape[0], shape[1])
    if path[-1] == 'kernel' and len(shape) == 2:  # (in, out) -> (out, in)
        return (shape[1], shape[0])
    return shape


def _guess_arch(keys) -> Optional[str]:
    """The ARCHS entry whose block type and stage sizes match these state-dict keys, if any."""
    keys = list(keys)
    block = 'bottleneck' if any(k.endswith('.conv3.weight') for k in keys) else 'basic'
    stages = []
    for i in range(1, 5):
        idx = {k.split('.')[1] for k in keys if k.startswith(f'layer{i}.')}
        stages.append(1 + max((int(j) for j in idx if j.isdigit()), default=-1))
    for name, spec in ARCHS.items():
        if spec.block == block and tuple(spec.stage_sizes) == tuple(stages):
            return name
    return None


def _short(keys: list[str], n: int = 5) -> str:
    return ', '.join(keys[:n]) + (f', ... ({len(keys)} in all)' if len(keys) > n else '')


def torch_to_flax(state_dict: Mapping[str, Any], arch: Any, num_classes: Optional[int] = None,
                  *, include_fc: bool = True, source: str = 'state dict') -> dict:
    """Map a torchvision/timm ResNet state dict to `{'params', 'batch_stats'}` for `ResNet`.

    Conv weights OIHW -> HWIO, `fc.weight` (out, in) -> kernel (in, out),
    BatchNorm weight/bias -> params scale/bias, running_mean/var -> batch_stats
    mean/var; `num_batches_tracked` is dropped and a DataParallel `module.`
    prefix stripped. Every key and shape is checked against the model built
    for `arch`.

    Args:
      state_dict: {torch name: array} (numpy, or anything `np.asarray` takes).
      arch: 'resnet34', `jaxcls.resnet34`, an ArchSpec, or a `ResNet` module.
      num_classes: outputs of `fc`; None takes it from the file's `fc.weight`.
      include_fc: False drops the file's `fc` and returns the body's variables
        only (for `ResNet(..., num_classes=None)` and a new head).
      source: how to name the weights in error messages (e.g. the file path).
    Returns:
      {'params': ..., 'batch_stats': ...} nested dicts of float32 numpy arrays.
    Raises:
      WeightsMismatchError: naming the first key whose shape differs (with both
        shapes), unexpected and missing keys, and the arch the file looks like.

    >>> sd = load_torch_file('resnet34-b627a593.pth')  # doctest: +SKIP
    >>> variables = torch_to_flax(sd, 'resnet34')  # doctest: +SKIP
    >>> ResNet((3, 4, 6, 3)).apply(variables, x)  # doctest: +SKIP
    """
    from flax import traverse_util

    name, block, stages = _layout(arch)
    sd = {str(k): v for k, v in state_dict.items()}
    if sd and all(k.startswith('module.') for k in sd):
        sd = {k[len('module.'):]: v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.endswith('num_batches_tracked')}
    if not include_fc:
        sd = {k: v for k, v in sd.items() if not k.startswith('fc.')}
        num_classes = None
    elif num_classes is None:
        fc = sd.get('fc.weight')
        num_classes = int(np.shape(fc)[0]) if fc is not None and np.ndim(fc) == 2 else 1000
    table = _model_shapes(block, stages, num_classes)

    mismatched, unexpected, flat = [], [], {}
    for key, value in sd.items():
        if key not in table:
            unexpected.append(key)
            continue
        col, path, shape = table[key]
        want = _torch_shape(path, shape)
        if tuple(np.shape(value)) != want:
            mismatched.append((key, tuple(np.shape(value)), want))
            continue
        arr = np.asarray(value, dtype=np.float32)
        if path[-1] == 'kernel':
            arr = arr.transpose(2, 3, 1, 0) if arr.ndim == 4 else arr.T
        flat[(col,) + path] = np.ascontiguousarray(arr)
    missing = [k for k in table if k not in sd]

    if mismatched or unexpected or missing:
        model = f'{name}' + (f' with num_classes={num_classes}' if include_fc else ' (no fc)')
        parts = []
        if mismatched:
            key, got, want = mismatched[0]
            more = (f' (and {len(mismatched) - 1} more shape mismatches)'
                    if len(mismatched) > 1 else '')
            parts.append(f'{key} has shape {got} in the file but {model} expects {want}{more}')
        if unexpected:
            parts.append(f'unexpected keys: {_short(unexpected)}')
        if missing:
            parts.append(f'missing keys: {_short(missing)}')
        guess = _guess_arch(sd)
        if guess is not None and (ARCHS[guess].block, tuple(ARCHS[guess].stage_sizes)) != (
                block, stages):
            hint = f"The file's layout is {guess}'s: pass arch='{guess}'."
        elif {m[0] for m in mismatched} <= {'fc.weight', 'fc.bias'} and not unexpected + missing:
            n_out = np.shape(sd['fc.bias' if 'fc.bias' in sd else 'fc.weight'])[0]
            hint = (f"The file's fc has {n_out} outputs: pass num_classes=None to "
                    f'take it from the file, or include_fc=False to drop it and train a new head.')
        else:
            hint = 'Check that the file holds torchvision/timm ResNet weights for this arch.'
        raise WeightsMismatchError(f'weights in {source} do not fit {model}: '
                                   + '; '.join(parts) + '. ' + hint)
    return traverse_util.unflatten_dict(flat)


def body_variables(variables: Mapping[str, Any]) -> dict:
    """`variables` without the classifier `fc`: what `ResNet(..., num_classes=None)` takes."""
    return {col: {k: v for k, v in tree.items() if k != 'fc'} for col, tree in variables.items()}


# ---------------------------------------------------------------------------
# finding and downloading files
# ---------------------------------------------------------------------------

def hub_checkpoint_dir() -> Path:
    """torch hub's checkpoint folder: $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/...)."""
    home = os.environ.get('TORCH_HOME') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.join('~', '.cache'), 'torch')
    return Path(os.path.expanduser(home)) / 'hub' / 'checkpoints'


def download_file(url: str, dest: PathLike, sha256_prefix: Optional[str] = None, *,
                  progress: bool = True) -> Path:
    """Download `url` to `dest` atomically (temp file + rename), checking its SHA-256 prefix.

    A file whose hash does not start with `sha256_prefix` is deleted and
    `ValueError` raised; network errors propagate as `OSError` (`URLError`).
    Uses the module-level `urlopen`, which tests replace.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f'.{dest.name}.', suffix='.partial')
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, 'wb') as out, urlopen(url, timeout=60) as resp:
            total = resp.headers.get('Content-Length') if getattr(resp, 'headers', None) else None
            bar = None
            if progress:
                from tqdm.auto import tqdm
                bar = tqdm(total=int(total) if total else None, unit='B', unit_scale=True,
                           unit_divisor=1024, desc=dest.name)
            try:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    h.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        digest = h.hexdigest()
        if sha256_prefix and not digest.startswith(sha256_prefix.lower()):
            raise ValueError(
                f'{url} downloaded with SHA-256 {digest}, which does not start with the expected '
                f"{sha256_prefix}; the file was deleted. Retry; if it fails again, something "
                f'between you and the server alters the file: fetch it another way and pass '
                f'its path')
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return dest


def _target(spec: ArchSpec, weights: Optional[str]) -> tuple[WeightFile, list[str]]:
    """The WeightFile wanted and the file names that stand for it in a folder."""
    if not spec.weights:
        raise WeightsNotFoundError(f'{spec.name} has no known weight files; pass weights=<path>')
    if weights is None:
        wf = spec.weights[0]
        names = [wf.fname, f'{spec.name}.safetensors', f'{spec.name}/model.safetensors']
        return wf, names
    for wf in spec.weights:
        if weights in (wf.fname, wf.sha256_prefix):
            return wf, [wf.fname]
    raise FileNotFoundError(
        f'weights {weights!r} for {spec.name} is neither an existing file or folder nor a known '
        f'weight file name; known: {[w.fname for w in spec.weights]}, or pass a path to a '
        f'.pth or .safetensors file')


def _search(folder: Path, names: list[str], arch: str) -> Optional[Path]:
    for name in names:
        p = folder / name
        if p.is_file():
            return p
    if f'{arch}/model.safetensors' in names and folder.is_dir():
        # timm / Hugging Face folders are named like 'resnet34.a1_in1k'
        for d in sorted(folder.glob(f'{arch}.*/model.safetensors')):
            if d.is_file():
                return d
    return None


def find_weights(arch: Any, weights: Optional[PathLike] = None, *, download: bool = True,
                 progress: bool = True) -> Path:
    """Path of the weight file for `arch`, downloading the official one if needed.

    Lookup order: `weights` if it is an existing file (or a folder to search);
    then the folder in $JAXCLS_WEIGHTS; then the torch hub cache
    (`hub_checkpoint_dir()`); then a download of the official URL into the hub
    cache with its SHA-256 prefix checked (unless `download=False` or
    $JAXCLS_OFFLINE is set). In a folder the official file name
    is looked for first, then timm's `{arch}.safetensors` and
    `{arch}/model.safetensors` (or `{arch}.<tag>/model.safetensors`).

    Args:
      arch: 'resnet34', `jaxcls.resnet34` or an ArchSpec.
      weights: None for the arch's default file; a path to a file or folder; or
        a known file name such as 'resnet50-11ad3fa6.pth' (torchvision's V2).
      download: False never touches the network (nor does $JAXCLS_OFFLINE=1).
      progress: show a tqdm bar while downloading.
    Raises:
      WeightsNotFoundError: naming the file, the folders searched and the URL.

    >>> find_weights('resnet34')  # doctest: +SKIP
    PosixPath('/home/me/.cache/torch/hub/checkpoints/resnet34-b627a593.pth')
    """
    spec = get_arch(arch)
    if weights is not None:
        p = Path(os.path.expanduser(os.fspath(weights)))
        if p.is_file():
            return p
        if p.is_dir():
            # a timm / Hugging Face download folder holds just 'model.safetensors'
            names = _target(spec, None)[1] + ['model.safetensors']
            found = _search(p, names, spec.name)
            if found is None:
                raise WeightsNotFoundError(
                    f'no {spec.name} weights in folder {p}: looked for {_short(names)}; '
                    f'pass the file itself instead')
            return found
        if isinstance(weights, os.PathLike) or os.sep in os.fspath(weights):
            raise FileNotFoundError(f'weights file {os.fspath(weights)!r} does not exist')
    wf, names = _target(spec, None if weights is None else os.fspath(weights))

    folders = []
    env = os.environ.get(ENV_WEIGHTS)
    if env:
        folders.append((f'${ENV_WEIGHTS}', Path(os.path.expanduser(env))))
    hub = hub_checkpoint_dir()
    folders.append(('torch hub cache', hub))
    for _, folder in folders:
        found = _search(folder, names, spec.name)
        if found is not None:
            return found

    searched = '; '.join(f'{label} {folder}' + ('' if folder.is_dir() else ' (does not exist)')
                         for label, folder in folders)
    if not env:
        searched += f' (${ENV_WEIGHTS} is not set)'
    how = (f'Download {wf.url} on a machine with network access and put it in one of those '
           f'folders, set ${ENV_WEIGHTS} to the folder holding it, or pass weights=<path>.')
    offline = os.environ.get(ENV_OFFLINE, '').strip().lower() not in ('', '0', 'false', 'no')
    if not download or offline:
        why = 'download=False' if not download else f'${ENV_OFFLINE} is set'
        raise WeightsNotFoundError(f'{spec.name} weights {wf.fname} not found and not downloaded '
                                   f'from {wf.url} ({why}); searched {searched}. {how}')
    try:
        return download_file(wf.url, hub / wf.fname, wf.sha256_prefix, progress=progress)
    except OSError as e:
        raise WeightsNotFoundError(
            f'{spec.name} weights {wf.fname} not found and could not be downloaded from '
            f'{wf.url} ({type(e).__name__}: {e}); searched {searched}. {how}') from e


def load_pretrained(arch: Any, weights: Optional[PathLike] = None,
                    num_classes: Optional[int] = None, include_fc: bool = True, *,
                    download: bool = True, progress: bool = True) -> dict:
    """Pretrained `{'params', 'batch_stats'}` for `arch`: `find_weights` + load + `torch_to_flax`.

    >>> variables = load_pretrained('resnet34', include_fc=False)  # doctest: +SKIP
    >>> ResNet((3, 4, 6, 3), num_classes=None).apply(variables, x)  # doctest: +SKIP
    """
    path = find_weights(arch, weights, download=download, progress=progress)
    return torch_to_flax(load_state_dict(path), get_arch(arch), num_classes,
                         include_fc=include_fc, source=str(path))
