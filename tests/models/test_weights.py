"""jaxcls.models.weights without torch: the torchvision -> Flax mapping, the weight-file
lookup and the download's checks. No test touches the network. (Parsing the files and the
restricted unpickler: tests/models/test_weight_files.py.)
"""
import hashlib
import io
import os
import urllib.error
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxcls.models import weights as W
from jaxcls.archs import ArchSpec, WeightFile
from jaxcls.models.resnet import ResNet

from helpers import write_safetensors


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Any download attempt fails loudly; the user's own caches are never read."""
    def refuse(url, *a, **k):
        raise AssertionError(f'test tried to open {url}')
    monkeypatch.setattr(W, 'urlopen', refuse)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.delenv('JAXCLS_WEIGHTS', raising=False)


# ---- torchvision names -> Flax variables ----------------------------------------------------

def _eval_shapes(block, stages, num_classes):
    model = ResNet(stages, block, num_classes)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))


def synthetic_state_dict(block, stages, num_classes=1000, seed=0):
    """A torchvision-named state dict with random values, built from the Flax tree by the
    inverse mapping written out independently here; also returns the Flax-layout arrays."""
    rng = np.random.default_rng(seed)
    sd, flax_flat = {}, {}
    for col, tree in _eval_shapes(block, stages, num_classes).items():
        for path, leaf in traverse_util.flatten_dict(dict(tree)).items():
            value = rng.standard_normal(leaf.shape).astype(np.float32)
            flax_flat[(col,) + path] = value
            mods = '.'.join(path[:-1]).replace('downsample_0', 'downsample.0').replace(
                'downsample_1', 'downsample.1')
            leaf_name = path[-1]
            if leaf_name == 'kernel' and value.ndim == 4:
                sd[f'{mods}.weight'] = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
            elif leaf_name == 'kernel':
                sd[f'{mods}.weight'] = value.T
            elif col == 'batch_stats':
                sd[f'{mods}.running_{leaf_name}'] = np.abs(value) if leaf_name == 'var' else value
                if leaf_name == 'var':
                    flax_flat[(col,) + path] = sd[f'{mods}.running_var']
                    sd[f'{mods}.num_batches_tracked'] = np.array(7, np.int64)
            else:
                sd[f'{mods}.{"weight" if leaf_name == "scale" else "bias"}'] = value
    return dict(sorted(sd.items(), key=lambda kv: _torchvision_rank(kv[0]))), \
        traverse_util.unflatten_dict(flax_flat)


_ORDER = ['conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3', 'downsample', 'fc',
          'weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']


def _torchvision_rank(key):
    """Sort key giving torchvision's state-dict order (modules in definition order)."""
    return [(1, int(p)) if p.isdigit() else (1, int(p[5:])) if p.startswith('layer') else
            (2, 0) if p == 'fc' else (0, _ORDER.index(p)) for p in key.split('.')]


@pytest.fixture(scope='module')
def r18():
    return synthetic_state_dict('basic', (2, 2, 2, 2))


def test_torch_to_flax_round_trip_resnet18(r18):
    sd, want = r18
    # torchvision's resnet18 state dict: 122 keys, this order
    assert len(sd) == 122 and list(sd)[:7] == [
        'conv1.weight', 'bn1.weight', 'bn1.bias', 'bn1.running_mean', 'bn1.running_var',
        'bn1.num_batches_tracked', 'layer1.0.conv1.weight']
    assert list(sd)[-2:] == ['fc.weight', 'fc.bias'] and 'layer2.0.downsample.0.weight' in sd
    got = W.torch_to_flax(sd, 'resnet18')
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for (path, g), (_, w) in zip(jax.tree_util.tree_leaves_with_path(got),
                                 jax.tree_util.tree_leaves_with_path(want)):
        assert g.dtype == np.float32 and g.flags.c_contiguous, path
        np.testing.assert_array_equal(g, w, err_msg=str(path))
    # the mapping, element by element
    p, s = got['params'], got['batch_stats']
    assert p['conv1']['kernel'][2, 5, 1, 17] == sd['conv1.weight'][17, 1, 2, 5]
    assert p['fc']['kernel'][300, 9] == sd['fc.weight'][9, 300]
    assert p['layer3']['0']['downsample_0']['kernel'][0, 0, 100, 200] == \
        sd['layer3.0.downsample.0.weight'][200, 100, 0, 0]
    np.testing.assert_array_equal(p['layer4']['1']['bn2']['scale'], sd['layer4.1.bn2.weight'])
    np.testing.assert_array_equal(s['layer2']['0']['downsample_1']['var'],
                                  sd['layer2.0.downsample.1.running_var'])
    np.testing.assert_array_equal(s['bn1']['mean'], sd['bn1.running_mean'])
    # and it is what ResNet18 initialises
    shapes = jax.tree.map(lambda x: x.shape, _eval_shapes('basic', (2, 2, 2, 2), 1000))
    assert jax.tree.map(np.shape, got) == shapes


