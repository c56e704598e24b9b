"""bench_gpu.py's environment checks, made before anything heavy: the imports jaxcls needs,
where jaxcls comes from, the host's RAM and the GPU as nvidia-smi sees it."""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from typing import Optional

from gpu.common import fail
from timing import REPO

NEEDED = {'jax': 'jax[cuda12] (or jax on CPU for --tiny)', 'flax': 'flax', 'optax': 'optax',
          'orbax.checkpoint': 'orbax-checkpoint', 'PIL': 'pillow', 'numpy': 'numpy'}


def check_imports() -> list[str]:
    """Import what jaxcls needs; fail with the missing packages named. Returns notes."""
    missing = []
    for mod, pkg in NEEDED.items():
        try:
            importlib.import_module(mod)
        except Exception as e:  # ImportError, or a broken install raising something else
            missing.append(f'{mod} ({pkg}): {type(e).__name__}: {e}')
    if missing:
        fail('this python cannot import: ' + '; '.join(missing) + f'. Install them into '
             f'{sys.executable} (this benchmark installs nothing itself).')
    notes = []
    try:
        import jaxcls
    except Exception as e:
        fail(f'cannot import jaxcls from the checkout {REPO} ({type(e).__name__}: {e}); run '
             f'`bash bench/bench_gpu.sh` from the repository root, or set PYTHONPATH={REPO}')
    where = os.path.dirname(os.path.dirname(os.path.abspath(jaxcls.__file__)))
    if os.path.realpath(where) != os.path.realpath(REPO):
        notes.append(f'jaxcls was imported from {where}, not from this checkout {REPO}')
    return notes


def ram_gb() -> float:
    from jaxcls.data.decode import ram_budget, RAM_FRACTION
    return ram_budget() / RAM_FRACTION / 2**30


def nvidia_smi() -> Optional[str]:
    exe = shutil.which('nvidia-smi')
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, '--query-gpu=name,driver_version,memory.total,clocks.max.sm,'
                            'power.limit', '--format=csv,noheader'], capture_output=True,
                           text=True, timeout=20)
        return r.stdout.strip() or r.stderr.strip() or None
    except (OSError, subprocess.TimeoutExpired) as e:
        return f'nvidia-smi failed: {e}'
