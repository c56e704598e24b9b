"""ClassificationInterpretation: every method against hand-computed answers, scikit-learn's
metrics, and a tiny trained learner (predictions agree with learn.predict())."""
import math
import subprocess
import sys

import numpy as np
import pytest

from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model
from jaxcls.interpret import ClassificationInterpretation
from jaxcls.train.metrics import bce_loss, nll_loss

from helpers import SZ, TINY, make_folder

CLASSES = ['cat', 'dog', 'fox']
# 8 images. preds = argmax = [0, 0, 1, 1, 1, 0, 2, 0]; right: 0, 1, 4, 6.
PROBS = np.array([[0.70, 0.20, 0.10],   # cat -> cat
                  [0.90, 0.05, 0.05],   # cat -> cat
                  [0.20, 0.50, 0.30],   # cat -> dog
                  [0.05, 0.90, 0.05],   # cat -> dog (very sure)
                  [0.10, 0.80, 0.10],   # dog -> dog
                  [0.40, 0.35, 0.25],   # dog -> cat
                  [0.10, 0.20, 0.70],   # fox -> fox
                  [0.34, 0.33, 0.33]])  # fox -> cat (a coin toss)
TARGS = np.array([0, 0, 0, 0, 1, 1, 2, 2])


@pytest.fixture
def interp():
    return ClassificationInterpretation(PROBS, TARGS, CLASSES)


def test_preds_losses_and_top_losses(interp):
    assert interp.preds.tolist() == [0, 0, 1, 1, 1, 0, 2, 0]
    p_true = [0.7, 0.9, 0.2, 0.05, 0.8, 0.35, 0.7, 0.33]
    np.testing.assert_allclose(interp.losses, -np.log(p_true))
    assert math.isclose(float(interp.losses.mean()), nll_loss(np.log(PROBS), TARGS))
    losses, idxs = interp.top_losses()
    # p_true ascending; images 0 and 6 tie (0.7): the lower index first.
    assert idxs.tolist() == [3, 2, 7, 5, 0, 6, 4, 1]
    np.testing.assert_allclose(losses, -np.log(np.array(p_true)[idxs]))
    assert interp.top_losses(2)[1].tolist() == [3, 2]
    assert interp.accuracy() == 0.5 and interp.correct.tolist() == [1, 1, 0, 0, 1, 0, 1, 0]
    assert len(interp) == 8 and 'accuracy 0.5000' in repr(interp)


def test_most_correct_incorrect_uncertain(interp):
    assert interp.most_correct('cat').tolist() == [1, 0]       # P(cat) .9 then .7
    assert interp.most_correct(0, n=1).tolist() == [1]
    assert interp.most_correct('dog').tolist() == [4]
    assert interp.most_incorrect('cat').tolist() == [3, 2]     # P(cat) .05 then .2
    assert interp.most_incorrect('dog').tolist() == [5]
    assert interp.most_incorrect(np.int64(2)).tolist() == [7]
    # |max prob - 1/3|: 7 .0067, 5 .0667, 2 .1667, then 0 and 6 tie at .3667.
    assert interp.most_uncertain().tolist() == [7, 5, 2, 0]
    assert interp.most_uncertain(n=8).tolist() == [7, 5, 2, 0, 6, 4, 1, 3]
    assert interp.most_uncertain('cat', n=2).tolist() == [2, 0]
    none_wrong = ClassificationInterpretation(np.eye(2), [0, 1], ['a', 'b'])
    assert none_wrong.most_incorrect('a').tolist() == []


def test_two_classes_match_the_lesson():
    """The lesson's binary picks: correct dogs sort by P(dog) down, incorrect by P(dog) up,
    uncertain by |P(dog) - 0.5|."""
    p_dog = np.array([0.95, 0.6, 0.3, 0.1, 0.52, 0.8, 0.45])
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    interp = ClassificationInterpretation(np.stack([1 - p_dog, p_dog], 1), y, ['cats', 'dogs'])
    preds = (p_dog > 0.5).astype(int)

    def most_by_mask(mask, mult):
        idxs = np.where(mask)[0]
        return idxs[np.argsort(mult * p_dog[idxs])[:4]]
    def most_by_correct(cls, is_correct):       # the lesson's own helper
        mult = -1 if (cls == 1) == is_correct else 1
        return most_by_mask(((preds == y) == is_correct) & (y == cls), mult).tolist()
    assert interp.most_correct('dogs').tolist() == most_by_correct(1, True)
    assert interp.most_incorrect('dogs').tolist() == most_by_correct(1, False)
    assert interp.most_correct('cats').tolist() == most_by_correct(0, True)
    assert interp.most_incorrect('cats').tolist() == most_by_correct(0, False)
    assert interp.most_uncertain().tolist() == np.argsort(np.abs(p_dog - 0.5))[:4].tolist()


