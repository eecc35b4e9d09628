"""Reading (and, for tests and tools, writing) Caffe files without Caffe.

- `read_prototxt`: text NetParameter (the deploy network definition)
- `read_caffemodel`: binary NetParameter -> {layer name: [blob arrays]}, from the V2
  `layer` field or the legacy V1 `layers` field
- `read_mean`: binary BlobProto (mean.binaryproto) -> float32 array
Blobs carry either `shape` or the legacy num/channels/height/width; both are read.
Every failure is a ModelFileError naming the file and what was wrong.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError
from engine.fileio import atomic_write
from engine.network import architecture as arch
from engine.network.caffe_schema import messages


def _read_bytes(path, what: str) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: {what} not found") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read {what}: {e.strerror}") from None


def _parse_binary(path, what: str, message_name: str):
    data = _read_bytes(path, what)
    if not data:
        raise ModelFileError(f"{path}: {what} is empty (0 bytes)")
    msg = messages()[message_name]()
    try:
        msg.ParseFromString(data)
    except Exception as e:  # google.protobuf.message.DecodeError and friends
        raise ModelFileError(
            f"{path}: not a valid {what} (protobuf {message_name}); the file is truncated or "
            f"corrupt ({len(data)} bytes; decoder said: {e})") from None
    return msg


def read_prototxt(path):
    """Parse a text prototxt into our NetParameter message."""
    from google.protobuf import text_format

    data = _read_bytes(path, "network definition (prototxt)")
    net = messages()["NetParameter"]()
    try:
        text_format.Parse(data.decode("utf-8", errors="replace"), net)
    except text_format.ParseError as e:
        raise ModelFileError(f"{path}: not a Caffe network definition this reader understands: {e}") from None
    return net


def blob_to_array(blob, where: str) -> np.ndarray:
    """A BlobProto as a float32 array of its declared shape."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:  # legacy 4-D blob
        shape = (blob.num, blob.channels, blob.height, blob.width)
    if len(blob.data):
        values = np.asarray(blob.data, dtype=np.float32)
    else:
        values = np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    count = int(np.prod(shape)) if shape else 0
    if values.size != count:
        raise ModelFileError(f"{where}: blob declares shape {list(shape)} ({count} values) "
                             f"but holds {values.size} values")
    return values.reshape(shape)


def read_caffemodel(path) -> dict[str, list[np.ndarray]]:
    """{layer name: [blob arrays]} of every layer that holds blobs (V2 or V1 layout)."""
    net = _parse_binary(path, "Caffe weights (.caffemodel)", "NetParameter")
    layers = list(net.layer) if len(net.layer) else list(net.layers)
    out: dict[str, list[np.ndarray]] = {}
    for layer in layers:
        if not len(layer.blobs):
            continue
        if layer.name in out:
            raise ModelFileError(f"{path}: layer {layer.name!r} appears twice with weights")
        out[layer.name] = [blob_to_array(b, f"{path}: layer {layer.name!r} blob {i}")
                           for i, b in enumerate(layer.blobs)]
    if not out:
        raise ModelFileError(f"{path}: no layer holds weights (expected {len(arch.expected_caffe_blobs())} "
                             "weighted layers); is this a .caffemodel and not a solver state or prototxt?")
    return out


