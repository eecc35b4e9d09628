"""Fuzz target: the mean image reader (engine.network.caffe_io.read_mean). Issue 13,
finding 3: the 2-byte mean `3a 00` (an empty `shape {}`) and other sizes that pass a check
and fail a reshape; issue 8: a blob of the right size in another layout must be refused."""
from __future__ import annotations

import numpy as np

from _caffe import scratch, written
from engine.errors import ModelFileError
from engine.network import caffe_io

EXPECTED = (ModelFileError,)


def seeds() -> list[bytes]:
    """Small blobs of both shape styles (wrong size: the reader refuses them, which is the
    path that matters most), and one full-size legacy mean (602 KB)."""
    small = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)
    full = np.full((1, 3, 224, 224), 127.0, np.float32)
    return [written("a.binaryproto", lambda p: caffe_io.write_mean(p, small, legacy=True)),
            written("b.binaryproto", lambda p: caffe_io.write_mean(p, small[0], legacy=False)),
            written("c.binaryproto", lambda p: caffe_io.write_mean(p, full, legacy=True))]


def one_input(data: bytes) -> None:
    path = scratch() / "mean.binaryproto"
    path.write_bytes(data)
    caffe_io.read_mean(path)