def test_torch_to_flax_variants(r18):
    sd, want = r18
    # DataParallel prefix, float16 values, and a spec/constructor/module instead of a name
    half = {f'module.{k}': v.astype(np.float16) if v.dtype == np.float32 else v
            for k, v in sd.items()}
    got = W.torch_to_flax(half, ResNet((2, 2, 2, 2), 'basic'))
    np.testing.assert_array_equal(got['params']['conv1']['kernel'],
                                  want['params']['conv1']['kernel'].astype(np.float16))
    assert got['params']['conv1']['kernel'].dtype == np.float32
    # include_fc=False == body_variables, and fits ResNet(num_classes=None)
    body = W.torch_to_flax(sd, 'resnet18', include_fc=False)
    assert 'fc' not in body['params']
    assert jax.tree.map(np.shape, body) == jax.tree.map(
        lambda x: x.shape, _eval_shapes('basic', (2, 2, 2, 2), None))
    assert jax.tree.structure(W.body_variables(W.torch_to_flax(sd, 'resnet18'))) == \
        jax.tree.structure(body)
    # num_classes comes from the file's fc when not given
    sd10 = dict(sd, **{'fc.weight': sd['fc.weight'][:10], 'fc.bias': sd['fc.bias'][:10]})
    assert W.torch_to_flax(sd10, 'resnet18')['params']['fc']['kernel'].shape == (512, 10)
    assert W.torch_to_flax(sd10, 'resnet18', 10)['params']['fc']['bias'].shape == (10,)


def test_wrong_shape_names_key_and_both_shapes(r18):
    sd, _ = r18
    bad = dict(sd, **{'layer2.1.conv2.weight': np.zeros((128, 128, 1, 1), np.float32)})
    with pytest.raises(W.WeightsMismatchError,
                       match=r'layer2\.1\.conv2\.weight has shape \(128, 128, 1, 1\) in the file '
                             r'but resnet18 with num_classes=1000 expects \(128, 128, 3, 3\)'):
        W.torch_to_flax(bad, 'resnet18', source='my.pth')
    with pytest.raises(W.WeightsMismatchError, match=r'weights in my\.pth do not fit'):
        W.torch_to_flax(bad, 'resnet18', source='my.pth')


def test_wrong_num_classes_suggests_the_fix(r18):
    sd, _ = r18
    with pytest.raises(W.WeightsMismatchError,
                       match=r"fc\.weight has shape \(1000, 512\) in the file but resnet18 with "
                             r"num_classes=2 expects \(2, 512\) \(and 1 more shape mismatches\).*"
                             r"pass num_classes=None .* or include_fc=False"):
        W.torch_to_flax(sd, 'resnet18', num_classes=2)


def test_missing_and_unexpected_keys(r18):
    sd, _ = r18
    bad = {k: v for k, v in sd.items() if k != 'bn1.running_var'}
    bad['head.weight'] = np.zeros(3, np.float32)
    with pytest.raises(W.WeightsMismatchError,
                       match=r'unexpected keys: head\.weight; missing keys: bn1\.running_var'):
        W.torch_to_flax(bad, 'resnet18')


def test_wrong_arch_resnet50_file_into_resnet18():
    sd50, _ = synthetic_state_dict('bottleneck', (3, 4, 6, 3))
    with pytest.raises(W.WeightsMismatchError) as e:
        W.torch_to_flax(sd50, 'resnet18')
    msg = str(e.value)
    assert ('layer1.0.conv1.weight has shape (64, 64, 1, 1) in the file but resnet18 with '
            'num_classes=1000 expects (64, 64, 3, 3)') in msg
    assert 'unexpected keys: layer1.0.conv3.weight, layer1.0.bn3.weight' in msg
    assert "The file's layout is resnet50's: pass arch='resnet50'." in msg
    assert 'fc.weight has shape (1000, 2048)' not in msg  # only the first mismatch is spelled out


def test_wrong_arch_resnet34_file_into_resnet18():
    sd34, _ = synthetic_state_dict('basic', (3, 4, 6, 3))
    with pytest.raises(W.WeightsMismatchError,
                       match=r"unexpected keys: layer1\.2\.conv1\.weight, .*\(80 in all\)\. "
                             r"The file's layout is resnet34's: pass arch='resnet34'\."):
        W.torch_to_flax(sd34, 'resnet18')


# ---- finding and downloading -----------------------------------------------------------------

