"""A notebook ported from fastai 0.7 by renaming the package: cells run in order in one
namespace, as a kernel runs them, importing jaxcls's modules of fastai's names with `import *`.

The cells are this project's own, written the way the course's lesson 1 and 2 notebooks use
fastai (the imports, the six loaders, ds.denorm, accuracy_np, plots, plots_from_files,
plot_confusion_matrix, get_cv_idxs, to_np); a tiny ResNet (`arch = TINY`) and random weights
(`pretrained=False`, the one change the offline machine needs) keep it fast.
"""
import os

import matplotlib
import numpy as np
import pytest
from PIL import Image

from helpers import TINY, make_folder

matplotlib.use('Agg')

LESSON1 = [
    # the imports, renamed
    '''
from jaxcls.imports import *
from jaxcls.transforms import *
from jaxcls.conv_learner import *
from jaxcls.model import *
from jaxcls.dataset import *
from jaxcls.sgdr import *
from jaxcls.plots import *
''',
    # look at the files: os, plt, shutil and PIL from jaxcls.imports
    '''
files = os.listdir(f'{PATH}valid/cats')[:5]
img = plt.imread(f'{PATH}valid/cats/{files[0]}')
plt.imshow(img);
shutil.rmtree(f'{PATH}tmp', ignore_errors=True)
assert img.shape == (40, 40, 3) and Path(PATH).is_dir() and len(glob(f'{PATH}train/*')) == 2
''',
    '''
data = ImageClassifierData.from_paths(PATH, tfms=tfms_from_model(arch, sz), bs=16)
learn = ConvLearner.pretrained(arch, data, precompute=True, pretrained=False)
learn.fit(0.01, 1)
log_preds = learn.predict()
preds = np.argmax(log_preds, axis=1)
probs = np.exp(log_preds[:,1])
def load_img_id(ds, idx): return np.array(PIL.Image.open(PATH+ds.fnames[idx]))
def plot_val_with_title(idxs, title):
    imgs = [load_img_id(data.val_ds,x) for x in idxs]
    title_probs = [probs[x] for x in idxs]
    return plots(imgs, rows=1, titles=title_probs, figsize=(16,8))
most_uncertain = np.argsort(np.abs(probs -0.5))[:4]
plot_val_with_title(most_uncertain, "Most uncertain predictions")
''',
    '''
lrf=learn.lr_find()
learn.sched.plot_lr()
learn.sched.plot()
''',
    # augmentations: lesson 1's get_augs, six fresh data objects, the second image of each
    '''
tfms = tfms_from_model(arch, sz, aug_tfms=transforms_side_on, max_zoom=1.1)
def get_augs():
    data = ImageClassifierData.from_paths(PATH, bs=2, tfms=tfms, num_workers=1)
    x,_ = next(iter(data.aug_dl))
    return data.trn_ds.denorm(x)[1]
ims = np.stack([get_augs() for i in range(6)])
plots(ims, rows=2)
''',
    '''
log_preds,y = learn.TTA()
probs = np.mean(np.exp(log_preds),0)
acc = accuracy_np(probs, y)
preds = np.argmax(probs, axis=1)
cm = np.array([[np.sum((y == a) & (preds == p)) for p in range(2)] for a in range(2)])
plot_confusion_matrix(cm, data.classes)
''',
]

LESSON2 = [
    '''
from jaxcls.conv_learner import *
from jaxcls.plots import *
''',
    '''
def get_1st(path): return glob(f'{path}/*.*')[0]
list_paths = [get_1st(f"{dc_path}cats"), get_1st(f"{dc_path}dogs")]
plots_from_files(list_paths, titles=["cat", "dog"], maintitle="Single-label classification")
''',
    '''
label_csv = f'{PATH}train_v2.csv'
n = len(list(open(label_csv)))-1
val_idxs = get_cv_idxs(n)
def get_data(sz):
    tfms = tfms_from_model(f_model, sz, aug_tfms=transforms_top_down, max_zoom=1.05)
    return ImageClassifierData.from_csv(PATH, 'train-jpg', label_csv, tfms=tfms,
                    suffix='.jpg', val_idxs=val_idxs, test_name='test-jpg', bs=4)
data = get_data(32)
x,y = next(iter(data.val_dl))
pairs = list(zip(data.classes, y[0]))
plt.imshow(data.val_ds.denorm(to_np(x))[0]*1.4);
''',
]


def run_cells(cells, ns):
    import matplotlib.pyplot
    matplotlib.pyplot.close('all')      # a fresh kernel: no figure of an earlier test is current
    for i, src in enumerate(cells):
        try:
            exec(compile(src, f'<cell {i + 1}>', 'exec'), ns)
        except Exception as e:
            raise AssertionError(f'cell {i + 1} failed: {type(e).__name__}: {e}\n{src}') from e
    return ns


@pytest.mark.slow
def test_lesson1_notebook_with_the_package_renamed(tmp_path):
    PATH = make_folder(tmp_path / 'dogscats', n_train=24, n_valid=10) + '/'
    ns = run_cells(LESSON1, {'PATH': PATH, 'arch': TINY, 'sz': 32})
    plt = ns['plt']
    assert ns['np'] is np and ns['PIL'].Image is Image
    assert ns['log_preds'].shape == (5, 20, 2) and ns['y'].tolist() == [0] * 10 + [1] * 10
    probs = np.mean(np.exp(ns['log_preds']), 0)
    assert ns['acc'] == np.mean(np.argmax(probs, 1) == ns['y'])
    assert isinstance(ns['acc'], np.floating)
    assert ns['ims'].shape == (6, 32, 32, 3) and 0 <= ns['ims'].min() and ns['ims'].max() <= 1
    assert len({im.tobytes() for im in ns['ims']}) > 1     # six augmentations, not one
    # plots drew (and returned None, as fastai's): 4 images of the uncertain cell, 6 of get_augs
    assert plt.get_fignums(), 'no figure drawn'
    plt.close('all')


@pytest.mark.slow
def test_lesson2_notebook_with_the_package_renamed(tmp_path):
    dc = make_folder(tmp_path / 'dogscats', n_train=2, n_valid=2) + '/valid/'
    PATH = str(tmp_path / 'planet') + '/'
    os.makedirs(f'{PATH}train-jpg')
    os.makedirs(f'{PATH}test-jpg')
    tags = ['clear primary', 'haze primary', 'agriculture clear primary water', 'clear', 'haze']
    rng = np.random.default_rng(0)
    with open(f'{PATH}train_v2.csv', 'w') as f:
        f.write('image_name,tags\n')
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                f'{PATH}train-jpg/train_{i}.jpg')
            f.write(f'train_{i},{tags[i % 5]}\n')
    Image.new('RGB', (40, 40)).save(f'{PATH}test-jpg/test_0.jpg')
    ns = run_cells(LESSON2, {'PATH': PATH, 'dc_path': dc, 'f_model': TINY})
    data = ns['data']
    assert data.is_multi and data.classes == ['agriculture', 'clear', 'haze', 'primary', 'water']
    assert len(data.val_ds) == 2 == len(ns['val_idxs'])
    x, y = ns['x'], np.asarray(ns['y'])
    assert x.shape == (2, 32, 32, 3) and y.shape == (2, 5) and y.dtype == np.float32
    assert [c for c, v in ns['pairs'] if v == 1] == [c for c, v in zip(data.classes, data.val_y[0])
                                                     if v == 1]
    ns['plt'].close('all')
