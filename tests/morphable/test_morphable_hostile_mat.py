"""Hostile MATLAB v5 files (issue 13, finding 1 and its kind): every one is a ModelFileError
naming the file, the variable/field and what was wrong; none crashes the process, hangs, or
allocates more than a model needs. Each load runs in a forked child under a memory limit
and a timeout (hostile_files.bounded), so a regression fails the test instead of killing it.

scipy.io.loadmat on the same inputs (unchecked) dies with SIGSEGV (unknown data-type code,
deep nesting), divides by zero (field name length 0) or allocates gigabytes (struct, cell
and char dimensions): shown by test_the_inputs_are_hostile_to_scipy_itself.
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from bfm_files import assert_model_matches, expected_trimmed, trimmed_arrays, write_mat_v5
from engine.morphable import load_model
from engine.morphable.mat5 import MAX_DEPTH, MAX_DIM, MAX_NODES, MAX_VARIABLE_BYTES
from hostile_files import (MI_DOUBLE, MI_INT8, MI_INT32, MI_MATRIX, MI_UINT16, MI_UINT32, MI_UTF8,
                           MX_CELL, MX_CHAR, MX_DOUBLE, MX_OBJECT, MX_SPARSE, MX_STRUCT, array, bounded,
                           compressed, element, header, inflated_elements, mat_file, nested_cells, numeric,
                           patch_u32, replace_compressed, small, struct_array, zlib_zeros)

N, K = 10, 99


def _load_in_child(path: Path, mod_struct: Path | None = None, mem_mb: int = 512):
    return bounded(lambda: load_model(path, mod_struct_mat=mod_struct), mem_mb=mem_mb, timeout_s=60)


def _assert_model_file_error(outcome, path, *words):
    """A ModelFileError whose message starts with the file and (after it) has every word."""
    assert outcome[0] == "raised" and outcome[1] == "ModelFileError", outcome
    assert outcome[2].startswith(f"{path}: "), outcome[2]
    for w in words:
        assert w in outcome[2][len(str(path)):], (w, outcome[2])


def _real_part_tag(data: bytes, name: bytes = b"shapeMU\0") -> int:
    """Offset of the real part's tag of the top-level numeric variable `name` in a file from
    savemat: tag 8 + flags 16 + dims 16 + name element (8 + 8), checked to be miDOUBLE."""
    pos = data.index(name) + 8
    assert struct.unpack_from("<I", data, pos)[0] == MI_DOUBLE
    return pos


# --- finding 1: one changed data-type code -------------------------------------------

@pytest.mark.parametrize("code", [0x109, 0, 8, 19, 0xFFFF])
@pytest.mark.parametrize("compress", [False, True])
def test_changed_data_type_code_in_a_savemat_file(tmp_path, code, compress):
    """The issue's input: a trimmed model from scipy.io.savemat with the data type of
    shapeMU's data changed (0x109 and 0 crashed the process with SIGSEGV)."""
    fields = trimmed_arrays(N, K, seed=1)
    path = tmp_path / "BaselFaceModel_mod.mat"
    scipy.io.savemat(path, fields, do_compression=compress)
    data = path.read_bytes()
    if compress:
        (offset, inflated), *_ = inflated_elements(data)
        data = replace_compressed(data, offset, patch_u32(inflated, _real_part_tag(inflated), code))
    else:
        data = patch_u32(data, _real_part_tag(data), code)
    path.write_bytes(data)
    _assert_model_file_error(_load_in_child(path), path, "shapeMU", f"data type {code}")


def test_changed_data_type_code_in_the_real_mod_struct(shared_dir, tmp_path):
    """The same fault through the release's mod_struct_expr.mat (one compressed struct):
    the data type of `tx` changed, a small valid BFM 2009 beside it."""
    from bfm_files import bfm2009_arrays

    data = (shared_dir / "mod_struct_expr.mat").read_bytes()
    (offset, inflated), = inflated_elements(data)
    tx = inflated.index(struct.pack("<d", 0.231)) - 8  # tx's real part: miDOUBLE, 8 bytes
    assert struct.unpack_from("<II", inflated, tx) == (MI_DOUBLE, 8)
    ms = tmp_path / "mod_struct_expr.mat"
    ms.write_bytes(replace_compressed(data, offset, patch_u32(inflated, tx, 0x109)))
    bfm = write_mat_v5(tmp_path / "01_MorphableModel.mat", bfm2009_arrays(40, 99, seed=1))
    _assert_model_file_error(_load_in_child(bfm, ms), ms, "mod_struct.tx", "data type 265")


# --- the kind: every element scipy would trust ------------------------------------------

def _bytes_of(*parts: bytes, order: str = "<") -> bytes:
    return header(order) + b"".join(parts)


