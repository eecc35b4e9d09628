"""The `.e3dmm` model cache, version 1: see docs/model_cache_format.md, the one strict
specification. The C++ reader (csrc/src/model_cache.cpp) enforces the same rules in the same
order, and tests/morphable/test_cache_differential.py holds both readers to the same verdict.

Reading maps the file once (numpy.memmap, read-only) and hands out views into it: no parse,
no copy. Every rule of the spec is checked before any array is returned, sizes in Python's
arbitrary-precision integers before any byte of data is touched, and each failure is a
ModelFileError naming the file, the field, what was expected and what was found.
"""
from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path

import numpy as np

from engine.errors import InputError, ModelFileError
from engine.fileio import atomic_write, json_depth
from engine.morphable.model import MAX_COMPONENTS, MAX_FACES, MAX_VERTICES, MorphableModel, validate_arrays

MAGIC = b"E3DMMBIN"
VERSION = 1
ALIGN = 64
HEADER = struct.Struct("<8sIIQQQ24s")  # magic, version, array_count, meta off, meta nbytes, file nbytes, reserved
RECORD = struct.Struct("<24sIIQQQQ")  # name, dtype, ndim, dim0, dim1, offset, nbytes
assert HEADER.size == 64 and RECORD.size == 64
DTYPES = {1: np.dtype("<f4"), 3: np.dtype("<i4")}  # code 2 (float16) is reserved: no array uses it
# Every array of version 1: name -> (dtype code, ndim). Table order of the writer.
ARRAYS = {"shape_mean": (1, 1), "shape_basis": (1, 2), "shape_sigma": (1, 1), "tex_mean": (1, 1),
          "tex_basis": (1, 2), "tex_sigma": (1, 1), "faces": (3, 2), "landmarks": (3, 1),
          "landmarks_outer": (3, 1), "expression_mean": (1, 1), "expression_basis": (1, 2),
          "expression_sigma": (1, 1)}
REQUIRED = ("shape_mean", "shape_basis", "shape_sigma", "tex_mean", "tex_basis", "tex_sigma", "faces")
EXPRESSION = ("expression_mean", "expression_basis", "expression_sigma")  # all three or none

# Bounds of the spec. N, K and F are what a face model can be (model.py's bounds for every
# loader; csrc/include/e3dmm/limits.h holds the same numbers); MAX_DIM keeps any record's
# dims, and every product of them, far from overflowing a 64-bit integer.
MAX_DIM = 2**31 - 1
MAX_LANDMARKS = MAX_VERTICES
MAX_METADATA_BYTES = 1 << 20
MAX_JSON_DEPTH = 64
MAX_NUMBER_CHARS = 64


class _Bad(Exception):
    """One broken rule: (field, expected, found); the caller adds the file name."""


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


# --- rules shared by the reader and the writer ------------------------------------

def _check_model_dims(dims: dict[str, tuple[int, int]]) -> None:
    """Step 8 of the spec: consistent N, Ks, Kt, F, L within their bounds. `dims` maps each
    present array to (dim0, dim1), dim1 = 1 for vectors."""
    def show(name):
        d0, d1 = dims[name]
        return f"[{d0}]" if ARRAYS[name][1] == 1 else f"[{d0}, {d1}]"

    n3 = dims["shape_mean"][0]
    if n3 % 3 or not 1 <= n3 // 3 <= MAX_VERTICES:
        raise _Bad("array 'shape_mean' shape", f"[3N] with 1 <= N <= {MAX_VERTICES}", show("shape_mean"))
    for prefix, k in (("shape", "Ks"), ("tex", "Kt")):
        if prefix == "tex" and dims["tex_mean"][0] != n3:
            raise _Bad("array 'tex_mean' shape", f"[{n3}] (3N from shape_mean)", show("tex_mean"))
        kk, cols = dims[f"{prefix}_basis"]
        if cols != n3 or not 1 <= kk <= MAX_COMPONENTS:
            raise _Bad(f"array '{prefix}_basis' shape", f"[{k}, {n3}] with 1 <= {k} <= {MAX_COMPONENTS} "
                       "(3N from shape_mean)", show(f"{prefix}_basis"))
        if dims[f"{prefix}_sigma"][0] != kk:
            raise _Bad(f"array '{prefix}_sigma' shape", f"[{kk}] ({k} from {prefix}_basis)", show(f"{prefix}_sigma"))
    f, three = dims["faces"]
    if three != 3 or not 1 <= f <= MAX_FACES:
        raise _Bad("array 'faces' shape", f"[F, 3] with 1 <= F <= {MAX_FACES}", show("faces"))
    if "landmarks" in dims and not 1 <= dims["landmarks"][0] <= MAX_LANDMARKS:
        raise _Bad("array 'landmarks' shape", f"[L] with 1 <= L <= {MAX_LANDMARKS}", show("landmarks"))
    if "landmarks_outer" in dims and dims["landmarks_outer"][0] != dims["landmarks"][0]:
        raise _Bad("array 'landmarks_outer' shape", f"[{dims['landmarks'][0]}] (L from landmarks)",
                   show("landmarks_outer"))
    if "expression_mean" in dims:
        if dims["expression_mean"][0] != n3:
            raise _Bad("array 'expression_mean' shape", f"[{n3}] (3N from shape_mean)", show("expression_mean"))
        ke, cols = dims["expression_basis"]
        if cols != n3 or not 1 <= ke <= MAX_COMPONENTS:
            raise _Bad("array 'expression_basis' shape", f"[Ke, {n3}] with 1 <= Ke <= {MAX_COMPONENTS} "
                       "(3N from shape_mean)", show("expression_basis"))
        if dims["expression_sigma"][0] != ke:
            raise _Bad("array 'expression_sigma' shape", f"[{ke}] (Ke from expression_basis)",
                       show("expression_sigma"))


