"""fast.ai (2017, v0.7) lesson 1 -- image classification -- in jaxcls, cell for cell.

Run it as a script (figures are saved, not shown):

    python examples/lesson1.py                       # scikit-learn's digits, built if missing
    python examples/lesson1.py --path data/dogscats --sz 224 --aug side_on
    python examples/lesson1.py --quick               # one epoch wherever the lesson trains more

On the digits, on a 2-core CPU without ImageNet weights (the body starts random),
the full run with the lesson's ResNet34 at 32 px takes about 8 minutes and ends
near 96% validation accuracy with TTA; `jaxcls demo` reaches ~99% in under 2
minutes with a recipe made for this data.

or open examples/lesson1.ipynb, the same cells as a notebook (edit PATH and the
other settings in the "Settings" cell). The notebook is generated from this file:

    python examples/lesson1.py --write-notebook      # rewrites examples/lesson1.ipynb

Cells are separated by "# %%" lines ("# %% [markdown]" for text), the percent
format that Jupytext, VS Code and PyCharm understand. Everything above the first
cell (this docstring and the notebook writer) is not part of the lesson.
"""
import json
import os
import sys


def _cells(source):
    """[(kind, text)] of the percent-format cells in `source` ('code' or 'markdown')."""
    cells, kind, lines = [], None, []
    for line in source.splitlines():
        if line.startswith('# %%'):
            if kind is not None:
                cells.append((kind, '\n'.join(lines).strip('\n')))
            kind, lines = ('markdown' if '[markdown]' in line else 'code'), []
        elif kind is not None:
            lines.append(line[2:] if kind == 'markdown' and line.startswith('# ') else
                         line[1:] if kind == 'markdown' and line.startswith('#') else line)
    if kind is not None:
        cells.append((kind, '\n'.join(lines).strip('\n')))
    return cells


def write_notebook(dest=None):
    """Write this file's cells as an nbformat 4 notebook without outputs (json only)."""
    here = os.path.abspath(__file__)
    dest = dest or os.path.splitext(here)[0] + '.ipynb'
    with open(here) as f:
        cells = _cells(f.read())
    nb_cells = []
    for kind, text in cells:
        src = text.splitlines(keepends=True)
        cell = {'cell_type': kind, 'metadata': {}, 'source': src}
        if kind == 'code':
            cell.update(execution_count=None, outputs=[])
        nb_cells.append(cell)
    nb = {'cells': nb_cells,
          'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python',
                                      'name': 'python3'},
                       'language_info': {'name': 'python'}},
          'nbformat': 4, 'nbformat_minor': 5}
    for i, cell in enumerate(nb['cells']):
        cell['id'] = f'cell-{i:02d}'  # nbformat 4.5 wants ids; stable ones keep diffs small
    with open(dest, 'w') as f:
        json.dump(nb, f, indent=1, ensure_ascii=False)
        f.write('\n')
    return dest


if __name__ == '__main__' and '--write-notebook' in sys.argv[1:]:
    print('wrote', write_notebook())
    sys.exit(0)

# %% [markdown]
# # Image classification with jaxcls: fast.ai lesson 1
#
# The lesson-1 notebook of fast.ai's 2017 course, with jaxcls in place of fastai 0.7:
# a pretrained ResNet, precomputed activations, `lr_find`, SGDR, data augmentation,
# differential learning rates, test-time augmentation and a look at the mistakes.
# Any folder with `train/<class>/` and `valid/<class>/` images works; by default it
# uses scikit-learn's handwritten digits, written as PNGs by `jaxcls.demo.build_digits`.

# %%
import argparse
import os
import sys

import numpy as np
import matplotlib
IN_NOTEBOOK = 'ipykernel' in sys.modules
if not IN_NOTEBOOK:
    matplotlib.use('Agg')  # a script saves its figures instead of showing them
import matplotlib.pyplot as plt
import jax

from jaxcls import (ImageClassifierData, ConvLearner, tfms_from_model, accuracy,
                    resnet18, resnet34, resnet50,
                    transforms_basic, transforms_side_on, transforms_top_down)
from jaxcls import plots
from jaxcls.interpret import ClassificationInterpretation
from jaxcls.demo import build_digits, default_digits_dir
from jaxcls.models.weights import WeightsNotFoundError, find_weights

# %% [markdown]
# ## Settings
#
# `PATH` is the dataset folder; `sz` the size images are trained at. In a notebook,
# edit the defaults here; from a shell, pass `--path`, `--sz`, `--arch`, `--aug`,
# `--quick` and `--out`.

