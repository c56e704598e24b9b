"""jaxcls's own event-file writer: records TensorBoard's readers accept (checked with
tensorboardX's protobuf classes and CRC), written through to the OS as they are added."""
import glob
import os
import struct

import pytest

from jaxcls.train.event_file import (EventFileWriter, Scalar, encode_event, masked_crc32c,
                                     read_records, read_scalars)

tbx = pytest.importorskip('tensorboardX')


def test_records_are_tensorboards_format(tmp_path):
    from tensorboardX.crc32c import crc32c
    from tensorboardX.proto import event_pb2
    for data in (b'', b'a', b'brain.Event:2', bytes(range(256)) * 3):
        crc = crc32c(data)
        assert masked_crc32c(data) == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    w = EventFileWriter(str(tmp_path))
    w.add_scalar('epoch/val_loss', 0.25, 3)
    w.add_scalar('train/loss_raw', -1.5, 2**40)
    # written through: a second reader sees every record before close (a kill loses nothing)
    data = open(w.path, 'rb').read()
    records = list(read_records(data))
    assert len(records) == 3 and records[-1][1] == len(data)
    for start, end, payload in records:
        (n,) = struct.unpack('<Q', data[start:start + 8])
        assert struct.unpack('<I', data[start + 8:start + 12])[0] == masked_crc32c(data[start:start + 8])
        assert struct.unpack('<I', data[end - 4:end])[0] == masked_crc32c(payload) and n == len(payload)
    evs = []
    for _, _, payload in records:
        ev = event_pb2.Event()
        ev.ParseFromString(payload)
        evs.append(ev)
    assert evs[0].file_version == 'brain.Event:2' and evs[0].wall_time > 1.7e9
    assert [(v.tag, e.step, v.simple_value) for e in evs[1:] for v in e.summary.value] == [
        ('epoch/val_loss', 3, 0.25), ('train/loss_raw', 2**40, -1.5)]
    assert read_scalars(w.path) == [Scalar('epoch/val_loss', 3, 0.25),
                                    Scalar('train/loss_raw', 2**40, -1.5)]
    w.close()
    assert os.path.basename(w.path).startswith('events.out.tfevents.')
    # two writers in the same second write two files (tensorboardX's names would collide)
    EventFileWriter(str(tmp_path)).close()
    assert len(glob.glob(str(tmp_path / '*tfevents*'))) == 2


def test_reads_tensorboardx_files_and_negative_steps(tmp_path):
    from tensorboardX import SummaryWriter
    w = SummaryWriter(str(tmp_path))
    w.add_scalar('a', 2.0, 7)
    w.close()
    (path,) = glob.glob(str(tmp_path / '*tfevents*'))
    assert read_scalars(path) == [Scalar('a', 7, 2.0)]
    assert list(read_records(encode_event(0.0, -3, 'x', 1.0)[:3])) == []   # torn: nothing
    from jaxcls.train.event_file import decode_scalars
    assert decode_scalars(encode_event(0.0, -3, 'x', 1.0)) == [Scalar('x', -3, 1.0)]
