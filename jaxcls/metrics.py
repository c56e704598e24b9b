"""fastai 0.7's ``fastai.metrics`` under jaxcls: metrics on whole-set predictions.

    from jaxcls.metrics import *        # was: from fastai.metrics import *

accuracy_np(probs, y) as lesson 1 calls it after TTA; accuracy, accuracy_thresh and fbeta are
what ``metrics=[...]`` takes (fbeta(2) is an F2 at one threshold; lesson 2's f2 and opt_th
are in jaxcls.planet).

A thin re-export for porting notebooks: no logic of its own, and nothing in jaxcls imports it.
"""
from jaxcls.train.metrics import accuracy, accuracy_np, accuracy_thresh, bce_loss, fbeta, nll_loss

__all__ = [
    'accuracy', 'accuracy_np', 'accuracy_thresh', 'bce_loss', 'fbeta', 'nll_loss',
]