# %%
parser = argparse.ArgumentParser(description='fast.ai lesson 1 with jaxcls')
parser.add_argument('--path', default=None,
                    help='dataset folder with train/ and valid/ (default: the digits)')
parser.add_argument('--sz', type=int, default=32, help='image size (the lesson: 224)')
parser.add_argument('--arch', default='resnet34', choices=['resnet18', 'resnet34', 'resnet50'])
parser.add_argument('--aug', default=None, choices=['side_on', 'top_down', 'basic'],
                    help='augmentation (default: basic for the digits, side_on otherwise)')
parser.add_argument('--quick', action='store_true', help='one epoch wherever the lesson trains more')
parser.add_argument('--out', default=None, help='where figures go (default PATH/lesson1-out)')
args = parser.parse_args([] if IN_NOTEBOOK else None)

PATH = args.path or build_digits(default_digits_dir())
sz = args.sz
arch = {'resnet18': resnet18, 'resnet34': resnet34, 'resnet50': resnet50}[args.arch]
# Photos taken from the side may be mirrored left-right; digits and text may not.
aug_name = args.aug or ('side_on' if args.path else 'basic')
AUG = {'side_on': transforms_side_on, 'top_down': transforms_top_down,
       'basic': transforms_basic}[aug_name]
QUICK = args.quick
OUT = args.out or os.path.join(PATH, 'lesson1-out')
os.makedirs(OUT, exist_ok=True)


def epochs(n):
    """The lesson's epoch (or cycle) count; 1 with --quick."""
    return 1 if QUICK else n


def show(fig, name):
    """Save a figure as OUT/name.png; a notebook also shows it under the cell."""
    fig.savefig(os.path.join(OUT, f'{name}.png'), dpi=80)
    if not IN_NOTEBOOK:
        plt.close(fig)


print(f'PATH={PATH}  arch={args.arch}  sz={sz}  augmentation={aug_name}  figures in {OUT}')

# %%
print(jax.devices())  # the lesson checked torch.cuda.is_available(); JAX lists its devices

# %% [markdown]
# ## First look at the pictures
#
# The data is one folder per class, for training (`train/`) and validation (`valid/`).

# %%
print(sorted(os.listdir(PATH)))
classes = sorted(os.listdir(os.path.join(PATH, 'valid')))
print(classes)

# %%
files = sorted(os.listdir(os.path.join(PATH, 'valid', classes[0])))[:5]
print(files)

# %%
img = plt.imread(os.path.join(PATH, 'valid', classes[0], files[0]))
fig = plt.figure(figsize=(3, 3))
plt.imshow(img, cmap='gray')
show(fig, 'first_image')

# %% [markdown]
# An image is an array of numbers: height x width (x channels for colour).

# %%
print(img.shape)
print(img[:4, :4])

# %% [markdown]
# ## Our first model: quick start
#
# A ResNet pretrained on ImageNet, with a new head for our classes. The lesson
# downloads the weights; offline (or with `JAXCLS_OFFLINE=1`) jaxcls uses a local
# file when there is one and otherwise starts the body from random weights, which
# this notebook then says.

# %%
try:
    print('ImageNet weights:', find_weights(arch))
    PRETRAINED = True
except WeightsNotFoundError as e:
    print('No ImageNet weights: the body starts from random weights, so the frozen-body '
          'steps below learn little until unfreeze().', str(e).split(';')[0])
    PRETRAINED = False

# %%
data = ImageClassifierData.from_paths(PATH, tfms=tfms_from_model(arch, sz))
learn = ConvLearner.pretrained(arch, data, precompute=True, pretrained=PRETRAINED)
learn.fit(0.01, epochs(3))

# %% [markdown]
# ## Analysing results: looking at pictures
#
# The validation labels and the class names:

# %%
print(data.val_y[:10])
print(data.classes)

# %% [markdown]
# The model predicts log-probabilities, one column per class:

# %%
log_preds = learn.predict()
print(log_preds.shape)
print(log_preds[:3])

# %%
preds = np.argmax(log_preds, axis=1)  # the predicted class
probs = np.exp(log_preds)             # probabilities

# %% [markdown]
# `ClassificationInterpretation` holds the lesson's helpers (random / most correct /
# most incorrect / most uncertain), and `jaxcls.plots` draws them.

# %%
interp = ClassificationInterpretation.from_learner(learn)
print(interp)

# %%
# A few correct labels at random
show(plots.plot_interpretation(interp, interp.random_correct(4), 'Correctly classified'),
     'random_correct')

# %%
# A few incorrect labels at random
show(plots.plot_interpretation(interp, interp.random_incorrect(4), 'Incorrectly classified'),
     'random_incorrect')