def test_random_picks(interp):
    assert interp.random_correct(10).tolist() == [0, 1, 4, 6]    # all of them, index order
    assert interp.random_incorrect(10).tolist() == [2, 3, 5, 7]
    picks = {tuple(interp.random_correct(2, seed=s).tolist()) for s in range(20)}
    assert all(len(p) == 2 and set(p) <= {0, 1, 4, 6} and list(p) == sorted(p) for p in picks)
    assert len(picks) > 1                                           # the seed matters
    assert interp.random_incorrect(2, seed=3).tolist() == \
        interp.random_incorrect(2, seed=3).tolist()


def test_confusion_matrix_and_most_confused(interp):
    cm = interp.confusion_matrix()
    assert cm.tolist() == [[2, 2, 0], [1, 1, 0], [1, 0, 1]]
    np.testing.assert_allclose(interp.confusion_matrix(normalize=True),
                               [[.5, .5, 0], [.5, .5, 0], [.5, 0, .5]])
    assert interp.most_confused() == [('cat', 'dog', 2), ('dog', 'cat', 1), ('fox', 'cat', 1)]
    assert interp.most_confused(min_val=2) == [('cat', 'dog', 2)]
    # A class without images: its row stays zero when normalised (no NaN).
    lonely = ClassificationInterpretation(np.eye(3)[[0, 1]], [0, 1], CLASSES)
    assert lonely.confusion_matrix(normalize=True)[2].tolist() == [0, 0, 0]
    sklearn = pytest.importorskip('sklearn.metrics')
    assert cm.tolist() == sklearn.confusion_matrix(TARGS, interp.preds, labels=[0, 1, 2]).tolist()


def test_per_class_and_report_against_hand_calculation(interp):
    rows = interp.per_class()
    assert [r['class'] for r in rows] == CLASSES and [r['support'] for r in rows] == [4, 2, 2]
    # cat: tp 2 fp 2 fn 2; dog: tp 1 fp 2 fn 1; fox: tp 1 fp 0 fn 1.
    expect = [(0.5, 0.5, 0.5), (1 / 3, 0.5, 0.4), (1.0, 0.5, 2 / 3)]
    for r, (p, rec, f1) in zip(rows, expect):
        assert (r['precision'], r['recall']) == pytest.approx((p, rec))
        assert r['f1'] == pytest.approx(f1)
    sklearn = pytest.importorskip('sklearn.metrics')
    p, r, f, s = sklearn.precision_recall_fscore_support(TARGS, interp.preds, zero_division=0)
    np.testing.assert_allclose([[x['precision'], x['recall'], x['f1']] for x in rows],
                               np.stack([p, r, f], 1))
    text = interp.report()
    lines = {ln.split()[0] + (' ' + ln.split()[1] if ln.split()[1] == 'avg' else ''): ln.split()
             for ln in text.splitlines() if ln.strip()}
    assert lines['cat'][1:] == ['0.50', '0.50', '0.50', '4']
    assert lines['dog'][1:] == ['0.33', '0.50', '0.40', '2']
    assert lines['accuracy'][1:] == ['0.50', '8']
    # macro: plain means; weighted: by support (4, 2, 2).
    assert lines['macro avg'][2:] == ['0.61', '0.50', '0.52', '8']
    assert lines['weighted avg'][2:] == ['0.58', '0.50', '0.52', '8']
    assert '0.6111' in interp.report(digits=4) and '0.5167' in interp.report(digits=4)


