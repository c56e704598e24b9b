"""One-file export: learn.export writes a safetensors file (no pickle) that load_learner,
Predictor.load, learn.load and `jaxcls predict` read without the training data, with the
learner's own predictions; a damaged, foreign or newer file is one clear ModelFileError."""
import contextlib
import io
import json
import os
import struct

import numpy as np
import pytest
from PIL import Image

from jaxcls import load_learner
from jaxcls.cli import main
from jaxcls.models.weight_files import read_safetensors
from jaxcls.train.export import MARKER
from jaxcls.train.inference import Predictor
from jaxcls.train.integrity import DamagedModelError, ModelFileError

from helpers import learner, square_data, trees_equal, write_safetensors


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    data = square_data(tmp_path_factory.mktemp('export'), 30, 20, seed=5)
    learn = learner(data, precompute=True)
    learn.fit(0.05, 1)
    return learn, learn.export('pets.jaxcls')


def test_an_export_predicts_as_the_learner_without_its_data(exported, tmp_path):
    learn, fname = exported
    assert fname == os.path.join(learn.data.path, 'pets.jaxcls') and os.path.isfile(fname)
    head = open(fname, 'rb').read(9)
    assert head[8:9] == b'{'                              # safetensors: a JSON header, no pickle
    metadata, arrays = read_safetensors(fname)
    assert metadata['format'] == MARKER and json.loads(metadata['meta'])['classes'] == ['0', '1']
    assert not any('opt_state' in k for k in arrays) and 'params/head/fc1/kernel' in arrays
    p = load_learner(fname)
    assert isinstance(p, Predictor) and p.classes == ['0', '1'] and p.tfm == learn.data.tfms[1]
    # the same probabilities as the learner's own validation predictions
    q = Predictor.load(learn.save('pets'))
    imgs = np.asarray(learn.data.val_ds.x[:8])          # the decoded uint8 validation images
    np.testing.assert_array_equal(p.predict_images(imgs), q.predict_images(imgs))
    np.testing.assert_allclose(np.log(p.predict_images(imgs)), learn.predict()[:8], rtol=1e-5,
                               atol=1e-6)
    # learn.load of the file: weights and statistics, into a learner built the same way
    other = learner(learn.data, precompute=True, seed=9)
    other.load(fname)
    assert trees_equal(other.state.params, learn.state.params)
    assert trees_equal(other.state.batch_stats, learn.state.batch_stats)


def test_jaxcls_predict_reads_an_export(exported, tmp_path):
    learn, fname = exported
    img = tmp_path / 'red.png'
    Image.fromarray(np.asarray(learn.data.val_ds.x[0])).save(img)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(['predict', fname, str(img)])
    assert rc == 0, err.getvalue()
    assert str(img) in out.getvalue() and out.getvalue().split()[1] in ('0', '1')


def _flip(src, dst, at):
    b = bytearray(open(src, 'rb').read())
    b[at] ^= 0xFF
    open(dst, 'wb').write(bytes(b))


def test_a_damaged_foreign_or_newer_file_is_one_clear_error(exported, tmp_path):
    learn, fname = exported
    size = os.path.getsize(fname)
    _flip(fname, tmp_path / 'flip.jaxcls', size - 100)     # inside the last array's bytes
    with pytest.raises(DamagedModelError, match=r"flip.jaxcls is damaged: the bytes of array "
                                                r"'state/.*' .* differ from those saved"):
        load_learner(tmp_path / 'flip.jaxcls')
    data = open(fname, 'rb').read()
    (tmp_path / 'cut.jaxcls').write_bytes(data[:size // 2])
    with pytest.raises(ModelFileError, match='cut.jaxcls is not a jaxcls model file, or it is '
                                             'damaged .*data_offsets'):
        load_learner(tmp_path / 'cut.jaxcls')
    write_safetensors(tmp_path / 'weights.safetensors', {'w': np.zeros(3, np.float32)})
    with pytest.raises(ModelFileError, match="safetensors file but not a jaxcls model .*weights="):
        load_learner(tmp_path / 'weights.safetensors')
    (tmp_path / 'notes.txt').write_text('hello, not a model')
    with pytest.raises(ModelFileError, match='notes.txt is not a jaxcls model file'):
        load_learner(tmp_path / 'notes.txt')
    (n,) = struct.unpack('<Q', data[:8])
    header = json.loads(data[8:8 + n])
    header['__metadata__']['version'] = '99'
    text = json.dumps(header).encode()
    (tmp_path / 'future.jaxcls').write_bytes(struct.pack('<Q', len(text)) + text + data[8 + n:])
    with pytest.raises(ModelFileError, match=r"exported in format '99'.*upgrade jaxcls"):
        load_learner(tmp_path / 'future.jaxcls')
    header['__metadata__']['version'] = '1'
    meta = json.loads(header['__metadata__']['meta'])
    meta['classes'] = ['1', '0']
    header['__metadata__']['meta'] = json.dumps(meta)
    text = json.dumps(header).encode()
    (tmp_path / 'relabelled.jaxcls').write_bytes(struct.pack('<Q', len(text)) + text + data[8 + n:])
    with pytest.raises(DamagedModelError, match="its 'meta' description differs"):
        load_learner(tmp_path / 'relabelled.jaxcls')
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(['predict', str(tmp_path / 'flip.jaxcls'), str(tmp_path / 'notes.txt')])
    assert rc == 2 and err.getvalue().startswith('jaxcls: error: ') and err.getvalue().count('\n') == 1
