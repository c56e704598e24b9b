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
    feats = body.apply(body_vars, x)
    logits = model.apply(variables, x)
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
    out = model.apply(v, jnp.ones((1, 32, 32, 3)))
    assert out.dtype == jnp.bfloat16


@pytest.mark.parametrize('shape,k,stride,pad', [((4, 2, 2, 64), 3, 1, 1), ((4, 4, 4, 32), 3, 2, 1),
                                                ((4, 1, 1, 64), 3, 1, 1), ((4, 2, 2, 16), 1, 1, 0),
                                                ((3, 9, 7, 8), 3, 2, 1), ((2, 5, 5, 4), 7, 2, 3),
                                                ((3, 2, 1, 8), 3, 1, 1), ((2, 1, 1, 4), 1, 2, 1)])
@pytest.mark.parametrize('how', ['taps', 'patches'])
def test_small_map_convolutions_equal_xla_outputs_and_gradients(shape, k, stride, pad, how):
    # The last case has an output pixel whose window holds only padding.
    import jaxcls.models.resnet as R
    conv = getattr(R, 'conv_' + how)
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    w = jax.random.normal(jax.random.PRNGKey(1), (k, k, shape[-1], 24)) * 0.1

    def ref(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                            dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

    y0, y1 = ref(x, w), conv(x, w, stride, pad)
    assert y0.shape == y1.shape and y1.dtype == y0.dtype
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5 * float(jnp.abs(y0).max()))
    g0 = jax.grad(lambda x, w: jnp.sum(jnp.sin(ref(x, w))), argnums=(0, 1))(x, w)
    g1 = jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w, stride, pad))), argnums=(0, 1))(x, w)
    for a, b in zip(g1, g0):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))


def test_tap_convolution_skips_taps_on_padding():
    # A 3x3 kernel on a 2x2 map: 16 real (tap, pixel) pairs of 36, in three batched
    # matmuls (corner, edge and centre taps), not nine.
    from jaxcls.models.resnet import conv_taps
    x, w = jnp.ones((2, 2, 2, 8)), jnp.ones((3, 3, 8, 4))
    jaxpr = jax.make_jaxpr(lambda x, w: conv_taps(x, w, 1, 1))(x, w)
    dots = [e for e in jaxpr.eqns if e.primitive.name == 'dot_general']
    assert len(dots) == 3
    assert sorted(e.invars[0].aval.shape[:2] for e in dots) == [(1, 8), (4, 2), (4, 4)]
    assert float(conv_taps(x, w, 1, 1)[0, 0, 0, 0]) == 4 * 8   # 4 real taps x 8 channels


@pytest.mark.parametrize('train', [False, True])
def test_small_maps_use_matmuls_and_match_the_xla_path(monkeypatch, train):
    # Inference takes conv_patches, training conv_taps (a 2x2 layer4 at 64 px either way).
    import jaxcls.models.resnet as R
    from jaxcls.models import winograd
    monkeypatch.setattr(winograd, 'applies', lambda *shape: False)   # XLA's convolution elsewhere
    module = ResNet((1, 1, 1, 1), 'basic', 3)
    v = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 64, 64, 3))   # layer4 runs on 2x2 maps
    apply = jax.jit(lambda v, x: module.apply(v, x, train=train, mutable=['batch_stats'])[0])
    fast, hlo = apply(v, x), apply.lower(v, x).compile().as_text()
    monkeypatch.setattr(R, 'SMALL_MAP_PIXELS', 0)
    apply = jax.jit(lambda v, x: module.apply(v, x, train=train, mutable=['batch_stats'])[0])
    plain, hlo_plain = apply(v, x), apply.lower(v, x).compile().as_text()
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-5)
    assert hlo.count(' convolution(') == hlo_plain.count(' convolution(') - 3   # layer4's three 3x3s
    assert ('lhs_batch_dims' in hlo) == train    # the taps' batched matmuls


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))


@pytest.mark.parametrize('shape,k,stride,pad', [((3, 13, 12, 5), 3, 2, 1), ((2, 8, 8, 4), 3, 2, 1),
                                                ((2, 7, 9, 3), 2, 2, 0), ((2, 6, 6, 2), 3, 1, 1)])
def test_max_pool_equals_the_reduce_window_in_outputs_and_gradients(shape, k, stride, pad):
    from flax import linen as nn
    from jaxcls.models.resnet import max_pool
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    # ReLU zeros and repeated values make ties: the gradient must go to the same element.
    x = jnp.round(jax.nn.relu(x) * 2) / 2

    def ref(x):
        return nn.max_pool(x, (k, k), (stride, stride), ((pad, pad), (pad, pad)))
    np.testing.assert_array_equal(max_pool(x, k, stride, pad), ref(x))
    w = jax.random.normal(jax.random.PRNGKey(1), ref(x).shape)
    g0 = jax.grad(lambda x: jnp.sum(ref(x) * w))(x)
    g1 = jax.grad(lambda x: jnp.sum(max_pool(x, k, stride, pad) * w))(x)
    _close(g1, g0)
    assert float(jnp.abs(g0).sum()) > 0


