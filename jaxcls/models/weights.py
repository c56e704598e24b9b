"""torchvision / timm weight files -> Flax ResNet variables, without torch.

Three layers, each usable on its own:

* parsing: `load_torch_file` reads torchvision `.pth` files (the zip format of
  torch >= 1.6 and the legacy pre-1.6 format) through a restricted unpickler
  that builds numpy arrays and refuses every global that is not tensor data;
  `load_safetensors` parses `.safetensors` with numpy alone.
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
import json
import os
import pickle
import struct
import tempfile
import urllib.request
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from jaxcls.archs import ARCHS, ArchSpec, WeightFile, get_arch

PathLike = Union[str, os.PathLike]

# Module-level so tests (and users behind a proxy) can swap it:
# `monkeypatch.setattr(jaxcls.models.weights, 'urlopen', stub)`.
urlopen = urllib.request.urlopen

ENV_WEIGHTS = 'JAXCLS_WEIGHTS'
ENV_OFFLINE = 'JAXCLS_OFFLINE'  # set (not '0'/'false'/'no') to never download


class UnsafePickleError(pickle.UnpicklingError):
    """A weight file asked the unpickler for something other than tensor data."""


class WeightsMismatchError(ValueError):
    """A state dict does not fit the model: wrong arch, wrong shapes, missing or extra keys."""


class WeightsNotFoundError(FileNotFoundError):
    """No weight file found locally and none could be downloaded."""


# ---------------------------------------------------------------------------
# torch .pth parsing
# ---------------------------------------------------------------------------

_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c  # torch's legacy-format magic number
_PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype of its elements ('bfloat16' kept as raw uint16).
_STORAGE_DTYPES = {
    'DoubleStorage': 'f8', 'FloatStorage': 'f4', 'HalfStorage': 'f2',
    'BFloat16Storage': 'bfloat16', 'LongStorage': 'i8', 'IntStorage': 'i4',
    'ShortStorage': 'i2', 'CharStorage': 'i1', 'ByteStorage': 'u1', 'BoolStorage': '?',
    'ComplexFloatStorage': 'c8', 'ComplexDoubleStorage': 'c16',
    # torch >= 2.1 writes dtypes without a legacy storage class (uint16...) as an
    # untyped byte storage plus a torch dtype (`_rebuild_tensor_v3`).
    'UntypedStorage': 'u1',
}
# torch dtype names that `_rebuild_tensor_v3` may reference, -> numpy dtype.
_TORCH_DTYPES = {
    'float64': 'f8', 'double': 'f8', 'float32': 'f4', 'float': 'f4', 'float16': 'f2',
    'half': 'f2', 'bfloat16': 'bfloat16', 'int64': 'i8', 'long': 'i8', 'int32': 'i4',
    'int': 'i4', 'int16': 'i2', 'short': 'i2', 'int8': 'i1', 'uint8': 'u1', 'bool': '?',
    'uint16': 'u2', 'uint32': 'u4', 'uint64': 'u8', 'complex64': 'c8', 'complex128': 'c16',
}


def _np_dtype(code: str) -> np.dtype:
    return np.dtype('u2' if code == 'bfloat16' else code)


@dataclass(frozen=True)
class _DType:
    """Stand-in for a torch dtype global (`torch.uint16`) inside the unpickler."""

    code: str


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a torch storage class (`torch.FloatStorage`) inside the unpickler."""

    name: str
    code: str


@dataclass(frozen=True)
class _StorageRef:
    """A storage named by the file's persistent id; its bytes are read later.

    `view` is (offset, numel) into the root storage for the legacy format's
    storage views (files written by torch < 1.0 sometimes have them).
    """

    key: str
    code: str
    numel: int
    view: Optional[tuple[int, int]] = None


@dataclass
class _TensorRef:
    """A tensor as the pickle describes it: storage + offset + size + stride (in elements)."""

    storage: Any
    offset: Any
    size: Any
    stride: Any
    code: Optional[str] = None  # element dtype when it differs from the storage's (v3)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if metadata:
        raise pickle.UnpicklingError(
            f'tensor with metadata {metadata!r} (conjugate/negative views) is not supported; '
            f'save a resolved copy with torch: t.resolve_conj().resolve_neg()')
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    t = _rebuild_tensor_v2(storage, storage_offset, size, stride, metadata=metadata)
    if not isinstance(dtype, _DType):
        raise pickle.UnpicklingError(f'_rebuild_tensor_v3 got dtype {dtype!r}, not a torch dtype')
    t.code = dtype.code
    return t


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


_ALLOWED_GLOBALS = {
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    ('torch._utils', '_rebuild_tensor_v3'): _rebuild_tensor_v3,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('collections', 'OrderedDict'): OrderedDict,
}


