"""ConvLearner on a tiny ResNet: layer groups, precompute, fit with SGDR, lr_find, predict/TTA,
save/load, compile discipline. The lesson's own code (ResNet34) is in test_lesson1.py."""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxcls import ImageClassifierData, tfms_from_model, transforms_side_on
from jaxcls.train.callbacks import Callback
from jaxcls.train.learner import TrainingDiverged
from jaxcls.train.optim import get_group_hyperparams
from jaxcls.train.resume import ModelCheckpoint

from helpers import SZ, TINY, FastaiCosAnneal, learner, make_folder, params_copy, trees_equal


@pytest.fixture(scope='module')
def path(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp('dogscats'))


@pytest.fixture(scope='module')
def data(path):
    tfms = tfms_from_model(TINY, SZ, aug_tfms=transforms_side_on, max_zoom=1.1)
    # bs=10 leaves a partial last batch in both train (48 = 4*10 + 8) and valid (24).
    return ImageClassifierData.from_paths(path, bs=10, tfms=tfms, quiet=True)


def test_head_is_fastais(data):
    learn = learner(data)
    head = learn.state.params['head']
    # concat pool (512 max + 512 mean) -> BN -> Dropout .25 -> 512 -> ReLU -> BN -> Dropout .5 -> 2
    assert head['bn0']['scale'].shape == (1024,) and head['fc0']['kernel'].shape == (1024, 512)
    assert head['bn1']['scale'].shape == (512,) and head['fc1']['kernel'].shape == (512, 2)
    assert np.all(np.asarray(head['fc0']['bias']) == 0)
    assert learn.n_groups == 3 and learn.trainable == (False, False, True)
    assert learn.model.head.ps is None  # fastai's default [0.25, 0.5]
    custom = learner(data, xtra_fc=[64, 32], ps=[0.1, 0.2, 0.3])
    assert custom.state.params['head']['fc2']['kernel'].shape == (32, 2)
    with pytest.raises(ValueError, match='ps=\\[0.5\\] has 1 values but the head has 2 layers'):
        learner(data, ps=[0.5])


def test_precompute_trains_head_only_and_reaches_high_accuracy(data):
    learn = learner(data, precompute=True)
    before = params_copy(learn)
    hist = learn.fit(0.05, 5)   # a random body, not ImageNet's: a higher rate, more epochs
    assert [h['epoch'] for h in hist] == [0, 1, 2, 3, 4]
    assert set(hist[0]) >= {'trn_loss', 'val_loss', 'accuracy', 'time'}
    assert hist[-1]['accuracy'] >= 0.9, hist
    # The body did not move, not even its BatchNorm statistics.
    assert trees_equal(before[0]['body'], learn.state.params['body'])
    assert trees_equal(before[1]['body'], learn.state.batch_stats['body'])
    assert not trees_equal(before[0]['head'], learn.state.params['head'])


def test_sgdr_rates_equal_fastai_and_one_step_compiles_per_configuration(data):
    # Steps are shared by every learner built the same way in this process (another test may
    # have compiled one for these very shapes already), so each configuration's step may
    # compile once over all the calls below, or not at all: never twice.
    learn = learner(data, precompute=True)

    def step():
        f = learn.steps.get('train')
        return f, f._cache_size()
    head_on_features, n0 = step()
    learn.fit(1e-2, 3, cycle_len=1, cycle_mult=2)   # 7 epochs of 5 batches, the last partial
    nb = len(data.trn_dl)
    ref = FastaiCosAnneal(nb, 2).run(np.array([1e-2] * 3), 7 * nb)[:, -1]
    np.testing.assert_allclose(learn.sched.lrs, ref, rtol=1e-5)
    learn.lr_find()
    learn.fit([1e-3, 1e-3, 3e-3], 1)
    learn.fit(5e-3, 2, cycle_len=2)
    assert head_on_features._cache_size() - n0 <= 1
    learn.precompute = False
    head_on_images, n1 = step()
    learn.fit(1e-2, 1)
    learn.fit(1e-3, 1, cycle_len=1)
    learn.unfreeze()
    everything, n2 = step()
    learn.fit(np.array([1e-4, 1e-3, 1e-2]), 1)
    learn.lr_find(num_it=5)
    assert head_on_images._cache_size() - n1 <= 1 and everything._cache_size() - n2 <= 1
    train_fns = {k[1:3] for k in learn.steps.compiled if k[0] == 'train'}
    assert sorted(train_fns) == [((False, False, True), False), ((False, False, True), True),
                                 ((True, True, True), False)]
    # A second learner built the same way runs the very same compiled step: no new compile.
    again = learner(data, precompute=True)
    assert again.steps.get('train') is head_on_features
    n3 = head_on_features._cache_size()
    again.fit(1e-2, 1)
    assert head_on_features._cache_size() == n3


