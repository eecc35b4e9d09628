"""TensorRT engine and timing-cache files: keying, validation and atomic writes.

Pure Python (no TensorRT import), so it is tested on machines without TensorRT.

A serialized engine only works with the exact TensorRT version and GPU it was built
for, and only for the ONNX graph, precision and optimisation profile it was built
from. We therefore wrap each engine in a small header that records that key:

    bytes 0..7    magic  b"E3DMMTRT"
    bytes 8..11   u32 little-endian header version (1)
    bytes 12..15  u32 little-endian length L of the JSON header
    bytes 16..    JSON: {"key": {...}, "payload_nbytes": n, "payload_sha256": hex}
    then          the serialized engine (n bytes)

The file name carries a digest of the key (so different GPUs or profiles sharing a
folder do not overwrite each other); the header is still checked on load, because
files get copied between machines. A missing, foreign, stale, truncated or corrupt
file is reported with a reason and rebuilt, never loaded.
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.fileio import atomic_write

MAGIC = b"E3DMMTRT"
HEADER_VERSION = 1
_FIXED = struct.Struct("<8sII")


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"
    precision: str  # "fp16" / "fp32"
    profile: tuple[int, int, int]  # batch (min, opt, max)

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def as_json(self) -> dict:
        d = asdict(self)
        d["profile"] = list(self.profile)
        return d


def engine_path(folder, tag: str, key: EngineKey) -> Path:
    return Path(folder) / f"{tag}.{key.precision}.b{key.profile[0]}-{key.profile[1]}-{key.profile[2]}.{key.digest()[:16]}.engine"


def timing_cache_path(folder, trt_version: str, gpu_name: str, compute_capability: str) -> Path:
    """Timing caches depend on TensorRT and the GPU, not on the graph: one per (version, GPU)."""
    ident = hashlib.sha256(f"{trt_version}|{gpu_name}|{compute_capability}".encode()).hexdigest()[:16]
    return Path(folder) / f"tensorrt-{trt_version}.sm{compute_capability.replace('.', '')}.{ident}.timing"


def write_engine(path, key: EngineKey, payload: bytes) -> None:
    header = json.dumps({"key": key.as_json(), "payload_nbytes": len(payload),
                         "payload_sha256": hashlib.sha256(payload).hexdigest()}).encode()
    with atomic_write(path) as f:
        f.write(_FIXED.pack(MAGIC, HEADER_VERSION, len(header)))
        f.write(header)
        f.write(payload)


def read_engine(path, key: EngineKey) -> tuple[bytes | None, str]:
    """(payload, "") when `path` holds an intact engine built for `key`, else (None, reason)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, f"{path}: no cached engine"
    except OSError as e:
        return None, f"{path}: unreadable ({e.strerror})"
    if len(data) < _FIXED.size:
        return None, f"{path}: truncated ({len(data)} bytes, shorter than the header)"
    magic, version, hlen = _FIXED.unpack_from(data)
    if magic != MAGIC:
        return None, f"{path}: not an engine written by this engine (magic {magic!r}, expected {MAGIC!r})"
    if version != HEADER_VERSION:
        return None, f"{path}: header version {version}, expected {HEADER_VERSION}"
    try:
        header = json.loads(data[_FIXED.size:_FIXED.size + hlen])
        found_key = header["key"]
        nbytes, sha = int(header["payload_nbytes"]), header["payload_sha256"]
    except (ValueError, KeyError, TypeError):
        return None, f"{path}: corrupt header"
    if found_key != key.as_json():
        diffs = [f"{k} {found_key.get(k)!r} (now {v!r})" for k, v in key.as_json().items() if found_key.get(k) != v]
        return None, f"{path}: stale or foreign engine, built for a different " + ", ".join(diffs)
    payload = data[_FIXED.size + hlen:]
    if len(payload) != nbytes:
        return None, f"{path}: truncated engine ({len(payload)} of {nbytes} bytes)"
    if hashlib.sha256(payload).hexdigest() != sha:
        return None, f"{path}: corrupt engine (checksum mismatch)"
    return payload, ""


def read_timing_cache(path) -> bytes:
    """The timing cache bytes, or b"" when absent/unreadable (TensorRT validates the content)."""
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def write_timing_cache(path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)
