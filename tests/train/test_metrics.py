"""jaxcls.train.metrics: the whole-set metrics, against hand-computed values."""
import numpy as np
import pytest

from jaxcls.train.metrics import accuracy, accuracy_np, accuracy_thresh, f2, fbeta, opt_th


def test_accuracy_np_after_tta_as_lesson_1_calls_it():
    # TTA's stack: 2 passes over 3 images; the mean of the probabilities decides
    log_preds = np.log(np.array([[[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]],
                                 [[0.7, 0.3], [0.8, 0.2], [0.3, 0.7]]]))
    probs = np.mean(np.exp(log_preds), 0)          # image 1: 0.6 vs 0.4 -> class 0
    y = np.array([0, 1, 1])
    acc = accuracy_np(probs, y)
    assert acc == pytest.approx(2 / 3) and isinstance(acc, np.float64)
    assert accuracy(np.log(probs), y) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r'\(N, c\).*\(2, 3, 2\).*np.mean\(np.exp'):
        accuracy_np(np.exp(log_preds), y)


def test_multi_label_metrics():
    p = np.array([[0.9, 0.2, 0.6], [0.1, 0.7, 0.4]])
    t = np.array([[1, 0, 0], [0, 1, 1]])
    assert accuracy_thresh(0.5)(p, t) == pytest.approx(4 / 6)
    # image 0: precision 1/2, recall 1 -> F2 = 5 * 0.5 / (4 * 0.5 + 1) = 5/6; image 1: p 1,
    # r 1/2 -> 5 * 0.5 / (4 + 0.5) = 5/9
    assert fbeta(2)(p, t) == pytest.approx((5 / 6 + 5 / 9) / 2)


def planet_f2_and_opt_th(preds, targs, start=0.17, end=0.24, step=0.01):
    """fastai 0.7's courses/dl1/planet.py f2 and opt_th, transcribed (scikit-learn's
    fbeta_score, average='samples')."""
    import warnings
    from sklearn.metrics import fbeta_score
    ths = np.arange(start, end, step)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # rows with no labels: ill-defined, scored 0
        scores = [fbeta_score(targs, (preds > th), beta=2, average='samples') for th in ths]
    return max(scores), ths[np.argmax(scores)]


def test_f2_and_opt_th_equal_fastai_planet_py():
    rng = np.random.default_rng(0)
    targs = (rng.random((200, 17)) < 0.15).astype(np.float32)
    targs[:5] = 0                                  # images with no tag at all
    preds = np.clip(0.6 * targs + 0.45 * rng.random(targs.shape) - 0.1, 0, 1)
    ref_f2, ref_th = planet_f2_and_opt_th(preds, targs)
    assert f2(preds, targs) == pytest.approx(ref_f2, abs=1e-12)
    assert opt_th(preds, targs) == ref_th
    # the threshold matters here: the scores differ across 0.17 ... 0.23
    assert fbeta(2, 0.17)(preds, targs) != fbeta(2, 0.23)(preds, targs)
    wide, th = planet_f2_and_opt_th(preds, targs, 0.05, 0.6, 0.05)
    assert f2(preds, targs, 0.05, 0.6, 0.05) == pytest.approx(wide, abs=1e-12)
    assert opt_th(preds, targs, 0.05, 0.6, 0.05) == th and not 0.17 <= th < 0.24
    assert f2.__name__ == 'f2'                     # its column in the epoch table
    with pytest.raises(ValueError, match=r'\(N, c\).*\(3, 200, 17\).*np.mean\(multi_preds, 0\)'):
        f2(np.stack([preds] * 3), targs)
    with pytest.raises(ValueError, match=r'no thresholds in np.arange\(0.3, 0.2, 0.01\)'):
        opt_th(preds, targs, 0.3, 0.2)
