"""examples/functional_fit.py rebuilds the learner's fits from the public pure functions: on one
CPU device its final parameters, statistics and optimizer state are bit-for-bit the learner's."""
import importlib.util
import os

import jax
import numpy as np

from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model
from helpers import TINY, make_folder

EXAMPLE = os.path.join(os.path.dirname(__file__), '..', '..', 'examples', 'functional_fit.py')


def _example():
    spec = importlib.util.spec_from_file_location('functional_fit', EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_functional_example_ends_with_the_learner_s_parameters_bit_for_bit(tmp_path):
    path = make_folder(tmp_path / 'dogscats', n_train=10, n_valid=4)
    sz, bs = 32, 8
    state = _example().functional_fit(path, arch=TINY, sz=sz, bs=bs, seed=0, pretrained=False)

    data = ImageClassifierData.from_paths(path, bs=bs, tfms=tfms_from_model(TINY, sz), quiet=True)
    learn = ConvLearner.pretrained(TINY, data, precompute=True, pretrained=False, seed=0,
                                   quiet=True)
    learn.fit(0.01, 3)
    learn.unfreeze()
    learn.fit(np.array([1e-4, 1e-3, 1e-2]), 3, cycle_len=1, cycle_mult=2)

    ours = jax.tree_util.tree_leaves_with_path((state.params, state.batch_stats, state.opt_state))
    theirs = jax.tree_util.tree_leaves((learn.state.params, learn.state.batch_stats,
                                        learn.state.opt_state))
    assert len(ours) == len(theirs) > 100
    for (path_, a), b in zip(ours, theirs):
        assert np.array_equal(np.asarray(a), np.asarray(b)), jax.tree_util.keystr(path_)
    assert int(state.step) == int(learn.state.step) == 3 * 3 + 7 * 3   # 20 images, bs 8
    # the fits moved the body and the head: not a comparison of two untouched states
    before = ConvLearner.pretrained(TINY, data, pretrained=False, seed=0, quiet=True).state
    assert not np.array_equal(before.params['body']['conv1']['kernel'],
                              state.params['body']['conv1']['kernel'])
