"""fastai 0.7's ``fastai.dataloader`` under jaxcls: the loaders.

    from jaxcls.dataloader import *        # was: from fastai.dataloader import *

DataLoader yields the train step's dict batches (uint8 images, labels, mask); TfmDataLoader, the
type of data.trn_dl / val_dl / fix_dl / aug_dl / test_dl / test_aug_dl, also iterates as
fastai's (x, y) pairs.

A thin re-export for porting notebooks: no logic of its own, and nothing in jaxcls imports it.
"""
from jaxcls.data.loader import DataLoader
from jaxcls.data.tfm_loader import TfmDataLoader

__all__ = [
    'DataLoader', 'TfmDataLoader',
]