def test_titles(interp):
    assert interp.title(3) == 'dog 0.90 (true cat)'
    assert interp.title(np.int64(7)) == 'cat 0.34 (true fox)'
    assert interp.title(6) == 'fox 0.70 (true fox)'


def test_bad_arguments_say_what_to_do(interp):
    with pytest.raises(ValueError, match=r"unknown class 'cow'; use a name from \['cat', 'dog', "
                                         r"'fox'\] or an index 0..2"):
        interp.most_correct('cow')
    with pytest.raises(ValueError, match='class index 3 is out of range; use 0..2'):
        interp.most_incorrect(3)
    with pytest.raises(ValueError, match='unknown class True'):
        interp.most_uncertain(True)
    with pytest.raises(ValueError, match=r'convert log-probabilities .* with np.exp'):
        ClassificationInterpretation(np.log(PROBS), TARGS, CLASSES)
    with pytest.raises(ValueError, match=r'probs must be \(N, c\) = \(N, 2\)'):
        ClassificationInterpretation(PROBS, TARGS, ['a', 'b'])
    with pytest.raises(ValueError, match='class index 5, outside 0..2'):
        ClassificationInterpretation(PROBS, [0, 0, 0, 0, 1, 1, 2, 5], CLASSES)
    with pytest.raises(ValueError, match='multi-hot targets need is_multi=True'):
        ClassificationInterpretation(PROBS, np.eye(3)[TARGS], CLASSES)
    with pytest.raises(ValueError, match='3 images for 8 predictions'):
        ClassificationInterpretation(PROBS, TARGS, CLASSES, images=np.zeros((3, 4, 4, 3)))


# Multi-label: 4 images, 3 labels; predicted = prob > 0.5.
M_PROBS = np.array([[.9, .2, .6], [.2, .8, .3], [.7, .7, .1], [.2, .3, .9]])
M_TARGS = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1]], np.float32)


def test_multi_label():
    interp = ClassificationInterpretation(M_PROBS, M_TARGS, ['a', 'b', 'c'], is_multi=True)
    assert interp.preds.tolist() == [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]
    cm = interp.confusion_matrix()    # per class [[TN, FP], [FN, TP]]
    assert cm.shape == (3, 2, 2)
    assert cm.tolist() == [[[2, 0], [0, 2]], [[2, 1], [0, 1]], [[2, 0], [0, 2]]]
    np.testing.assert_allclose(interp.confusion_matrix(True)[1], [[2 / 3, 1 / 3], [0, 1]])
    sklearn = pytest.importorskip('sklearn.metrics')
    assert cm.tolist() == sklearn.multilabel_confusion_matrix(M_TARGS, interp.preds).tolist()
    # Per-image BCE, averaged over labels; its mean is the learner's bce_loss.
    np.testing.assert_allclose(interp.losses[2], -(np.log(.7) + np.log(.3) + np.log(.9)) / 3)
    assert math.isclose(float(interp.losses.mean()), bce_loss(M_PROBS, M_TARGS))
    assert interp.top_losses()[1].tolist() == [2, 0, 1, 3]
    b = interp.per_class()[1]
    assert (b['precision'], b['recall'], b['support']) == (0.5, 1.0, 1)
    assert b['f1'] == pytest.approx(2 / 3)
    assert 'micro avg' in interp.report() and 'accuracy' not in interp.report()
    assert interp.title(2) == 'a 0.70 b 0.70 (true a)'
    assert interp.accuracy() == pytest.approx(11 / 12)
    for call in (lambda: interp.most_correct('a'), lambda: interp.most_incorrect(0),
                 lambda: interp.most_uncertain(), lambda: interp.most_confused(),
                 lambda: interp.random_correct(), lambda: interp.random_incorrect()):
        with pytest.raises(NotImplementedError, match='multi-label targets. Use top_losses'):
            call()
    with pytest.raises(ValueError, match=r'multi-hot \(N, c\) = \(4, 3\)'):
        ClassificationInterpretation(M_PROBS, [0, 1, 2, 0], ['a', 'b', 'c'], is_multi=True)


