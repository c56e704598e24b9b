"""fastai 0.7's ``fastai.learner`` under jaxcls: the learner.

    from jaxcls.learner import *        # was: from fastai.learner import *

fastai's Learner is ConvLearner here (the one learner jaxcls has), with the errors it raises and
Predictor, a saved model without its training data.

A thin re-export for porting notebooks: no logic of its own, and nothing in jaxcls imports it.
"""
from jaxcls.train.inference import Predictor
from jaxcls.train.learner import ConvLearner
from jaxcls.train.memory import OutOfDeviceMemory
from jaxcls.train.resume import ResumeMismatch

__all__ = [
    'Predictor', 'ConvLearner', 'OutOfDeviceMemory', 'ResumeMismatch',
]
