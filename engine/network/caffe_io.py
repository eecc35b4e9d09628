"""Reading (and, for tests and tools, writing) Caffe files without Caffe, as Caffe reads them.

- `read_prototxt`: text NetParameter (the deploy network definition), parsed against
  Caffe's own caffe.proto (engine.network.caffe_schema); `validate_prototxt` checks the
  function it computes (engine.network.caffe_net) and returns the layer names to read
  weights under
- `read_caffemodel`: binary NetParameter -> {layer name: [blob arrays]}, from the V2
  `layer` field or the legacy V1 `layers` field; like Caffe, layers are looked up by name
  and those the network does not use are ignored (and listed at info level)
- `read_mean`: binary BlobProto (mean.binaryproto) -> float32 [1, 3, 224, 224]
Blobs carry either `shape` or the legacy num/channels/height/width. Every dimension and
their product are checked in Python integers (no overflow) before any data is touched;
a blob is never reshaped to fit. Every failure is a ModelFileError naming the file and
what was wrong.
"""
from __future__ import annotations

import logging
import math
import os
import stat
from pathlib import Path
from typing import Collection

import numpy as np

from engine.errors import ModelFileError
from engine.fileio import atomic_write
from engine.network import architecture as arch
from engine.network.caffe_schema import messages

log = logging.getLogger("engine.network")

# Caffe's own limits (caffe/blob.hpp, blob.cpp): at most 32 axes, and every dimension and
# the element count are C ints.
MAX_BLOB_AXES = 32
INT_MAX = 2**31 - 1
# protobuf cannot parse a message of 2 GiB or more; a deploy prototxt or a mean image is
# small, so anything far larger is not one (and is not read into memory).
MAX_BINARY_BYTES = 2**31 - 1
MAX_TEXT_BYTES = 16 << 20
MAX_MEAN_BYTES = 64 << 20


