"""Layer groups, HParams and the optimizer-state surgery behind head-only training: plain
pytrees, nothing compiled but optax's own small updates."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcls.archs import get_arch
from jaxcls.train.optim import (get_group_hyperparams, hparams, layer_group_labels, layer_group_sgd,
                                per_group, set_hparams, transplant)
from jaxcls.train.state import create_train_state, head_state, model_state, with_head

PARAMS = {'body': {'conv1': {'kernel': jnp.ones((3, 3))}, 'layer1': {'k': jnp.ones(2)},
                   'layer3': {'k': jnp.ones(4)}},
          'head': {'fc0': {'kernel': jnp.ones((4, 2)), 'bias': jnp.zeros(2)}}}


def test_fastai_s_three_layer_groups_from_the_arch_s_split():
    labels = layer_group_labels(PARAMS, get_arch('resnet34').layer_groups[0])
    assert labels['body']['conv1']['kernel'] == 0 and labels['body']['layer1']['k'] == 0
    assert labels['body']['layer3']['k'] == 1
    assert jax.tree_util.tree_leaves(labels['head']) == [2, 2]


def test_hparams_broadcast_per_group_and_say_what_does_not_fit():
    hp = hparams([1e-3, 1e-2, 1e-1], momentum=0.95)
    assert hp.lr.dtype == np.float32 and hp.momentum.tolist() == pytest.approx([0.95] * 3)
    assert hparams(0.01, n_groups=3).lr.shape == (3,)
    with pytest.raises(ValueError, match=r'weight_decay=\[0.0, 0.0\] has 2 values for 3 layer groups'):
        hparams([1, 2, 3], weight_decay=[0.0, 0.0])
    assert per_group(0.5, 3, 'lrs').tolist() == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match=r'lrs=\[1.0, 2.0\] has 2 values but there are 3 layer groups'):
        per_group([1, 2], 3, 'lrs')


def test_set_hparams_writes_each_trainable_group_and_updates_with_it():
    labels = layer_group_labels(PARAMS, ('conv1', 'layer1'))
    tx = layer_group_sgd(labels, (False, True, True))
    state = set_hparams(tx.init(PARAMS), hparams([1.0, 0.1, 0.01], weight_decay=[0, 0, 0.5]))
    assert get_group_hyperparams(state, 'learning_rate') == {1: pytest.approx(0.1), 2: pytest.approx(0.01)}
    grads = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
    updates, _ = tx.update(grads, state, PARAMS)
    assert float(updates['body']['conv1']['kernel'][0, 0]) == 0.0          # frozen group
    assert float(updates['body']['layer3']['k'][0]) == pytest.approx(-0.1)  # lr 0.1, no decay
    # head: lr 0.01, g + 0.5 * p with p = 1 for the kernel
    assert float(updates['head']['fc0']['kernel'][0, 0]) == pytest.approx(-0.015)


def test_head_state_and_with_head_convert_the_optimizer_state_both_ways():
    labels = layer_group_labels(PARAMS, ('conv1', 'layer1'))
    full_tx = layer_group_sgd(labels, (False, False, True))
    head_tx = layer_group_sgd({'head': labels['head']}, (False, False, True))
    state = create_train_state(lambda *a, **k: None, {'params': PARAMS, 'batch_stats': {}}, full_tx, rng=3)
    grads = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
    state = state.apply_gradients(grads, {})          # momentum buffers no longer zero
    head = head_state(state, head_tx)
    assert set(head.params) == {'head'} and int(head.step) == 1
    assert jax.tree_util.tree_structure(head.opt_state) == jax.tree_util.tree_structure(
        head_tx.init(head.params))
    back = with_head(state, head)
    for a, b in zip(jax.tree_util.tree_leaves(back.opt_state), jax.tree_util.tree_leaves(state.opt_state)):
        assert np.array_equal(a, b)
    assert back.params['body'] is state.params['body']
    assert set(model_state(state, 'head').params) == {'head'}
    with pytest.raises(ValueError, match='optimizer states do not correspond'):
        transplant(state.opt_state, optax.sgd(0.1, momentum=0.9).init(PARAMS))
