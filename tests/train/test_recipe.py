"""The modern recipe (jaxcls.train.recipe): MixUp and CutMix maths on known inputs, label
smoothing against a hand computation, the weights' moving average, gradient accumulation
against one big batch, each option through the public step and the learner, and a resumed
fit with the recipe on ending bitwise where an uninterrupted one does."""
import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest

from jaxcls import ImageClassifierData, tfms_from_model, transforms_side_on
from jaxcls.train import recipe as R
from jaxcls.train.callbacks import Callback
from jaxcls.train.optim import sgd
from jaxcls.train.resume import ModelCheckpoint
from jaxcls.train.state import create_train_state
from jaxcls.train.steps import make_train_step, sigmoid_loss, softmax_loss

from helpers import CACHE, TINY, learner, trees_equal

KEY = jax.random.PRNGKey(3)


def _numbered(n, h=4, w=4):
    """n images, image i filled with the value i: a pixel tells which image it came from."""
    return jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[:, None, None, None], (n, h, w, 3))


# ------------------------------------------------------------------ MixUp, CutMix, smoothing

def test_mixup_blends_each_row_with_its_partner_by_lam_drawn_from_the_key():
    x, labels = _numbered(8), jnp.arange(8)
    out, mixed = R.mixup(KEY, x, labels, 0.4)
    k_lam, k_perm = jax.random.split(KEY)
    lam = jax.random.beta(k_lam, 0.4, 0.4, (8,))
    np.testing.assert_array_equal(mixed.lam, np.maximum(lam, 1 - lam))
    assert float(mixed.lam.min()) >= 0.5 and len(np.unique(np.asarray(mixed.lam))) == 8
    perm = np.asarray(mixed.b)          # labels are the row numbers: b is the permutation
    np.testing.assert_array_equal(perm, jax.random.permutation(k_perm, 8))
    assert sorted(perm) == list(range(8)) and (perm != np.arange(8)).any()
    np.testing.assert_array_equal(mixed.a, labels)
    expect = np.asarray(mixed.lam) * np.arange(8) + (1 - np.asarray(mixed.lam)) * perm
    np.testing.assert_allclose(out[:, 0, 0, 0], expect, rtol=1e-6)
    assert np.ptp(np.asarray(out), axis=(1, 2, 3)).max() == 0   # whole images blended
    again, _ = R.mixup(KEY, x, labels, 0.4)
    other, _ = R.mixup(jax.random.PRNGKey(4), x, labels, 0.4)
    assert np.array_equal(again, out) and not np.array_equal(other, out)
    # The loss of mixed targets: lam * loss(own label) + (1 - lam) * loss(partner's label).
    logits = jax.random.normal(KEY, (8, 8))
    lp = np.asarray(jax.nn.log_softmax(logits))
    hand = -(np.asarray(mixed.lam) * lp[np.arange(8), np.arange(8)]
             + (1 - np.asarray(mixed.lam)) * lp[np.arange(8), perm])
    np.testing.assert_allclose(R.mixed_loss(softmax_loss, logits, mixed), hand, rtol=1e-5)
    with pytest.raises(TypeError, match='mixup mixes float images .* got uint8'):
        R.mixup(KEY, x.astype(jnp.uint8), labels, 0.4)