def test_lr_find_leaves_the_learner_bit_identical(data):
    learn = learner(data, precompute=True)
    learn.fit(0.01, 1)
    before = params_copy(learn)
    step, epoch, sched = int(learn.state.step), learn.epoch, learn.sched
    sugg = learn.lr_find()
    assert trees_equal(before, params_copy(learn))
    assert int(learn.state.step) == step and learn.epoch == epoch
    rec = learn.sched
    assert rec is not sched and rec.kind == 'lr_find'
    lrs = np.asarray(rec.lrs)
    np.testing.assert_allclose(lrs, 1e-5 * 1e6 ** (np.arange(len(lrs)) / len(data.trn_dl)), rtol=1e-5)
    assert set(sugg) == {'valley', 'steep', 'minimum'}
    assert lrs[0] <= sugg['valley'] <= lrs[-1] and lrs[0] <= sugg['steep'] <= lrs[-1]
    assert lrs[0] / 10 <= sugg['minimum'] <= lrs[-1] / 10
    fig = rec.plot(n_skip=0, n_skip_end=0)
    assert fig.axes[0].get_xscale() == 'log'
    assert rec.plot_lr().axes[0].get_ylabel() == 'learning rate'


def test_lr_find_stops_when_the_loss_explodes(data):
    learn = learner(data, precompute=True)
    learn.lr_find(start_lr=1e-3, end_lr=1e8, num_it=60)
    losses = np.asarray(learn.sched.losses)
    assert len(losses) < 60  # stopped early
    best = losses[11:-1].min() if len(losses) > 12 else losses.min()
    assert not np.isfinite(losses[-1]) or losses[-1] > 4 * best


def test_frozen_body_and_bn_modes(data):
    learn = learner(data)
    learn.precompute = False
    body_params = params_copy(learn)[0]['body']
    stats = params_copy(learn)[1]['body']
    learn.fit(1e-2, 1)
    assert trees_equal(body_params, learn.state.params['body'])
    assert trees_equal(stats, learn.state.batch_stats['body'])  # 'eval': running stats used
    train_bn = learner(data, bn_frozen='train')
    train_bn.fit(1e-2, 1)
    assert trees_equal(body_params, train_bn.state.params['body'])
    assert not trees_equal(stats, train_bn.state.batch_stats['body'])
    learn.freeze_to(1)   # layer3/layer4 + head
    learn.fit(1e-2, 1)
    new = learn.state.params['body']
    assert trees_equal(body_params['layer1'], new['layer1'])
    assert not trees_equal(body_params['layer4'], new['layer4'])
    with pytest.raises(ValueError, match='precompute=True needs a frozen body'):
        learn.precompute = True
    learn.unfreeze()
    assert learn.trainable == (True, True, True) and not learn.precompute
    with pytest.raises(ValueError, match='lrs=\\[0.1, 0.2\\] has 2 values but there are 3'):
        learn.fit([0.1, 0.2], 1)


def test_per_group_rates_reach_the_optimizer_and_callbacks_observe(data):
    learn = learner(data)
    learn.unfreeze()
    seen = {'batches': 0, 'epochs': []}

    class Spy(Callback):
        def on_batch_end(self, learner, iteration, logs):
            seen['batches'] += 1
            assert np.isfinite(float(logs['loss']))

        def on_epoch_end(self, learner, epoch, logs):
            seen['epochs'].append((epoch, round(logs['val_loss'], 6)))
            return True  # stop after the first epoch

    hist = learn.fit(np.array([1e-4, 1e-3, 1e-2]), 3, callbacks=[Spy()])
    rates = get_group_hyperparams(learn.state.opt_state, 'learning_rate')
    np.testing.assert_allclose([rates[0], rates[1], rates[2]], [1e-4, 1e-3, 1e-2], rtol=1e-6)
    assert seen['batches'] == len(data.trn_dl)
    assert seen['epochs'] == [(0, round(hist[0]['val_loss'], 6))] and len(hist) == 1


