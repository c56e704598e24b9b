"""The lesson's two fits rebuilt from jaxcls's public pure functions, in a plain Python loop.

    learn = ConvLearner.pretrained(arch, data, precompute=True); learn.fit(0.01, 3)
    learn.unfreeze(); learn.fit(np.array([1e-4, 1e-3, 1e-2]), 3, cycle_len=1, cycle_mult=2)

is, step for step, what `functional_fit` below runs: the same network, optimizer, rate
tables, augmentation and compiled steps, so on one CPU device the final parameters are
bit-for-bit the learner's (tests/e2e/test_functional_fit.py checks it). Run it on a folder
of images laid out as PATH/train/<class>/ and PATH/valid/<class>/:

    python examples/functional_fit.py PATH [--sz 224] [--no-pretrained]
"""
import argparse
from functools import partial

import jax
import numpy as np

from jaxcls import ImageClassifierData, resnet34, tfms_from_model
from jaxcls.archs import get_arch
from jaxcls.data.loader import DataLoader, replicate
from jaxcls.data.transforms import augment, val_transform
from jaxcls.models.convnet import convnet
from jaxcls.models.head import ConvNet
from jaxcls.train.loop import hparams_at
from jaxcls.train.optim import layer_group_labels, layer_group_sgd
from jaxcls.train.precompute import compute_features
from jaxcls.train.schedules import fit_schedule
from jaxcls.train.state import create_train_state, head_state, model_state, with_head
from jaxcls.train.steps import make_features_step, make_train_step
from jaxcls.xla import jit

HEAD_ONLY = {'method': ConvNet.head_only}    # the network applied to stored features


def train(step, state, loader, table, epochs, epoch):
    """`epochs` data epochs through `step`, row i of the HParams table at iteration i."""
    i = 0
    for _ in range(epochs):
        for batch in loader.iter_epoch(epoch):
            state, metrics = step(state, batch, hparams_at(table, i))
            i += 1
        print(f'epoch {epoch}: last batch loss {float(metrics["loss"]):.4f}')
        epoch += 1
    return state, epoch


def functional_fit(path, arch=resnet34, sz=224, bs=64, seed=0, pretrained=True):
    data = ImageClassifierData.from_paths(path, bs=bs, tfms=tfms_from_model(arch, sz), quiet=True)
    trn_tfms, val_tfms = data.tfms
    net, variables, _ = convnet(arch, data.c, pretrained=pretrained, key=jax.random.PRNGKey(seed))
    labels = layer_group_labels(variables['params'], get_arch(arch).layer_groups[0])
    head_only = (False, False, True)             # layer groups: stem..layer2, layer3-4, head
    state = replicate(create_train_state(net.apply, variables, layer_group_sgd(labels, head_only),
                                         rng=seed), data.trn_dl.mesh)

    # precompute=True: the frozen body's features of every training image, once.
    features = jit(make_features_step(partial(val_transform, cfg=val_tfms),
                                      {'method': ConvNet.features}))
    body = model_state(state)
    x = compute_features(lambda imgs: features(body, {'image': imgs}), data.trn_ds.x, bs)
    loader = DataLoader(x, data.trn_ds.y, bs, shuffle=True, key=data.trn_dl.key,
                        mesh=data.trn_dl.mesh)

    # fit(0.01, 3): the head alone (the state without its body), on the features.
    head = head_state(state, layer_group_sgd({'head': labels['head']}, head_only))
    step = jit(make_train_step('softmax', None, None, HEAD_ONLY), donate_argnums=0)
    epochs, table = fit_schedule([0.01] * 3, 3, len(loader))   # one rate per layer group
    head, epoch = train(step, head, loader, table, epochs, epoch=0)
    state = with_head(state, head)

    # unfreeze(); fit([1e-4, 1e-3, 1e-2], 3, cycle_len=1, cycle_mult=2): every layer, on
    # images augmented on the device inside the step, SGDR rates, a fresh optimizer.
    state = replicate(state.with_tx(layer_group_sgd(labels, (True, True, True))), data.trn_dl.mesh)
    step = jit(make_train_step('softmax', partial(augment, cfg=trn_tfms)), donate_argnums=0)
    epochs, table = fit_schedule(np.array([1e-4, 1e-3, 1e-2]), 3, len(data.trn_dl),
                                 cycle_len=1, cycle_mult=2)
    state, epoch = train(step, state, data.trn_dl, table, epochs, epoch)
    return state


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('path', help='folder with train/<class>/ and valid/<class>/ images')
    ap.add_argument('--sz', type=int, default=224)
    ap.add_argument('--bs', type=int, default=64)
    ap.add_argument('--no-pretrained', action='store_true', help='a random body (offline)')
    args = ap.parse_args()
    final = functional_fit(args.path, sz=args.sz, bs=args.bs, pretrained=not args.no_pretrained)
    print('trained', sum(a.size for a in jax.tree_util.tree_leaves(final.params)), 'parameters')
