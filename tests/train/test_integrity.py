"""Every saved array is verified: a damaged or foreign model folder -- flipped bits, zeroed or
truncated array files, missing parts, unreadable or changed metadata, another network's
arrays, a newer format -- gives one ModelFileError naming the folder and the fix (the
original error chained) from learn.load, Predictor.load and `jaxcls predict` (status 2, one
line); a resumed fit skips a damaged checkpoint for the newest intact one, with a warning."""
import contextlib
import io
import json
import os
import shutil
import warnings

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcls.cli import main
from jaxcls.train import checkpoint as ckpt
from jaxcls.train.inference import Predictor
from jaxcls.train.integrity import DamagedModelError, ModelFileError, tree_digest
from jaxcls.train.resume import ModelCheckpoint

from helpers import learner, square_data, trees_equal


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return square_data(tmp_path_factory.mktemp('integrity'), 30, 20, seed=4)


@pytest.fixture(scope='module')
def saved(data):
    learn = learner(data, precompute=True)
    learn.fit(0.05, 1)
    return learn, learn.save('good')


def largest_array_file(folder):
    files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(folder, 'state')) for f in fs]
    return max(files, key=os.path.getsize)


def damage(folder, kind):
    big = largest_array_file(folder)
    if kind == 'flip':                   # 64 bytes inverted in the middle of the largest array file
        b = bytearray(open(big, 'rb').read())
        for i in range(len(b) // 2, len(b) // 2 + 64):
            b[i] ^= 0xFF
        open(big, 'wb').write(bytes(b))
    elif kind == 'zero':
        open(big, 'wb').write(bytes(os.path.getsize(big)))
    elif kind == 'truncate':
        os.truncate(big, os.path.getsize(big) // 2)
    elif kind in ('no-state', 'no-meta'):
        shutil.rmtree(os.path.join(folder, kind[3:]))
    elif kind == 'meta-not-json':
        open(os.path.join(folder, 'meta', 'metadata'), 'w').write('{"arch": resnet')
    elif kind == 'meta-changed':
        f = os.path.join(folder, 'meta', 'metadata')
        meta = json.load(open(f))
        meta['classes'] = ['dogs', 'cats']
        json.dump(meta, open(f, 'w'))
    elif kind == 'digest-not-json':
        open(os.path.join(folder, 'digest', 'metadata'), 'w').write('[1, 2')


CASES = {'flip': (DamagedModelError, r"the bytes of array 'state/.*' float32\[.*\] differ from "
                                     r"those saved.*use another copy"),
         'zero': (ModelFileError, r'is damaged: its arrays \(state\) cannot be read'),
         'truncate': (ModelFileError, r'is damaged: its arrays \(state\) cannot be read'),
         'no-state': (ModelFileError, r'is incomplete: its state \(the arrays\) is missing'),
         'no-meta': (ModelFileError, r'is incomplete: its meta \(the description\) is missing'),
         'meta-not-json': (ModelFileError, r'its description \(meta\) is not readable JSON'),
         'meta-changed': (DamagedModelError, r"its 'meta' description differs from the one saved"),
         'digest-not-json': (ModelFileError, r'its digest cannot be read|digest is not readable')}


def cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, err.getvalue()


@pytest.mark.parametrize('kind', list(CASES))
def test_a_damaged_model_is_one_clear_error_everywhere(data, saved, tmp_path, kind):
    learn, good = saved
    folder = os.path.join(data.path, 'models', f'bad-{kind}')
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(good, folder)
    damage(folder, kind)
    err_type, pattern = CASES[kind]
    before = jax.tree_util.tree_map(np.array, learn.state.params)
    with pytest.raises(err_type, match=pattern) as e:
        learn.load(f'bad-{kind}')
    assert str(folder) in str(e.value)
    if kind in ('zero', 'truncate', 'meta-not-json'):
        assert e.value.__cause__ is not None            # Orbax's / TensorStore's own error
    assert trees_equal(before, learn.state.params)      # the learner is unchanged
    with pytest.raises(err_type, match=pattern):
        Predictor.load(folder)
    img = tmp_path / 'x.png'
    Image.fromarray(np.zeros((36, 36, 3), np.uint8)).save(img)
    rc, err = cli(['predict', folder, img])
    assert rc == 2 and err.count('\n') == 1 and err.startswith('jaxcls: error: ')
    assert str(folder) in err and 'Traceback' not in err


def test_a_good_model_loads_and_a_digestless_one_warns(data, saved):
    learn, good = saved
    other = learner(data, precompute=True)
    other.load('good')
    assert trees_equal(other.state.params, learn.state.params)
    old = good + '-old'
    shutil.copytree(good, old)
    shutil.rmtree(os.path.join(old, 'digest'))         # as saved before digests existed
    with pytest.warns(UserWarning, match='saved without a digest .*cannot be checked'):
        p = Predictor.load(old)
    assert trees_equal(p.variables['params'], learn.state.params)


def test_another_networks_arrays_and_a_newer_format_are_refused(data, saved, tmp_path):
    learn, good = saved
    meta = learn.describe()
    arrays = {'params': jax.tree_util.tree_map(lambda a: np.zeros(a.shape[:-1] + (a.shape[-1] + 1,),
                                                                  a.dtype), learn.state.params),
              'batch_stats': learn.state.batch_stats, 'opt_state': learn.state.opt_state,
              'step': learn.state.step}
    ckpt.save_checkpoint(os.path.join(data.path, 'models', 'wide'), arrays, meta)
    with pytest.raises(ModelFileError, match=r"array 'state/params/.*' was saved as float32\[.*\], "
                                             r'and this network needs float32\[.*\]; load it into a '
                                             'learner built the same way'):
        learn.load('wide')
    ckpt.save_checkpoint(os.path.join(data.path, 'models', 'future'), {'w': np.zeros(2)},
                         dict(meta, format=99, jaxcls='9.0'))
    with pytest.raises(ModelFileError, match=r'saved by jaxcls 9.0 in model format 99; this jaxcls '
                                             r'.* reads formats up to 2: upgrade jaxcls'):
        learn.load('future')


def test_the_digest_covers_every_array_with_shape_and_dtype():
    d = tree_digest({'a': {'w': np.arange(6, dtype=np.float32).reshape(2, 3)},
                     'n': np.int32(7)})
    assert d['a/w']['shape'] == [2, 3] and d['a/w']['dtype'] == 'float32'
    assert d['n']['shape'] == [] and len(d['n']['hash']) == 32     # 128 bits, hex
    flipped = tree_digest({'a': {'w': np.arange(6, dtype=np.float32).reshape(2, 3) * -1},
                           'n': np.int32(7)})
    assert flipped['a/w']['hash'] != d['a/w']['hash'] and flipped['n'] == d['n']


def test_a_resumed_fit_skips_a_damaged_checkpoint_with_a_warning(data, tmp_path):
    folder = tmp_path / 'ck'
    ref = learner(data, precompute=True)
    ref.fit(0.05, 3, checkpoint=ModelCheckpoint(folder, keep=None))   # steps 2, 4, 6
    newest = str(folder / '6')
    damage(newest, 'flip')
    again = learner(data, precompute=True)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        again.fit(0.05, 3, checkpoint=ModelCheckpoint(folder, keep=None), resume=True)
    said = [str(x.message) for x in w if 'cannot be restored' in str(x.message)]
    assert len(said) == 1 and newest in said[0] and 'differ from those saved' in said[0]
    # it went on from step 4 and trained the last epoch again: the uninterrupted result
    assert int(again.state.step) == 6
    assert trees_equal(again.state.params, ref.state.params)
    assert [h['val_loss'] for h in again.history] == [h['val_loss'] for h in ref.history]
    # every checkpoint damaged: an error that names them, not a fresh start on top
    for step in ('2', '4', '6'):
        damage(str(folder / step), 'zero')
    with pytest.raises(ModelFileError, match=r'(no checkpoint in .*/ck can be read|cannot be '
                                             r'restored).*(Delete the folder|restored:)'):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            learner(data, precompute=True).fit(0.05, 3, checkpoint=ModelCheckpoint(folder),
                                               resume=True)
