"""ConvLearner's predictions and what it shows of them: validation, predict, TTA, the
interpretation and Grad-CAM plots (a part of ConvLearner, split out by purpose; each method
calls `jaxcls.train.predict`, which runs the learner's compiled public steps)."""
from __future__ import annotations

from typing import Any

import numpy as np

from . import predict as pr


class LearnerPredictions:
    """The prediction methods of `ConvLearner` (see jaxcls.train.learner)."""

    def validate(self) -> dict:
        """{'val_loss', metric name: value} on the validation set."""
        return pr.validate(self)

    def predict(self, is_test: bool = False) -> np.ndarray:
        """Log-probabilities (sigmoid probabilities for multi-label) for valid or test, in order."""
        return self.predict_with_targs(is_test)[0]

    def predict_with_targs(self, is_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(predictions, targets) for valid (or test: targets are zeros when unlabelled)."""
        return pr.with_targs(self, is_test)

    def predict_array(self, x: Any) -> np.ndarray:
        """Predictions for a batch: uint8 images (N, H, W, 3), H and W >= sz, are centre-cropped
        and normalised; float arrays must already be normalised (N, sz, sz, 3)."""
        return pr.on_array(self, x)

    def TTA(self, n_aug: int = 4, is_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Test-time augmentation, as fastai 0.7: (predictions, targets), predictions stacked as
        ceil(n_aug/4) copies of the plain pass followed by n_aug augmented passes (training
        transforms, keys from the learner's seed): (1 + 4, N, c) by default. They are
        log-probabilities, averaged with np.mean(np.exp(p), 0); multi-label: probabilities,
        averaged with np.mean(p, 0) (lesson 2: f2(np.mean(multi_preds, 0), y))."""
        return pr.tta(self, n_aug, is_test)

    def interpretation(self, is_test: bool = False):
        """A ClassificationInterpretation of the validation predictions (jaxcls.interpret):
        most correct / incorrect / uncertain, top losses, confusion matrix, report."""
        from jaxcls.interpret import ClassificationInterpretation
        return ClassificationInterpretation.from_learner(self, is_test=is_test)

    def plot_cam(self, idxs: Any, classes: Any = None, is_test: bool = False, fname: Any = None):
        """Validation images `idxs` with the class activation map (Grad-CAM) of `classes`
        (default: each image's predicted class) overlaid, titled like the lesson's plots."""
        from jaxcls import plots
        interp, idxs = self.interpretation(is_test), np.asarray(idxs, np.int64).ravel()
        return plots.plot_interpretation(
            interp, idxs, 'Class activation maps' + ('' if classes is None else ' (asked classes)'),
            fname, heatmaps=interp.heatmaps(idxs, classes), rows=max(1, -(-len(idxs) // 4)))

