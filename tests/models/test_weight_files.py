"""jaxcls.models.weight_files without torch: torch's zip and legacy files and safetensors
parsed to the exact arrays torch reads, and the restricted unpickler that refuses any other
code. (The torchvision -> Flax mapping and the lookup are tests/models/test_weights.py's.)

The fixture files come from tests/fixtures/make_fixtures.py (run with torch); their
expected values are in tests/fixtures/expected.npz.
"""
import io
import json
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jaxcls.models import weights as W

from helpers import write_safetensors

FIXTURES = Path(__file__).parent.parent / 'fixtures'
SENTINEL = 'JAXCLS_PWNED'  # what the malicious fixtures would `touch` in the cwd


@pytest.fixture(scope='module')
def expected():
    with np.load(FIXTURES / 'expected.npz') as z:
        return {k: z[k] for k in z.files}


def assert_exact(got: dict, want: dict):
    assert list(got) == list(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype, (k, got[k].dtype, v.dtype)
        assert got[k].shape == v.shape, (k, got[k].shape, v.shape)
        np.testing.assert_array_equal(got[k], v, err_msg=k)
        assert got[k].flags.c_contiguous and got[k].flags.writeable, k


# ---- parsing the fixture files ------------------------------------------------------------

TINY_KEYS = ['f32', 'f16', 'bf16', 'f64', 'i64', 'i32', 'u8', 'bool', 'scalar', 'empty', 'param',
             'transposed', 'channels_last', 'base', 'row', 'col']


@pytest.mark.parametrize('fname, keys', [
    ('tiny_zip.pth', TINY_KEYS + ['u16']),
    ('tiny_legacy.pth', TINY_KEYS),
    ('tiny_bigendian.pth', TINY_KEYS),
    ('wrapped_zip.pth', ['f32', 'bf16', 'row', 'transposed']),
    ('wrapped_legacy.pth', ['f32', 'bf16', 'row', 'transposed']),
])
def test_torch_files_match_torch_exactly(fname, keys, expected):
    sd = W.load_torch_file(FIXTURES / fname)
    assert_exact(sd, {k: expected[k] for k in keys})
    # spot checks of the layouts the fixture was built to exercise
    assert sd['bf16'].dtype == np.float32                       # bfloat16 widened
    np.testing.assert_array_equal(sd['row'], [1.0, 1.5, 2.0, 2.5])  # storage offset 4
    assert sd['transposed'].shape == (4, 3)                     # non-contiguous source
    if 'col' in keys:
        np.testing.assert_array_equal(sd['col'], [0.0, 2.0, 4.0])  # offset 2, stride 4
        assert sd['i64'][3] == -(1 << 62) and sd['scalar'].shape == () and sd['scalar'] == 42
        assert sd['empty'].shape == (0, 3)
        assert not np.shares_memory(sd['base'], sd['row'])  # each array owns its data


def test_zip_uint16_is_rebuilt_from_untyped_storage(expected):
    sd = W.load_torch_file(FIXTURES / 'tiny_zip.pth')
    assert sd['u16'].dtype == np.uint16
    np.testing.assert_array_equal(sd['u16'], [1, 2, 60000])


def test_legacy_storage_views(expected):
    """torch < 1.0 wrote storages that are views into a larger storage (6th pid field)."""
    sd = W.load_torch_file(FIXTURES / 'legacy_views.pth')
    assert_exact(sd, {k[len('view__'):]: v for k, v in expected.items() if k.startswith('view__')})
    np.testing.assert_array_equal(sd['va'], [[2.5, 4.0], [5.5, 7.0]])


def test_safetensors_matches_torch_exactly(expected):
    sd = W.load_safetensors(FIXTURES / 'tiny.safetensors')
    assert sorted(sd) == sorted(TINY_KEYS + ['u16'])
    assert_exact({k: sd[k] for k in expected if k in sd},
                 {k: v for k, v in expected.items() if k in sd})


def test_safetensors_agrees_with_the_reference_parser():
    st = pytest.importorskip('safetensors.numpy', reason='safetensors not installed')
    ref = st.load_file(str(FIXTURES / 'tiny.safetensors'))
    ours = W.load_safetensors(FIXTURES / 'tiny.safetensors')
    for k, v in ref.items():
        if k == 'bf16':
            continue  # numpy has no bfloat16; the reference parser refuses or returns raw
        np.testing.assert_array_equal(ours[k], v, err_msg=k)
        assert ours[k].dtype == v.dtype


def test_safetensors_bad_offsets_and_dtype(tmp_path):
    p = tmp_path / 'ok.safetensors'
    write_safetensors(p, {'a': np.arange(6, dtype=np.float32).reshape(2, 3)}, {'format': 'np'})
    np.testing.assert_array_equal(W.load_safetensors(p)['a'], np.arange(6).reshape(2, 3))
    h = json.dumps({'a': {'dtype': 'F32', 'shape': [4], 'data_offsets': [0, 8]}}).encode()
    bad = tmp_path / 'bad.safetensors'
    bad.write_bytes(struct.pack('<Q', len(h)) + h + bytes(8))
    with pytest.raises(ValueError,
                       match=r"a has data_offsets \[0, 8\] that do not fit shape \(4,\)"):
        W.load_safetensors(bad)
    h = json.dumps({'a': {'dtype': 'F8_E4M3', 'shape': [1], 'data_offsets': [0, 1]}}).encode()
    bad.write_bytes(struct.pack('<Q', len(h)) + h + bytes(1))
    with pytest.raises(ValueError, match="a has dtype 'F8_E4M3'"):
        W.load_safetensors(bad)


def test_load_state_dict_dispatches_on_content(tmp_path, expected):
    # a safetensors file named .pth and a torch file named .safetensors still load
    (tmp_path / 'st.pth').write_bytes((FIXTURES / 'tiny.safetensors').read_bytes())
    (tmp_path / 'pt.safetensors').write_bytes((FIXTURES / 'tiny_zip.pth').read_bytes())
    np.testing.assert_array_equal(W.load_state_dict(tmp_path / 'st.pth')['f32'], expected['f32'])
    np.testing.assert_array_equal(W.load_state_dict(tmp_path / 'pt.safetensors')['f32'],
                                  expected['f32'])
    (tmp_path / 'junk.bin').write_bytes(b'GIF89a....')
    with pytest.raises(ValueError, match='neither a torch.save file nor a safetensors file'):
        W.load_state_dict(tmp_path / 'junk.bin')


# ---- the restricted unpickler --------------------------------------------------------------

@pytest.mark.parametrize('fname', ['malicious_zip.pth', 'malicious_legacy.pth'])
def test_malicious_pickle_is_refused_and_nothing_runs(fname, tmp_path, monkeypatch):
    data = (FIXTURES / fname).read_bytes()
    if fname.endswith('zip.pth'):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            pkl = z.read(next(n for n in z.namelist() if n.endswith('/data.pkl')))
    else:
        pkl = data
    # The fixture is live: it really references os.system with the touch command.
    dis = io.StringIO()
    try:
        pickletools.dis(pkl, out=dis)
    except Exception:  # the legacy file holds several pickles; the first ones suffice
        pass
    assert 'posix system' in dis.getvalue() or b'posix\nsystem' in pkl
    assert f'touch {SENTINEL}'.encode() in data

    monkeypatch.chdir(tmp_path)
    with pytest.raises(W.UnsafePickleError,
                       match=rf"refusing to load global 'posix\.system' from {fname}: "
                             r'only tensor data is allowed'):
        W.load_torch_file(FIXTURES / fname)
    assert not (tmp_path / SENTINEL).exists()
    assert list(tmp_path.iterdir()) == []


# Hand-assembled pickles (no torch needed), in the form torch.save writes them.
def _str(s):
    b = s.encode()
    return b'X' + struct.pack('<I', len(b)) + b


def _int(i):
    return b'J' + struct.pack('<i', i)


def _tuple(items):
    return b'(' + b''.join(items) + b't'


def _tensor_pickle(entries, extra=b''):
    """{name: _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())}."""
    out = b'\x80\x02}('
    for name, stype, key, numel, offset, size, stride in entries:
        module, _, stype = stype.rpartition('.')  # 'torch.cuda.FloatStorage' or 'FloatStorage'
        pid = _tuple([_str('storage'), f'c{module or "torch"}\n{stype}\n'.encode(), _str(key),
                      _str('cuda:0' if module == 'torch.cuda' else 'cpu'), _int(numel)])
        out += (_str(name) + b'ctorch._utils\n_rebuild_tensor_v2\n'
                + _tuple([pid + b'Q', _int(offset), _tuple(map(_int, size)),
                          _tuple(map(_int, stride)), b'\x89',
                          b'ccollections\nOrderedDict\n)R']) + b'R')
    return out + extra + b'u.'


def _write_zip(path, pkl, storages, byteorder=b'little'):
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr('archive/data.pkl', pkl)
        z.writestr('archive/byteorder', byteorder)
        for key, data in storages.items():
            z.writestr(f'archive/data/{key}', data)


@pytest.mark.parametrize('stype', ['FloatStorage', 'torch.cuda.FloatStorage'])
def test_hand_built_zip_reads(tmp_path, stype):
    """Pins the pickle form the refusal tests below build on; GPU-saved files load too."""
    p = tmp_path / 'ok.pth'
    data = np.arange(6, dtype='<f4').tobytes()
    _write_zip(p, _tensor_pickle([('w', stype, '0', 6, 1, (2, 2), (1, 2))]), {'0': data})
    np.testing.assert_array_equal(W.load_torch_file(p)['w'], [[1, 3], [2, 4]])


@pytest.mark.parametrize('module, name', [
    ('builtins', 'eval'), ('os', 'system'), ('subprocess', 'Popen'), ('torch', 'load'),
    ('torch._utils', '_rebuild_qtensor'), ('numpy.core.multiarray', '_reconstruct'),
    ('__builtin__', 'getattr'),
])
def test_any_other_global_is_refused(tmp_path, module, name):
    p = tmp_path / 'evil.pth'
    payload = _str('x') + f'c{module}\n{name}\n'.encode() + _tuple([_str('1+1')]) + b'R'
    _write_zip(p, _tensor_pickle([], extra=payload), {})
    with pytest.raises(W.UnsafePickleError, match=rf"global '{module}\.{name}' from evil\.pth"):
        W.load_torch_file(p)


def test_out_of_bounds_strides_are_an_error_not_a_memory_read(tmp_path):
    p = tmp_path / 'oob.pth'
    # 4 floats on disk, but the tensor claims 10 elements at stride 1, then stride 1000
    _write_zip(p, _tensor_pickle([('w', 'FloatStorage', '0', 4, 0, (10,), (1,))]),
               {'0': bytes(16)})
    with pytest.raises(ValueError, match=r'w \(offset 0, size \(10,\), stride \(1,\)\) reaches '
                                         r'element 9 of a storage with 4 elements'):
        W.load_torch_file(p)
    _write_zip(p, _tensor_pickle([('w', 'FloatStorage', '0', 4, 1, (2,), (1000,))]),
               {'0': bytes(16)})
    with pytest.raises(ValueError, match='reaches element 1001'):
        W.load_torch_file(p)


def test_truncated_storage_and_non_state_dict(tmp_path):
    p = tmp_path / 't.pth'
    _write_zip(p, _tensor_pickle([('w', 'FloatStorage', '0', 4, 0, (4,), (1,))]), {'0': bytes(12)})
    with pytest.raises(ValueError,
                       match=r'storage 0 has 12 bytes, expected 16; the file is truncated'):
        W.load_torch_file(p)
    _write_zip(p, b'\x80\x02]' + _int(3) + b'a.', {})  # a list [3]
    with pytest.raises(ValueError, match=r"holds a list; expected a state dict of tensors"):
        W.load_torch_file(p)
    _write_zip(p, b'\x80\x02}' + _str('epoch') + _int(3) + b's.', {})
    with pytest.raises(ValueError, match=r"holds a dict with keys \['epoch'\]"):
        W.load_torch_file(p)


def test_legacy_bad_magic_and_truncation(tmp_path):
    p = tmp_path / 'bad.pth'
    p.write_bytes(pickle.dumps(12345, protocol=2))
    with pytest.raises(ValueError, match='bad magic number 12345'):
        W.load_torch_file(p)
    data = (FIXTURES / 'tiny_legacy.pth').read_bytes()
    p.write_bytes(data[:-10])
    with pytest.raises(ValueError, match='truncated or corrupt'):
        W.load_torch_file(p)
