"""Mesh files: binary PLY (default), ASCII PLY, OBJ with vertex colours, and the release's files.

The decode kernel writes vertex records of VERTEX_DTYPE, byte for byte the vertex block of a
binary little-endian PLY with `float x y z` and `uchar red green blue`, so a binary PLY is a
header, `records.tobytes()` and one packed face array: no per-vertex Python work. The text
formats format the whole array with one '%' operation.

"ply-release" is byte for byte what the release's demo (demoCode/utils.py `write_ply` of
anhttran/3dmm_cnn) wrote, for scripts that parse its output: the same header with no comment
lines, vertices as '%0.4f %0.4f %0.4f %d %d %d', faces as '3 %d %d %d' (0-based). Its
coefficient files `<name>.ply.alpha` / `.ply.beta` are `np.savetxt` of the 99 values, one per
line as '%.18e' (`release_coefficients_text`).

Every file is written through engine.fileio.atomic_write and all inputs are checked before
anything is written, so a bad argument or an I/O error never leaves a partial file.
"""
from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from engine.errors import InputError, describe_array
from engine.fileio import atomic_write

VERTEX_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                         ("red", "u1"), ("green", "u1"), ("blue", "u1")])
assert VERTEX_DTYPE.itemsize == 15  # packed: the PLY vertex record has no padding

# One binary PLY face: the list length (always 3) then three int32 indices, packed (13 bytes).
_FACE_DTYPE = np.dtype([("n", "u1"), ("i", "<i4", (3,))])

FORMATS = ("ply", "ply-ascii", "obj", "ply-release")

# %.9g prints any float32 exactly enough that parsing it back gives the same float32.
_FLOAT = "%.9g"
_RELEASE_FLOAT = "%0.4f"  # the release's demo: millimetres to 0.1 micrometre