def test_precompute_cache_is_keyed_by_images_and_weights(tmp_path):
    root = make_folder(tmp_path / 'pc', n_train=6, n_valid=4)
    # The module's transforms and batch size: the steps the tests above compiled serve this
    # one too (at bs=4 without augmentation it compiled an unfrozen step of its own, ~5 s).
    tfms = tfms_from_model(TINY, SZ, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_paths(root, bs=10, tfms=tfms, quiet=True)
    learn = learner(data, precompute=True)
    f1 = np.array(learn._features['train'])
    files = sorted(os.listdir(os.path.join(root, 'tmp', 'precompute')))
    assert len(files) == 2  # train and valid features on disk
    # Same images, same weights: served from disk, identical.
    again = learner(ImageClassifierData.from_paths(root, bs=10, tfms=tfms, quiet=True), precompute=True)
    np.testing.assert_array_equal(again._features['train'], f1)
    # Change one training image: a new data fingerprint, so new features for train.
    img = os.path.join(root, 'train', 'cats', 'cats.0.png')
    Image.fromarray(np.full((40, 40, 3), 255, np.uint8)).save(img)
    os.utime(img, ns=(os.stat(img).st_atime_ns, os.stat(img).st_mtime_ns + 10 ** 9))
    changed = learner(ImageClassifierData.from_paths(root, bs=10, tfms=tfms, quiet=True),
                      precompute=True)
    i = changed.data.trn_ds.fnames.index('train/cats/cats.0.png')
    assert not np.allclose(changed._features['train'][i], f1[i])
    others = [j for j in range(len(f1)) if j != i]
    np.testing.assert_allclose(changed._features['train'][others], f1[others], rtol=1e-5, atol=1e-6)
    assert len(os.listdir(os.path.join(root, 'tmp', 'precompute'))) == 3
    # A trained body gives new features too (the weights digest is part of the key).
    changed.precompute = False
    changed.unfreeze()
    changed.fit(1e-2, 1)
    changed.freeze()
    changed.precompute = True
    assert not np.allclose(changed._features['valid'], again._features['valid'])


def test_precompute_augmented_views(data):
    learn = learner(data, precompute=True, precompute_aug=2)
    f = learn._features
    assert set(k for k in f if k.startswith('train')) == {'train_aug0', 'train_aug1'}
    assert not np.allclose(f['train_aug0'], f['train_aug1'])
    learn.fit(0.05, 4)
    assert learn.history[-1]['accuracy'] >= 0.75


def test_predict_tta_and_predict_array(data):
    learn = learner(data, precompute=True)
    learn.fit(0.05, 5)
    log_preds = learn.predict()
    assert log_preds.shape == (len(data.val_ds), 2)
    np.testing.assert_allclose(np.exp(log_preds).sum(1), 1, rtol=1e-5)
    preds, y = learn.predict_with_targs()
    np.testing.assert_array_equal(y, data.val_y)
    # The full network on cropped images gives what the head gives on stored features.
    learn.precompute = False
    np.testing.assert_allclose(learn.predict(), log_preds, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(learn.predict_array(data.val_ds.x[:5]), log_preds[:5], rtol=1e-4,
                               atol=1e-4)
    tta, y2 = learn.TTA()
    assert tta.shape == (5, len(data.val_ds), 2)
    np.testing.assert_allclose(tta[0], log_preds, rtol=1e-4, atol=1e-4)
    assert not np.allclose(tta[1], tta[0])          # augmented passes differ
    probs = np.mean(np.exp(tta), 0)
    assert (probs.argmax(1) == y2).mean() >= 0.9
    with pytest.raises(ValueError, match='no test set'):
        learn.TTA(is_test=True)


def test_save_load_roundtrip_and_mismatch(data, tmp_path):
    learn = learner(data, precompute=True)
    learn.fit(0.01, 1)
    where = learn.save('m1')
    assert where.startswith(os.path.join(data.path, 'models'))
    preds = learn.predict()
    other = learner(data, precompute=True, seed=3)
    assert not np.allclose(other.predict(), preds)
    other.load('m1')
    np.testing.assert_allclose(other.predict(), preds, rtol=1e-6)
    assert trees_equal(jax.tree_util.tree_leaves(other.state.opt_state),
                       jax.tree_util.tree_leaves(learn.state.opt_state))
    three = make_folder(tmp_path / 'three', 4, 2, classes=('a', 'b', 'c'))
    d3 = ImageClassifierData.from_paths(three, bs=4, tfms=tfms_from_model(TINY, SZ), quiet=True)
    shutil.copytree(os.path.join(data.path, 'models', 'm1'), os.path.join(three, 'models', 'm1'))
    with pytest.raises(ValueError, match='holds resnet_tiny with 2 classes.*this learner is '
                                         'resnet_tiny with 3 classes'):
        learner(d3).load('m1')
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nope; saved models there: \\['m1'\\]"):
        learn.load('nope')


def test_fit_one_cycle_fine_tune_and_half(data):
    learn = learner(data)
    learn.precompute = False
    learn.fit_one_cycle(1, 1e-2)
    lrs, moms = np.asarray(learn.sched.lrs), np.asarray(learn.sched.moms)
    # 5 steps: the samples straddle the peak at step 1.25 of 5.
    assert lrs[0] == pytest.approx(1e-2 / 25, rel=1e-5) and 0.85e-2 < lrs.max() <= 1e-2
    assert lrs.argmax() == 1 and np.all(np.diff(lrs[1:]) < 0)
    assert moms[0] == pytest.approx(0.95) and moms.min() < 0.9
    hist = learn.fine_tune(1, freeze_epochs=1)
    assert len(hist) == 2 and learn.trainable == (True, True, True)
    learn.half()
    learn.fit(1e-3, 1)
    assert learn.state.params['body']['conv1']['kernel'].dtype == np.float32
    assert np.isfinite(learn.history[-1]['val_loss'])


def test_pretrained_in_bfloat16_precomputes_once_in_bfloat16(tmp_path):
    root = make_folder(tmp_path / 'd', n_train=8, n_valid=4)
    data = ImageClassifierData.from_paths(root, bs=4, tfms=tfms_from_model(TINY, SZ), quiet=True)
    store = os.path.join(root, 'tmp', 'precompute')
    bf = learner(data, precompute=True, dtype='bfloat16')
    assert bf.dtype == jnp.bfloat16 and bf.model.body.dtype == jnp.bfloat16
    assert len(os.listdir(store)) == 2   # train and valid in bfloat16, never float32 first
    f32 = learner(data, precompute=True)
    assert len(os.listdir(store)) == 4   # its own float32 features
    a, b = f32._features['train'], bf._features['train']
    assert not np.array_equal(a, b)   # computed in bfloat16 ...
    np.testing.assert_allclose(b, a, rtol=0.05, atol=0.05 * np.abs(a).max())   # ... of the same body
    assert bf.state.params['body']['conv1']['kernel'].dtype == np.float32
    bf.fit(1e-2, 1)
    assert np.isfinite(bf.history[-1]['val_loss'])
    with pytest.raises(ValueError, match="dtype='float16'; use 'float32' or 'bfloat16'"):
        learner(data, dtype='float16')
    with pytest.raises(ValueError, match="dtype='half'; use"):
        learner(data, dtype='half')


def test_divergence_names_the_step_and_rate_and_leaves_a_working_model(data, tmp_path):
    learn = learner(data, precompute=True)
    before = jax.tree_util.tree_map(np.asarray, learn.state)
    ck = ModelCheckpoint(tmp_path / 'ck', every_steps=1, keep=None)
    with pytest.raises(TrainingDiverged, match='iteration [0-9]+ .*learning rates \\[1e\\+12, '
                                               '1e\\+12, 1e\\+12\\].*back at its state of the '
                                               'start of this fit.*lr_find'):
        learn.fit(1e12, 1, checkpoint=ck)
    # no checkpoint holds a diverged step: each saved one is finite (the NaN one was skipped)
    assert ck.steps() and len(ck.steps()) < len(data.trn_dl)
    other = learner(data, precompute=True)
    for step in ck.steps():
        other.restore_checkpoint(ck, step)
        assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(
            other.state.params))
    # every variable is the snapshot the fit started from (not the last finite but blown-up
    # step: at 1e12 those weights are ~1e14 and nothing recovers from them) ...
    after = jax.tree_util.tree_map(np.asarray, learn.state)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(before),
                                                    jax.tree_util.tree_leaves(after)))
    assert learn.epoch == 0 and np.isfinite(learn.predict()).all()
    # ... so a fit at a sane rate trains exactly as a learner that never diverged
    learn.fit(1e-2, 1)
    fresh = learner(data, precompute=True)
    fresh.fit(1e-2, 1)
    assert learn.history[-1]['trn_loss'] == fresh.history[-1]['trn_loss']
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(learn.state.params),
                                                    jax.tree_util.tree_leaves(fresh.state.params)))


