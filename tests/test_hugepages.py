"""jaxcls.hugepages: the glibc tunable that backs malloc's large blocks with huge pages."""
import os
import subprocess
import sys

import pytest

from jaxcls import hugepages

HUGE_MALLOC = '''
import ctypes, os
from jaxcls import hugepages
hugepages.relaunch()                      # the exec'd process runs this code again, once
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
n = 64 << 20                              # one 64 MB block: glibc maps it with mmap
p = libc.malloc(n)
ctypes.memset(p, 1, n)
with open('/proc/self/smaps_rollup') as f:
    huge = [int(line.split()[1]) for line in f if line.startswith('AnonHugePages')][0]
print('run', os.environ.get('GLIBC_TUNABLES', ''), huge)
'''


def test_environ_adds_the_tunable_and_keeps_the_others():
    assert hugepages.environ({})['GLIBC_TUNABLES'] == 'glibc.malloc.hugetlb=1'
    env = hugepages.environ({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2', 'HOME': '/x'})
    assert env == {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1', 'HOME': '/x'}


def test_not_wanted_when_set_already_or_turned_off():
    assert not hugepages.wanted({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'})
    assert not hugepages.wanted({'JAXCLS_HUGEPAGES': '0'})


def _run(code, **env):
    full = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', 'JAXCLS_HUGEPAGES')}
    full.update(env)
    out = subprocess.run([sys.executable, '-c', code], env=full, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return [line.split() for line in out.stdout.splitlines()]


def test_relaunch_gives_malloc_s_large_blocks_huge_pages_once():
    if not hugepages.wanted({}):
        pytest.skip('this machine has no glibc >= 2.35 with huge pages on request')
    runs = _run(HUGE_MALLOC)
    assert len(runs) == 1                 # relaunched once, not in a loop
    _, tunables, huge_kb = runs[0]
    assert tunables == 'glibc.malloc.hugetlb=1' and int(huge_kb) >= 32 << 10
    # Without the relaunch the same block gets no huge pages: what the tunable changes.
    assert _run(HUGE_MALLOC, JAXCLS_HUGEPAGES='0') == [['run', '0']]


def test_the_command_relaunches_and_still_runs():
    out = subprocess.run([sys.executable, '-m', 'jaxcls.cli', '--help'], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and 'usage: jaxcls' in out.stdout