def make_spec(tmp_path, content=b'fake weights v1', prefix=None):
    """An arch spec whose one weight file is served from a file:// URL in tmp_path."""
    digest = hashlib.sha256(content).hexdigest()
    prefix = digest[:8] if prefix is None else prefix
    fname = f'resnet18-{prefix}.pth'
    src = tmp_path / 'server' / fname
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(content)
    spec = ArchSpec('resnet18', 'basic', (2, 2, 2, 2), 512,
                    weights=(WeightFile(fname, src.as_uri(), prefix),))
    return spec, fname


def put(folder, name, data=b'x'):
    p = Path(folder) / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def test_hub_dir_follows_torch(monkeypatch, tmp_path):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    assert W.hub_checkpoint_dir() == tmp_path / 'th' / 'hub' / 'checkpoints'
    monkeypatch.delenv('TORCH_HOME')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert W.hub_checkpoint_dir() == tmp_path / 'xdg' / 'torch' / 'hub' / 'checkpoints'
    monkeypatch.delenv('XDG_CACHE_HOME')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert W.hub_checkpoint_dir() == tmp_path / 'home' / '.cache' / 'torch' / 'hub' / 'checkpoints'


def test_lookup_order(monkeypatch, tmp_path):
    spec, fname = make_spec(tmp_path)
    env_dir, hub = tmp_path / 'env', W.hub_checkpoint_dir()
    monkeypatch.setenv('JAXCLS_WEIGHTS', str(env_dir))
    monkeypatch.delenv('JAXCLS_OFFLINE', raising=False)
    monkeypatch.setattr(W, 'urlopen', __import__('urllib.request').request.urlopen)
    explicit = put(tmp_path / 'mine', 'any-name.pth')
    in_env, in_hub = put(env_dir, fname), put(hub, fname)

    assert W.find_weights(spec, explicit) == explicit
    assert W.find_weights(spec, str(explicit)) == explicit
    assert W.find_weights(spec) == in_env
    in_env.unlink()
    assert W.find_weights(spec) == in_hub
    in_hub.unlink()
    got = W.find_weights(spec, progress=False)  # downloaded into the hub cache
    assert got == hub / fname and got.read_bytes() == b'fake weights v1'
    assert sorted(p.name for p in hub.iterdir()) == [fname]  # no temp file left behind


def test_safetensors_aliases_and_folders(monkeypatch, tmp_path):
    spec, fname = make_spec(tmp_path)
    env_dir = tmp_path / 'env'
    monkeypatch.setenv('JAXCLS_WEIGHTS', str(env_dir))
    tagged = put(env_dir, 'resnet18.tv_in1k/model.safetensors')
    assert W.find_weights(spec, download=False) == tagged
    folder = put(env_dir, 'resnet18/model.safetensors')
    assert W.find_weights(spec, download=False) == folder
    flat = put(env_dir, 'resnet18.safetensors')
    assert W.find_weights(spec, download=False) == flat
    official = put(env_dir, fname)
    assert W.find_weights(spec, download=False) == official  # the official name first
    # an explicit folder is searched the same way
    assert W.find_weights(spec, env_dir / 'resnet18') == folder  # holds model.safetensors
    assert W.find_weights(spec, env_dir) == official
    with pytest.raises(W.WeightsNotFoundError, match=r'no resnet18 weights in folder .*empty'):
        (tmp_path / 'empty').mkdir()
        W.find_weights(spec, tmp_path / 'empty')


def test_named_weight_file_and_bad_names(monkeypatch, tmp_path):
    hub = W.hub_checkpoint_dir()
    put(hub, 'resnet50-0676ba61.pth')
    v2 = put(hub, 'resnet50-11ad3fa6.pth')
    assert W.find_weights('resnet50', 'resnet50-11ad3fa6.pth', download=False) == v2
    assert W.find_weights('resnet50', download=False) == hub / 'resnet50-0676ba61.pth'
    with pytest.raises(FileNotFoundError, match=r"weights 'resnet50-v3\.pth' for resnet50 is "
                                                r"neither .* known: \['resnet50-0676ba61\.pth'"):
        W.find_weights('resnet50', 'resnet50-v3.pth', download=False)
    with pytest.raises(FileNotFoundError, match=r"weights file '.*nope/w\.pth' does not exist"):
        W.find_weights('resnet50', str(tmp_path / 'nope' / 'w.pth'))


def test_offline_error_names_file_folders_and_url(monkeypatch, tmp_path):
    monkeypatch.delenv('JAXCLS_OFFLINE', raising=False)
    monkeypatch.setenv('JAXCLS_WEIGHTS', str(tmp_path / 'w'))

    def offline(url, *a, **k):
        raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(W, 'urlopen', offline)
    with pytest.raises(W.WeightsNotFoundError) as e:
        W.find_weights('resnet34', progress=False)
    msg = str(e.value)
    assert 'resnet34-b627a593.pth' in msg
    assert 'https://download.pytorch.org/models/resnet34-b627a593.pth' in msg
    assert f"$JAXCLS_WEIGHTS {tmp_path / 'w'} (does not exist)" in msg
    assert f'torch hub cache {W.hub_checkpoint_dir()}' in msg
    assert 'Temporary failure in name resolution' in msg
    assert 'put it in one of those folders' in msg and 'weights=<path>' in msg
    assert not W.hub_checkpoint_dir().exists() or not any(W.hub_checkpoint_dir().iterdir())