def _check_groups(present) -> None:
    """Step 6 of the spec: every required array, and the optional ones in their groups:
    `landmarks_outer` only with `landmarks`, the three expression arrays all or none."""
    for name in REQUIRED:
        if name not in present:
            raise _Bad(f"array '{name}'", "present (required)", f"arrays {sorted(present)}")
    if "landmarks_outer" in present and "landmarks" not in present:
        raise _Bad("array 'landmarks'", "present (required with landmarks_outer)", f"arrays {sorted(present)}")
    have = [name for name in EXPRESSION if name in present]
    if have and len(have) != len(EXPRESSION):
        missing = next(name for name in EXPRESSION if name not in present)
        raise _Bad(f"array '{missing}'", "present (the expression arrays come together: "
                   f"{', '.join(EXPRESSION)})", f"arrays {sorted(present)}")


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise _Bad("metadata", "an object without duplicate keys (RFC 8259, this format's rule)",
                   f"the key {dup!r} twice")
    return dict(pairs)


def _number(kind):
    def parse(text: str):
        if len(text) > MAX_NUMBER_CHARS:
            raise _Bad("metadata", f"numbers of at most {MAX_NUMBER_CHARS} characters",
                       f"a number of {len(text)} characters")
        return kind(text)
    return parse


def _non_standard(name: str):
    raise _Bad("metadata", "standard JSON (RFC 8259)", f"the non-standard literal {name}")


