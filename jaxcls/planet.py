"""fastai 0.7's ``planet`` module (courses/dl1/planet.py) under jaxcls: lesson 2's F2 metric.

    from jaxcls.planet import f2, opt_th        # was: from planet import f2

f2(preds, targs) is the best mean per-image F2 over the thresholds 0.17 ... 0.23, the metric
lesson 2 trains with (``metrics=[f2]``); opt_th(preds, targs) is the threshold that gives it.

A thin re-export for porting notebooks: no logic of its own, and nothing in jaxcls imports it.
"""
from jaxcls.train.metrics import f2, fbeta, opt_th

__all__ = ['f2', 'fbeta', 'opt_th']