def test_batch_norm_train_equals_the_plain_formula_and_its_autodiff():
    from jaxcls.models.resnet import batch_norm_train
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 3, 6)) * 3 + 1
    scale = jax.random.normal(jax.random.PRNGKey(1), (6,))
    bias = jax.random.normal(jax.random.PRNGKey(2), (6,))
    w = jax.random.normal(jax.random.PRNGKey(3), x.shape)

    def plain(x, scale, bias):
        mean = x.mean((0, 1, 2))
        var = jnp.square(x - mean).mean((0, 1, 2))
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias, mean, var
    for a, b in zip(batch_norm_train(x, scale, bias, 1e-5), plain(x, scale, bias)):
        _close(a, b)
    loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)[0]) * w)
    fast = jax.grad(loss(lambda x, s, b: batch_norm_train(x, s, b, 1e-5)), argnums=(0, 1, 2))
    ref = jax.grad(loss(plain), argnums=(0, 1, 2))
    for a, b in zip(fast(x, scale, bias), ref(x, scale, bias)):
        _close(a, b)


def test_fusion_barrier_is_the_identity_in_value_and_both_derivatives():
    from jaxcls.models.resnet import fusion_barrier
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 3, 4)).at[0, 0, 0, 0].set(jnp.nan)
    np.testing.assert_array_equal(fusion_barrier(x), x)   # a NaN first element included
    x = jnp.nan_to_num(x)
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(fusion_barrier(v) * 3))(x),
                                  jnp.full(x.shape, 3.0))
    _, t = jax.jvp(fusion_barrier, (x,), (x * 2,))
    np.testing.assert_array_equal(t, x * 2)
    assert 'conditional' in jax.jit(fusion_barrier).lower(x).compile().as_text()


@pytest.mark.parametrize('stages,block,size', [((1, 1, 1, 1), 'basic', 64), ((1, 2), 'bottleneck', 40)])
def test_cpu_rewrites_leave_the_model_s_outputs_gradients_and_statistics_unchanged(
        monkeypatch, stages, block, size):
    import jaxcls.models.resnet as R
    module = ResNet(stages, block, 5)
    v = module.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, size, size, 3))

    def loss(params, stats):
        out, upd = module.apply({'params': params, 'batch_stats': stats}, x, train=True,
                                mutable=['batch_stats'])
        return jnp.sum(jnp.sin(out)), upd
    results, programs = [], []
    for on in (True, False):
        monkeypatch.setattr(R, 'CPU_REWRITES', on)
        assert R.cpu_rewrites() is on
        f = jax.jit(jax.value_and_grad(loss, has_aux=True))   # a new function: a new trace
        results.append((f(v['params'], v['batch_stats']), module.apply(v, x)))
        programs.append(f.lower(v['params'], v['batch_stats']).compile().as_text())
    leaves = [jax.tree_util.tree_leaves(r) for r in results]
    assert len(leaves[0]) == len(leaves[1]) > 20
    for a, b in zip(*leaves):
        _close(a, b)
    # The rewritten program pools without reduce-windows, stores the residual stream, and
    # runs the stride-1 3x3 convolutions on small maps by Winograd's algorithm.
    assert programs[0].count('reduce-window') < programs[1].count('reduce-window')
    assert programs[0].count(' convolution(') < programs[1].count(' convolution(')
    assert 'conditional' in programs[0] and 'conditional' not in programs[1]


def test_a_forward_pass_alone_takes_winograd_to_64_channel_layers_too(monkeypatch):
    # 32 px: layer1 runs 64 channels on 8x8 maps, layer2's second conv 128 on 4x4.
    # Training keeps XLA's convolution for the first (compile time, no gain), inference
    # (train=False, nothing to differentiate) runs both by Winograd; same outputs.
    module = ResNet((1, 1), 'basic', 3)
    v = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    infer = jax.jit(lambda v, x: module.apply(v, x))
    train = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=['batch_stats'])[0])
    # stem, layer2's stride-2 conv and its 1x1 downsample stay XLA convolutions either way
    assert infer.lower(v, x).compile().as_text().count(' convolution(') == 3
    assert train.lower(v, x).compile().as_text().count(' convolution(') == 5
    import jaxcls.models.resnet as R
    y = infer(v, x)
    monkeypatch.setattr(R, 'CPU_REWRITES', False)
    _close(y, jax.jit(lambda v, x: module.apply(v, x))(v, x))


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
