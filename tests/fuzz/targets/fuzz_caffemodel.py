"""Fuzz target: the .caffemodel reader (engine.network.caffe_io.read_caffemodel) and the
mapping of its blobs to the network's weights (engine.network.weights.from_caffe_blobs).
Issue 13, finding 3: an empty `shape {}`, dimension products that overflow or wrap to the
data length, and negative dimensions passed a size check and failed a reshape untyped."""
from __future__ import annotations

import numpy as np

from _caffe import scratch, small_blobs, written
from engine.errors import ModelFileError
from engine.network import caffe_io
from engine.network import weights as W

EXPECTED = (ModelFileError,)


def seeds() -> list[bytes]:
    """Small caffemodels: the V2 `layer` and V1 `layers` layouts, `shape` and legacy
    num/channels/height/width blobs, float and double data."""
    blobs = small_blobs()
    out = [written("v2.caffemodel", lambda p: caffe_io.write_caffemodel(p, blobs)),
           written("v1.caffemodel", lambda p: caffe_io.write_caffemodel(p, blobs, layout="v1", legacy_shapes=True))]
    from engine.network.caffe_schema import messages

    net = messages()["NetParameter"]()
    blob = net.layer.add(name="fc_ftnew", type="InnerProduct").blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.double_data.extend(np.arange(6, dtype=np.float64).tolist())
    out.append(net.SerializeToString())
    return out


def one_input(data: bytes) -> None:
    path = scratch() / "w.caffemodel"
    path.write_bytes(data)
    blobs = caffe_io.read_caffemodel(path)
    caffe_io.read_caffemodel(path, layers={"conv1", "fc_ftnew"})
    W.from_caffe_blobs(blobs, str(path))