def _check(records, faces, comments) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Validate the arguments; return records, faces as int32 [F, 3] and comments as a list."""
    if not isinstance(records, np.ndarray) or records.dtype != VERTEX_DTYPE or records.ndim != 1:
        raise InputError(f"records: expected a 1-D array of engine.mesh_io.VERTEX_DTYPE "
                         f"(x y z float32, red green blue uint8), found {describe_array(records)}"
                         + (f" with dtype {records.dtype}" if isinstance(records, np.ndarray) else ""))
    if records.shape[0] == 0:
        raise InputError("records: expected at least one vertex, found 0")
    bad = ~(np.isfinite(records["x"]) & np.isfinite(records["y"]) & np.isfinite(records["z"]))
    if bad.any():
        raise InputError(f"records: expected finite x y z, found {int(bad.sum())} vertices with NaN or "
                         f"Inf (first at index {int(np.flatnonzero(bad)[0])})")
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
        raise InputError(f"faces: expected an integer array [F, 3], found {describe_array(faces)}")
    n = records.shape[0]
    if faces.size:
        lo, hi = int(faces.min()), int(faces.max())
        if lo < 0 or hi >= n:
            raise InputError(f"faces: expected 0-based vertex indices in [0, {n - 1}], "
                             f"found min {lo}, max {hi}")
    if isinstance(comments, str):  # a lone string would otherwise become one comment per character
        comments = [comments]
    out = []
    for c in comments:
        if not isinstance(c, str) or any(ch in c for ch in "\r\n") or not c.isascii():
            raise InputError(f"comments: expected single-line ASCII strings, found {c!r}")
        out.append(c)
    return records, faces.astype(np.int32), out


def _ply_header(n: int, f: int, comments: list[str], fmt: str) -> bytes:
    lines = ["ply", f"format {fmt} 1.0", *(f"comment {c}" for c in comments),
             f"element vertex {n}",
             "property float x", "property float y", "property float z",
             "property uchar red", "property uchar green", "property uchar blue",
             f"element face {f}", "property list uchar int vertex_indices", "end_header"]
    return ("\n".join(lines) + "\n").encode("ascii")


def _ply_binary(records: np.ndarray, faces: np.ndarray, comments: list[str]) -> bytes:
    packed = np.empty(faces.shape[0], _FACE_DTYPE)
    packed["n"] = 3
    packed["i"] = faces
    return (_ply_header(records.shape[0], faces.shape[0], comments, "binary_little_endian")
            + np.ascontiguousarray(records).tobytes() + packed.tobytes())


def _vertex_table(records: np.ndarray, colour_scale: float | None,
                  float_format: str = _FLOAT) -> tuple[np.ndarray, str]:
    """(object array [N, 6] of Python scalars, one row's format): floats for x y z, then colours
    as ints (PLY) or as floats in 0..1 (OBJ)."""
    table = np.empty((records.shape[0], 6), dtype=object)
    for j, name in enumerate(("x", "y", "z")):
        table[:, j] = records[name].astype(np.float64)  # float32 -> exact float64 for %.9g
    for j, name in enumerate(("red", "green", "blue"), start=3):
        table[:, j] = records[name].astype(np.int64) if colour_scale is None \
            else records[name].astype(np.float64) / colour_scale
    colour = "%d" if colour_scale is None else "%.6f"
    return table, " ".join([float_format] * 3 + [colour] * 3)


def _ply_ascii(records: np.ndarray, faces: np.ndarray, comments: list[str],
               float_format: str = _FLOAT) -> bytes:
    table, row = _vertex_table(records, None, float_format)
    body = ((row + "\n") * records.shape[0]) % tuple(table.ravel())
    body += ("3 %d %d %d\n" * faces.shape[0]) % tuple(faces.ravel().tolist())
    return _ply_header(records.shape[0], faces.shape[0], comments, "ascii") + body.encode("ascii")


def _ply_release(records: np.ndarray, faces: np.ndarray, comments: list[str]) -> bytes:
    if comments:  # scripts written for the release may count its header lines
        raise InputError(f"comments: the release's PLY header has no comment lines, found {len(comments)}")
    return _ply_ascii(records, faces, [], _RELEASE_FLOAT)


def _obj(records: np.ndarray, faces: np.ndarray, comments: list[str]) -> bytes:
    # OBJ has no colour standard; `v x y z r g b` with r g b in 0..1 is what MeshLab, trimesh
    # and Open3D read. Faces are 1-based.
    table, row = _vertex_table(records, 255.0)
    head = "".join(f"# {c}\n" for c in comments)
    body = (("v " + row + "\n") * records.shape[0]) % tuple(table.ravel())
    body += ("f %d %d %d\n" * faces.shape[0]) % tuple((faces.ravel().astype(np.int64) + 1).tolist())
    return (head + body).encode("ascii")


def ply_bytes(records: np.ndarray, faces, comments: Iterable[str] = ()) -> bytes:
    """A binary little-endian PLY in memory (what `write_ply` writes)."""
    return _ply_binary(*_check(records, faces, comments))


def write_ply(path: str | os.PathLike, records: np.ndarray, faces, *, binary: bool = True,
              comments: Iterable[str] = ()) -> None:
    """Write a PLY: binary little-endian (default) or ASCII ('%.9g': float32 exact; for the
    release's own layout, fmt "ply-release" of `write_mesh`)."""
    write_mesh(path, records, faces, fmt="ply" if binary else "ply-ascii", comments=comments)


def write_obj(path: str | os.PathLike, records: np.ndarray, faces, *, comments: Iterable[str] = ()) -> None:
    """Write an OBJ with per-vertex colours (`v x y z r g b`, colours in 0..1, 1-based faces)."""
    write_mesh(path, records, faces, fmt="obj", comments=comments)


_ENCODERS = {"ply": _ply_binary, "ply-ascii": _ply_ascii, "obj": _obj, "ply-release": _ply_release}


def write_mesh(path: str | os.PathLike, records: np.ndarray, faces, fmt: str = "ply",
               comments: Iterable[str] = ()) -> None:
    """Write `records` (VERTEX_DTYPE[N]) and `faces` (int [F, 3], 0-based) as `fmt` (one of
    FORMATS; "ply-release" takes no comments), atomically."""
    if fmt not in _ENCODERS:
        raise InputError(f"fmt: expected one of {', '.join(FORMATS)}, found {fmt!r}")
    data = _ENCODERS[fmt](*_check(records, faces, comments))  # encode fully before touching the disk
    with atomic_write(path, "wb") as f:
        f.write(data)


def release_coefficients_text(values) -> str:
    """The release's `<name>.ply.alpha` / `.ply.beta` text: `np.savetxt` of the values (float32
    [99], as the network gives them), one per line as '%.18e', exactly as its demo wrote them."""
    import io

    a = np.asarray(values)
    if a.ndim != 1 or a.size == 0 or a.dtype.kind != "f" or not np.all(np.isfinite(a)):
        raise InputError(f"values: expected finite floats [K], found {describe_array(a)}")
    buf = io.StringIO()
    np.savetxt(buf, a.astype(np.float32, copy=False))  # the release's call, default fmt '%.18e'
    return buf.getvalue()


def write_release_coefficients(path: str | os.PathLike, values) -> None:
    """Write `release_coefficients_text(values)` to `path`, atomically."""
    text = release_coefficients_text(values)
    with atomic_write(path, "w") as f:
        f.write(text)