# %%
# The lesson looked at its two classes, cats and dogs; here the first two.
SHOW = data.classes[:2]
for c in SHOW:
    show(plots.plot_most_correct(interp, c), f'most_correct_{c}')

# %%
for c in SHOW:
    show(plots.plot_most_incorrect(interp, c), f'most_incorrect_{c}')

# %%
show(plots.plot_most_uncertain(interp), 'most_uncertain')

# %% [markdown]
# ## Choosing a learning rate
#
# `lr_find` trains with a rate that grows every batch (on a copy of the model) and
# records the loss. Pick a rate where the loss still falls clearly, about ten times
# below the minimum.

# %%
learn = ConvLearner.pretrained(arch, data, precompute=True, pretrained=PRETRAINED)
lrf = learn.lr_find()
print(lrf)

# %%
show(learn.sched.plot_lr(), 'lr_find_rates')

# %%
show(learn.sched.plot(), 'lr_find')

# %% [markdown]
# ## Improving our model
#
# ### Data augmentation
#
# Random changes of the training images (rotation, zoom, lighting, flips where they
# make sense) that keep the label. Here is one image, augmented a few times:

# %%
tfms = tfms_from_model(arch, sz, aug_tfms=AUG, max_zoom=1.1)
data = ImageClassifierData.from_paths(PATH, tfms=tfms)
show(plots.aug_preview(data, 0, 6, rows=2), 'augmentations')

# %%
learn = ConvLearner.pretrained(arch, data, precompute=True, pretrained=PRETRAINED)
learn.fit(1e-2, 1)

# %% [markdown]
# With precomputed activations the augmentation has no effect (every epoch sees the
# same stored features). Turn precompute off, and train with SGDR: the rate restarts
# and anneals (cosine) every `cycle_len` epochs.

# %%
learn.precompute = False

# %%
learn.fit(1e-2, epochs(3), cycle_len=1)

# %%
show(learn.sched.plot_lr(), 'sgdr')

# %%
learn.save(f'{sz}_lastlayer')
learn.load(f'{sz}_lastlayer')

# %% [markdown]
# ### Fine-tuning and differential learning rate annealing
#
# Unfreeze the body and give each layer group its own rate: small for the early,
# general layers, larger for the later ones. `cycle_mult=2` doubles each cycle.

# %%
learn.unfreeze()

# %%
# A random body (no ImageNet weights) has nothing to preserve: one rate for every group.
lr = np.array([1e-4, 1e-3, 1e-2]) if PRETRAINED else 1e-2

# %%
learn.fit(lr, epochs(3), cycle_len=1, cycle_mult=2)

# %%
show(learn.sched.plot_lr(), 'sgdr_cycle_mult')

# %%
learn.save(f'{sz}_all')
learn.load(f'{sz}_all')

# %% [markdown]
# Test-time augmentation: predict on the validation images and on four augmented
# versions of each, and average.

# %%
log_preds, y = learn.TTA()
probs = np.mean(np.exp(log_preds), 0)
print(f'accuracy with TTA: {accuracy(probs, y):.4f}')

# %% [markdown]
# ## Analysing results
#
# ### Confusion matrix

# %%
preds = np.argmax(probs, axis=1)
interp = ClassificationInterpretation(probs, y, data.classes, images=data.val_ds.x,
                                      fnames=data.val_ds.fnames, val_cfg=data.tfms[1])
cm = interp.confusion_matrix()
print(cm)

# %%
show(plots.plot_confusion_matrix(interp), 'confusion_matrix')

# %%
print(interp.report())
print(interp.most_confused()[:5])

# %% [markdown]
# ### Looking at pictures again

# %%
for c in SHOW:
    show(plots.plot_most_incorrect(interp, c), f'most_incorrect_after_{c}')

# %% [markdown]
# ## Review: easy steps to train a world-class image classifier
#
# 1. Enable data augmentation, and `precompute=True`
# 2. Use `lr_find()` to find the highest learning rate where loss is still clearly improving
# 3. Train the last layer from precomputed activations for 1-2 epochs
# 4. Train the last layer with data augmentation (`precompute=False`) for 2-3 epochs with `cycle_len=1`
# 5. Unfreeze all layers
# 6. Set earlier layers to 3x-10x lower learning rate than the next higher layer
# 7. Use `lr_find()` again
# 8. Train the full network with `cycle_mult=2` until over-fitting

# %%
print(f'lesson 1 done: accuracy with TTA {accuracy(probs, y):.4f}; figures in {OUT}')
