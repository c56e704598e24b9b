"""The one schema of a saved model and its one reader: what is written, what a foreign or an
incomplete folder gets back, the transform's round trip."""
import jax.numpy as jnp
import pytest

from jaxcls import tfms_from_model, transforms_side_on
from jaxcls.archs import get_arch
from jaxcls.train import checkpoint as ckpt
from jaxcls.train import modelfile


def _meta(**over):
    trn, val = tfms_from_model('resnet34', 32, aug_tfms=transforms_side_on)
    meta = modelfile.describe(arch_name='resnet34', spec=get_arch('resnet34'), classes=['a', 'b'],
                              is_multi=False, head={'xtra_fc': [512], 'ps': None, 'xtra_cut': 0},
                              stages=(3, 4, 6, 3), trainable=(False, False, True), sz=32,
                              cache_size=37, pretrained=False, val_tfms=val)
    meta.update(over)
    return meta


def test_a_saved_description_reads_back_whole():
    meta = _meta()
    assert set(modelfile.REQUIRED) <= set(meta) and meta['c'] == 2
    val = tfms_from_model('resnet34', 32)[1]
    assert modelfile.tfm_from_json(modelfile.tfm_to_json(val)) == val


def test_foreign_and_incomplete_folders_get_one_clear_error(tmp_path):
    (tmp_path / 'notes').mkdir()
    (tmp_path / 'notes' / 'a.txt').write_text('hello')
    with pytest.raises(modelfile.ModelFileError, match='is not a jaxcls model folder.*learn.save'):
        modelfile.read(str(tmp_path / 'notes'))
    meta = _meta()
    del meta['val_tfms']
    ckpt.save_checkpoint(str(tmp_path / 'old'), {'w': jnp.zeros(2)}, meta)
    with pytest.raises(modelfile.ModelFileError, match=r"saved without \['val_tfms'\].*save it again"):
        modelfile.read(str(tmp_path / 'old'))
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*nope; saved models there: \['notes', 'old'\]"):
        modelfile.read(str(tmp_path / 'nope'))


def test_another_network_is_refused_naming_both():
    with pytest.raises(ValueError, match='holds resnet34 with 2 classes.*this learner is resnet34 '
                                         'with 3 classes'):
        modelfile.check_same_network(_meta(), _meta(c=3), 'm')
    with pytest.raises(modelfile.ModelFileError, match='custom head \\(MyHead\\); rebuild it'):
        modelfile.check_standard_head(_meta(head={'custom_head': 'MyHead'}), 'm', 'rebuild it')
