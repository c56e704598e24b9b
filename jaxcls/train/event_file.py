"""TensorBoard event files, written synchronously: what TensorBoardLogger writes and rewrites.

An event file is a sequence of TFRecords (payload length as u64, its masked CRC-32C, the
payload, the payload's masked CRC-32C), each payload an `Event` protocol buffer; the first
holds `file_version`, the others one scalar each (`summary.value {tag, simple_value}` at a
`step`). tensorboardX and tensorboard queue events for a writer thread, and their `flush()`
does not wait for that queue, so a killed process loses events written before its last
checkpoint. This writer hands each record to the OS before returning (a kill loses nothing
written; a power cut is another matter), and needs neither package: the few fields it uses
are encoded here.
"""
from __future__ import annotations

import os
import struct
import time
import uuid
from typing import Iterator, NamedTuple, Optional

__all__ = ['EventFileWriter', 'Scalar', 'read_records', 'read_scalars', 'masked_crc32c']


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1   # CRC-32C (Castagnoli), reflected
        table.append(c)
    return table


_TABLE = _crc_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated right by 15 bits plus a constant."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1                      # int64 fields: two's complement, 10 bytes if < 0
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _bytes_field(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


def encode_event(wall_time: float, step: int, tag: Optional[str] = None,
                 value: Optional[float] = None, file_version: Optional[str] = None) -> bytes:
    """An Event: wall_time (1, double), step (2, int64), file_version (3, string) or
    summary (5: Summary.value (1): Value.tag (1, string), Value.simple_value (2, float))."""
    out = _field(1, 1, struct.pack('<d', wall_time)) + _field(2, 0, _varint(int(step)))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if tag is not None:
        val = _bytes_field(1, tag.encode()) + _field(2, 5, struct.pack('<f', float(value)))
        out += _bytes_field(5, _bytes_field(1, val))
    return out


def _record(payload: bytes) -> bytes:
    head = struct.pack('<Q', len(payload))
    return (head + struct.pack('<I', masked_crc32c(head)) + payload
            + struct.pack('<I', masked_crc32c(payload)))


class Scalar(NamedTuple):
    tag: str
    step: int
    value: float


def read_records(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(start, end, payload) of each whole TFRecord in an event file's bytes; a torn last one
    (a writer killed mid-record) ends the sequence."""
    i = 0
    while i + 12 <= len(data):
        (n,) = struct.unpack('<Q', data[i:i + 8])
        end = i + 12 + n + 4
        if end > len(data):
            return
        yield i, end, data[i + 12:i + 12 + n]
        i = end


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a protobuf message: ints for varints, bytes for
    length-delimited fields, raw bytes for fixed 32/64-bit ones."""
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(buf, i)
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f'protobuf wire type {wire} is not one an event file uses')
        yield number, wire, v


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def decode_scalars(payload: bytes) -> list[Scalar]:
    """The scalars of one Event payload (none for file_version or other events)."""
    step, values = 0, []
    for number, wire, v in _fields(payload):
        if number == 2 and wire == 0:
            step = v - (1 << 64) if v >= 1 << 63 else v
        elif number == 5 and wire == 2:                        # summary
            for n1, w1, value in _fields(v):
                if n1 != 1 or w1 != 2:
                    continue
                tag, simple = None, None
                for n2, w2, x in _fields(value):
                    if n2 == 1 and w2 == 2:
                        tag = x.decode()
                    elif n2 == 2 and w2 == 5:
                        simple = struct.unpack('<f', x)[0]
                if tag is not None and simple is not None:
                    values.append((tag, simple))
    return [Scalar(t, step, v) for t, v in values]


def read_scalars(path: str) -> list[Scalar]:
    """Every scalar in one event file, in file order."""
    with open(path, 'rb') as f:
        data = f.read()
    return [s for _, _, p in read_records(data) for s in decode_scalars(p)]


class EventFileWriter:
    """One new event file in `logdir` (`events.out.tfevents.<time>.<host>.<pid>.<hex>`, the
    name TensorBoard looks for, unique within the second); `add_scalar` writes and hands the
    record to the OS at once."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        name = (f'events.out.tfevents.{int(time.time()):010d}.{os.uname().nodename}.'
                f'{os.getpid()}.{uuid.uuid4().hex[:8]}')
        self.path = os.path.join(logdir, name)
        self._f = open(self.path, 'ab')
        self._write(encode_event(time.time(), 0, file_version='brain.Event:2'))

    def _write(self, payload: bytes) -> None:
        self._f.write(_record(payload))
        self._f.flush()

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._write(encode_event(time.time(), int(step), tag, float(value)))

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