def read_mean(path) -> np.ndarray:
    """The mean image as float32 [1, 3, 224, 224], planar BGR, 0..255."""
    blob = _parse_binary(path, "mean image (.binaryproto)", "BlobProto")
    arr = blob_to_array(blob, f"{path}")
    expected = (1, 3, arch.INPUT_SIZE, arch.INPUT_SIZE)
    if arr.size == int(np.prod(expected)):
        arr = arr.reshape(expected)
    if arr.shape != expected:
        raise ModelFileError(f"{path}: mean image: expected shape {list(expected)}, found {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ModelFileError(f"{path}: mean image holds non-finite values")
    return arr


# ---------------------------------------------------------------- writers

def array_to_blob(arr: np.ndarray, blob, legacy: bool = False) -> None:
    """Fill a BlobProto from an array (`legacy`: num/channels/height/width, padded with leading 1s)."""
    arr = np.asarray(arr, dtype=np.float32)
    if legacy:
        if arr.ndim > 4:
            raise ValueError(f"legacy blobs hold at most 4 dims, found {arr.ndim}")
        dims = (1,) * (4 - arr.ndim) + arr.shape
        blob.num, blob.channels, blob.height, blob.width = dims
    else:
        blob.shape.dim.extend(arr.shape)
    # Append the packed `data` field (number 5, wire type 2) as raw bytes and let the
    # protobuf parser take it in: ~30x faster than extending the repeated field from Python.
    raw = arr.astype("<f4").tobytes()
    blob.MergeFromString(b"\x2a" + _varint(len(raw)) + raw)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def write_caffemodel(path, blobs: dict[str, list[np.ndarray]], *, layout: str = "v2",
                     types: dict[str, str] | None = None, legacy_shapes: bool = False) -> None:
    """Write {layer name: [arrays]} as a .caffemodel (`layout` "v2": `layer`, "v1": `layers`)."""
    net = messages()["NetParameter"](name="written-by-engine3dmm")
    types = types or {}
    v1_types = messages()["V1LayerParameter"].LayerType
    for name, arrays in blobs.items():
        if layout == "v2":
            layer = net.layer.add(name=name, type=types.get(name, ""))
        elif layout == "v1":
            layer = net.layers.add(name=name)
            t = {"Convolution": "CONVOLUTION", "InnerProduct": "INNER_PRODUCT"}.get(types.get(name, ""), "NONE")
            layer.type = v1_types.Value(t)
        else:
            raise ValueError(f"layout: expected 'v1' or 'v2', found {layout!r}")
        for a in arrays:
            array_to_blob(a, layer.blobs.add(), legacy=legacy_shapes)
    with atomic_write(path) as f:
        f.write(net.SerializeToString())


def write_mean(path, mean: np.ndarray, legacy: bool = True) -> None:
    blob = messages()["BlobProto"]()
    array_to_blob(mean, blob, legacy=legacy)
    with atomic_write(path) as f:
        f.write(blob.SerializeToString())


def validate_prototxt(net, path: str | os.PathLike = "prototxt") -> None:
    """Check that a parsed prototxt is exactly the network this engine implements."""
    problems: list[str] = []
    got = [(l.name, l.type) for l in net.layer]
    want = arch.expected_caffe_layers()
    if got != want:
        missing = [n for n in want if n not in got]
        extra = [n for n in got if n not in want]
        problems.append(f"layers differ from the 3DMM-CNN ResNet-101 ({len(want)} layers expected, {len(got)} found; "
                        f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                        f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''})")
    by_name = {l.name: l for l in net.layer}
    for c in arch.all_convs():
        layer = by_name.get(c.conv)
        if layer is None:
            continue
        p = layer.convolution_param
        found = (p.num_output, p.kernel_size[0] if p.kernel_size else None,
                 p.stride[0] if p.stride else 1, p.pad[0] if p.pad else 0, p.bias_term, p.group)
        expect = (c.cout, c.kernel, c.stride, c.pad, False, 1)
        if found != expect:
            problems.append(f"{c.conv}: (num_output, kernel, stride, pad, bias_term, group) expected {expect}, found {found}")
        bn = by_name.get(c.bn)
        if bn is not None and abs(bn.batch_norm_param.eps - arch.BN_EPS) > 1e-12:
            problems.append(f"{c.bn}: eps expected {arch.BN_EPS}, found {bn.batch_norm_param.eps}")
    fc = by_name.get(arch.FC_NAME)
    if fc is not None and fc.inner_product_param.num_output != arch.NUM_COEFFS:
        problems.append(f"{arch.FC_NAME}: num_output expected {arch.NUM_COEFFS}, found {fc.inner_product_param.num_output}")
    if problems:
        raise ModelFileError(f"{path}: " + "; ".join(problems))
