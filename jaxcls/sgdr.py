"""fastai 0.7's ``fastai.sgdr`` under jaxcls: callbacks and learning-rate schedules.

    from jaxcls.sgdr import *        # was: from fastai.sgdr import *

Callback and the recorders (learn.sched is a LossRecorder), the SGDR, one-cycle and LR-range
schedules, the LR finder, and the checkpoint callbacks.

A thin re-export for porting notebooks: no logic of its own, and nothing in jaxcls imports it.
"""
from jaxcls.train.callbacks import (
    Callback, DivergenceGuard, LossRecorder, ProgressBar, Recorder, TrainingDiverged
)
from jaxcls.train.loggers import CSVLogger, TensorBoardLogger
from jaxcls.train.lr_find import LRFinder
from jaxcls.train.resume import ModelCheckpoint, SaveBest
from jaxcls.train.schedules import (
    cos_between, fit_schedule, lr_find_schedule, lr_range, one_cycle, one_cycle_schedule, sgdr,
    sgdr_epochs
)

__all__ = [
    'CSVLogger', 'Callback', 'DivergenceGuard', 'LossRecorder', 'ProgressBar', 'Recorder',
    'TensorBoardLogger', 'TrainingDiverged', 'LRFinder', 'ModelCheckpoint', 'SaveBest',
    'cos_between', 'fit_schedule', 'lr_find_schedule', 'lr_range', 'one_cycle',
    'one_cycle_schedule', 'sgdr', 'sgdr_epochs',
]
