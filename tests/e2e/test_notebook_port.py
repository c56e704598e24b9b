"""A notebook ported from fastai 0.7 by renaming the package: cells run in order in one
namespace, as a kernel runs them, importing jaxcls's modules of fastai's names with `import *`.

The lesson-1 cells are this project's own, written the way the course's lesson 1 notebook uses
fastai (the imports, the six loaders, ds.denorm, accuracy_np, plots, plot_confusion_matrix,
to_np). The lesson-2 cells are the course's planet and dog-breeds notebooks as written, on
generated CSV datasets (what each changes is said above it), followed by the README's
submission recipes. A tiny ResNet (`TINY`), small sizes and random weights (`pretrained=False`,
the one change the offline machine needs) keep them fast.
"""
import os

import matplotlib
import numpy as np
import pytest
from PIL import Image

from helpers import TINY, lowerings, make_folder

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

# The course's planet notebook (lesson2-image_models), cell by cell. Changed: the import of
# planet.py's f2, PATH, f_model (TINY), the sizes (256 -> 48 to look at a batch; 64, 128 -> 32,
# 48), pretrained=False. Added at the end: the threshold and the README's submission recipe.
PLANET = [
    '''
from jaxcls.conv_learner import *
''',
    '''
from jaxcls.plots import *
def get_1st(path): return glob(f'{path}/*.*')[0]
list_paths = [get_1st(f"{dc_path}cats"), get_1st(f"{dc_path}dogs")]
plots_from_files(list_paths, titles=["cat", "dog"], maintitle="Single-label classification")
list_paths = [f"{PATH}train-jpg/train_0.jpg", f"{PATH}train-jpg/train_1.jpg"]
titles=["haze primary", "agriculture clear primary water"]
plots_from_files(list_paths, titles=titles, maintitle="Multi-label classification")
''',
    '''
from jaxcls.planet import f2
metrics=[f2]
f_model = TINY
''',
    '''
label_csv = f'{PATH}train_v2.csv'
n = len(list(open(label_csv)))-1
val_idxs = get_cv_idxs(n)
def get_data(sz):
    tfms = tfms_from_model(f_model, sz, aug_tfms=transforms_top_down, max_zoom=1.05)
    return ImageClassifierData.from_csv(PATH, 'train-jpg', label_csv, tfms=tfms,
                    suffix='.jpg', val_idxs=val_idxs, test_name='test-jpg')
data = get_data(48)
x,y = next(iter(data.val_dl))
pairs = list(zip(data.classes, y[0]))
plt.imshow(data.val_ds.denorm(to_np(x))[0]*1.4);
''',
    '''
sz=32
data = get_data(sz)
data = data.resize(int(sz*1.3), 'tmp')
learn = ConvLearner.pretrained(f_model, data, metrics=metrics, pretrained=False)
lrf=learn.lr_find()
learn.sched.plot()
''',
    '''
lr = 0.2
learn.fit(lr, 3, cycle_len=1, cycle_mult=2)
lrs = np.array([lr/9,lr/3,lr])
learn.unfreeze()
learn.fit(lrs, 3, cycle_len=1, cycle_mult=2)
learn.save(f'{sz}')
learn.sched.plot_loss()
''',
    '''
sz=48
learn.set_data(get_data(sz))
learn.freeze()
learn.fit(lr, 3, cycle_len=1, cycle_mult=2)
learn.unfreeze()
learn.fit(lrs, 3, cycle_len=1, cycle_mult=2)
learn.save(f'{sz}')
''',
    '''
multi_preds, y = learn.TTA()
preds = np.mean(multi_preds, 0)
score = f2(preds,y)
''',
    '''
from jaxcls.planet import opt_th
''',
]

