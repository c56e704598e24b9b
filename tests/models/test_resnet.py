"""ResNet structure: torchvision's parameter counts, shapes, paddings and the body cut."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcls.models import ARCHS, ResNet, build, get_arch, resnet18, resnet34, resnet50

# torchvision's sum(p.numel() for p in model.parameters()) for 1000 classes.
TORCHVISION_PARAMS = {'resnet18': 11_689_512, 'resnet34': 21_797_672, 'resnet50': 25_557_032}


def _shapes(arch, num_classes=1000, size=64):
    spec = get_arch(arch)
    module = ResNet(spec.stage_sizes, spec.block, num_classes)
    return module, jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0),
                                                      jnp.zeros((1, size, size, 3))))


@pytest.mark.parametrize('arch', sorted(TORCHVISION_PARAMS))
def test_parameter_count_matches_torchvision(arch):
    _, variables = _shapes(arch)
    n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(variables['params']))
    assert n == TORCHVISION_PARAMS[arch]


def test_names_mirror_torchvision_keys():
    _, v = _shapes('resnet50')
    p, s = v['params'], v['batch_stats']
    assert p['conv1']['kernel'].shape == (7, 7, 3, 64)
    # v1.5: the stride lives in the 3x3 conv (conv2), the downsample is 1x1.
    assert p['layer2']['0']['conv2']['kernel'].shape == (3, 3, 128, 128)
    assert p['layer2']['0']['downsample_0']['kernel'].shape == (1, 1, 256, 512)
    assert s['layer4']['2']['bn3']['var'].shape == (2048,)
    assert p['fc']['kernel'].shape == (2048, 1000)


@pytest.mark.parametrize('size,expected', [(224, 7), (64, 2), (65, 3), (32, 1)])
def test_feature_map_sizes_follow_torch_padding(size, expected):
    # torch: out = floor((n + 2p - k) / s) + 1 at every stride-2 layer; 'SAME' would differ
    # on odd sizes (65 -> 33 -> 17 -> 9 -> 5 -> 3 with explicit padding).
    body, v = _shapes('resnet18', None, size)
    out = jax.eval_shape(lambda v: body.apply(v, jnp.zeros((2, size, size, 3))), v)
    assert out.shape == (2, expected, expected, 512)


def test_stride2_padding_is_symmetric():
    # With a kernel that picks the top-left tap, symmetric (1,1) padding makes output
    # pixel (0,0) read the padding; 'SAME' on an even size pads only bottom/right and
    # would read pixel (0,0) instead.
    from flax import linen as nn
    conv = nn.Conv(1, (3, 3), (2, 2), ((1, 1), (1, 1)), use_bias=False)
    k = jnp.zeros((3, 3, 1, 1)).at[0, 0, 0, 0].set(1.0)
    x = jnp.arange(1, 17, dtype=jnp.float32).reshape(1, 4, 4, 1)
    y = conv.apply({'params': {'kernel': k}}, x)
    np.testing.assert_array_equal(np.asarray(y[0, :, :, 0]), [[0, 0], [0, 6]])


def test_constructors_are_arch_values():
    assert get_arch(resnet34) is ARCHS['resnet34']
    assert get_arch(resnet50).block == 'bottleneck'
    with pytest.raises(ValueError, match="unknown arch 'resnet35'.*resnet34"):
        get_arch('resnet35')


def test_body_and_head_share_parameters():
    model, variables = resnet18(num_classes=5)
    body, body_vars = resnet18(num_classes=None)
    assert 'fc' in variables['params'] and 'fc' not in body_vars['params']
    # Same key: the body's initial values equal the full model's.
    np.testing.assert_array_equal(variables['params']['conv1']['kernel'],
                                  body_vars['params']['conv1']['kernel'])
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    feats = jax.jit(body.apply)(body_vars, x)   # jitted: one program, not one per op
    logits = jax.jit(model.apply)(variables, x)
    ref = feats.mean((1, 2)) @ variables['params']['fc']['kernel'] + variables['params']['fc']['bias']
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)


def test_init_statistics_follow_torchvision():
    _, v = resnet18(num_classes=1000)
    k = np.asarray(v['params']['layer3']['0']['conv2']['kernel'])
    # kaiming normal, fan_out mode: std = sqrt(2 / (3 * 3 * 256)).
    assert abs(k.std() - np.sqrt(2 / (9 * 256))) / np.sqrt(2 / (9 * 256)) < 0.02
    fc = np.asarray(v['params']['fc']['kernel'])
    # torch Linear: U(-1/sqrt(512), 1/sqrt(512)).
    assert np.abs(fc).max() <= 1 / np.sqrt(512) + 1e-7 and np.abs(fc).max() > 0.9 / np.sqrt(512)
    assert np.all(np.asarray(v['batch_stats']['bn1']['var']) == 1.0)


def test_bfloat16_compute_keeps_float32_params():
    model, v = build('resnet18', num_classes=3, dtype=jnp.bfloat16)
    assert v['params']['conv1']['kernel'].dtype == jnp.float32
    out = jax.jit(model.apply)(v, jnp.ones((1, 32, 32, 3)))
    assert out.dtype == jnp.bfloat16


@pytest.mark.parametrize('stages, block', [((2, 2, 2, 2), 'basic'), ((3, 4, 6, 3), 'basic'),
                                           ((3, 4, 6, 3), 'bottleneck'), ((1, 1, 1, 1), 'basic'),
                                           ((3, 4, 6), 'basic'), ((1,), 'bottleneck')])
@pytest.mark.parametrize('num_classes', [None, 7])
def test_written_down_shapes_are_what_init_makes(stages, block, num_classes):
    from jaxcls.models.resnet import out_channels, variable_shapes
    model = ResNet(stages, block, num_classes)
    traced = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    traced = {'params': traced['params'], 'batch_stats': traced['batch_stats']}
    written = variable_shapes(stages, block, num_classes)
    assert jax.tree_util.tree_structure(written) == jax.tree_util.tree_structure(traced)
    for a, b in zip(jax.tree_util.tree_leaves(written), jax.tree_util.tree_leaves(traced)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    fmap = jax.eval_shape(lambda v: ResNet(stages, block, None).apply(v, jnp.zeros((1, 64, 64, 3))),
                          variable_shapes(stages, block, None))
    assert fmap.shape[-1] == out_channels(stages, block)


def test_random_variables_draw_what_module_init_draws():
    # Host-drawn ResNet variables: the tree module.init makes, and per leaf the distribution
    # of the initialiser that module uses (checked against those initialisers' own draws).
    from jaxcls.models.resnet import _torch_bias_init, conv_init, dense_init, random_variables
    stages, ncls = (3, 4, 6, 3), 10
    got = random_variables(stages, 'basic', ncls, jax.random.PRNGKey(3))
    _, traced = _shapes('resnet34', ncls)
    traced = {'params': traced['params'], 'batch_stats': traced['batch_stats']}
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(traced)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(traced)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    p, s = got['params'], got['batch_stats']
    k = jax.random.PRNGKey(0)
    for path, shape in [(('conv1',), (7, 7, 3, 64)), (('layer3', '2', 'conv1'), (3, 3, 256, 256)),
                        (('layer2', '0', 'downsample_0'), (1, 1, 64, 128))]:
        a = p
        for name in path:
            a = a[name]
        a = np.asarray(a['kernel'])
        ref = np.asarray(conv_init(k, shape, jnp.float32))
        want = np.sqrt(2.0 / (shape[0] * shape[1] * shape[3]))  # kaiming normal, fan_out
        assert abs(a.std() / want - 1) < 0.05 and abs(ref.std() / want - 1) < 0.05, (path, a.std())
        assert abs(a.mean()) < 0.1 * want
    bound = 1 / np.sqrt(512)  # torch's nn.Linear, fan_in 512
    fc_k, fc_b = np.asarray(p['fc']['kernel']), np.asarray(p['fc']['bias'])
    ref_k = np.asarray(dense_init(k, (512, ncls), jnp.float32))
    ref_b = np.asarray(_torch_bias_init(512)(k, (ncls,), jnp.float32))
    for a in (fc_k, fc_b, ref_k, ref_b):
        assert np.abs(a).max() <= bound
    assert fc_k.max() > 0.9 * bound and fc_k.min() < -0.9 * bound and ref_k.max() > 0.9 * bound
    np.testing.assert_array_equal(np.asarray(p['layer1']['0']['bn1']['scale']), np.ones(64))
    np.testing.assert_array_equal(np.asarray(p['layer1']['0']['bn1']['bias']), np.zeros(64))
    np.testing.assert_array_equal(np.asarray(s['bn1']['mean']), np.zeros(64))
    np.testing.assert_array_equal(np.asarray(s['bn1']['var']), np.ones(64))
    # One key, one set of values (a typed key too); another key, others.
    again = random_variables(stages, 'basic', ncls, jax.random.key(3))
    other = random_variables(stages, 'basic', ncls, jax.random.PRNGKey(4))
    np.testing.assert_array_equal(np.asarray(again['params']['conv1']['kernel']),
                                  np.asarray(p['conv1']['kernel']))
    assert not np.array_equal(np.asarray(other['params']['conv1']['kernel']),
                              np.asarray(p['conv1']['kernel']))
    built = build('resnet34', ncls, key=jax.random.PRNGKey(3)).variables
    np.testing.assert_array_equal(np.asarray(built['params']['fc']['kernel']), fc_k)
