"""ConvLearner's saved models and checkpoints: describe, save, load, restore_checkpoint (a
part of ConvLearner, split out by purpose; the schema and its one reader are
`jaxcls.train.modelfile`, checkpoints `jaxcls.train.resume_point`)."""
from __future__ import annotations

import os
from typing import Any, Optional

from . import modelfile
from . import resume_point as rp


class LearnerFiles:
    """The saving and loading methods of `ConvLearner` (see jaxcls.train.learner)."""

    def _models_dir(self) -> str:  # where save/load and checkpoints go by default
        return os.path.join(self.data.path, 'models')

    def describe(self) -> dict:
        """The model description a saved model carries (jaxcls.train.modelfile)."""
        return modelfile.describe(
            arch_name=self.arch_name, spec=self.spec, classes=self.data.classes,
            is_multi=self.is_multi, head=self.head_desc, stages=self.model.body.stage_sizes,
            trainable=self.trainable, sz=self.data.sz, cache_size=self.data.cache_size,
            pretrained=self.pretrained_body, val_tfms=self.data.tfms[1])

    def save(self, name: str) -> str:
        """Save params, BatchNorm statistics and optimizer state to {path}/models/{name} (Orbax)."""
        return modelfile.save(self, name)

    def load(self, name: str) -> None:
        """Load a model saved with `save(name)`; its arch and classes must match this learner's."""
        modelfile.load(self, name)

    def export(self, fname: str = 'export.jaxcls') -> str:
        """Write the model to one file (weights -- their moving average when the recipe keeps
        one --, BatchNorm statistics, arch, classes, the validation transform and
        normalisation; no optimizer state, no pickle), for
        `load_learner(file)`, `Predictor.load(file)` or `jaxcls predict file img.jpg`. A
        relative `fname` is under data.path, as fastai 2's. Returns the file's path."""
        from .export import write_export
        model = self.steps.model_state(images=True)   # the moving average, when kept
        return write_export(os.path.join(self.data.path, fname),
                            {'params': model.params, 'batch_stats': model.batch_stats},
                            self.describe())

    def restore_checkpoint(self, source: Any, step: Optional[int] = None) -> dict:
        """Load a ModelCheckpoint/SaveBest checkpoint (a callback or its folder; default the
        newest step, or SaveBest's best) into this learner outside a fit; returns its record
        (jaxcls.train.resume_point.restore_checkpoint)."""
        return rp.restore_checkpoint(self, source, step)

