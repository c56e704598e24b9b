"""torchvision vs jaxcls, through the weight files: same weights, same logits.

For resnet18/34/50 a torchvision model with random weights, non-trivial BatchNorm
affine parameters and randomised running statistics is saved as a `.pth` (zip and,
for resnet18, legacy) and as `.safetensors`, loaded through jaxcls without torch,
and run on the same random batch in eval and train mode.

Needs torch and torchvision next to jaxcls (skipped otherwise, reason shown with -rs):

    make parity      # builds .venv-torch (torch==2.14.1 torchvision==0.29.1 safetensors + jaxcls)
    .venv-torch/bin/python -m pytest tests/models/test_parity.py -s   # -s prints the numbers
"""
import functools
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch', reason='parity with torchvision needs torch installed '
                                             '(see the docstring of tests/models/test_parity.py)')
torchvision = pytest.importorskip('torchvision', reason='parity needs torchvision installed')
safetensors_torch = pytest.importorskip('safetensors.torch', reason='parity needs safetensors')

from jaxcls.models import weights as W  # noqa: E402
from jaxcls.archs import get_arch  # noqa: E402
from jaxcls.models.resnet import ResNet  # noqa: E402

pytestmark = pytest.mark.slow

# max |jax - torch| / max |torch| over the logits; float32 through 18-50 layers
# lands around 1e-6 .. 1e-5.
RTOL = 1e-4


def _randomised_model(arch: str, seed: int):
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(1234)
        model.fc.bias.normal_(0.0, 0.5)
    return model


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _flax(arch, num_classes=1000):
    spec = get_arch(arch)
    return ResNet(spec.stage_sizes, spec.block, num_classes)


@pytest.fixture(scope='module')
def report():
    rows = []
    yield rows
    if rows:
        print('\n\nparity, max|jax - torch| / max|torch|:')
        for row in rows:
            print('  ' + row)


# resnet50 at 96 px: at 64 px its layer4 BatchNorms average over n=8 values in train mode,
# which amplifies float32 rounding to ~5e-5, too close to RTOL for comfort.
CASES = {'resnet18': (64, 0), 'resnet34': (224, 1), 'resnet50': (96, 2)}


@functools.cache
def _run(arch: str) -> dict:
    """Save a randomised torchvision `arch`, load it through jaxcls, run both; the numbers."""
    size, seed = CASES[arch]
    model = _randomised_model(arch, seed)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        pth, st = Path(tmp) / f'{arch}.pth', Path(tmp) / f'{arch}.safetensors'
        torch.save(model.state_dict(), pth)
        safetensors_torch.save_file(model.state_dict(), str(st))
        variables = W.load_pretrained(arch, pth)
        out['from_safetensors'] = W.torch_to_flax(W.load_safetensors(st), arch)
        if arch == 'resnet18':
            legacy = Path(tmp) / 'legacy.pth'
            torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
            out['from_legacy'] = W.load_pretrained(arch, legacy)
    out['variables'], out['state_dict'] = variables, sd

    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed + 100))
    x_nhwc = x.numpy().transpose(0, 2, 3, 1)
    module = _flax(arch)

    # eval mode: running statistics
    model.eval()
    with torch.no_grad():
        out['torch_eval'] = model(x).numpy()
    out['jax_eval'] = np.asarray(
        jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x_nhwc))

    # train mode: batch statistics, and the running statistics they update (torch's
    # running_var takes the unbiased batch variance, n / (n - 1); jaxcls's BatchNorm too)
    model.train()
    with torch.no_grad():
        out['torch_train'] = model(x).numpy()
    got, updated = jax.jit(
        lambda v, x: module.apply(v, x, train=True, mutable=['batch_stats']))(variables, x_nhwc)
    out['jax_train'] = np.asarray(got)
    new = {k: v.numpy().astype(np.float64) for k, v in model.state_dict().items()}
    out['torch_stats'] = _flat(W.torch_to_flax(new, arch)['batch_stats'])
    out['jax_stats'] = _flat(updated['batch_stats'])
    return out


def _flat(tree) -> dict:
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def _max_rel(a: dict, b: dict, leaf: str) -> float:
    return max(_rel(a[k], b[k]) for k in b if k.endswith(f"['{leaf}']"))


@pytest.mark.parametrize('arch', list(CASES))
def test_files_load_to_the_same_variables(arch):
    r = _run(arch)
    for other in ('from_safetensors', 'from_legacy'):
        if other in r:
            for a, b in zip(jax.tree.leaves(r['variables']), jax.tree.leaves(r[other])):
                np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(r['variables']['params']['conv1']['kernel'],
                                  r['state_dict']['conv1.weight'].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(r['variables']['batch_stats']['layer1']['0']['bn1']['var'],
                                  r['state_dict']['layer1.0.bn1.running_var'].numpy())


@pytest.mark.parametrize('arch', list(CASES))
def test_eval_and_train_parity(arch, report):
    r = _run(arch)
    assert np.isfinite(r['torch_eval']).all() and np.max(np.abs(r['torch_eval'])) > 1.0
    rel_eval = _rel(r['jax_eval'], r['torch_eval'])
    rel_train = _rel(r['jax_train'], r['torch_train'])
    rel_mean = _max_rel(r['jax_stats'], r['torch_stats'], 'mean')
    rel_var = _max_rel(r['jax_stats'], r['torch_stats'], 'var')
    report.append(f'{arch} @ {CASES[arch][0]}px: eval logits {rel_eval:.2e}, train logits '
                  f'{rel_train:.2e}, running mean {rel_mean:.2e}, running var {rel_var:.2e}')
    assert rel_eval < RTOL, rel_eval
    assert (np.argmax(r['jax_eval'], -1) == np.argmax(r['torch_eval'], -1)).all()
    assert rel_train < RTOL, rel_train
    assert rel_mean < RTOL, rel_mean
    assert rel_var < RTOL, rel_var


def test_body_features_match_torchvision_trunk(report):
    """include_fc=False: ResNet(num_classes=None) = torchvision's children()[:-2]."""
    arch = 'resnet34'
    model = _randomised_model(arch, 3).eval()
    body = torch.nn.Sequential(*list(model.children())[:-2]).eval()
    variables = W.torch_to_flax({k: v.numpy() for k, v in model.state_dict().items()}, arch,
                                include_fc=False)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = body(x).numpy().transpose(0, 2, 3, 1)
    got = jax.jit(lambda v, x: _flax(arch, None).apply(v, x, train=False))(
        variables, x.numpy().transpose(0, 2, 3, 1))
    assert got.shape == want.shape == (2, 3, 3, 512)
    rel = _rel(got, want)
    report.append(f'{arch} body (include_fc=False) @ 96px: features {rel:.2e}')
    assert rel < RTOL, rel
