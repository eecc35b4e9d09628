"""The `.e3dmm` model cache, version 1: see docs/model_cache_format.md (the format is fixed;
a C++ reader implements the same spec, so this file follows it to the byte).

Reading maps the file once (numpy.memmap, read-only) and hands out views into it: no parse,
no copy. Every check the spec lists runs before any array is returned, and each failure is a
ModelFileError naming the file, the field, what was expected and what was found.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError
from engine.fileio import atomic_write
from engine.morphable.model import FLOAT_FIELDS, MorphableModel, validate_arrays

MAGIC = b"E3DMMBIN"
VERSION = 1
ALIGN = 64
HEADER = struct.Struct("<8sIIQQQ24s")  # magic, version, array_count, meta off, meta nbytes, file nbytes, reserved
RECORD = struct.Struct("<24sIIQQQQ")  # name, dtype, ndim, dim0, dim1, offset, nbytes
assert HEADER.size == 64 and RECORD.size == 64
DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f2"), 3: np.dtype("<i4")}
DTYPE_CODES = {np.dtype("<f4"): 1, np.dtype("<f2"): 2, np.dtype("<i4"): 3}
REQUIRED = {**{name: 1 for name in FLOAT_FIELDS}, "faces": 3}
OPTIONAL = {"landmarks": 3}


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


# --- writing -------------------------------------------------------------------

def _layout(arrays: dict[str, np.ndarray], meta: bytes) -> tuple[bytes, list[tuple[int, np.ndarray]]]:
    """(header + table + metadata, [(offset, array)]): metadata right after the table,
    then every array at the next 64-byte boundary."""
    table_end = HEADER.size + RECORD.size * len(arrays)
    meta_off = table_end
    pos = _align(meta_off + len(meta))
    placed, records = [], []
    for name, a in arrays.items():
        dims = a.shape if a.ndim == 2 else (a.shape[0], 1)
        records.append(RECORD.pack(name.encode("ascii"), DTYPE_CODES[a.dtype], a.ndim, dims[0], dims[1],
                                   pos, a.nbytes))
        placed.append((pos, a))
        pos = _align(pos + a.nbytes)
    file_nbytes = placed[-1][0] + placed[-1][1].nbytes
    head = HEADER.pack(MAGIC, VERSION, len(arrays), meta_off, len(meta), file_nbytes, bytes(24))
    return head + b"".join(records) + meta, placed


def write_cache(model: MorphableModel, path: str | os.PathLike) -> None:
    """Write `model` to `path` atomically (a temporary sibling renamed into place)."""
    arrays = {}
    for name, code in {**REQUIRED, **OPTIONAL}.items():
        a = getattr(model, name)
        if a is not None:  # only the optional landmarks can be absent
            arrays[name] = np.ascontiguousarray(a, dtype=DTYPES[code])  # explicit little-endian
    meta = {**model.metadata, "format": "e3dmm-cache", "synthetic": bool(model.synthetic),
            "name": str(model.metadata.get("name", "unnamed")),
            "source": str(model.metadata.get("source", "unknown"))}
    meta_bytes = json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8")
    head, placed = _layout(arrays, meta_bytes)
    with atomic_write(path, "wb") as f:
        f.write(head)
        for offset, a in placed:
            f.write(bytes(offset - f.tell()))  # zero padding up to the 64-byte boundary
            f.write(memoryview(a).cast("B"))


# --- reading -------------------------------------------------------------------

def read_cache(path: str | os.PathLike) -> MorphableModel:
    """Validate and memory-map a `.e3dmm` file; the model's arrays are read-only views of it."""
    path = Path(path)
    where = str(path)

    def fail(field: str, expected: str, found: str) -> ModelFileError:
        return ModelFileError(f"{where}: {field}: expected {expected}, found {found}")

    if not path.is_file():
        raise fail("file", "an .e3dmm cache file", "a folder" if path.is_dir() else "nothing at this path")
    size = path.stat().st_size
    if size < HEADER.size:
        raise fail("header", f"{HEADER.size} bytes", f"a file of {size} bytes")
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    magic, version, count, meta_off, meta_n, file_n, _ = HEADER.unpack(mm[:HEADER.size].tobytes())
    if magic != MAGIC:
        raise fail("magic", repr(MAGIC), repr(magic))
    if version != VERSION:
        raise fail("version", str(VERSION), str(version))
    if file_n != size:
        raise fail("file_nbytes", f"the real file size {size} (truncated or extended?)", str(file_n))
    table_end = HEADER.size + RECORD.size * count
    if table_end > size:
        raise fail("array_count", f"a table that fits in {size} bytes", f"{count} records")
    if meta_off + meta_n > size:
        raise fail("metadata", f"bytes inside the file (size {size})", f"offset {meta_off} + {meta_n} bytes")
    try:
        meta = json.loads(mm[meta_off:meta_off + meta_n].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise fail("metadata", "a UTF-8 JSON object", f"invalid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise fail("metadata", "a JSON object", type(meta).__name__)
    for key in ("format", "synthetic", "name", "source"):
        if key not in meta:
            raise fail(f"metadata.{key}", "this key", f"keys {sorted(meta)}")
    if meta["format"] != "e3dmm-cache":
        raise fail("metadata.format", '"e3dmm-cache"', repr(meta["format"]))
    if not isinstance(meta["synthetic"], bool):
        raise fail("metadata.synthetic", "true or false", repr(meta["synthetic"]))

    arrays: dict[str, np.ndarray] = {}
    for i in range(count):
        rec = mm[HEADER.size + i * RECORD.size:HEADER.size + (i + 1) * RECORD.size].tobytes()
        raw_name, code, ndim, d0, d1, off, nbytes = RECORD.unpack(rec)
        try:
            name = raw_name.rstrip(b"\0").decode("ascii")
        except UnicodeDecodeError:
            raise fail(f"array {i} name", "ASCII, NUL-padded", repr(raw_name)) from None
        field = f"array '{name}'"
        if name in arrays:
            raise fail(field, "each name once", "a second record with this name")
        if code not in DTYPES:
            raise fail(f"{field} dtype", "1 (float32), 2 (float16) or 3 (int32)", str(code))
        if ndim not in (1, 2) or (ndim == 1 and d1 != 1):
            raise fail(f"{field} ndim", "1 (with dim1 = 1) or 2", f"ndim {ndim}, dim1 {d1}")
        if nbytes != d0 * d1 * DTYPES[code].itemsize:
            raise fail(f"{field} nbytes", f"dim0 * dim1 * itemsize = {d0} * {d1} * {DTYPES[code].itemsize}",
                       str(nbytes))
        if off % ALIGN:
            raise fail(f"{field} offset", f"a multiple of {ALIGN}", str(off))
        if off + nbytes > size:
            raise fail(f"{field} offset", f"data inside the file (size {size})", f"offset {off} + {nbytes} bytes")
        shape = (d0, d1) if ndim == 2 else (d0,)
        arrays[name] = mm[off:off + nbytes].view(DTYPES[code]).reshape(shape)

    for name, code in {**REQUIRED, **OPTIONAL}.items():
        if name not in arrays:
            if name in OPTIONAL:
                continue
            raise fail(f"array '{name}'", "this required array", f"arrays {sorted(arrays)}")
        if arrays[name].dtype != DTYPES[code]:
            raise fail(f"array '{name}' dtype", str(DTYPES[code]), str(arrays[name].dtype))
    # Shapes, consistent N / Ks / Kt and face (and landmark) ranges: the model's own check.
    validate_arrays(arrays, where)
    return MorphableModel(**{k: arrays.get(k) for k in (*REQUIRED, *OPTIONAL)}, metadata=meta)