def test_offline_with_a_real_failing_url(monkeypatch, tmp_path):
    """The real urlopen on a file:// URL that does not exist: an OSError, never the network."""
    monkeypatch.delenv('JAXCLS_OFFLINE', raising=False)
    monkeypatch.setattr(W, 'urlopen', __import__('urllib.request').request.urlopen)
    missing = tmp_path / 'gone' / 'resnet18-deadbeef.pth'
    spec = ArchSpec('resnet18', 'basic', (2, 2, 2, 2), 512,
                    weights=(WeightFile(missing.name, missing.as_uri(), 'deadbeef'),))
    with pytest.raises(W.WeightsNotFoundError, match=rf'could not be downloaded from '
                                                     rf'{missing.as_uri()} \(URLError'):
        W.find_weights(spec, progress=False)


def test_offline_env_and_download_false_never_open(monkeypatch):
    monkeypatch.setenv('JAXCLS_OFFLINE', '1')
    with pytest.raises(W.WeightsNotFoundError, match=r'\$JAXCLS_OFFLINE is set.*searched '):
        W.find_weights('resnet18')  # the autouse stub would raise AssertionError if opened
    monkeypatch.setenv('JAXCLS_OFFLINE', '0')
    with pytest.raises(W.WeightsNotFoundError, match=r'\(download=False\); searched .*'
                                                     r'\(\$JAXCLS_WEIGHTS is not set\)'):
        W.find_weights('resnet18', download=False)


def test_hash_mismatch_deletes_and_raises(monkeypatch, tmp_path):
    monkeypatch.delenv('JAXCLS_OFFLINE', raising=False)
    monkeypatch.setattr(W, 'urlopen', __import__('urllib.request').request.urlopen)
    spec, fname = make_spec(tmp_path, b'tampered bytes', prefix='0123abcd')
    with pytest.raises(ValueError, match=r'SHA-256 [0-9a-f]{64}, which does not start with the '
                                         r'expected 0123abcd; the file was deleted'):
        W.find_weights(spec, progress=False)
    hub = W.hub_checkpoint_dir()
    assert not (hub / fname).exists() and list(hub.iterdir()) == []
    # download_file itself, with the right prefix, and with no prefix
    src = tmp_path / 'server' / fname
    dest = tmp_path / 'out' / 'w.pth'
    good = hashlib.sha256(b'tampered bytes').hexdigest()[:8]
    got = W.download_file(src.as_uri(), dest, good, progress=True)
    assert got == dest and got.read_bytes() == b'tampered bytes'


def test_download_stub_sees_chunks_and_progress(monkeypatch, tmp_path):
    """An injected urlopen: headers give the size, chunks arrive, the result is renamed in place."""
    payload = os.urandom(3 << 20)

    class Resp(io.BytesIO):
        headers = {'Content-Length': str(len(payload))}
    opened = []

    def stub(url, *a, **k):
        opened.append(url)
        return Resp(payload)
    monkeypatch.setattr(W, 'urlopen', stub)
    dest = W.download_file('https://example.invalid/w.pth', tmp_path / 'w.pth',
                           hashlib.sha256(payload).hexdigest()[:8], progress=False)
    assert opened == ['https://example.invalid/w.pth'] and dest.read_bytes() == payload


# ---- end to end --------------------------------------------------------------------------------

def test_load_pretrained_from_a_timm_safetensors(monkeypatch, tmp_path, r18):
    sd, want = r18
    env_dir = tmp_path / 'weights'
    write_safetensors(put(env_dir, 'resnet18.safetensors'),
                      {k: v for k, v in sd.items()}, {'format': 'pt'})
    monkeypatch.setenv('JAXCLS_WEIGHTS', str(env_dir))
    got = W.load_pretrained('resnet18', download=False)
    np.testing.assert_array_equal(got['params']['layer3']['1']['conv2']['kernel'],
                                  want['params']['layer3']['1']['conv2']['kernel'])
    body = W.load_pretrained('resnet18', include_fc=False, download=False)
    assert 'fc' not in body['params']
    with pytest.raises(W.WeightsMismatchError, match=r'weights in .*resnet18\.safetensors do not '
                                                     r'fit resnet34'):
        W.load_pretrained('resnet34', env_dir / 'resnet18.safetensors')