def text(value) -> str:
    """A protobuf string field as text: proto2 strings that are not UTF-8 come back as bytes."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _read_bytes(path, what: str, limit: int) -> bytes:
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO or /dev/zero would never end
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise ModelFileError(f"{path}: {what}: is {kind}, expected a file")
        size = st.st_size
        if size > limit:
            raise ModelFileError(f"{path}: {what}: {size} bytes, more than any such file can be ({limit} bytes)")
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: {what} not found") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read {what}: {e.strerror or e}") from None


def _parse_binary(path, what: str, message_name: str, limit: int = MAX_BINARY_BYTES):
    data = _read_bytes(path, what, limit)
    if not data:
        raise ModelFileError(f"{path}: {what} is empty (0 bytes)")
    msg = messages()[message_name]()
    try:
        msg.ParseFromString(data)
    except Exception as e:  # google.protobuf.message.DecodeError, recursion limits and friends
        raise ModelFileError(
            f"{path}: not a valid {what} (protobuf {message_name}); the file is truncated or "
            f"corrupt ({len(data)} bytes; decoder said: {e})") from None
    return msg


def read_prototxt(path):
    """Parse a text prototxt into a caffe.proto NetParameter (what Caffe's text parser accepts)."""
    from google.protobuf import text_format

    data = _read_bytes(path, "network definition (prototxt)", MAX_TEXT_BYTES)
    net = messages()["NetParameter"]()
    try:
        # Comments may be in any encoding (Caffe's tokenizer skips them as bytes).
        text_format.Parse(data.decode("utf-8", errors="replace"), net)
    except Exception as e:  # text_format.ParseError; anything else is reported the same way
        raise ModelFileError(f"{path}: not a Caffe network definition (prototxt): {e}") from None
    return net


def blob_shape(blob, where: str) -> tuple[tuple[int, ...], int]:
    """(dimensions, element count) of a BlobProto, checked as Caffe's Blob::Reshape does."""
    if blob.HasField("shape"):
        dims = list(blob.shape.dim)
        if not dims:
            raise ModelFileError(f"{where}: blob has an empty shape {{}} (no dimensions)")
        if len(dims) > MAX_BLOB_AXES:
            raise ModelFileError(f"{where}: blob has {len(dims)} dimensions, Caffe allows at most {MAX_BLOB_AXES}")
    elif any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        dims = [blob.num, blob.channels, blob.height, blob.width]  # legacy 4-D blob
    else:
        raise ModelFileError(f"{where}: blob declares no shape (neither `shape` nor num/channels/height/width)")
    bad = [d for d in dims if not 0 <= d <= INT_MAX]
    if bad:
        raise ModelFileError(f"{where}: blob dimension {bad[0]} out of range 0..{INT_MAX} (shape {dims})")
    count = math.prod(dims)  # Python integers: a product cannot overflow or wrap
    if count > INT_MAX:
        raise ModelFileError(f"{where}: blob shape {dims} holds {count} values, more than Caffe's limit {INT_MAX}")
    return tuple(dims), count


def blob_to_array(blob, where: str) -> np.ndarray:
    """A BlobProto as a float32 array of exactly its declared shape (Caffe reads `double_data`
    when it has any values, else `data`)."""
    shape, count = blob_shape(blob, where)
    field = "double_data" if len(blob.double_data) else "data"
    n = len(getattr(blob, field))
    if n != count:
        raise ModelFileError(f"{where}: blob declares shape {list(shape)} ({count} values) "
                             f"but holds {n} values in `{field}`")
    values = np.asarray(getattr(blob, field), dtype=np.float64 if field == "double_data" else np.float32)
    return values.astype(np.float32, copy=False).reshape(shape)


def log_ignored_layers(where: str, names: Collection[str]) -> None:
    """Caffe's 'Ignoring source layer' for every weighted layer the network does not use."""
    if names:
        log.info("%s: ignoring %d layer(s) that the network does not use: %s", where, len(names),
                 ", ".join(sorted(names)))


def read_caffemodel(path, layers: Collection[str] | None = None, *,
                    ignored: set[str] | None = None) -> dict[str, list[np.ndarray]]:
    """{layer name: [blob arrays]} of the weighted layers of a .caffemodel (V2 or V1 layout).

    `layers`: the names the network copies weights into (Caffe looks layers up by name);
    other layers are not converted, only listed at info level. None: every weighted layer.
    `ignored`: a set that receives the names of the weighted layers not converted (so that
    a caller can summarise them)."""
    net = _parse_binary(path, "Caffe weights (.caffemodel)", "NetParameter")
    entries = list(net.layer) if len(net.layer) else list(net.layers)
    wanted = None if layers is None else set(layers)
    out: dict[str, list[np.ndarray]] = {}
    ignored = set() if ignored is None else ignored
    any_weights = False
    for layer in entries:
        if not len(layer.blobs):
            continue
        any_weights = True
        name = text(layer.name)
        if wanted is not None and name not in wanted:
            ignored.add(name)
            continue
        if name in out:
            raise ModelFileError(f"{path}: layer {name!r} appears twice with weights")
        out[name] = [blob_to_array(b, f"{path}: layer {name!r} blob {i}") for i, b in enumerate(layer.blobs)]
    if not any_weights:
        raise ModelFileError(f"{path}: no layer holds weights (expected {len(arch.expected_caffe_blobs())} "
                             "weighted layers); is this a .caffemodel and not a solver state or prototxt?")
    log_ignored_layers(str(path), ignored)
    return out


def read_mean(path) -> np.ndarray:
    """The mean image as float32 [1, 3, 224, 224], planar BGR, 0..255.

    The blob must be 3x224x224 in Caffe's C x H x W order, with or without a leading 1;
    a blob of the same size in another layout is refused, never reshaped."""
    blob = _parse_binary(path, "mean image (.binaryproto)", "BlobProto", MAX_MEAN_BYTES)
    arr = blob_to_array(blob, f"{path}")
    size = arch.INPUT_SIZE
    if arr.shape not in ((3, size, size), (1, 3, size, size)):
        raise ModelFileError(f"{path}: mean image: expected shape [1, 3, {size}, {size}] or [3, {size}, {size}] "
                             f"(Caffe's channels x height x width), found {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ModelFileError(f"{path}: mean image holds non-finite values")
    return np.ascontiguousarray(arr.reshape(1, 3, size, size))


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


def validate_prototxt(net, path: str | os.PathLike = "prototxt"):
    """Check that a parsed prototxt computes the network this engine implements (any spelling
    Caffe accepts); returns its caffe_net.NetMatch (the prototxt's name of every weighted layer)."""
    from engine.network.caffe_net import match_network

    return match_network(net, str(path))
