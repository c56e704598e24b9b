"""jaxcls.train.metrics: the whole-set metrics, against hand-computed values."""
import numpy as np
import pytest

from jaxcls.train.metrics import accuracy, accuracy_np, accuracy_thresh, fbeta


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