class _TensorUnpickler(pickle.Unpickler):
    """Unpickler that builds `_TensorRef`s and refuses every global that is not tensor data."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source
        self.storages: dict[str, _StorageRef] = {}  # every storage the pickle names, by key

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module in ('torch', 'torch.cuda', 'torch.storage') and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == 'torch' and name in _TORCH_DTYPES:
            return _DType(_TORCH_DTYPES[name])
        raise UnsafePickleError(
            f"refusing to load global '{module}.{name}' from {self.source}: only tensor data is "
            f"allowed (torch tensors, storages, dicts). If this is a training checkpoint that "
            f"also pickles other objects, re-save only the weights with torch: "
            f"torch.save(model.state_dict(), path)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6)
                and pid[0] in ('storage', b'storage')):
            raise pickle.UnpicklingError(
                f'{self.source}: unsupported persistent id {pid!r:.200}; expected a torch '
                f"storage ('storage', type, key, location, numel)")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f'{self.source}: storage type {storage_type!r} unknown')
        if isinstance(key, bytes):
            key = key.decode('ascii')
        _check_int(numel, 'storage numel', self.source)
        if view is not None:
            _view_key, offset, view_numel = view
            _check_int(offset, 'storage view offset', self.source)
            _check_int(view_numel, 'storage view numel', self.source)
            if offset + view_numel > numel:
                raise pickle.UnpicklingError(
                    f'{self.source}: storage view [{offset}, {offset + view_numel}) lies outside '
                    f'its storage of {numel} elements')
            view = (offset, view_numel)
        ref = _StorageRef(str(key), storage_type.code, numel, view)
        self.storages.setdefault(ref.key, ref)
        return ref


def _check_int(x, what: str, source: str) -> None:
    if not isinstance(x, int) or isinstance(x, bool) or x < 0:
        raise pickle.UnpicklingError(f'{source}: {what} is {x!r}, expected an integer >= 0')


def _materialize(t: _TensorRef, raw: np.ndarray, source: str, name: str,
                 byteorder: str) -> np.ndarray:
    """Copy the tensor `t` out of `raw`, its storage as a 1-D array of the storage's dtype."""
    code = t.code or t.storage.code
    if code != t.storage.code:  # v3: untyped bytes reinterpreted as `code`
        dt = _np_dtype(code).newbyteorder('<' if byteorder == 'little' else '>')
        if raw.nbytes % dt.itemsize:
            raise ValueError(f'{source}: {name}: storage of {raw.nbytes} bytes is not a whole '
                             f'number of {code} elements')
        raw = raw.view(dt)
    if not (isinstance(t.size, (tuple, list)) and isinstance(t.stride, (tuple, list))):
        raise ValueError(f'{source}: {name} has size {t.size!r:.50} and stride {t.stride!r:.50}; '
                         f'expected tuples')
    size, stride, offset = tuple(t.size), tuple(t.stride), t.offset
    for what, vals in (('size', size), ('stride', stride), ('offset', (offset,))):
        for v in vals:
            _check_int(v, f'{name}: {what}', source)
    if len(size) != len(stride):
        raise ValueError(f'{source}: {name} has size {size} but stride {stride}')
    n = int(np.prod(size, dtype=np.int64))
    if n:
        # Bounds check before as_strided, which would otherwise read past the buffer.
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= raw.size:
            raise ValueError(
                f'{source}: {name} (offset {offset}, size {size}, stride {stride}) reaches element '
                f'{last} of a storage with {raw.size} elements; the file is truncated or corrupt')
        item = raw.itemsize
        arr = np.lib.stride_tricks.as_strided(
            raw[offset:], shape=size, strides=tuple(st * item for st in stride), writeable=False)
        arr = np.array(arr, dtype=raw.dtype.newbyteorder('='), order='C')
    else:
        arr = np.zeros(size, raw.dtype.newbyteorder('='))
    if code == 'bfloat16':  # bfloat16 is the top half of a float32
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def _find_state_dict(obj: Any, source: str) -> Mapping[str, Any]:
    """The state dict inside an unpickled object: itself, or its 'state_dict' / 'model' entry."""
    if isinstance(obj, dict):
        if obj and all(isinstance(v, _TensorRef) for v in obj.values()):
            return obj
        for k in ('state_dict', 'model'):
            if isinstance(obj.get(k), dict):
                return _find_state_dict(obj[k], f"{source}['{k}']")
        bad = next((k for k, v in obj.items() if not isinstance(v, _TensorRef)), None)
        if bad is not None and any(isinstance(v, _TensorRef) for v in obj.values()):
            raise ValueError(f'{source}: entry {bad!r} is a {type(obj[bad]).__name__}, not a '
                             f'tensor; expected a state dict mapping names to tensors')
    keys = list(obj)[:10] if isinstance(obj, dict) else None
    raise ValueError(
        f'{source} holds a {type(obj).__name__}'
        + (f' with keys {keys}' if keys is not None else '')
        + "; expected a state dict of tensors, or a checkpoint dict with a 'state_dict' or "
        "'model' entry holding one")