def test_cutmix_pastes_one_box_whose_area_sets_lam():
    n, h, w = 6, 16, 20
    x, labels = _numbered(n, h, w), jnp.arange(n)
    out, mixed = R.cutmix(KEY, x, labels, 1.0)
    k_lam, k_perm, k_box = jax.random.split(KEY, 3)
    lam0 = jax.random.beta(k_lam, 1.0, 1.0, ())
    y1, y2, x1, x2 = (int(v) for v in R.cutmix_box(k_box, h, w, lam0))
    cy, cx = (int(jax.random.randint(k, (), 0, s))
              for k, s in zip(jax.random.split(k_box), (h, w)))
    cut = np.sqrt(1 - float(lam0))
    half_h, half_w = round(h * cut) // 2, round(w * cut) // 2
    assert (y1, y2, x1, x2) == (max(cy - half_h, 0), min(cy + half_h, h),
                                max(cx - half_w, 0), min(cx + half_w, w))
    area = (y2 - y1) * (x2 - x1)
    assert 0 < area < h * w
    np.testing.assert_allclose(mixed.lam, np.full(n, 1 - area / (h * w)), rtol=1e-6)
    perm = np.asarray(mixed.b)
    np.testing.assert_array_equal(perm, jax.random.permutation(k_perm, n))
    box = np.zeros((h, w), bool)
    box[y1:y2, x1:x2] = True
    for i in range(n):   # inside the box the partner's pixels, outside the row's own
        np.testing.assert_array_equal(np.asarray(out[i, ..., 0]), np.where(box, perm[i], i))
    # Multi-label targets mix the same way under the binary cross-entropy.
    t = jnp.asarray(np.random.default_rng(0).integers(0, 2, (n, 3)), jnp.float32)
    _, m2 = R.cutmix(KEY, x, t, 1.0)
    logits = jax.random.normal(KEY, (n, 3))
    hand = m2.lam * sigmoid_loss(logits, t) + (1 - m2.lam) * sigmoid_loss(logits, t[perm])
    np.testing.assert_allclose(R.mixed_loss(sigmoid_loss, logits, m2), hand, rtol=1e-6)


def test_label_smoothing_against_a_hand_computation():
    np.testing.assert_allclose(R.smooth_labels(jnp.array([2, 0]), 0.1, 4),
                               [[0.025, 0.025, 0.925, 0.025], [0.925, 0.025, 0.025, 0.025]])
    logits = jax.random.normal(KEY, (5, 3)) * 3
    labels = jnp.array([0, 2, 1, 1, 0])
    lp = np.asarray(jax.nn.log_softmax(logits), np.float64)
    nll, uniform = -lp[np.arange(5), np.asarray(labels)], -lp.mean(-1)
    np.testing.assert_allclose(R.smoothed_softmax_loss(logits, labels, 0.1),
                               0.9 * nll + 0.1 * uniform, rtol=1e-5)
    t = jnp.array([[1., 0., 1.]] * 5)
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    soft = np.asarray(t) * 0.9 + 0.05
    bce = -(soft * np.log(p) + (1 - soft) * np.log(1 - p)).mean(-1)
    np.testing.assert_allclose(R.smoothed_sigmoid_loss(logits, t, 0.1), bce, rtol=1e-5)


def test_ema_update_numbers_and_warmup():
    ema, new = {'w': jnp.array([1.0, 2.0]), 'f': jnp.array(5.0)}, {'w': jnp.array([3.0, 0.0])}
    new['f'] = ema['f'] + 1
    np.testing.assert_allclose(R.ema_update(ema, new, 0.9)['w'], [1.2, 1.8], rtol=1e-6)
    old = {'w': jnp.zeros(2), 'f': jnp.array(7.0)}
    new['f'] = old['f']       # the very array of `old`: a frozen parameter, left as it is
    out = R.ema_update(ema, new, 0.9, old=old)
    assert out['f'] is ema['f'] and float(out['w'][0]) == pytest.approx(1.2)
    assert [float(R.ema_decay(t, 0.999)) for t in (0, 10, 10 ** 6)] == pytest.approx(
        [0.1, 11 / 20, 0.999])


# ------------------------------------------------------------------ the public step

class Dense(nn.Module):
    """Two dense layers, BatchNorm optional: steps that compile in milliseconds."""
    bn: bool = False

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(8)(x.reshape(x.shape[0], -1))
        if self.bn:
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(3)(nn.relu(x))


def _setup(bn=False, n=16, padded=3):
    model = Dense(bn)
    x = jax.random.normal(jax.random.PRNGKey(1), (n, 4, 4, 3))
    batch = {'image': x, 'label': jax.random.randint(jax.random.PRNGKey(2), (n,), 0, 3),
             'mask': jnp.ones(n).at[n - padded:].set(0)}   # a padded last batch
    return model, model.init(jax.random.PRNGKey(0), x), batch


