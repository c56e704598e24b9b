"""atomic_file.replaced: the new file takes the old one's place whole, or not at all."""
import doctest
import os

import pytest

from jaxcls import atomic_file, interrupts
from jaxcls.atomic_file import replaced


def test_the_new_file_replaces_the_old_whole_and_a_failed_write_leaves_the_old(tmp_path):
    fname = tmp_path / 'log.csv'
    fname.write_text('old\n')
    with replaced(fname, newline='') as f:
        f.write('new,1\r\n')
        assert fname.read_text() == 'old\n'              # nothing visible until the end
        (tmp,) = [n for n in os.listdir(tmp_path) if n != 'log.csv']
        # named as the Ctrl-C guard sweeps this process's partial files
        assert tmp.startswith(f'log.csv.{os.getpid()}.') and tmp.endswith('.tmp')
    assert fname.read_bytes() == b'new,1\r\n' and os.listdir(tmp_path) == ['log.csv']
    with pytest.raises(RuntimeError, match='cut short'):
        with replaced(fname, 'wb') as f:
            f.write(b'half')
            raise RuntimeError('cut short')
    assert fname.read_bytes() == b'new,1\r\n' and os.listdir(tmp_path) == ['log.csv']


def test_the_guard_sweeps_a_write_left_open(tmp_path):
    writer = replaced(tmp_path / 'report.html')
    writer.__enter__().write('<html>')                   # a write Ctrl-C would leave open
    assert len(os.listdir(tmp_path)) == 1
    assert interrupts.remove_partial(str(tmp_path)) and os.listdir(tmp_path) == []


def test_doctest():
    assert doctest.testmod(atomic_file).failed == 0