# The course's dog-breeds notebook (lesson1-breeds), cell by cell. Changed: PATH, arch (TINY),
# sz and bs (224 -> 32, 299 -> 48; 58 -> 8) with get_data's size constants (300 -> 60, 340 -> 64),
# pretrained=False, fewer epochs; its pandas cells are left out (jaxcls does not install pandas)
# and its submission is the README's recipe, added at the end.
DOGS = [
    '''
from jaxcls.imports import *
from jaxcls.transforms import *
from jaxcls.conv_learner import *
from jaxcls.model import *
from jaxcls.dataset import *
from jaxcls.sgdr import *
from jaxcls.plots import *
''',
    '''
sz = 32
arch = TINY
bs = 8
label_csv = f'{PATH}labels.csv'
n = len(list(open(label_csv))) - 1 # header is not counted (-1)
val_idxs = get_cv_idxs(n) # random 20% data for validation set
''',
    '''
tfms = tfms_from_model(arch, sz, aug_tfms=transforms_side_on, max_zoom=1.1)
data = ImageClassifierData.from_csv(PATH, 'train', f'{PATH}labels.csv', test_name='test',
                                   val_idxs=val_idxs, suffix='.jpg', tfms=tfms, bs=bs)
fn = PATH + data.trn_ds.fnames[0]
img = PIL.Image.open(fn)
size_d = {k: PIL.Image.open(PATH + k).size for k in data.trn_ds.fnames}
row_sz, col_sz = list(zip(*size_d.values()))
row_sz = np.array(row_sz); col_sz = np.array(col_sz)
plt.hist(row_sz);
counts = len(data.trn_ds), len(data.test_ds), len(data.classes), data.classes[:5]
''',
    '''
def get_data(sz, bs): # sz: image size, bs: batch size
    tfms = tfms_from_model(arch, sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_csv(PATH, 'train', f'{PATH}labels.csv', test_name='test',
                                       val_idxs=val_idxs, suffix='.jpg', tfms=tfms, bs=bs)
    return data if sz > 60 else data.resize(64, 'tmp')
''',
    '''
from sklearn import metrics
data = get_data(sz, bs)
learn = ConvLearner.pretrained(arch, data, precompute=True, ps=0.5, pretrained=False)
learn.fit(1e-2, 2)
learn.precompute = False
learn.fit(1e-2, 2, cycle_len=1)
learn.save('224_pre')
learn.load('224_pre')
''',
    '''
learn.set_data(get_data(48, bs))
learn.freeze()
learn.fit(1e-2, 1, cycle_len=1)
learn.fit(1e-2, 2, cycle_len=1, cycle_mult=2)
''',
    '''
log_preds, y = learn.TTA()
probs = np.mean(np.exp(log_preds),0)
acc, loss = accuracy_np(probs, y), metrics.log_loss(y, probs)
learn.save('299_pre')
''',
    '''
test_log_preds = learn.predict(is_test=True)
''',
]


def readme_block(first_line):
    """The README's python block that starts with `first_line` (the Lesson 2 recipes)."""
    text = open(os.path.join(os.path.dirname(__file__), '..', '..', 'README.md')).read()
    for block in text.split('```python\n')[1:]:
        block = block.split('```')[0]
        if block.startswith(first_line):
            return block
    raise AssertionError(f'README.md has no python block starting {first_line!r}')


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


