"""MATLAB v5 `.mat` files, checked element by element before scipy parses them.

scipy's v5 reader (Cython) trusts every tag it reads. An unknown data-type code indexes a
fixed table of dtype pointers (a SIGSEGV from one changed byte; scipy PR 25349), the
dimensions of a struct, cell or char array size an allocation before any data is read,
nested cells and structs recurse on the C stack, and a field-name length of 0 divides.

Why a checker rather than parsing in a child process: the child would have to ship every
array back (the real BFM 2009 is 230 MB) and would still need these bounds to say what is
wrong. The checker touches only tags and headers (and inflates what is compressed, which
scipy would do anyway), so loading stays fast, and its errors name the variable and field.

What scipy parses is exactly the bytes that were checked: one variable at a time, read into
memory (inflated with a bound when it is stored as miCOMPRESSED) behind a fresh file header,
so a file that changes between the check and the parse cannot matter.

Format (MathWorks, "MAT-File Format", Level 5): a 128-byte header (116 bytes of text, the
subsystem offset, version 0x0100, endian indicator "IM"), then data elements. An element is
an 8-byte tag (data type, byte count) and its data padded to 8 bytes, or a "small data
element" of at most 4 bytes packed into the tag. A variable is an miMATRIX element (array
flags, dimensions, name, then what its class needs), or an miCOMPRESSED element holding one
miMATRIX element as a zlib stream.
"""
from __future__ import annotations

import io
import math
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError
from engine.morphable.model import MAX_ARRAY_ELEMENTS, MAX_COMPONENTS, MAX_ROWS

# Data types (the tag's first field).
MI_INT8, MI_UINT8, MI_INT16, MI_UINT16, MI_INT32, MI_UINT32 = 1, 2, 3, 4, 5, 6
MI_SINGLE, MI_DOUBLE, MI_INT64, MI_UINT64 = 7, 9, 12, 13
MI_MATRIX, MI_COMPRESSED, MI_UTF8, MI_UTF16, MI_UTF32 = 14, 15, 16, 17, 18
NUMERIC_ITEMSIZE = {MI_INT8: 1, MI_UINT8: 1, MI_INT16: 2, MI_UINT16: 2, MI_INT32: 4, MI_UINT32: 4,
                    MI_SINGLE: 4, MI_DOUBLE: 8, MI_INT64: 8, MI_UINT64: 8}
CHAR_TYPES = (MI_INT8, MI_UINT8, MI_UINT16, MI_UTF8, MI_UTF16, MI_UTF32)

# Array classes (the low byte of the array flags).
MX_CELL, MX_STRUCT, MX_CHAR = 1, 2, 4
MX_OPAQUE = 17
NUMERIC_CLASSES = range(6, 16)  # double, single, int8 ... uint64
CLASS_NAMES = {1: "cell", 2: "struct", 3: "object", 4: "char", 5: "sparse", 6: "double", 7: "single",
               8: "int8", 9: "uint8", 10: "int16", 11: "uint16", 12: "int32", 13: "uint32",
               14: "int64", 15: "uint64", 16: "function", 17: "opaque"}

# Bounds of what a model file holds, beyond the model's own (engine.morphable.model).
MAX_DIM = MAX_ROWS  # no dimension of a model array is longer than 3N
MAX_NAME_BYTES = 255  # variable names (MATLAB's namelengthmax is 63)
MAX_FIELD_NAME_BYTES = 64  # field-name slot length: MATLAB and scipy write 32 or 64
MAX_FIELDS = 1024  # per struct (mod_struct_expr.mat has 11)
MAX_NODES = 10_000  # arrays (miMATRIX elements) in one variable, nested ones included
MAX_DEPTH = 16  # structs and cells inside each other
MAX_CHARS = 1 << 20  # characters in one char array
MAX_VARIABLES = 1024  # in one file (BFM 2009 has 10)
# One variable may be a whole model in one struct (the release's BaselFaceModel_mod.mat):
# two float64 bases of the largest size, plus room for means, faces and the rest.
MAX_VARIABLE_BYTES = 2 * MAX_ARRAY_ELEMENTS * 8 + (256 << 20)
HEAD_BYTES = 128 << 10  # enough for any array header within the bounds above
HEADER_BYTES = 128
CHUNK = 1 << 20  # bytes read from the file at a time


@dataclass(frozen=True)
class Variable:
    """One top-level variable, from its header only (its data is not read)."""

    name: str
    mclass: str  # 'double', 'struct', ... (CLASS_NAMES)
    dims: tuple[int, ...]
    fields: tuple[str, ...]  # struct field names; () for other classes
    offset: int  # of the top-level element's tag in the file
    nbytes: int  # the top-level element's byte count
    compressed: bool


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


