"""fastai 0.7's ``fastai.model`` under jaxcls: the network and the steps that train it.

    from jaxcls.model import *        # was: from fastai.model import *

fastai's fit / predict / Stepper over a torch model become the functional core here: convnet
builds the network, make_train_step / make_eval_step / make_predict_step / make_tta_step build
the jitted steps, Loop runs them with callbacks (what learn.fit runs; see
examples/functional_fit.py).

A thin re-export for porting notebooks: no logic of its own, and nothing in jaxcls imports it.
"""
from jaxcls.models.convnet import convnet
from jaxcls.train.loop import Loop
from jaxcls.train.optim import HParams, layer_group_sgd, sgd
from jaxcls.train.state import ModelState, TrainState, create_train_state
from jaxcls.train.steps import (
    make_eval_step, make_features_step, make_predict_step, make_train_step, make_tta_step
)

__all__ = [
    'convnet', 'Loop', 'HParams', 'layer_group_sgd', 'sgd', 'ModelState', 'TrainState',
    'create_train_state', 'make_eval_step', 'make_features_step', 'make_predict_step',
    'make_train_step', 'make_tta_step',
]
