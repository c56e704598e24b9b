"""examples/lesson1.py runs end to end (--quick, tiny data, ResNet18 at 32 px), and
examples/lesson1.ipynb is valid nbformat 4 JSON without outputs whose cells are the script's."""
import json
import os
import subprocess
import sys

import pytest

from helpers import make_folder

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'examples')
SCRIPT = os.path.join(EXAMPLES, 'lesson1.py')
NOTEBOOK = os.path.join(EXAMPLES, 'lesson1.ipynb')

FIGURES = ['first_image', 'random_correct', 'random_incorrect', 'most_correct_cats',
           'most_correct_dogs', 'most_incorrect_cats', 'most_incorrect_dogs', 'most_uncertain',
           'lr_find_rates', 'lr_find', 'augmentations', 'sgdr', 'sgdr_cycle_mult',
           'confusion_matrix', 'most_incorrect_after_cats', 'most_incorrect_after_dogs']


def script_cells():
    """(kind, source) of each '# %%' cell of the script, split independently of its own code."""
    with open(SCRIPT) as f:
        lines = f.read().splitlines()
    cells, cur = [], None
    for line in lines:
        if line.startswith('# %%'):
            cur = ['markdown' if '[markdown]' in line else 'code', []]
            cells.append(cur)
        elif cur is not None:
            cur[1].append(line)
    return [(kind, '\n'.join(body).strip('\n')) for kind, body in cells]


def load_notebook():
    with open(NOTEBOOK) as f:
        return json.load(f)


def test_notebook_is_valid_nbformat4_without_outputs():
    nb = load_notebook()
    assert nb['nbformat'] == 4 and nb['nbformat_minor'] >= 4
    assert nb['metadata']['kernelspec']['language'] == 'python'
    assert len(nb['cells']) > 40
    ids = [c.get('id') for c in nb['cells']]
    assert len(set(ids)) == len(ids)
    for cell in nb['cells']:
        assert cell['cell_type'] in ('code', 'markdown')
        assert isinstance(cell['metadata'], dict)
        assert isinstance(cell['source'], list) and all(isinstance(s, str) for s in cell['source'])
        if cell['cell_type'] == 'code':
            assert cell['outputs'] == [] and cell['execution_count'] is None
        else:
            assert 'outputs' not in cell
    try:
        import nbformat
    except ImportError:
        return
    nbformat.validate(nbformat.reads(json.dumps(nb), as_version=4))


def test_notebook_cells_are_the_scripts_cells():
    nb = load_notebook()
    cells = script_cells()
    assert [c['cell_type'] for c in nb['cells']] == [k for k, _ in cells]
    for cell, (kind, src) in zip(nb['cells'], cells):
        text = ''.join(cell['source'])
        if kind == 'code':
            assert text == src
        else:  # markdown: the same words without the leading '# '
            assert text.split() == src.replace('\n#', '\n').lstrip('#').split()


@pytest.mark.slow
def test_lesson1_quick_end_to_end(tmp_path):
    path = make_folder(tmp_path / 'dogscats', n_train=12, n_valid=6)
    out = tmp_path / 'figures'
    # The suite's XLA cache comes with it (conftest.py), but not the tests' XLA flags: this
    # one run of the whole lesson compiles as users do (LLVM's optimisation, every emitter,
    # the machine's own instruction set).
    test_flags = os.environ.get('JAXCLS_TEST_XLA_FLAGS', '').split()
    xla_flags = ' '.join(f for f in os.environ.get('XLA_FLAGS', '').split() if f not in test_flags)
    env = dict(os.environ, JAXCLS_OFFLINE='1', XLA_FLAGS=xla_flags)
    p = subprocess.run([sys.executable, SCRIPT, '--path', path, '--arch', 'resnet18', '--sz', '32',
                        '--quick', '--out', str(out)], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'augmentation=side_on' in p.stdout            # a --path dataset: the lesson's preset
    assert 'No ImageNet weights' in p.stdout             # offline: said, not failed
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith('lesson 1 done: accuracy with TTA ')
    acc = float(last.split()[6].rstrip(';'))
    assert 0.0 <= acc <= 1.0
    for name in FIGURES:
        assert os.path.getsize(out / f'{name}.png') > 1000, name
    assert sorted(os.listdir(os.path.join(path, 'models'))) == ['32_all', '32_lastlayer']
