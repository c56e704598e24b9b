"""bench/bench_gpu.sh --tiny runs every section of the GPU benchmark on the CPU, end to end,
so the script that only a GPU machine runs for real cannot rot. It prints one summary table
with every row; the torch columns may say "not available" (the test venv has no torch)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, 'bench', 'bench_gpu.sh')
# The table's rows, by the id in their first cell, and whether the row has a torch value.
ROWS = {'1': True, '2': False, '3': True, '4a': False, '4b': False, '4c': False, '4': False,
        '4*': False}


def summary_rows(stdout: str) -> dict:
    """{row id: [cells]} of the table after the 'Summary' line."""
    lines = stdout.splitlines()
    start = lines.index('Summary')
    header = [c.strip() for c in lines[start + 1].split('|')]
    assert header == ['measurement', 'jaxcls', 'pytorch', 'ratio', 'target', 'met/not met'], header
    assert set(lines[start + 2]) <= set('-+'), lines[start + 2]
    rows = {}
    for line in lines[start + 3:]:
        if not line.strip():
            break
        cells = [c.strip() for c in line.split('|')]
        rows[cells[0].split()[0]] = cells
    return rows


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('bash') is None, reason='needs bash')
def test_bench_gpu_tiny(tmp_path):
    workdir = tmp_path / 'bench'
    env = dict(os.environ, PYTHON=sys.executable)   # with the suite's XLA cache (conftest.py)
    env.pop('JAX_PLATFORMS', None)  # --tiny picks the CPU itself
    p = subprocess.run(['bash', SCRIPT, '--tiny', '--workdir', str(workdir),
                        '--torch-python', sys.executable], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    rows = summary_rows(p.stdout)
    assert set(rows) == set(ROWS), sorted(rows)
    for key, has_torch in ROWS.items():
        cells = rows[key]
        assert float(cells[1]) > 0, cells             # a measured jaxcls value
        if has_torch:
            assert cells[2] == 'not available' or float(cells[2].split()[0]) > 0, cells
        else:
            assert cells[2] == '-', cells
    assert rows['4'][4] == '< 7 s' and rows['1'][4].startswith('>= 9000 img/s')
    assert p.stdout.strip().splitlines()[-1].startswith('elapsed ')
    # Everything it wrote went to --workdir: the generated tree, the decode cache, the results.
    results = json.loads((workdir / 'bench_gpu.json').read_text())
    assert results['sizes']['name'] == 'tiny' and len(results['lesson']) == 2
    jpegs = workdir / 'jpegs-200-50x38'
    assert len(list((jpegs / 'train' / 'cats').iterdir())) == 90
    assert len(list((jpegs / 'valid' / 'dogs').iterdir())) == 10


def test_bench_gpu_errors_are_one_line(tmp_path):
    """A mistake the user can make says what is wrong and how to fix it, with status 2."""
    blocker = tmp_path / 'file'
    blocker.write_text('')
    p = subprocess.run(['bash', SCRIPT, '--tiny', '--workdir', str(blocker / 'sub')],
                       env=dict(os.environ, PYTHON=sys.executable), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert 'cannot write to --workdir' in p.stderr and 'pass a writable folder' in p.stderr
    p = subprocess.run(['bash', SCRIPT, '--tiny'], env=dict(os.environ, PYTHON='no-such-python-x'),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "'no-such-python-x' not found" in p.stderr, p.stderr