_FLAGS = element(MI_UINT32, struct.pack("<II", MX_DOUBLE, 0))
_DIMS31 = element(MI_INT32, struct.pack("<2i", 3, 1))
_NAME = element(MI_INT8, b"shapeMU")
_DATA3 = element(MI_DOUBLE, np.arange(3.0).tobytes())


def _names(*names: str, slot: int = 32) -> bytes:
    return element(MI_INT8, b"".join(n.encode().ljust(slot, b"\0") for n in names))


HOSTILE = {
    # numeric data
    "real part of type 0x109": (array(MX_DOUBLE, (3, 1), "shapeMU", element(0x109, bytes(24))), ["data type 265"]),
    "real part as a small element of type 8": (array(MX_DOUBLE, (1, 1), "shapeMU", small(8, b"\1\2\3\4")),
                                               ["data type 8"]),
    "imaginary part of type 0": (array(MX_DOUBLE, (3, 1), "shapeMU", _DATA3 + element(0, bytes(24)), flags=1 << 11),
                                 ["imaginary part", "data type 0"]),
    "data shorter than the dims": (array(MX_DOUBLE, (3, 1), "shapeMU", element(MI_DOUBLE, bytes(16))),
                                   ["3 values x 8 bytes = 24 bytes", "found 16 bytes"]),
    "data longer than the element": (array(MX_DOUBLE, (3, 1), "shapeMU",
                                           element(MI_DOUBLE, bytes(24), nbytes=1 << 30)), ["1073741824 bytes"]),
    "small element claiming 7 bytes": (array(MX_DOUBLE, (1, 1), "shapeMU",
                                             struct.pack("<I", 7 << 16 | MI_DOUBLE) + bytes(4)), ["at most 4 bytes"]),
    # the array header
    "array flags of the wrong type": (element(MI_MATRIX, element(MI_INT32, bytes(8)) + _DIMS31 + _NAME + _DATA3),
                                      ["variable 1", "array flags", "data type 5"]),
    "negative dimension": (array(MX_DOUBLE, (-1, 3), "shapeMU", _DATA3), ["variable 1", "dimensions in [0,", "[-1, 3]"]),
    "dimension beyond the bound": (array(MX_DOUBLE, (MAX_DIM + 1, 1), "shapeMU", _DATA3), ["variable 1", str(MAX_DIM + 1)]),
    "33 dimensions": (array(MX_DOUBLE, (1,) * 33, "shapeMU", _DATA3), ["variable 1", "1 to 32 int32 values", "132 bytes"]),
    "no dimensions": (element(MI_MATRIX, _FLAGS + element(MI_INT32, b"") + _NAME + _DATA3), ["variable 1", "dimensions"]),
    "dimensions as doubles": (array(MX_DOUBLE, (3, 1), "shapeMU", _DATA3, dims_type=MI_DOUBLE), ["variable 1", "data type 9"]),
    "name of type uint16": (array(MX_DOUBLE, (3, 1), "shapeMU", _DATA3, name_type=MI_UINT16), ["variable 1", "array name"]),
    "non-ASCII UTF-8 name": (array(MX_DOUBLE, (3, 1), "shap\xe9MU", _DATA3, name_type=MI_UTF8), ["variable 1", "ASCII"]),
    "contents shorter than the tag says": (element(MI_MATRIX, _FLAGS + _DIMS31 + _NAME + _DATA3 + bytes(8)),
                                           ["fill the 88 bytes", "found 80 bytes"]),
    # char, cell, struct: scipy allocates from their dims before reading any data
    "char of type 0x109": (array(MX_CHAR, (1, 3), "shapeMU", element(0x109, b"abc")), ["data type 265"]),
    "char of 2^15 x 2^15 characters and no data": (array(MX_CHAR, (1 << 15, 1 << 15), "shapeMU",
                                                         element(MI_UINT16, b"")), ["at most 1048576 characters"]),
    "cell of 2^19 x 2^19 cells and no data": (array(MX_CELL, (1 << 19, 1 << 19), "shapeMU", b""),
                                             [f"at most {MAX_NODES} cells"]),
    "cell member of type 5": (array(MX_CELL, (1, 1), "shapeMU", element(MI_INT32, bytes(8))),
                              ["shapeMU{1}", "data type 5"]),
    "struct with field name length 0": (array(MX_STRUCT, (1, 1), "shapeMU", small(MI_INT32, bytes(4)) + _names()),
                                        ["field name length in [1, 64]", "found 0"]),
    "struct with field name length -8": (array(MX_STRUCT, (1, 1), "shapeMU",
                                               small(MI_INT32, struct.pack("<i", -8)) + _names()), ["found -8"]),
    "struct with field name length 2^20": (array(MX_STRUCT, (1, 1), "shapeMU",
                                                 small(MI_INT32, struct.pack("<i", 1 << 20)) + _names()),
                                           ["found 1048576"]),
    "struct field name without NUL": (array(MX_STRUCT, (1, 1), "shapeMU",
                                            small(MI_INT32, struct.pack("<i", 4)) + element(MI_INT8, b"abcd")),
                                      ["no NUL terminator"]),
    "struct with a duplicate field": (array(MX_STRUCT, (1, 1), "shapeMU", small(MI_INT32, struct.pack("<i", 32))
                                            + _names("a", "a") + numeric("", np.zeros(1)) * 2), ["duplicate 'a'"]),
    "struct without fields of 2^15 x 2^15": (array(MX_STRUCT, (1 << 15, 1 << 15), "shapeMU",
                                                   small(MI_INT32, struct.pack("<i", 32)) + _names()),
                                             [f"at most {MAX_NODES} struct members"]),
    "struct member of type 0x109": (struct_array("shapeMU", {"a": array(MX_DOUBLE, (1, 1), "", element(0x109, bytes(8)))}),
                                    ["shapeMU.a", "data type 265"]),
    "cells nested 200,000 deep": (nested_cells(200_000), [f"nested at most {MAX_DEPTH} deep"]),
    "cells nested just too deep": (nested_cells(MAX_DEPTH + 2), [f"nested at most {MAX_DEPTH} deep"]),
    # classes no model has
    "sparse": (array(MX_SPARSE, (3, 3), "shapeMU", element(MI_INT32, b"") * 3), ["a MATLAB sparse array"]),
    "object": (array(MX_OBJECT, (1, 1), "shapeMU", element(MI_INT8, b"cls")), ["a MATLAB object array"]),
    "function handle": (array(16, (1, 1), "shapeMU", b""), ["a MATLAB function array"]),
    "unknown class 99": (array(99, (1, 1), "shapeMU", b""), ["a MATLAB class 99 array"]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("compress", [False, True])
def test_hostile_elements(tmp_path, case, compress):
    """Each hostile array as the variable shapeMU, plain and inside an miCOMPRESSED element."""
    variable, words = HOSTILE[case]
    path = tmp_path / "hostile.mat"
    path.write_bytes(mat_file(compressed(variable) if compress else variable))
    # Before its name is read, a variable is named by its place in the file.
    label = [] if "variable 1" in words else ["shapeMU"]
    _assert_model_file_error(_load_in_child(path), path, *label, *words)


def _valid_shape_mu() -> bytes:
    return numeric("shapeMU", np.arange(30.0))


FILE_LEVEL = {
    "MATLAB v4 header (a 0 in the first 4 bytes)": (b"\0" + _bytes_of(_valid_shape_mu())[1:],
                                                    ["header: expected MATLAB v5", "first bytes"]),
    "version 0x0200": (patch_u32(_bytes_of(_valid_shape_mu()), 124, 0x4D490200), ["version 0x0200"]),
    "no endian indicator": (_bytes_of(_valid_shape_mu())[:126] + b"XX" + _bytes_of(_valid_shape_mu())[128:],
                            ["endian indicator"]),
    "shorter than a header": (header()[:100], ["128-byte MATLAB v5 header", "100 bytes"]),
    "a top-level element of type 2": (_bytes_of(element(2, bytes(16))), ["variable 1", "data type 2"]),
    "a top-level element beyond the end": (_bytes_of(element(MI_MATRIX, bytes(16), nbytes=1 << 20)),
                                           ["variable 1", "1048576 bytes"]),
    "a top-level element of 0 bytes": (_bytes_of(element(MI_MATRIX, b"")), ["variable 1", "0 bytes"]),
    "3 stray bytes at the end": (_bytes_of(_valid_shape_mu(), b"abc"), ["variable 2", "3 bytes at the end"]),
    "the same variable twice": (_bytes_of(_valid_shape_mu(), _valid_shape_mu()), ["shapeMU", "twice"]),
    # miCOMPRESSED
    "compressed: corrupt zlib": (_bytes_of(struct.pack("<II", 15, 16) + b"x\x9c" + bytes(14)), ["zlib"]),
    "compressed: a stream cut short": (_bytes_of(struct.pack("<II", 15, len(zlib.compress(_valid_shape_mu())) - 20)
                                                 + zlib.compress(_valid_shape_mu())[:-20]), ["cut off"]),
    "compressed: bytes after the stream": (_bytes_of(struct.pack("<II", 15, len(zlib.compress(_valid_shape_mu())) + 8)
                                                     + zlib.compress(_valid_shape_mu()) + bytes(8)),
                                           ["bytes after the end of the stream"]),
    "compressed: a number, not an array": (_bytes_of(compressed(element(MI_DOUBLE, bytes(8)))),
                                           ["expected one array (miMATRIX 14)", "found data type 9"]),
    "compressed: declares more than a model": (_bytes_of(compressed(struct.pack("<II", MI_MATRIX, MAX_VARIABLE_BYTES + 8)
                                                                    + bytes(64))), [str(MAX_VARIABLE_BYTES)]),
}


@pytest.mark.parametrize("case", sorted(FILE_LEVEL))
def test_hostile_file_structure(tmp_path, case):
    data, words = FILE_LEVEL[case]
    path = tmp_path / "hostile.mat"
    path.write_bytes(data)
    _assert_model_file_error(_load_in_child(path), path, *words)


def test_decompression_bomb_stops_at_the_declared_size(tmp_path):
    """An miCOMPRESSED element whose array declares 64 bytes but whose zlib stream inflates to
    1 GiB (1 MB on disk): refused after 64 bytes, without inflating the rest."""
    stream = zlib_zeros(1024, prefix=numeric("shapeMU", np.arange(6.0)))
    path = tmp_path / "bomb.mat"
    path.write_bytes(header() + struct.pack("<II", 15, len(stream)) + stream)
    assert path.stat().st_size < 2 << 20
    _assert_model_file_error(_load_in_child(path, mem_mb=256), path, "more than")


# --- what must keep working ------------------------------------------------------

def test_the_inputs_are_hostile_to_scipy_itself(tmp_path):
    """The reason for the checks: scipy.io.loadmat on some of the inputs above, unchecked."""
    def scipy_load(variable: bytes):
        return bounded(lambda: scipy.io.loadmat(io.BytesIO(mat_file(variable))) and None, mem_mb=512)

    assert scipy_load(HOSTILE["cells nested 200,000 deep"][0])[0] == "signal"
    assert scipy_load(HOSTILE["struct with field name length 0"][0])[1] == "ZeroDivisionError"
    assert scipy_load(HOSTILE["struct without fields of 2^15 x 2^15"][0])[1] == "MemoryError"


@pytest.mark.parametrize("order", ["<", ">"])
def test_hand_written_files_in_both_byte_orders_match_scipy(tmp_path, order):
    """Files from the test writer (either byte order, some fields compressed, small data
    elements, int types) load as scipy reads them: the checks refuse nothing valid."""
    f = trimmed_arrays(N, K, seed=3)
    f["faces"] = f["faces"].astype(np.int32)
    parts = []
    for i, (name, a) in enumerate(f.items()):
        v = numeric(name, a, order=order)
        parts.append(compressed(v, order=order) if i % 2 else v)
    path = tmp_path / "model.mat"
    path.write_bytes(mat_file(*parts, order=order))
    independent = scipy.io.loadmat(path)
    for name, a in f.items():
        np.testing.assert_array_equal(independent[name], a.reshape(-1, 1) if a.ndim == 1 else a)
    assert_model_matches(load_model(path), expected_trimmed(f))


def test_compressed_savemat_files_load_like_plain_ones(tmp_path):
    f = trimmed_arrays(N, K, seed=4)
    plain = load_model(write_mat_v5(tmp_path / "plain.mat", f, struct="BFM"))
    scipy.io.savemat(tmp_path / "packed.mat", {"BFM": f}, do_compression=True)
    packed = load_model(tmp_path / "packed.mat")
    assert_model_matches(packed, expected_trimmed(f))
    np.testing.assert_array_equal(packed.shape_basis, plain.shape_basis)


def test_struct_with_char_cell_and_nested_struct_fields_loads(tmp_path):
    """Fields the loader does not use may be text, cells or structs: they are checked, not refused."""
    f = trimmed_arrays(N, K, seed=5)
    extra = {**f, "note": "BFM trimmed", "cells": np.array([[np.zeros(2), "x"]], dtype=object),
             "inner": {"a": np.ones((2, 2), np.int16)}}
    scipy.io.savemat(tmp_path / "m.mat", {"BFM": extra}, do_compression=True)
    assert_model_matches(load_model(tmp_path / "m.mat"), expected_trimmed(f))


def test_fields_that_are_only_tested_for_are_not_read(tmp_path):
    """BFM 2009's segbin only tells the untrimmed model apart: a hostile segbin is never
    parsed (the file is refused as untrimmed, naming how to trim it)."""
    f = trimmed_arrays(N, K, seed=6)
    parts = [numeric(k, v) for k, v in f.items()]
    parts.append(array(MX_DOUBLE, (3, 1), "segbin", element(0x109, bytes(24))))
    path = tmp_path / "m.mat"
    path.write_bytes(mat_file(*parts))
    _assert_model_file_error(_load_in_child(path), path, "untrimmed", "mod_struct_mat")