def _resolve(refs: Mapping[str, _TensorRef], storages: Mapping[str, np.ndarray],
             source: str, byteorder: str) -> dict[str, np.ndarray]:
    out = {}
    for name, t in refs.items():
        if not isinstance(t.storage, _StorageRef):
            raise ValueError(f'{source}: {name} has storage {t.storage!r:.100}, not a file storage')
        raw = storages[t.storage.key]
        if t.storage.view is not None:
            o, n = t.storage.view
            raw = raw[o:o + n]
        out[str(name)] = _materialize(t, raw, source, str(name), byteorder)
    return out


def _storage_array(data: bytes, ref: _StorageRef, byteorder: str, source: str) -> np.ndarray:
    dt = _np_dtype(ref.code).newbyteorder('<' if byteorder == 'little' else '>')
    if len(data) != ref.numel * dt.itemsize:
        raise ValueError(f'{source}: storage {ref.key} has {len(data)} bytes, expected '
                         f'{ref.numel} x {dt.itemsize}; the file is truncated or corrupt')
    return np.frombuffer(data, dt)


def _load_zip(path: Path) -> dict[str, np.ndarray]:
    source = path.name
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith('data.pkl') and n.count('/') == 1]
        if len(pkl) != 1:
            hint = (' (a TorchScript archive: load it with torch and save model.state_dict())'
                    if any(n.endswith('constants.pkl') for n in names) else '')
            raise ValueError(f'{path}: zip file without exactly one <archive>/data.pkl record, '
                             f'so not a torch.save file{hint}')
        prefix = pkl[0][:-len('data.pkl')]
        byteorder = 'little'
        if prefix + 'byteorder' in names:
            byteorder = zf.read(prefix + 'byteorder').decode('ascii', 'replace').strip()
            if byteorder not in ('little', 'big'):
                raise ValueError(f'{path}: unknown byteorder record {byteorder!r}')
        with zf.open(pkl[0]) as f:
            sd = _find_state_dict(_TensorUnpickler(f, source).load(), source)
        storages = {}
        for t in sd.values():
            ref = t.storage
            if isinstance(ref, _StorageRef) and ref.key not in storages:
                rec = f'{prefix}data/{ref.key}'
                if rec not in names:
                    raise ValueError(f'{path}: storage record {rec} is missing; file truncated?')
                want = ref.numel * _np_dtype(ref.code).itemsize
                if zf.getinfo(rec).file_size != want:  # checked before inflating anything
                    raise ValueError(f'{source}: storage {ref.key} has {zf.getinfo(rec).file_size} '
                                     f'bytes, expected {want}; the file is truncated or corrupt')
                storages[ref.key] = _storage_array(zf.read(rec), ref, byteorder, source)
    return _resolve(sd, storages, source, byteorder)


def _load_legacy(path: Path) -> dict[str, np.ndarray]:
    source = path.name
    size = path.stat().st_size
    with open(path, 'rb') as f:
        # The three header pickles hold only ints and plain dicts, yet go
        # through the restricted unpickler all the same.
        magic = _TensorUnpickler(f, source).load()
        if magic != _MAGIC_NUMBER:
            raise ValueError(f'{path}: not a torch file (bad magic number {magic!r:.50})')
        protocol = _TensorUnpickler(f, source).load()
        if protocol != _PROTOCOL_VERSION:
            raise ValueError(f'{path}: unsupported legacy protocol version {protocol!r:.50}')
        _TensorUnpickler(f, source).load()  # sys_info; storages are always little-endian
        unpickler = _TensorUnpickler(f, source)
        obj = unpickler.load()
        keys = _TensorUnpickler(f, source).load()
        if not isinstance(keys, list):
            raise ValueError(f'{path}: storage key list is a {type(keys).__name__}; corrupt file')
        sd = _find_state_dict(obj, source)
        used = {t.storage.key for t in sd.values() if isinstance(t.storage, _StorageRef)}
        storages = {}
        for key in keys:  # each: int64 element count, then the raw little-endian bytes
            key = key.decode('ascii') if isinstance(key, bytes) else str(key)
            head = f.read(8)
            if len(head) != 8:
                raise ValueError(f'{path}: truncated before storage {key}')
            (numel,) = struct.unpack('<q', head)
            ref = unpickler.storages.get(key)
            if ref is None or numel != ref.numel:
                raise ValueError(f'{path}: storage {key} has {numel} elements on disk but '
                                 f'{ref and ref.numel} in the pickle; corrupt file')
            nbytes = numel * _np_dtype(ref.code).itemsize
            if nbytes > size - f.tell():
                raise ValueError(f'{path}: storage {key} needs {nbytes} bytes but only '
                                 f'{size - f.tell()} remain; the file is truncated or corrupt')
            if key in used:
                storages[key] = _storage_array(f.read(nbytes), ref, 'little', source)
            else:  # e.g. optimizer state next to the weights: skip its bytes
                f.seek(nbytes, os.SEEK_CUR)
    return _resolve(sd, storages, source, 'little')