class _Walk:
    """Checks the elements of one buffer exactly as scipy will read them (sequentially: a
    nested miMATRIX's byte count is not used to skip, so the contents must fill it exactly)."""

    def __init__(self, buf, order: str, path: Path, where: str, base: int):
        self.buf, self.path, self.where, self.base = buf, path, where, base  # base: offset of buf[0] in `where`
        self.u32 = struct.Struct(order + "I")
        self.order = order
        self.nodes = 0

    def fail(self, label: str, expected: str, found: str, pos: int) -> ModelFileError:
        return ModelFileError(f"{self.path}: {label}: expected {expected}, found {found} "
                              f"(byte {self.base + pos} of {self.where})")

    def full_tag(self, pos: int, end: int, label: str, what: str) -> tuple[int, int]:
        if end - pos < 8:
            raise self.fail(label, f"{what} (an 8-byte tag)", f"{max(end - pos, 0)} bytes left", pos)
        return self.u32.unpack_from(self.buf, pos)[0], self.u32.unpack_from(self.buf, pos + 4)[0]

    def element(self, pos: int, end: int, label: str, what: str) -> tuple[int, int, int, int]:
        """(data type, byte count, data position, next position) of the element at `pos`."""
        first, second = self.full_tag(pos, end, label, what)
        if first >> 16:  # small data element: byte count and type packed in the first word
            n, t = first >> 16, first & 0xFFFF
            if n > 4:
                raise self.fail(label, f"{what}: a small data element of at most 4 bytes", f"{n} bytes", pos)
            return t, n, pos + 4, pos + 8
        nxt = pos + 8 + _pad8(second)
        if nxt > end:
            raise self.fail(label, f"{what}: {second} bytes (padded to {_pad8(second)}) inside the "
                            f"enclosing element", f"{end - pos - 8} bytes left", pos)
        return first, second, pos + 8, nxt

    def ascii(self, pos: int, end: int, label: str, what: str, limit: int) -> tuple[bytes, int]:
        t, n, d, nxt = self.element(pos, end, label, what)
        if n > limit:
            raise self.fail(label, f"{what}: at most {limit} bytes", f"{n} bytes", pos)
        data = bytes(self.buf[d:d + n])
        # scipy accepts miINT8, and miUTF8 when it is plain ASCII.
        if t not in (MI_INT8, MI_UTF8) or not data.isascii():
            raise self.fail(label, f"{what}: ASCII text (miINT8)",
                            f"data type {t}" if t not in (MI_INT8, MI_UTF8) else f"{data!r}", pos)
        return data, nxt

    def int32s(self, pos: int, end: int, label: str, what: str, max_count: int) -> tuple[list[int], int]:
        t, n, d, nxt = self.element(pos, end, label, what)
        if t not in (MI_INT32, MI_UINT32) or n % 4 or not 4 <= n <= 4 * max_count:
            raise self.fail(label, f"{what}: 1 to {max_count} int32 values (miINT32)",
                            f"data type {t} with {n} bytes", pos)
        return list(struct.unpack_from(f"{self.order}{n // 4}i", self.buf, d)), nxt

    # --- arrays ------------------------------------------------------------
    def header(self, start: int, stop: int, label: str, *, named: bool = False):
        """(class, complex?, dims, name, fields, position after the header) of the array whose
        contents (after its miMATRIX tag) span [start, stop); `named`: once the array's name is
        read, errors name it instead of `label` (a top-level variable)."""
        t, n = self.full_tag(start, stop, label, "array flags")
        # scipy reads the flags without looking at their tag: it must be exactly this.
        if (t, n) != (MI_UINT32, 8) or stop - start < 16:
            raise self.fail(label, "array flags (miUINT32, 8 bytes)", f"data type {t} with {n} bytes", start)
        flags = self.u32.unpack_from(self.buf, start + 8)[0]
        mclass, complex_ = flags & 0xFF, bool(flags >> 11 & 1)
        pos = start + 16
        dims: tuple[int, ...] = ()
        if mclass != MX_OPAQUE:  # an opaque array (a function workspace) has a name only
            values, pos = self.int32s(pos, stop, label, "dimensions", 32)
            if any(not 0 <= d <= MAX_DIM for d in values):
                raise self.fail(label, f"dimensions in [0, {MAX_DIM}]", f"{values}", pos)
            dims = tuple(values)
        name, pos = self.ascii(pos, stop, label, "array name", MAX_NAME_BYTES)
        if named and name:
            label = name.decode("ascii")
        fields: tuple[str, ...] = ()
        if mclass == MX_STRUCT:
            fields, pos = self.field_names(pos, stop, label)
        return mclass, complex_, dims, name.decode("ascii"), fields, pos

    def field_names(self, pos: int, stop: int, label: str) -> tuple[tuple[str, ...], int]:
        (slot,), pos = self.int32s(pos, stop, label, "field name length", 1)
        if not 1 <= slot <= MAX_FIELD_NAME_BYTES:
            raise self.fail(label, f"a field name length in [1, {MAX_FIELD_NAME_BYTES}]", str(slot), pos)
        at = pos
        raw, pos = self.ascii(pos, stop, label, "field names", slot * MAX_FIELDS)
        if len(raw) % slot:
            raise self.fail(label, f"field names in slots of {slot} bytes", f"{len(raw)} bytes", at)
        names = []
        for i in range(len(raw) // slot):
            text = raw[i * slot:(i + 1) * slot]
            end = text.find(b"\0")
            name = text[:end].decode("ascii") if end > 0 else ""
            if not name or not all(33 <= c < 127 for c in text[:end]) or name in names:
                problem = ("no NUL terminator" if end < 0 else "an empty name" if end == 0
                           else f"a duplicate {name!r}" if name in names else f"{text[:end]!r}")
                raise self.fail(label, f"field name {i + 1}: a printable, unique, NUL-terminated name",
                                problem, at)
            names.append(name)
        return tuple(names), pos

    def matrix(self, pos: int, end: int, label: str, depth: int) -> int:
        """A nested miMATRIX element at `pos` (a cell or struct member); returns the next position."""
        t, n = self.full_tag(pos, end, label, "an array (miMATRIX)")
        if t != MI_MATRIX:
            raise self.fail(label, f"an array (miMATRIX, data type {MI_MATRIX})", f"data type {t}", pos)
        if n > end - pos - 8:
            raise self.fail(label, f"{n} bytes of array inside the enclosing element",
                            f"{end - pos - 8} bytes left", pos)
        if n:  # 0 bytes is MATLAB's empty [] (scipy returns an empty array)
            self.array(pos + 8, pos + 8 + n, label, depth)
        return pos + 8 + n

    def array(self, start: int, stop: int, label: str, depth: int) -> None:
        """Every element of the array whose contents span [start, stop), recursively."""
        self.nodes += 1
        if self.nodes > MAX_NODES or depth > MAX_DEPTH:
            raise self.fail(label, f"at most {MAX_NODES} arrays nested at most {MAX_DEPTH} deep",
                            f"more (array {self.nodes} at depth {depth})", start)
        mclass, complex_, dims, _, fields, pos = self.header(start, stop, label)
        count = math.prod(dims)
        if mclass in NUMERIC_CLASSES:
            if count > MAX_ARRAY_ELEMENTS:
                raise self.fail(label, f"at most {MAX_ARRAY_ELEMENTS} values ({MAX_ROWS} x {MAX_COMPONENTS})",
                                f"dimensions {list(dims)}", start)
            for part in ("real part", "imaginary part")[:1 + complex_]:
                at = pos
                t, n, _, pos = self.element(pos, stop, label, part)
                size = NUMERIC_ITEMSIZE.get(t)
                if size is None:
                    raise self.fail(label, f"{part}: a numeric data type ({sorted(NUMERIC_ITEMSIZE)})",
                                    f"data type {t}", at)
                if n != count * size:
                    raise self.fail(label, f"{part}: {count} values x {size} bytes = {count * size} bytes "
                                    f"(dimensions {list(dims)})", f"{n} bytes", at)
        elif mclass == MX_CHAR:
            at = pos
            t, n, _, pos = self.element(pos, stop, label, "characters")
            if count > MAX_CHARS or t not in CHAR_TYPES:
                raise self.fail(label, f"at most {MAX_CHARS} characters of a text data type {CHAR_TYPES}",
                                f"dimensions {list(dims)}, data type {t}", at)
        elif mclass == MX_CELL:
            if count > MAX_NODES:
                raise self.fail(label, f"at most {MAX_NODES} cells", f"dimensions {list(dims)}", start)
            for i in range(count):
                pos = self.matrix(pos, stop, f"{label}{{{i + 1}}}", depth + 1)
        elif mclass == MX_STRUCT:
            if count * max(len(fields), 1) > MAX_NODES:
                raise self.fail(label, f"at most {MAX_NODES} struct members",
                                f"dimensions {list(dims)} x {len(fields)} fields", start)
            for i in range(count if fields else 0):  # scipy reads nothing more without fields
                for f in fields:
                    pos = self.matrix(pos, stop, f"{label}.{f}" if count == 1 else f"{label}({i + 1}).{f}",
                                      depth + 1)
        else:
            raise self.fail(label, "a numeric, logical, char, cell or struct array",
                            f"a MATLAB {CLASS_NAMES.get(mclass, f'class {mclass}')} array", start)
        if pos != stop:
            raise self.fail(label, f"array contents that fill the {stop - start} bytes its tag declares",
                            f"{pos - start} bytes", start)


# --- the file ----------------------------------------------------------------

def _byte_order(path: Path, header: bytes) -> str:
    """'<' or '>' from a checked 128-byte header."""
    if len(header) < HEADER_BYTES:
        raise ModelFileError(f"{path}: header: expected a {HEADER_BYTES}-byte MATLAB v5 header, "
                             f"found a file of {len(header)} bytes")
    endian = header[126:128]
    if endian not in (b"IM", b"MI"):
        raise ModelFileError(f"{path}: header: expected the endian indicator 'IM' or 'MI' at byte 126 "
                             f"(a MATLAB v5 file), found {endian!r}")
    order = "<" if endian == b"IM" else ">"
    version = struct.unpack_from(order + "H", header, 124)[0]
    # scipy takes a file whose first 4 bytes hold a 0 for MATLAB v4, another format entirely.
    if version != 0x0100 or 0 in header[:4]:
        raise ModelFileError(f"{path}: header: expected MATLAB v5 (version 0x0100, text at byte 0), "
                             f"found version {version:#06x}, first bytes {header[:4]!r}")
    return order


def _inflate(f, path: Path, label: str, offset: int, nbytes: int, want: int, *, whole: bool):
    """The first `want` bytes of the zlib stream stored at [offset, offset + nbytes), as pieces.
    With `whole`, the stream must also end there and use all of its bytes."""
    d = zlib.decompressobj()
    f.seek(offset)
    left, pending, got = nbytes, b"", 0

    def fail(found: str) -> ModelFileError:
        return ModelFileError(f"{path}: {label}: expected a zlib stream of {want} bytes in the "
                              f"{nbytes} compressed bytes at byte {offset}, found {found}")

    try:
        while got < want:
            if not pending:
                if not left:
                    raise fail(f"{got} bytes" if d.eof else f"a stream cut off after {got} bytes")
                pending = f.read(min(CHUNK, left))
                if not pending:
                    raise fail("the file shorter than its tags say")
                left -= len(pending)
            out = d.decompress(pending, want - got)
            pending = d.unconsumed_tail
            if out:
                got += len(out)
                yield out
            elif d.eof:
                raise fail(f"{got} bytes")
        if whole:
            while not d.eof:  # what remains may only close the stream (never more output)
                if not pending:
                    if not left:
                        raise fail("a stream that does not end")
                    pending = f.read(min(CHUNK, left))
                    left -= len(pending)
                    if not pending:
                        raise fail("the file shorter than its tags say")
                if d.decompress(pending, 1):
                    raise fail(f"more than {want} bytes")
                pending = d.unconsumed_tail
            if pending or left or d.unused_data:
                raise fail("bytes after the end of the stream")
    except zlib.error as e:
        raise fail(f"corrupt compressed data ({e})") from None


def list_variables(path: str | os.PathLike) -> dict[str, Variable]:
    """The variables of a MATLAB v5 file by name, from their headers. Raises ModelFileError."""
    path = Path(path)
    size = path.stat().st_size
    out: dict[str, Variable] = {}
    with open(path, "rb") as f:
        order = _byte_order(path, f.read(HEADER_BYTES))
        u32 = struct.Struct(order + "I")
        pos = HEADER_BYTES
        while pos < size:
            label = f"variable {len(out) + 1}"
            f.seek(pos)
            tag = f.read(8)
            if len(tag) < 8:
                raise ModelFileError(f"{path}: {label}: expected an 8-byte tag at byte {pos}, "
                                     f"found {len(tag)} bytes at the end of the file")
            t, n = u32.unpack_from(tag, 0)[0], u32.unpack_from(tag, 4)[0]
            if t not in (MI_MATRIX, MI_COMPRESSED) or not 0 < n <= size - pos - 8:
                raise ModelFileError(f"{path}: {label}: expected a variable (miMATRIX {MI_MATRIX} or "
                                     f"miCOMPRESSED {MI_COMPRESSED}) of 1 to {size - pos - 8} bytes at "
                                     f"byte {pos}, found data type {t} with {n} bytes")
            if t == MI_MATRIX:
                inner = n
                buf = tag + f.read(min(n, HEAD_BYTES))
                where, base = "the file", pos
            else:
                buf = b"".join(_inflate(f, path, label, pos + 8, n, 8, whole=False))
                inner = u32.unpack_from(buf, 4)[0]
                if u32.unpack_from(buf, 0)[0] != MI_MATRIX or not inner:
                    raise ModelFileError(f"{path}: {label}: expected one array (miMATRIX {MI_MATRIX}) in the "
                                         f"compressed element at byte {pos}, found data type "
                                         f"{u32.unpack_from(buf, 0)[0]} with {inner} bytes")
                if inner <= MAX_VARIABLE_BYTES:
                    buf = b"".join(_inflate(f, path, label, pos + 8, n, 8 + min(inner, HEAD_BYTES), whole=False))
                where, base = f"the inflated variable at byte {pos}", 0
            if inner > MAX_VARIABLE_BYTES:
                raise ModelFileError(f"{path}: {label}: expected at most {MAX_VARIABLE_BYTES} bytes per "
                                     f"variable, found {inner} at byte {pos}")
            # Only the header is here (at most HEAD_BYTES of the variable): flags, dims, name, fields.
            mclass, _, dims, name, fields, _ = _Walk(buf, order, path, where, base).header(8, len(buf), label,
                                                                                   named=True)
            if name in out:
                raise ModelFileError(f"{path}: {name}: expected each variable name once, found it twice "
                                     f"(the second at byte {pos})")
            out[name] = Variable(name, CLASS_NAMES.get(mclass, f"class {mclass}"), dims, fields,
                                 pos, n, t == MI_COMPRESSED)
            if len(out) > MAX_VARIABLES:
                raise ModelFileError(f"{path}: expected at most {MAX_VARIABLES} variables, found more")
            pos += 8 + n
    return out


def load_variable(path: str | os.PathLike, var: Variable) -> np.ndarray:
    """The value of one variable as scipy.io.loadmat gives it (a struct is a record array),
    after every element of it has been checked. Raises ModelFileError."""
    import scipy.io

    path = Path(path)
    bio = io.BytesIO()
    with open(path, "rb") as f:
        order = _byte_order(path, f.read(HEADER_BYTES))
        # A fresh header: same byte order and version, no subsystem offset.
        endian = b"IM" if order == "<" else b"MI"
        bio.write(b"MATLAB 5.0 MAT-file, checked by engine3dmm".ljust(116, b" ") + bytes(8)
                  + struct.pack(order + "H", 0x0100) + endian)
        if var.compressed:
            head = b"".join(_inflate(f, path, var.name, var.offset + 8, var.nbytes, 8, whole=False))
            n = struct.unpack_from(order + "I", head, 4)[0]
            if n > MAX_VARIABLE_BYTES:
                raise ModelFileError(f"{path}: {var.name}: expected at most {MAX_VARIABLE_BYTES} bytes, found {n}")
            for piece in _inflate(f, path, var.name, var.offset + 8, var.nbytes, 8 + n, whole=True):
                bio.write(piece)
            where, base = f"the inflated variable at byte {var.offset}", 0
        else:
            f.seek(var.offset)
            left = 8 + var.nbytes
            while left:
                piece = f.read(min(CHUNK, left))
                if not piece:
                    raise ModelFileError(f"{path}: {var.name}: expected {var.nbytes} bytes at byte {var.offset}, "
                                         f"found the file shorter (changed while reading?)")
                bio.write(piece)
                left -= len(piece)
            where, base = "the file", var.offset
    view = bio.getbuffer()
    try:
        walk = _Walk(view[HEADER_BYTES:], order, path, where, base)
        t, n = walk.full_tag(0, len(view) - HEADER_BYTES, var.name, "an array (miMATRIX)")
        if t != MI_MATRIX or not 0 < n == len(view) - HEADER_BYTES - 8:
            raise walk.fail(var.name, f"one array (miMATRIX) of {len(view) - HEADER_BYTES - 8} bytes",
                            f"data type {t} with {n} bytes", 0)
        walk.array(8, 8 + n, var.name, 0)
    finally:
        view.release()
    bio.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = scipy.io.loadmat(bio)[var.name]
    except Exception as e:  # not expected after the walk; still a model-file error, never a traceback
        raise ModelFileError(f"{path}: {var.name}: scipy could not read the checked variable: "
                             f"{type(e).__name__}: {e}") from e
    return value