def _run(model, variables, batch, steps=2, frozen=None, **opts):
    state = create_train_state(model.apply, variables, sgd(0.1))
    step = jax.jit(make_train_step(frozen=frozen, **opts))
    for _ in range(steps):
        state, metrics = step(state, batch)
    return state, metrics


def _close(a, b, tol=1e-6):
    return all(np.allclose(x, y, rtol=tol, atol=tol)
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_accumulated_micro_batches_equal_one_big_batch():
    model, variables, batch = _setup()
    big, m_big = _run(model, variables, batch)
    acc, m_acc = _run(model, variables, batch, accumulate=4)
    assert int(acc.step) == 2                      # one optimizer update per call
    assert _close(big.params, acc.params) and _close(big.opt_state, acc.opt_state)
    assert not _close(acc.params, variables['params'], 1e-3)
    for k in ('loss', 'accuracy', 'count'):        # the masked means of the whole batch
        assert float(m_acc[k]) == pytest.approx(float(m_big[k]), rel=1e-6)
    assert float(m_acc['count']) == 13
    frozen = jax.tree_util.tree_map(lambda _: False, variables['params'])
    frozen['Dense_0'] = jax.tree_util.tree_map(lambda _: True, frozen['Dense_0'])
    fb, _ = _run(model, variables, batch, frozen=frozen)
    fa, _ = _run(model, variables, batch, frozen=frozen, accumulate=4)
    assert trees_equal(fa.params['Dense_0'], variables['params']['Dense_0'])
    assert _close(fa.params, fb.params)
    with pytest.raises(ValueError, match='a batch of 16 rows does not split into accumulate=3'):
        _run(model, variables, batch, accumulate=3)


def test_accumulation_with_batchnorm_in_train_mode_normalises_each_micro_batch():
    # BatchNorm's batch statistics are each micro-batch's (rows i, i+4, ...), and the running
    # statistics update once per micro-batch: the reference is that loop written out, not
    # the big batch (which it is not, in any framework).
    model, variables, batch = _setup(bn=True)
    acc, _ = _run(model, variables, batch, steps=1, accumulate=4)
    big, _ = _run(model, variables, batch, steps=1)
    assert not _close(acc.params, big.params, 1e-4)
    denom = float(batch['mask'].sum())
    params, stats, grads = variables['params'], variables['batch_stats'], None
    for i in range(4):
        rows = {k: v[i::4] for k, v in batch.items()}

        def loss(p, stats=stats, rows=rows):
            logits, upd = model.apply({'params': p, 'batch_stats': stats}, rows['image'],
                                      train=True, mutable=['batch_stats'])
            return jnp.sum(softmax_loss(logits, rows['label']) * rows['mask']) / denom, upd
        (_, upd), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        stats = upd['batch_stats']
        grads = g if grads is None else jax.tree_util.tree_map(jnp.add, grads, g)
    expect = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
    assert _close(acc.params, expect, 1e-5) and _close(acc.batch_stats, stats, 1e-5)


def test_step_options_mix_smooth_and_average_inside_the_step():
    model, variables, batch = _setup(padded=0)
    state = create_train_state(model.apply, variables, sgd(0.1))
    with pytest.raises(ValueError, match=r'state.ema is None; start one with'):
        jax.jit(make_train_step(ema=0.9))(state, batch)
    state = state.replace(ema=R.init_ema(state.variables))
    one, _ = jax.jit(make_train_step(ema=0.9))(state, batch)
    plain, _ = jax.jit(make_train_step())(state, batch)
    assert trees_equal(one.params, plain.params)    # the average never feeds back
    # step 0: decay min(0.9, 1/10) = 0.1, so the average is 0.1 old + 0.9 new
    expect = jax.tree_util.tree_map(lambda o, n: 0.1 * o + 0.9 * n, state.params, one.params)
    assert _close(one.ema['params'], expect)
    # MixUp / CutMix / smoothing train the multi-label loss too, and the loss comes down.
    t = (jax.random.uniform(KEY, (16, 3)) > 0.5).astype(jnp.float32)
    mbatch = dict(batch, label=t)
    for opts in ({'mixup': 0.4, 'label_smoothing': 0.1}, {'cutmix': 1.0}):
        step = jax.jit(make_train_step('sigmoid', **opts))
        s, first = step(create_train_state(model.apply, variables, sgd(0.3)), mbatch)
        for _ in range(30):
            s, m = step(s, mbatch)
        assert float(m['loss']) < float(first['loss']) - 0.05, (opts, first, m)


def test_recipe_options_are_checked_with_the_fix():
    for kw, msg in [({'mixup': -1}, r'mixup=-1.0: the Beta\(alpha, alpha\) parameter must be > 0'),
                    ({'mixup': 0.4, 'cutmix': 1.0}, 'a step mixes one way; set one of them to 0'),
                    ({'label_smoothing': 1.0}, 'label_smoothing=1.0: use 0 <= eps < 1'),
                    ({'ema': 1.0}, r'ema=1.0: the decay must be in \(0, 1\)'),
                    ({'accumulate': 0}, 'accumulate=0: give the number of micro-batches'),
                    ({'accumulate': 2.0}, 'accumulate=2.0')]:
        with pytest.raises(ValueError, match=msg):
            make_train_step(**kw)
    with pytest.raises(TypeError, match=r"unknown recipe option\(s\) \['mix_up'\]"):
        R.Recipe().replace(mix_up=0.4)
    assert R.Recipe(ema=0.99, accumulate=2).describe() == {'ema': 0.99, 'accumulate': 2}


# ------------------------------------------------------------------ the learner

# All four at once (one compiled step), and CutMix: each a learner option.
RECIPE_A = dict(mixup=0.4, label_smoothing=0.1, ema=0.9, accumulate=2)
RECIPE_B = dict(cutmix=1.0)


def _tinted(n, seed=0):
    """Noise tinted red (class 0) or blue (class 1) all over: the evidence is spread over the
    picture, as MixUp and CutMix assume (a pasted box carries its share of the label)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, 120, (n, CACHE, CACHE, 3)).astype(np.uint8)
    x[y == 0, :, :, 0] += 100
    x[y == 1, :, :, 2] += 100
    return x, y


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    x, y = _tinted(60)
    tfms = tfms_from_model(TINY, 32, aug_tfms=transforms_side_on, max_zoom=1.1)
    return ImageClassifierData.from_arrays(str(tmp_path_factory.mktemp('recipe')),
                                           (x[:40], y[:40]), (x[40:], y[40:]), bs=10, tfms=tfms,
                                           cache_size=CACHE)


@pytest.mark.parametrize('opts', [RECIPE_A, RECIPE_B], ids=['mixup+smoothing+ema+accumulate',
                                                             'cutmix'])
def test_learner_fits_with_the_recipe_and_improves(data, opts):
    learn = learner(data, **opts)
    before = learn.validate()
    hist = learn.fit(0.01, 3)
    acc = opts.get('accumulate', 1)
    assert int(learn.state.step) == 3 * -(-40 // (10 * acc))   # updates, not micro-batches
    assert len(learn.sched.lrs) == int(learn.state.step)
    assert hist[-1]['val_loss'] < 0.6 * before['val_loss'], (before, hist)
    assert hist[-1]['accuracy'] >= 0.9, hist
    if opts.get('ema'):
        ema, state = learn.state.ema, learn.state
        assert not trees_equal(ema['params']['head'], state.params['head'])
        assert trees_equal(ema['params']['body'], state.params['body'])   # frozen: the same
        assert trees_equal(learn.steps.model_state().params, ema['params'])
        # save writes the averaged model; load gives it back (and the weights under it)
        learn.save('ema')
        again = learner(data, **opts)
        again.load('ema')
        assert trees_equal(again.state.params, state.params)
        assert trees_equal(again.state.ema, ema)
        plain = learner(data)
        plain.load('ema')
        assert trees_equal(plain.state.params, ema['params'])
        assert plain.validate()['val_loss'] == pytest.approx(hist[-1]['val_loss'], rel=1e-5)


def test_precompute_takes_smoothing_ema_and_accumulation_and_refuses_mixing(data):
    learn = learner(data, precompute=True, label_smoothing=0.1, ema=0.9, accumulate=2)
    before = learn.validate()
    hist = learn.fit(0.05, 3)
    assert int(learn.state.step) == 6 and hist[-1]['val_loss'] < before['val_loss']
    assert not trees_equal(learn.state.ema['params']['head'], learn.state.params['head'])
    params = jax.tree_util.tree_map(np.array, learn.state.params)
    learn.set_recipe(mixup=0.4)
    with pytest.raises(ValueError, match=r'mixup=0.4 mixes images, but precompute=True .* set '
                                         r'learn.precompute = False'):
        learn.fit(0.05, 1)
    assert trees_equal(params, learn.state.params) and int(learn.state.step) == 6
    learn.set_recipe(ema=0)
    assert learn.state.ema is None


class _StopAt(Callback):
    """Ctrl-C right after the checkpoint of global step `step` is written."""

    def __init__(self, ck, step):
        self.ck, self.step = ck, step

    def on_batch_end(self, learner, iteration, logs):
        if learner.progress.step == self.step:
            self.ck.wait()
            raise KeyboardInterrupt


class _Steps(Callback):
    def __init__(self):
        self.seen = []

    def on_batch_end(self, learner, iteration, logs):
        self.seen.append(learner.progress.step)


def test_resume_with_the_recipe_is_bitwise(data, tmp_path):
    def arrays(learn):
        s = learn.state
        return [np.asarray(a) for a in jax.tree_util.tree_leaves(
            (s.params, s.batch_stats, s.opt_state, s.step, s.rng, s.ema))]

    whole = learner(data, **RECIPE_A)
    whole.fit(0.01, 2, cycle_len=1, checkpoint=ModelCheckpoint(tmp_path / 'a', every_steps=1))
    cut = learner(data, **RECIPE_A)
    ck = ModelCheckpoint(tmp_path / 'b', every_steps=1)
    with pytest.raises(KeyboardInterrupt):
        cut.fit(0.01, 2, cycle_len=1, checkpoint=ck, callbacks=[ck, _StopAt(ck, 3)])
    resumed, steps = learner(data, **RECIPE_A), _Steps()
    resumed.fit(0.01, 2, cycle_len=1, checkpoint=ModelCheckpoint(tmp_path / 'b'), resume=True,
                callbacks=[steps])
    assert steps.seen == [4]     # restored at step 3 of 4 (2 epochs of 2 updates: bs 10 x 2)
    assert all(np.array_equal(a, b) for a, b in zip(arrays(whole), arrays(resumed)))
    assert [h['val_loss'] for h in resumed.history] == [h['val_loss'] for h in whole.history]
    # The recipe is part of the fit's description: resuming without it is refused.
    with pytest.raises(ValueError, match=r'accumulate: checkpoint 2, this call None'):
        learner(data, mixup=0.4, label_smoothing=0.1, ema=0.9).fit(
            0.01, 2, cycle_len=1, checkpoint=ModelCheckpoint(tmp_path / 'b'), resume=True)


def test_cli_recipe_flags_parse_and_mixing_with_precompute_is_refused():
    from jaxcls import commands
    from jaxcls.cli import build_parser
    args = build_parser().parse_args(['train', 'PATH', '--mixup', '0.4', '--label-smoothing', '0.1',
                                      '--ema', '0.999', '--accumulate', '4'])
    assert (args.mixup, args.cutmix, args.label_smoothing, args.ema, args.accumulate) == (
        0.4, 0.0, 0.1, 0.999, 4)
    args = build_parser().parse_args(['train', 'PATH', '--cutmix', '1', '--precompute'])
    with pytest.raises(commands.UserError, match='--mixup and --cutmix mix images; --precompute'):
        commands._build_learner(args, 'PATH')
