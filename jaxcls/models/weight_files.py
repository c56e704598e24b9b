"""torchvision / timm weight files -> numpy arrays, without torch.

`load_torch_file` reads torchvision `.pth` files (the zip format of torch >= 1.6 and the
legacy pre-1.6 format) through a restricted unpickler that builds numpy arrays and refuses
every global that is not tensor data (`UnsafePickleError`); `load_safetensors` /
`read_safetensors` parse `.safetensors` with numpy alone and `write_safetensors` writes one
(the layout of jaxcls's exported models); `load_state_dict` picks a reader by the file's
content. What the arrays mean for a ResNet is jaxcls.models.weights's business.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Optional, Union

import numpy as np

PathLike = Union[str, os.PathLike]


class UnsafePickleError(pickle.UnpicklingError):
    """A weight file asked the unpickler for something other than tensor data."""



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


def read_safetensors(path: PathLike) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, arrays) of a `.safetensors` file, with numpy alone (bfloat16 -> float32).

    Format: 8-byte little-endian header length N, N bytes of JSON
    {name: {dtype, shape, data_offsets: [begin, end]}} (offsets relative to the
    byte buffer after the header), optional '__metadata__' (str -> str), then the buffer.
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
    if not isinstance(header, dict):
        raise ValueError(f'{path}: header is JSON but not an object; not a safetensors file')
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
    return dict(header.get('__metadata__') or {}), out


def load_safetensors(path: PathLike) -> dict[str, np.ndarray]:
    """Read a `.safetensors` file as numpy arrays (bfloat16 -> float32), with numpy alone
    (`read_safetensors` without the metadata).

    >>> sd = load_safetensors('model.safetensors')  # doctest: +SKIP
    """
    return read_safetensors(path)[1]


def write_safetensors(f: BinaryIO, arrays: Mapping[str, np.ndarray],
                      metadata: Optional[Mapping[str, str]] = None) -> int:
    """Write `arrays` (name -> numpy array of a safetensors dtype) and `metadata` (str -> str)
    to the open binary file `f` in the safetensors layout; returns the bytes written. The
    header is padded with spaces so the arrays start 64-byte aligned, as the format allows."""
    codes = {np.dtype(v).name if v != 'bfloat16' else 'bfloat16': k
             for k, v in _SAFETENSORS_DTYPES.items()}
    header, off = {}, 0
    if metadata:
        header['__metadata__'] = {str(k): str(v) for k, v in metadata.items()}
    for name, a in arrays.items():
        code = codes.get(np.dtype(a.dtype).name)
        if code is None:
            raise ValueError(f'{name} is {a.dtype}, which safetensors cannot hold; supported: '
                             f'{sorted(codes)}')
        header[name] = {'dtype': code, 'shape': list(a.shape),
                        'data_offsets': [off, off + a.nbytes]}
        off += a.nbytes
    text = json.dumps(header, separators=(',', ':')).encode()
    text += b' ' * (-(8 + len(text)) % 64)
    f.write(struct.pack('<Q', len(text)) + text)
    for a in arrays.values():
        f.write(np.ascontiguousarray(a).astype(a.dtype.newbyteorder('<'), copy=False).tobytes())
    return 8 + len(text) + off


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
