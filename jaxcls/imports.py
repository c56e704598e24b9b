"""fastai 0.7's ``fastai.imports`` under jaxcls: the libraries a course notebook uses without importing them.

    from jaxcls.imports import *        # was: from fastai.imports import *

What fastai's module gave that jaxcls's dependencies provide: numpy as np, PIL (with Image,
ImageEnhance, ImageOps), pyplot as plt, tqdm, and the standard library's os, shutil, Path, glob,
partial, Counter and the rest. fastai also imported pandas, scipy, cv2, seaborn, bcolz, sklearn,
IPython and ipywidgets; jaxcls does not depend on them, so import the ones a notebook uses
yourself (e.g. ``import pandas as pd``).

A thin re-export for porting notebooks: no logic of its own, and nothing in jaxcls imports it.
"""
import collections
import contextlib
import copy
import datetime
import itertools
import json
import math
import os
import pickle
import random
import re
import shutil
import string
import sys
import threading
import time
import warnings

from abc import abstractmethod
from collections import Counter, OrderedDict
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from glob import glob, iglob
from itertools import chain
from operator import attrgetter, itemgetter
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageEnhance, ImageOps
from tqdm import tqdm, trange

from jaxcls.plots import plt

__all__ = [
    'collections', 'contextlib', 'copy', 'datetime', 'itertools', 'json', 'math', 'os', 'pickle',
    'random', 're', 'shutil', 'string', 'sys', 'threading', 'time', 'warnings', 'np', 'PIL',
    'abstractmethod', 'Counter', 'OrderedDict', 'Iterable', 'ProcessPoolExecutor',
    'ThreadPoolExecutor', 'partial', 'glob', 'iglob', 'chain', 'attrgetter', 'itemgetter', 'Path',
    'Image', 'ImageEnhance', 'ImageOps', 'tqdm', 'trange', 'plt',
]