def _lone_surrogate(value) -> str | None:
    """The first string (key or value) holding a lone surrogate (from a `\\ud800` escape), or None."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return v
    return None


def parse_metadata(raw: bytes) -> dict:
    """The metadata object of the spec (step 9): UTF-8, RFC 8259 JSON with no duplicate keys,
    depth <= 64, numbers <= 64 characters, no lone surrogates, and the required keys.
    Raises _Bad(field, expected, found)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Bad("metadata", "UTF-8 text", f"an invalid byte sequence at byte {e.start}") from None
    depth = json_depth(raw)  # json.loads recurses: a hostile depth is refused before it
    if depth > MAX_JSON_DEPTH:
        raise _Bad("metadata", f"JSON with a nesting depth of at most {MAX_JSON_DEPTH}", f"depth {depth}")
    try:
        meta = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_non_standard,
                          parse_int=_number(int), parse_float=_number(float))
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise _Bad("metadata", "a JSON object (RFC 8259, the limits of docs/model_cache_format.md)",
                   f"invalid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise _Bad("metadata", "a JSON object", f"a JSON {type(meta).__name__}")
    lone = _lone_surrogate(meta)
    if lone is not None:
        raise _Bad("metadata", "strings of Unicode characters", f"a lone surrogate escape in {lone!r}")
    for key in ("format", "synthetic", "name", "source"):
        if key not in meta:
            raise _Bad(f"metadata \"{key}\"", "this required key", f"keys {sorted(meta)}")
    if meta["format"] != "e3dmm-cache":
        raise _Bad("metadata \"format\"", '"e3dmm-cache"', repr(meta["format"]))
    if not isinstance(meta["synthetic"], bool):
        raise _Bad("metadata \"synthetic\"", "true or false", repr(meta["synthetic"]))
    for key in ("name", "source"):
        if not isinstance(meta[key], str):
            raise _Bad(f"metadata \"{key}\"", "a string", repr(meta[key]))
    return meta


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
        records.append(RECORD.pack(name.encode("ascii"), ARRAYS[name][0], a.ndim, dims[0], dims[1], pos, a.nbytes))
        placed.append((pos, a))
        pos = _align(pos + a.nbytes)
    file_nbytes = placed[-1][0] + placed[-1][1].nbytes
    head = HEADER.pack(MAGIC, VERSION, len(arrays), meta_off, len(meta), file_nbytes, bytes(24))
    return head + b"".join(records) + meta, placed


def write_cache(model: MorphableModel, path: str | os.PathLike) -> None:
    """Write `model` to `path` atomically (a temporary sibling renamed into place).

    Raises InputError when the model or its metadata is outside what the format can hold
    (the bounds and metadata rules of docs/model_cache_format.md); nothing is written then.
    """
    arrays = {}
    for name, (code, _) in ARRAYS.items():
        a = getattr(model, name)
        if a is None or (name in ("landmarks", "landmarks_outer") and a.size == 0):  # optional arrays
            continue
        arrays[name] = np.ascontiguousarray(a, dtype=DTYPES[code])  # explicit little-endian
    if "landmarks" not in arrays:
        arrays.pop("landmarks_outer", None)
    meta = {**model.metadata, "format": "e3dmm-cache", "synthetic": bool(model.synthetic),
            "name": str(model.metadata.get("name", "unnamed")),
            "source": str(model.metadata.get("source", "unknown"))}
    try:
        _check_groups(set(arrays))
        _check_model_dims({k: (a.shape[0], a.shape[1] if a.ndim == 2 else 1) for k, a in arrays.items()})
        try:
            meta_bytes = json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str,
                                    allow_nan=False).encode("utf-8")
        except (ValueError, TypeError, RecursionError, UnicodeEncodeError) as e:
            raise _Bad("metadata", "a dict that JSON can hold (finite numbers, string keys, "
                       "Unicode strings)", f"{type(e).__name__}: {e}") from None
        if len(meta_bytes) > MAX_METADATA_BYTES:
            raise _Bad("metadata", f"at most {MAX_METADATA_BYTES} bytes of JSON", f"{len(meta_bytes)} bytes")
        parse_metadata(meta_bytes)  # the reader's own rules: never write a file it would refuse
    except _Bad as e:
        field, expected, found = e.args
        raise InputError(f"{path}: cannot write this model as a cache: {field}: expected {expected}, "
                         f"found {found}") from None
    head, placed = _layout(arrays, meta_bytes)
    with atomic_write(path, "wb") as f:
        f.write(head)
        for offset, a in placed:
            f.write(bytes(offset - f.tell()))  # zero padding up to the 64-byte boundary
            f.write(memoryview(a).cast("B"))


# --- reading -------------------------------------------------------------------

def read_cache(path: str | os.PathLike) -> MorphableModel:
    """Validate and memory-map a `.e3dmm` file; the model's arrays are read-only views of it.

    Raises ModelFileError (naming the file, the field, what was expected and what was found)
    for any file that breaks a rule of docs/model_cache_format.md, and for a path that is not
    a readable, mappable regular file.
    """
    path = Path(path)
    where = str(path)
    try:
        return _read(path)
    except _Bad as e:
        field, expected, found = e.args
        raise ModelFileError(f"{where}: {field}: expected {expected}, found {found}") from None


