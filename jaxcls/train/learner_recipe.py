"""ConvLearner's training recipe: MixUp or CutMix, label smoothing, the weights' moving average
(EMA) and gradient accumulation (a part of ConvLearner, split out by purpose). The pure
functions are `jaxcls.train.recipe`; the learner's compiled train step is `make_train_step`
with `learn.recipe.options()` (one compiled step per recipe, jaxcls.train.compiled).

    >>> learn = ConvLearner.pretrained(resnet34, data, mixup=0.4)  # doctest: +SKIP
    >>> learn.set_recipe(label_smoothing=0.1, ema=0.999, accumulate=4)  # doctest: +SKIP
"""
from __future__ import annotations

from .recipe import Recipe, init_ema


class LearnerRecipe:
    """The recipe methods of `ConvLearner` (see jaxcls.train.learner)."""

    @property
    def recipe(self) -> Recipe:
        """What the train step runs besides SGD (a `jaxcls.train.recipe.Recipe`). Setting it
        starts the weights' moving average from the current weights when `ema` turns on
        (a new decay keeps the average) and drops it when `ema` turns off."""
        return self._recipe

    @recipe.setter
    def recipe(self, value: Recipe) -> None:
        if not isinstance(value, Recipe):
            raise TypeError(f'learn.recipe takes a jaxcls.train.recipe.Recipe, got '
                            f'{type(value).__name__}; or call learn.set_recipe(mixup=0.4, ...)')
        if self.progress is not None:
            raise RuntimeError('the recipe cannot change inside a fit (its step is compiled '
                               'with it); set it before calling fit')
        state = self.state
        if value.ema and state.ema is None:
            self.state = self._place(state.replace(ema=init_ema(state.variables)))
        elif not value.ema and state.ema is not None:
            self.state = state.replace(ema=None)
        self._recipe = value
        self._features.forget_loaders()   # accumulate changes the training batch

    def set_recipe(self, **options):
        """Change parts of the recipe (mixup, cutmix, label_smoothing, ema, accumulate; 0 or
        1 is off), e.g. `learn.set_recipe(mixup=0.4, ema=0.999)`; returns the learner."""
        self.recipe = self.recipe.replace(**options)
        return self

    def _image_loader(self):
        """The training images' loader: `data.trn_dl`, or with `accumulate=N` one over the same
        images with batches of N * bs rows (N micro-batches of bs per optimizer update)."""
        n = self._recipe.accumulate
        if n == 1:
            return self.data.trn_dl
        made = getattr(self, '_accumulating', None)
        if made is None or made[0] is not self.data or made[1] != n:
            made = self._accumulating = (self.data, n, self.data.with_bs(self.data.bs * n).trn_dl)
        return made[2]