def load_torch_file(path: PathLike) -> dict[str, np.ndarray]:
    """Read a torch.save'd state dict (zip or legacy format) as numpy arrays, without torch.

    Only tensor data is unpickled: any other global in the file (a class, a
    function such as `os.system`) raises `UnsafePickleError` naming it, before
    anything is called. bfloat16 tensors come back as float32; other dtypes as
    they were saved. A checkpoint dict with the weights under 'state_dict' or
    'model' is unwrapped.

    Args:
      path: a `.pth`/`.pt` file written by `torch.save`.
    Returns:
      {name: array} in the file's order, each a fresh C-contiguous array.

    >>> sd = load_torch_file('resnet34-b627a593.pth')  # doctest: +SKIP
    >>> sd['conv1.weight'].shape
    (64, 3, 7, 7)
    """
    path = Path(path)
    with open(path, 'rb') as f:
        head = f.read(4)
    if head.startswith(b'PK'):
        return _load_zip(path)
    if head[:1] == b'\x80':
        return _load_legacy(path)
    raise ValueError(f'{path} is not a torch.save file (starts with {head!r}); expected the zip '
                     f'format (torch >= 1.6) or the legacy pickle format (torch < 0.4 tar '
                     f'archives are not supported: load and re-save them with torch)')


# ---------------------------------------------------------------------------
# safetensors parsing
# ---------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    'F64': 'f8', 'F32': 'f4', 'F16': 'f2', 'BF16': 'bfloat16', 'I64': 'i8', 'I32': 'i4',
    'I16': 'i2', 'I8': 'i1', 'U64': 'u8', 'U32': 'u4', 'U16': 'u2', 'U8': 'u1', 'BOOL': '?',
}


def load_safetensors(path: PathLike) -> dict[str, np.ndarray]:
    """Read a `.safetensors` file as numpy arrays (bfloat16 -> float32), with numpy alone.

    Format: 8-byte little-endian header length N, N bytes of JSON
    {name: {dtype, shape, data_offsets: [begin, end]}} (offsets relative to the
    byte buffer after the header), optional '__metadata__', then the buffer.

    >>> sd = load_safetensors('model.safetensors')  # doctest: +SKIP
    """
    path = Path(path)
    with open(path, 'rb') as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f'{path}: too short for a safetensors file')
        (n,) = struct.unpack('<Q', head)
        size = path.stat().st_size
        if n > size - 8:
            raise ValueError(f'{path}: header length {n} exceeds the file size {size}; '
                             f'not a safetensors file or truncated')
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(
                f'{path}: header is not valid JSON ({e}); not a safetensors file') from e
        buf = f.read()
    out = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        code = _SAFETENSORS_DTYPES.get(info.get('dtype'))
        if code is None:
            raise ValueError(f'{path}: {name} has dtype {info.get("dtype")!r}; supported: '
                             f'{sorted(_SAFETENSORS_DTYPES)}')
        shape = tuple(info['shape'])
        begin, end = info['data_offsets']
        dt = _np_dtype(code).newbyteorder('<')
        if not (0 <= begin <= end <= len(buf)) or end - begin != int(np.prod(shape)) * dt.itemsize:
            raise ValueError(f'{path}: {name} has data_offsets [{begin}, {end}] that do not fit '
                             f'shape {shape} of {info["dtype"]} in a {len(buf)}-byte buffer')
        arr = np.frombuffer(memoryview(buf)[begin:end], dt).astype(
            dt.newbyteorder('='), copy=True).reshape(shape)
        if code == 'bfloat16':
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr
    return out


def load_state_dict(path: PathLike) -> dict[str, np.ndarray]:
    """Read a weight file by its content: torch (`load_torch_file`) or `load_safetensors`."""
    path = Path(path)
    with open(path, 'rb') as f:
        head = f.read(9)
    if head.startswith(b'PK') or head[:1] == b'\x80':
        return load_torch_file(path)
    if len(head) == 9 and head[8:9] == b'{':
        return load_safetensors(path)
    raise ValueError(f'{path} is neither a torch.save file nor a safetensors file '
                     f'(starts with {head!r})')


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