def _open_map(path: Path) -> np.memmap:
    """Step 1: a regular file, mapped read-only."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _Bad("file", "an .e3dmm cache file", "nothing at this path") from None
    except OSError as e:  # permission, a file used as a folder, a symlink loop, a name too long
        raise _Bad("file", "a readable .e3dmm cache file", f"{type(e).__name__}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _Bad("file", "an .e3dmm cache file", "a folder" if stat.S_ISDIR(st.st_mode) else
                   "a special file (not a regular file)")
    if st.st_size < len(MAGIC):
        raise _Bad("magic", f"the bytes {MAGIC!r} (an .e3dmm model cache)", f"a file of {st.st_size} bytes")
    try:
        return np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError, MemoryError) as e:  # ENOMEM, EACCES, a file that shrank to 0 bytes, ...
        raise _Bad("file", "a readable file that can be memory-mapped",
                   f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}") from None


def _read(path: Path) -> MorphableModel:
    mm = _open_map(path)
    size = mm.size  # what is mapped is what is read
    # Step 2-3: header.
    magic = mm[:len(MAGIC)].tobytes()
    if magic != MAGIC:
        raise _Bad("magic", f"the bytes {MAGIC!r} (an .e3dmm model cache)", repr(magic))
    if size < HEADER.size:
        raise _Bad("header", f"{HEADER.size} bytes", f"a file of {size} bytes")
    _, version, count, meta_off, meta_n, file_n, reserved = HEADER.unpack(mm[:HEADER.size].tobytes())
    if version != VERSION:
        raise _Bad("version", str(VERSION), str(version))
    if reserved != bytes(24):
        raise _Bad("reserved", "24 zero bytes", reserved.hex())
    if file_n != size:
        raise _Bad("file_nbytes", f"the real file size {size} (truncated or extended?)", str(file_n))
    if not len(REQUIRED) <= count <= len(ARRAYS):
        raise _Bad("array_count", f"{len(REQUIRED)} to {len(ARRAYS)} records", str(count))
    table_end = HEADER.size + RECORD.size * count
    if table_end > size:
        raise _Bad("array_count", f"a table that fits the file of {size} bytes", f"{count} records")
    # Step 4: the metadata range.
    if not 2 <= meta_n <= MAX_METADATA_BYTES or meta_off < table_end or meta_off + meta_n > size:
        raise _Bad("metadata_offset/metadata_nbytes",
                   f"2 to {MAX_METADATA_BYTES} bytes after the array table (>= {table_end}) inside the "
                   f"file of {size} bytes", f"offset {meta_off}, {meta_n} bytes")

    # Step 5: each record.
    records: dict[str, tuple[int, int, int, int]] = {}
    for i in range(count):
        raw_name, code, ndim, d0, d1, off, nbytes = RECORD.unpack(
            mm[HEADER.size + i * RECORD.size:HEADER.size + (i + 1) * RECORD.size].tobytes())
        name_bytes, _, pad = raw_name.partition(b"\0")
        name = name_bytes.decode("latin-1")
        if name not in ARRAYS or pad.strip(b"\0"):
            raise _Bad(f"array table record {i} name", f"one of {', '.join(ARRAYS)}, NUL-padded to 24 bytes",
                       repr(raw_name.rstrip(b"\0")))
        field = f"array '{name}'"
        if name in records:
            raise _Bad(field, "one record per name", "a second record")
        want_code, want_ndim = ARRAYS[name]
        if code != want_code:
            raise _Bad(f"{field} dtype", f"{want_code} ({DTYPES[want_code]})", str(code))
        if ndim != want_ndim:
            raise _Bad(f"{field} ndim", str(want_ndim), str(ndim))
        if not (1 <= d0 <= MAX_DIM and 1 <= d1 <= MAX_DIM) or (ndim == 1 and d1 != 1):
            raise _Bad(f"{field} dims", f"dim0 and dim1 in [1, {MAX_DIM}]" + (", dim1 = 1" if ndim == 1 else ""),
                       f"({d0}, {d1})")
        itemsize = DTYPES[code].itemsize
        if nbytes != d0 * d1 * itemsize:  # Python ints: no overflow; dims are bounded anyway
            raise _Bad(f"{field} nbytes", f"dim0 * dim1 * itemsize = {d0} * {d1} * {itemsize}", str(nbytes))
        if off % ALIGN:
            raise _Bad(f"{field} offset", f"a multiple of {ALIGN}", str(off))
        if off < table_end or off + nbytes > size:
            raise _Bad(f"{field} offset/nbytes",
                       f"a range after the array table (>= {table_end}) inside the file of {size} bytes",
                       f"offset {off}, {nbytes} bytes")
        records[name] = (d0, d1, off, nbytes)
    # Step 6: every required array, the optional ones in their groups.
    _check_groups(records)
    # Step 7: no two ranges overlap.
    ranges = sorted([(meta_off, meta_off + meta_n, "the metadata")]
                    + [(r[2], r[2] + r[3], f"array '{name}'") for name, r in records.items()])
    for (_, end_a, a), (start_b, _, b) in zip(ranges, ranges[1:]):
        if start_b < end_a:
            raise _Bad(f"{b} offset", f"a range that does not overlap {a} (which ends at {end_a})",
                       f"offset {start_b}")
    # Step 8: the model's shapes and bounds.
    _check_model_dims({name: r[:2] for name, r in records.items()})
    # Step 9: metadata.
    meta = parse_metadata(mm[meta_off:meta_off + meta_n].tobytes())

    arrays = {}
    for name, (d0, d1, off, nbytes) in records.items():
        shape = (d0, d1) if ARRAYS[name][1] == 2 else (d0,)
        arrays[name] = mm[off:off + nbytes].view(DTYPES[ARRAYS[name][0]]).reshape(shape)
    # Step 10 (finite values, face and landmark ranges), with the model's own check.
    validate_arrays(arrays, str(path))
    return MorphableModel(**{k: arrays.get(k) for k in ARRAYS}, metadata=meta)
