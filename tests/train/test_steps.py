"""The functional core: a jitted step lowers the loss, never recompiles for a new rate,
counts padded rows correctly and computes no gradient for frozen parameters."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcls.models import ResNet
from jaxcls.train.optim import (get_group_hyperparams, get_hyperparam, layer_group_sgd,
                                set_group_hyperparams, set_hyperparam, sgd)
from jaxcls.train.state import create_train_state
from jaxcls.train.steps import (eval_step, make_eval_step, make_predict_step, make_train_step,
                                predict_step, summarize, train_step)


def tiny_resnet(num_classes=3):
    """Two stages of one basic block: every kind of layer a step meets (convolutions, strided
    and downsampling ones, BatchNorm, pooling, the classifier) at a fraction of the compile
    time; the steps know nothing of the depth."""
    module = ResNet((1, 1), 'basic', num_classes)
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    return module, variables


@pytest.fixture(scope='module')
def batch():
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 32, 32, 3))
    return {'image': x, 'label': jnp.arange(8) % 3}


def test_loss_falls_and_step_compiles_once_across_rates(batch):
    module, variables = tiny_resnet()
    state = create_train_state(module.apply, variables, sgd(0.05))
    # The ready-made jitted step (the program test_ready_made_steps runs too): other tests in
    # this process may have compiled it for other shapes, so count from the first call.
    losses, compiled = [], None
    for i, lr in enumerate([0.05, 0.05, 0.02, 0.02, 0.01, 0.01, 0.005, 0.005]):
        state = state.replace(opt_state=set_hyperparam(state.opt_state, 'learning_rate', lr))
        state, metrics = train_step(state, batch)
        losses.append(float(metrics['loss']))
        compiled = compiled or train_step._cache_size()
    assert int(state.step) == 8
    assert losses[-1] < 0.5 * losses[0], losses
    assert train_step._cache_size() == compiled       # no new rate compiled anything
    assert float(get_hyperparam(state.opt_state, 'learning_rate')) == pytest.approx(0.005)


def test_sgd_matches_torch_update_rule():
    # torch.optim.SGD(lr, momentum=0.9, weight_decay=wd): buf = 0.9 buf + (g + wd p); p -= lr buf.
    tx = sgd(0.1, weight_decay=0.01)
    p = {'w': jnp.array([1.0, -2.0])}
    s = tx.init(p)
    g = {'w': jnp.array([0.5, 0.25])}
    buf = np.zeros(2)
    pn = np.array([1.0, -2.0])
    for _ in range(3):
        u, s = tx.update(g, s, p)
        p = optax.apply_updates(p, u)
        buf = 0.9 * buf + (np.array([0.5, 0.25]) + 0.01 * pn)
        pn = pn - 0.1 * buf
    np.testing.assert_allclose(p['w'], pn, rtol=1e-6)


def test_batch_stats_change_in_train_mode_only(batch):
    module, variables = tiny_resnet()
    state = create_train_state(module.apply, variables, sgd(0.0))
    before = np.asarray(state.batch_stats['bn1']['mean'])
    sums = jax.jit(make_eval_step())(state, batch)
    assert float(sums['count']) == 8
    np.testing.assert_array_equal(state.batch_stats['bn1']['mean'], before)
    state, _ = jax.jit(make_train_step())(state, batch)
    assert not np.allclose(state.batch_stats['bn1']['mean'], before)
    # torch's momentum 0.1: running mean = 0.9 * 0 + 0.1 * the batch mean of the stem conv.
    stem = jax.lax.conv_general_dilated(batch['image'], variables['params']['conv1']['kernel'],
                                        (2, 2), ((3, 3), (3, 3)),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    np.testing.assert_allclose(state.batch_stats['bn1']['mean'], 0.1 * stem.mean((0, 1, 2)),
                               rtol=1e-4, atol=1e-6)


def test_padding_rows_are_not_counted(batch):
    module, variables = tiny_resnet()
    state = create_train_state(module.apply, variables, sgd(0.0))
    ev = jax.jit(make_eval_step())
    full = summarize([ev(state, batch)])
    # Same 8 rows split as 5 + (3 real + 2 padding rows of garbage), each batch of 5.
    b1 = {k: v[:5] for k, v in batch.items()}
    pad = {'image': jnp.concatenate([batch['image'][5:], 100 * jnp.ones((2, 32, 32, 3))]),
           'label': jnp.concatenate([batch['label'][5:], jnp.array([0, 0])]),
           'mask': jnp.array([1, 1, 1, 0, 0.])}
    b1['mask'] = jnp.ones(5)
    parts = summarize([ev(state, b1), ev(state, pad)])
    assert parts['count'] == 8
    assert parts['loss'] == pytest.approx(full['loss'], rel=1e-5)
    assert parts['accuracy'] == pytest.approx(full['accuracy'])
    assert ev._cache_size() == 2  # the 8-row and the 5-row shapes, nothing else


def test_predict_returns_log_probabilities(batch):
    module, variables = tiny_resnet()
    state = create_train_state(module.apply, variables, sgd(0.0))
    lp = np.asarray(jax.jit(make_predict_step())(state, batch))
    np.testing.assert_allclose(np.exp(lp).sum(1), 1.0, rtol=1e-5)
    probs = np.asarray(jax.jit(make_predict_step('sigmoid'))(state, batch))
    assert probs.min() > 0 and probs.max() < 1


def test_frozen_parameters_and_their_momentum_do_not_move(batch):
    # Two stages, 32 px: every map has more than 4 pixels, so the plain kernels ('xla', the
    # module's default) run each layer as one XLA convolution, and they can be counted.
    module = ResNet((1, 1), 'basic', 3)
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    params = variables['params']
    # Group 0: everything but fc (frozen); group 1: fc.
    labels = {k: jax.tree_util.tree_map(lambda _: 1 if k == 'fc' else 0, v) for k, v in params.items()}
    tx = layer_group_sgd(labels, trainable=(False, True))
    state = create_train_state(module.apply, variables, tx)
    state = state.replace(opt_state=set_group_hyperparams(state.opt_state, 'learning_rate', [1.0, 0.1]))
    assert get_group_hyperparams(state.opt_state, 'learning_rate') == {1: pytest.approx(0.1)}
    frozen = jax.tree_util.tree_map(lambda g: g == 0, labels)
    step = jax.jit(make_train_step(frozen=frozen))
    new, _ = step(state, batch)
    np.testing.assert_array_equal(new.params['conv1']['kernel'], params['conv1']['kernel'])
    assert not np.allclose(new.params['fc']['kernel'], params['fc']['kernel'])
    assert get_group_hyperparams(new.opt_state, 'learning_rate') == {1: pytest.approx(0.1)}
    # The frozen body's backward pass is not computed at all: the compiled step holds
    # only the forward convolutions (6 in this ResNet: stem, 2 + 3 in the stages), where
    # training every parameter needs each one's input- and weight-gradient convolutions too.
    hlo = step.lower(state, batch).compile().as_text()
    everything = create_train_state(module.apply, variables, sgd(0.1))
    full = jax.jit(make_train_step()).lower(everything, batch).compile().as_text()
    assert hlo.count(' convolution(') == 6
    assert full.count(' convolution(') > 2 * 6


def test_ready_made_steps(batch):
    module, variables = tiny_resnet()
    state = create_train_state(module.apply, variables, sgd(0.01))
    m = eval_step(state, batch)
    assert float(m['count']) == 8
    assert predict_step(state, batch).shape == (8, 3)
    state, metrics = train_step(state, batch)
    assert set(metrics) == {'loss', 'accuracy', 'count'}


def test_sigmoid_loss_for_multilabel(batch):
    module, variables = tiny_resnet(num_classes=4)
    state = create_train_state(module.apply, variables, sgd(0.05))
    y = jax.nn.one_hot(batch['label'], 4).at[:, 3].set(1.0)
    step = jax.jit(make_train_step('sigmoid'))
    first = None
    for _ in range(6):
        state, m = step(state, {'image': batch['image'], 'label': y})
        first = first if first is not None else float(m['loss'])
    assert float(m['loss']) < first
    assert 0.0 <= float(m['accuracy']) <= 1.0


def test_a_fastai_pair_instead_of_a_batch_dict_is_explained(batch):
    """Iterating data.trn_dl gives fastai's (x, y); a step needs iter_epoch's dict batches.
    The check is Python, before any tracing, so no step compiles for it."""
    module, variables = tiny_resnet()
    state = create_train_state(module.apply, variables, sgd(0.05))
    pair = (batch['image'], batch['label'])
    for step in (make_train_step(), make_eval_step(), make_predict_step()):
        with pytest.raises(TypeError, match=r"got a tuple of 2.*data.trn_dl.iter_epoch\(epoch\)"):
            step(state, pair)


def test_unknown_loss_is_explained():
    with pytest.raises(ValueError, match="loss='hinge'.*'softmax'.*'sigmoid'"):
        make_train_step('hinge')


def test_skip_nonfinite_keeps_the_state(batch):
    module, variables = tiny_resnet()
    state = create_train_state(module.apply, variables, sgd(0.01))
    step = jax.jit(make_train_step(skip_nonfinite=True))
    bad = {'image': batch['image'].at[0, 0, 0, 0].set(jnp.nan), 'label': batch['label']}
    new, m = step(state, bad)
    assert not np.isfinite(float(m['loss']))
    assert int(new.step) == 1
    for a, b in zip(jax.tree_util.tree_leaves((state.params, state.batch_stats, state.opt_state)),
                    jax.tree_util.tree_leaves((new.params, new.batch_stats, new.opt_state))):
        np.testing.assert_array_equal(a, b)
    good, m = step(new, batch)
    assert np.isfinite(float(m['loss']))
    assert not np.array_equal(good.params['fc']['kernel'], new.params['fc']['kernel'])
