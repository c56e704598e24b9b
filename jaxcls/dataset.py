"""fastai 0.7's ``fastai.dataset`` under jaxcls: the data object and its datasets.

    from jaxcls.dataset import *        # was: from fastai.dataset import *

ImageClassifierData (from_paths / from_csv / from_arrays / from_tfds), ImageDataset (ds.denorm,
ds.fnames, ds.y), get_cv_idxs, and the layout readers behind them.

A thin re-export for porting notebooks: no logic of its own, and nothing in jaxcls imports it.
"""
from jaxcls.data.dataset import ImageDataset
from jaxcls.data.decode_one import BadImageError
from jaxcls.data.imagedata import ImageClassifierData
from jaxcls.data.csv_labels import csv_items
from jaxcls.data.items import LayoutError, folder_items, get_cv_idxs, list_images

__all__ = [
    'ImageDataset', 'BadImageError', 'ImageClassifierData', 'LayoutError', 'csv_items',
    'folder_items', 'get_cv_idxs', 'list_images',
]
