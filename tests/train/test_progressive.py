"""learn.set_data (progressive resizing): the model and how it trains are kept, precomputed
activations follow the new images, and another class list is refused. That the next fit compiles
once per size and a size trained before compiles nothing is counted in the lesson-2 notebook
(tests/e2e/test_notebook_port.py), where those steps are compiled anyway."""
import numpy as np
import pytest

from jaxcls import ImageClassifierData, tfms_from_model, transforms_side_on
from jaxcls.train.precompute import compute_features

from helpers import TINY, learner, make_folder, params_copy, trees_equal


@pytest.fixture(scope='module')
def sizes(tmp_path_factory):
    # the configuration of the dog-breeds notebook test (3 classes, bs 8, its transforms, ps=0.5),
    # so the two share compiled programs through the suite's persistent compilation cache
    path = make_folder(tmp_path_factory.mktemp('sizes'), n_train=6, n_valid=3, size=56,
                       classes=('beagle', 'boxer', 'pug'))
    return {sz: ImageClassifierData.from_paths(
        path, bs=8, quiet=True, tfms=tfms_from_model(TINY, sz, aug_tfms=transforms_side_on, max_zoom=1.1))
        for sz in (32, 48)}


def test_set_data_keeps_the_model_and_recomputes_precomputed_activations(sizes):
    learn = learner(sizes[32], precompute=True, ps=0.5)
    learn.fit(0.05, 1)
    head_step = learn.steps.get('train')
    n_compiled = head_step._cache_size()
    before, feats32 = params_copy(learn), np.array(learn._features['train'])
    learn.set_data(sizes[48])
    assert learn.data is sizes[48] and learn.precompute and learn.trainable == (False, False, True)
    assert trees_equal(before, params_copy(learn)) and learn.n_groups == 3
    feats48 = learn._features['train']
    body = learn.steps.model_state(images=True)
    ref = compute_features(lambda x: learn.steps.get('features')(body, {'image': x}),
                           sizes[48].trn_ds.x, 8)
    assert feats48.shape == feats32.shape and np.array_equal(feats48, ref)
    assert not np.allclose(feats48, feats32)               # of the 48 px images, not the 32 px
    learn.fit(0.05, 1)
    assert learn.history[-1]['epoch'] == 1 and len(learn.history) == 2
    # the head trains on features of the same shape at any image size: the same program
    assert learn.steps.get('train') is head_step and head_step._cache_size() == n_compiled
    learn.set_data(sizes[32])                               # the body has not moved: the same
    assert np.array_equal(learn._features['train'], feats32)
    learn.fit(0.05, 1)                                      # and the same compiled step
    assert learn.steps.get('train') is head_step and head_step._cache_size() == n_compiled
    learn.set_data(sizes[48], precompute=False)
    assert not learn.precompute and learn.trainable == (False, False, True)
    learn.unfreeze()
    learn.set_data(sizes[32])                               # the freeze state is kept
    assert learn.trainable == (True, True, True)


def test_set_data_refuses_another_class_list_naming_both(sizes):
    learn = learner(sizes[32], ps=0.5)
    x = np.zeros((4, 36, 36, 3), np.uint8)
    tfms = tfms_from_model(TINY, 32)

    def arrays(y, classes):
        return ImageClassifierData.from_arrays('.', (x, y), (x, y), tfms=tfms, classes=classes)
    with pytest.raises(ValueError, match=r"the learner has 3 classes \['beagle', 'boxer', 'pug'\], "
                                         r"the new data 3 classes \['beagle', 'boxer', 'corgi'\] "
                                         r"\(only the learner's: \['pug'\]; only the new data's: "
                                         r"\['corgi'\]\)"):
        learn.set_data(arrays([0, 1, 2, 0], ['beagle', 'boxer', 'corgi']))
    with pytest.raises(ValueError, match=r"the new data 3 classes \['pug', 'boxer', 'beagle'\] "
                                         r"\(the same names in another order\)"):
        learn.set_data(arrays([0, 1, 2, 0], ['pug', 'boxer', 'beagle']))
    with pytest.raises(ValueError, match=r"the new data 3 multi-label classes \['beagle', 'boxer', "
                                         r"'pug'\] \(the same names, but one is multi-label"):
        learn.set_data(arrays(np.eye(3)[[0, 1, 2, 0]], ['beagle', 'boxer', 'pug']))
    assert learn.data is sizes[32]