def test_multilabel_uses_sigmoid(tmp_path):
    root = tmp_path / 'planet'
    (root / 'imgs').mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        x = rng.integers(0, 60, (40, 40, 3)).astype(np.uint8)
        tags = []
        if i % 2:
            x[:, :20, 0] = 230
            tags.append('red')
        if i % 3:
            x[:, 20:, 2] = 230
            tags.append('blue')
        tags = tags or ['none']
        Image.fromarray(x).save(root / 'imgs' / f'{i}.png')
        rows.append(f'{i},{" ".join(tags)}')
    (root / 'labels.csv').write_text('image_name,tags\n' + '\n'.join(rows) + '\n')
    data = ImageClassifierData.from_csv(str(root), 'imgs', 'labels.csv', bs=8, suffix='.png',
                                        tfms=tfms_from_model(TINY, SZ), quiet=True)
    assert data.is_multi
    learn = learner(data, precompute=True)
    assert learn.loss == 'sigmoid'
    learn.fit(0.05, 4)
    probs = learn.predict()
    assert probs.shape == (len(data.val_ds), 3) and probs.min() >= 0 and probs.max() <= 1
    assert learn.history[-1]['accuracy_thresh'] > 0.7


def test_head_only_step_after_precompute_trains_the_head_s_own_state_as_the_full_step_would(data):
    # After precompute the compiled step takes the network's state without the body
    # (state.head_state): none of the frozen body's arrays cross the call. One step of it
    # must equal the plain full-network train step with the body frozen, to float rounding,
    # and with_head puts the result back, momentum included.
    from jaxcls.models.head import ConvNet
    from jaxcls.train.optim import hparams
    from jaxcls.train.state import head_state, with_head
    from jaxcls.train.steps import make_train_step
    learn = learner(data, precompute=True)
    learn.fit(0.01, 1)  # features computed, optimizer state with momentum
    state = learn._place(jax.tree_util.tree_map(jnp.copy, learn.state))
    head = head_state(state, learn.steps.tx(head=True))
    assert set(head.params) == {'head'} and set(head.batch_stats) == {'head'}
    n_all, n_head = (len(jax.tree_util.tree_leaves(t)) for t in (state, head))
    assert n_head < n_all / 2, (n_head, n_all)
    batch = next(iter(learn._train_loader(learn.epoch)))
    hp = hparams(0.01, n_groups=learn.n_groups)
    new_head, m = learn.steps.get('train')(jax.tree_util.tree_map(jnp.copy, head), batch, hp)
    frozen = jax.tree_util.tree_map(lambda g: not learn.trainable[g], learn.labels)
    ref_step = jax.jit(make_train_step(learn.loss, None, frozen, {'method': ConvNet.head_only}))
    ref, ref_m = ref_step(state, batch, hp)
    np.testing.assert_allclose(float(m["loss"]), float(ref_m["loss"]), rtol=1e-5)  # two programs: summation order differs
    merged = with_head(state, new_head)
    # Rounding scales with an array's magnitude, not each element's: an element that is a
    # near-cancelling sum (measured: 1.0103e-5 vs 0.9995e-5 in a momentum buffer whose
    # largest element is 0.36) differs by more than 1e-5 of itself. So the absolute bound is
    # 1e-5 of the array's largest element; a wrong step (a missed group, momentum, rate)
    # moves elements by a sizeable part of that magnitude.
    for a, b in zip(jax.tree_util.tree_leaves((merged.params, merged.batch_stats, merged.opt_state)),
                    jax.tree_util.tree_leaves((ref.params, ref.batch_stats, ref.opt_state))):
        b = np.asarray(b)   # the bound tests/models/test_ops.py and test_winograd.py use
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))
    assert jax.tree_util.tree_structure(merged.opt_state) == jax.tree_util.tree_structure(ref.opt_state)
    assert merged.params['body'] is state.params['body']  # untouched, not even copied
    assert int(merged.step) == int(ref.step)


def test_body_digest_is_remembered_until_the_body_changes(data, monkeypatch):
    from jaxcls.train import precompute as pre
    learn = learner(data, precompute=True)
    calls = []
    real = pre.tree_digest
    monkeypatch.setattr(pre, 'tree_digest', lambda t: calls.append(1) or real(t))
    d1 = learn._features.body_digest()  # computed (and remembered) when the features were made
    assert calls == [] and d1 == real({'params': learn.state.params['body'],
                                       'batch_stats': learn.state.batch_stats['body']})
    learn.fit(0.01, 1)  # validates after the epoch: asks for the digest again
    assert learn._features.body_digest() == d1 and calls == []
    body = learn.state.params['body']
    first = next(iter(body))
    changed = {**body, first: jax.tree_util.tree_map(lambda a: a + 1, body[first])}
    learn.state = learn.state.replace(params={**learn.state.params, 'body': changed})
    assert learn._features.body_digest() != d1 and len(calls) == 1