def test_no_matplotlib_until_a_plot_is_drawn():
    code = ('import sys, numpy as np, jaxcls.interpret, jaxcls.plots\n'
            'i = jaxcls.interpret.ClassificationInterpretation(np.eye(2), [0, 1], "ab")\n'
            'i.report(); i.confusion_matrix()\n'
            'assert "matplotlib" not in sys.modules, "matplotlib imported"\n')
    subprocess.run([sys.executable, '-c', code], check=True)


# ----------------------------------------------------------------------------- from a learner

@pytest.fixture(scope='module')
def learn(tmp_path_factory):
    path = make_folder(tmp_path_factory.mktemp('interp'), n_train=8, n_valid=6)
    data = ImageClassifierData.from_paths(path, bs=8, tfms=tfms_from_model(TINY, SZ), quiet=True)
    learn = ConvLearner.pretrained(TINY, data, pretrained=False, quiet=True, precompute=True)
    learn.fit(0.05, 3)
    return learn


def test_from_learner_agrees_with_predict(learn):
    data = learn.data
    log_preds = learn.predict()
    interp = ClassificationInterpretation.from_learner(learn)
    np.testing.assert_allclose(interp.probs, np.exp(log_preds), rtol=1e-6)
    assert interp.targs.tolist() == data.val_y.tolist()
    assert interp.preds.tolist() == np.argmax(log_preds, 1).tolist()
    assert interp.classes == data.classes and not interp.is_multi
    assert interp.images is data.val_ds.x and interp.fnames == data.val_ds.fnames
    assert interp.val_cfg == data.tfms[1]
    assert interp.losses.mean() == pytest.approx(nll_loss(log_preds, data.val_y), rel=1e-5)
    assert interp.accuracy() == pytest.approx(learn.history[-1]['accuracy'])
    assert interp.confusion_matrix().sum() == len(data.val_y) == 12
    via_learner = learn.interpretation()
    np.testing.assert_array_equal(via_learner.probs, interp.probs)
    with pytest.raises(ValueError, match='there is no test set'):
        ClassificationInterpretation.from_learner(learn, is_test=True)


def test_plots_from_a_learner(learn, tmp_path):
    """The lesson's pictures end to end: images as the model saw them (the sz centre crop)."""
    from jaxcls import plots
    import matplotlib.pyplot as plt
    interp = learn.interpretation()
    fig = plots.plot_top_losses(interp, 4, fname=tmp_path / 'top.png')
    _, idxs = interp.top_losses(4)
    assert len(fig.axes) == 4
    assert [ax.get_title().split('\n')[0] for ax in fig.axes] == [interp.title(i) for i in idxs]
    cache = np.asarray(learn.data.val_ds.x[idxs[0]])    # 37 px: the crop starts at ceil(5 / 2)
    assert cache.shape == (37, 37, 3)
    crop = cache[3:3 + SZ, 3:3 + SZ] / 255.0
    np.testing.assert_allclose(np.asarray(fig.axes[0].images[0].get_array()), crop, atol=1e-6)
    assert (tmp_path / 'top.png').stat().st_size > 0
    fig2 = plots.plot_confusion_matrix(interp)
    assert sum(int(t.get_text()) for t in fig2.axes[0].texts) == 12
    plt.close('all')


def test_display_images_are_what_the_model_saw():
    from jaxcls.data import transforms as T
    images = np.random.default_rng(2).integers(0, 256, (8, 11, 11, 3)).astype(np.uint8)
    _, val = T.tfms_from_stats(((0.5,) * 3, (0.25,) * 3), 8)
    interp = ClassificationInterpretation(PROBS, TARGS, CLASSES, images=images, val_cfg=val)
    shown = interp.display_images([2, 0])
    assert shown.shape == (2, 8, 8, 3) and shown.dtype == np.float32
    np.testing.assert_allclose(shown, images[[2, 0], 2:10, 2:10] / 255, atol=1e-6)  # ceil(3/2)
    assert interp.display_images([]).shape[0] == 0
    raw = ClassificationInterpretation(PROBS, TARGS, CLASSES, images=images)
    np.testing.assert_array_equal(raw.display_images([1]), images[[1]])   # no config: as stored
    with pytest.raises(ValueError, match='has no images; build it with .*from_learner'):
        ClassificationInterpretation(PROBS, TARGS, CLASSES).display_images([0])