def write_jpegs(folder, names, w, h, seed):
    """Smooth random pictures, saved as JPEGs: they resize and decode as photos do."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        small = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8))
        small.resize((w, h), Image.Resampling.BILINEAR).save(os.path.join(folder, name), quality=90)


def csv_rows(path):
    import csv
    with open(path, newline='') as f:
        return list(csv.reader(f))


@pytest.mark.slow
def test_lesson2_planet_notebook_with_the_package_renamed(tmp_path):
    dc = make_folder(tmp_path / 'dogscats', n_train=2, n_valid=2) + '/valid/'
    PATH = str(tmp_path / 'planet') + '/'
    tags = ['clear primary', 'haze primary', 'agriculture clear primary water', 'clear', 'haze',
            'clear primary water']
    write_jpegs(f'{PATH}train-jpg', [f'train_{i}.jpg' for i in range(24)], 64, 64, 0)
    write_jpegs(f'{PATH}test-jpg', [f'test_{i}.jpg' for i in range(3)], 64, 64, 1)
    with open(f'{PATH}train_v2.csv', 'w') as f:
        f.write('image_name,tags\n' + ''.join(f'train_{i},{tags[i % 6]}\n' for i in range(24)))
    ns = run_cells(PLANET[:6], {'PATH': PATH, 'dc_path': dc, 'TINY': TINY})
    with lowerings() as at48:          # progressive resizing: set_data(get_data(48)) and 4 fits
        run_cells(PLANET[6:7], ns)
    run_cells(PLANET[7:] + [readme_block('# planet: a submission')], ns)
    learn, data, classes = ns['learn'], ns['data'], ['agriculture', 'clear', 'haze', 'primary', 'water']
    # each training step (body frozen, then unfrozen) compiled once for the new size; going back
    # to a size trained before compiles nothing at all
    assert at48.count('jit(train_step)') == 2, at48
    with lowerings() as back:
        run_cells(['learn.set_data(get_data(32)); learn.freeze(); learn.fit(lr, 1)\n'
                   'learn.unfreeze(); learn.fit(lrs, 1)\nlearn.set_data(get_data(48)); learn.fit(lrs, 1)'], ns)
    assert back == [], back
    # the look at a batch at 48 px
    assert ns['x'].shape == (4, 48, 48, 3) and [c for c, v in ns['pairs'] if v] == \
        [c for c, v in zip(classes, data.val_y[0]) if v]
    # data.resize: copies at 41 px, read back with the same classes and splits
    assert data.path == f'{PATH}tmp/41' and data.is_multi and data.classes == classes
    assert Image.open(f'{PATH}tmp/41/train-jpg/train_0.jpg').size == (41, 41)
    assert data.val_ds.fnames == [f'train-jpg/train_{i}.jpg' for i in sorted(ns['val_idxs'])]
    # progressive resizing: the same learner at 48 px, unfrozen; f2 per epoch
    assert learn.data.sz == 48 and learn.data.path == PATH[:-1] and learn.trainable == (True,) * 3
    assert len(learn.history) == 4 * 7 + 3 and all('f2' in h for h in learn.history)
    assert os.path.isdir(f'{PATH}tmp/41/models/32') and os.path.isdir(f'{PATH}models/48')
    assert isinstance(ns['lrf'], dict) and len(learn.sched.losses) == 1   # the last fit: 1 batch
    # TTA on multi-label: probabilities, the plain pass and 4 augmented ones (of the test
    # images: the submission cell took the name over)
    multi_preds, y, preds = ns['multi_preds'], ns['y'], ns['preds']
    assert multi_preds.shape == (5, 3, 5) and 0 <= multi_preds.min() and multi_preds.max() <= 1
    assert preds.shape == (4, 5) and y.shape == (4, 5) and y.dtype == np.float32
    assert y.tolist() == data.val_y.tolist()
    assert isinstance(ns['score'], float) and ns['score'] == ns['f2'](preds, y)
    assert 0.17 <= ns['th'] < 0.24
    # the submission: one row per test image, its tags those over the threshold
    rows = csv_rows(f'{PATH}submission.csv')
    assert rows[0] == ['image_name', 'tags'] and [r[0] for r in rows[1:]] == ['test_0', 'test_1', 'test_2']
    test_preds = ns['test_preds']
    assert test_preds.shape == (3, 5)
    assert [r[1].split() for r in rows[1:]] == [[c for c, p in zip(classes, ps) if p > ns['th']]
                                                 for ps in test_preds]
    ns['plt'].close('all')


@pytest.mark.slow
def test_lesson2_dog_breeds_notebook_with_the_package_renamed(tmp_path):
    PATH = str(tmp_path / 'dogbreed') + '/'
    breeds = ['beagle', 'boxer', 'pug']
    write_jpegs(f'{PATH}train', [f'{i:04x}.jpg' for i in range(24)], 100, 75, 2)
    write_jpegs(f'{PATH}test', [f't{i}.jpg' for i in range(3)], 75, 100, 3)
    with open(f'{PATH}labels.csv', 'w') as f:
        f.write('id,breed\n' + ''.join(f'{i:04x},{breeds[i % 3]}\n' for i in range(24)))
    ns = run_cells(DOGS + [readme_block('# dog breeds: a submission')], {'PATH': PATH, 'TINY': TINY})
    learn = ns['learn']
    assert ns['counts'] == (20, 3, 3, breeds) and ns['img'].size == (100, 75)
    assert learn.model.head.ps == (0.5, 0.5)                     # ps=0.5: every layer
    assert learn.data.path == f'{PATH}tmp/64' and learn.data.sz == 48 and not learn.precompute
    assert Image.open(f'{PATH}tmp/64/train/0000.jpg').size == (85, 64)
    log_preds, y = ns['log_preds'], ns['y']
    assert log_preds.shape == (5, 3, 3) and sorted(y.tolist()) == [0, 0, 1, 2]   # log_preds: the submission's
    assert isinstance(ns['acc'], np.floating) and np.isfinite(ns['loss'])
    test_log_preds = ns['test_log_preds']
    assert test_log_preds.shape == (3, 3)
    np.testing.assert_allclose(np.exp(test_log_preds).sum(1), 1, rtol=1e-5)
    rows = csv_rows(f'{PATH}submission.csv')
    assert rows[0] == ['id'] + breeds and [r[0] for r in rows[1:]] == ['t0', 't1', 't2']
    probs = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    np.testing.assert_allclose(probs, ns['probs'], atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    ns['plt'].close('all')
