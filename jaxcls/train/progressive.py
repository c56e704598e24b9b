"""Progressive resizing: a learner's data swapped for the same images at another size.

    learn.set_data(get_data(128))      # lesson 2: train at 64, then 128, then 256 px

`set_data(learn, data)` (what ``learn.set_data`` runs) keeps everything the learner has
learnt and how it trains: the weights and BatchNorm statistics, the freeze state, the layer
groups, the precompute setting (stored activations are recomputed from the new images when
it is on), the epoch count and history. What depends on the image size follows from the new
data: the compiled steps are keyed by the data's transforms, so the next fit compiles its
step once for the new size, and going back to a size trained before finds that size's
compiled steps and compiles nothing (``tests/train/test_progressive.py`` counts).

fastai 0.7's ``set_data(data, precompute=False)`` also froze the body. Here the freeze state
is kept (lesson 2 calls ``learn.freeze()`` after it anyway); ``precompute=True`` freezes and
computes the activations as fastai's did, ``precompute=False`` turns them off.
"""
from __future__ import annotations

from typing import Any, Optional

from .precompute import Features

__all__ = ['check_same_labels', 'set_data']


def _describe(data: Any) -> str:
    return f'{len(data.classes)} {"multi-label " if data.is_multi else ""}classes {list(data.classes)}'


def check_same_labels(old: Any, new: Any) -> None:
    """ValueError unless `new` has the classes (same names, same order) and the label kind
    (single- or multi-label) of `old`: the head's outputs mean those classes.

    >>> from types import SimpleNamespace as D
    >>> check_same_labels(D(classes=['a', 'b'], is_multi=False), D(classes=['a', 'c'], is_multi=False))
    Traceback (most recent call last):
    ...
    ValueError: set_data needs the classes the learner was built for: the learner has 2 classes ['a', 'b'], the new data 2 classes ['a', 'c'] (only the learner's: ['b']; only the new data's: ['c']). Build the new data from the same labels (the same CSV or folders), or a new learner for these classes
    """
    if list(new.classes) == list(old.classes) and bool(new.is_multi) == bool(old.is_multi):
        return
    mine, theirs = set(map(str, old.classes)), set(map(str, new.classes))
    if mine != theirs:
        diff = (f"only the learner's: {sorted(mine - theirs)}; only the new data's: "
                f'{sorted(theirs - mine)}')
    elif bool(new.is_multi) != bool(old.is_multi):
        diff = 'the same names, but one is multi-label and the other is not'
    else:
        diff = 'the same names in another order'
    raise ValueError(f'set_data needs the classes the learner was built for: the learner has '
                     f'{_describe(old)}, the new data {_describe(new)} ({diff}). Build the new '
                     f'data from the same labels (the same CSV or folders), or a new learner for '
                     f'these classes')


def set_data(learn: Any, data: Any, precompute: Optional[bool] = None) -> None:
    """Trains and predicts `learn` on `data` from now on (see the module docstring).

    Args:
      precompute: None keeps the learner's setting; True freezes the body and trains the
        head on activations of the new images (fastai's set_data(data, True)); False turns
        precompute off.
    """
    check_same_labels(learn.data, data)
    if data.tfms[0] is None or data.tfms[1] is None:
        raise ValueError('the new data has no transforms; build it with '
                         'tfms=tfms_from_model(arch, sz), as the learner\'s was')
    if learn.progress is not None:
        raise RuntimeError('set_data during a fit: call it between fits (e.g. after fit returns)')
    keep = learn._precompute if precompute is None else bool(precompute)
    moved = data.trn_dl.mesh != learn.data.trn_dl.mesh
    learn.data = data
    if moved:  # other devices: the state goes where the new batches are
        learn.state = learn._place(learn.state)
    learn._features = Features(learn)  # the old activations are of the old images
    learn._precompute = False
    if keep:
        if any(learn.trainable[:-1]):
            learn.freeze()
        learn.precompute = True  # computes (or reads from its cache) the new activations
