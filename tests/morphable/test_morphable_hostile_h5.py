"""Hostile HDF5 model files (issue 13, finding 5 and its kind): sizes are checked on the
declared shape, dtype, links and storage before anything is read, filtered chunks are
inflated into at most their declared size, and only the fields that are used are read.
Each load runs in a forked child under a memory limit and a timeout (hostile_files.bounded):
a regression fails the test rather than allocating gigabytes in the test process.
"""
from __future__ import annotations

import zlib

import h5py
import numpy as np
import pytest

from bfm_files import assert_model_matches, expected_trimmed, trimmed_arrays, write_h5
from engine.morphable import load_model, load_trimmed
from engine.morphable.hdf5 import MAX_LINKS
from engine.morphable.matfiles import FieldSource
from engine.morphable.model import MAX_COMPONENTS, MAX_ROWS
from hostile_files import bounded, zlib_zeros

N, K = 10, 99


def _load_in_child(path, mem_mb: int = 512):
    return bounded(lambda: load_model(path), mem_mb=mem_mb, timeout_s=60)


def _assert_model_file_error(outcome, path, *words):
    """A ModelFileError whose message starts with the file and (after it) has every word."""
    assert outcome[0] == "raised" and outcome[1] == "ModelFileError", outcome
    assert outcome[2].startswith(f"{path}: "), outcome[2]
    for w in words:
        assert w in outcome[2][len(str(path)):], (w, outcome[2])


def _model_with(path, **replace):
    """A valid small trimmed model (h5py layout) where each `replace[name](h5, name)`
    writes that dataset instead (or beside them, for a name the model lacks)."""
    fields = trimmed_arrays(N, K, seed=1)
    with h5py.File(path, "w") as h5:
        for name in {**fields, **replace}:
            if name in replace:
                replace[name](h5, name)
            else:
                h5[name] = fields[name]
    return path


# --- finding 5: tiny files that declare gigabytes ---------------------------------

def test_unwritten_huge_dataset_beside_a_valid_model(tmp_path):
    """The issue's first input: a 21 KB file declaring an unwritten (2^28, 1) float64 dataset
    (2.1 GB when read). Here it is `segbin`, a field the loader only tests for."""
    path = tmp_path / "m.h5"
    fields = trimmed_arrays(N, K, seed=1)
    write_h5(path, fields)
    with h5py.File(path, "a") as h5:
        h5.create_dataset("segbin", shape=(1 << 28, 1), dtype="f8")
    assert path.stat().st_size < 64 << 10
    _assert_model_file_error(_load_in_child(path), path, "segbin", str(1 << 28), str(MAX_ROWS))


def test_consistent_but_huge_declared_shapes(tmp_path):
    """The issue's second input: every shape consistent with 3N = 3 * 2^21 (about 5 GB),
    nothing written, a 5 KB file."""
    n3 = 3 << 21
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as h5:
        for name, shape in (("shapeMU", (n3, 1)), ("shapePC", (n3, K)), ("shapeEV", (K, 1)), ("texMU", (n3, 1)),
                            ("texPC", (n3, K)), ("texEV", (K, 1)), ("faces", (10, 3))):
            h5.create_dataset(name, shape=shape, dtype="f8")
    assert path.stat().st_size < 16 << 10
    _assert_model_file_error(_load_in_child(path), path, "shapeMU", str(n3))


def test_unwritten_datasets_within_the_bounds(tmp_path):
    """Shapes a model may have (150,000 vertices), nothing stored: HDF5 would read fill values."""
    n3 = 3 * 150_000
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as h5:
        for name, shape in (("shapeMU", (n3, 1)), ("shapePC", (n3, K)), ("shapeEV", (K, 1)), ("texMU", (n3, 1)),
                            ("texPC", (n3, K)), ("texEV", (K, 1)), ("faces", (10, 3))):
            h5.create_dataset(name, shape=shape, dtype="f8")
    _assert_model_file_error(_load_in_child(path, mem_mb=256), path, "shapeMU", "never written")


def test_chunk_that_inflates_beyond_its_size(tmp_path):
    """A gzip chunk declared 12 KB whose stream inflates to 64 MB (64 KB on disk): libhdf5's
    deflate filter grows its buffer to the whole stream, then keeps the first 12 KB quietly."""
    def bomb(h5, name):
        d = h5.create_dataset(name, shape=(3 * N, K), dtype="f4", chunks=(3 * N, K), compression="gzip")
        d.id.write_direct_chunk((0, 0), zlib.compress(bytes(64 << 20), 9))

    path = _model_with(tmp_path / "m.h5", shapePC=bomb)
    _assert_model_file_error(_load_in_child(path, mem_mb=256), path, "shapePC", "inflates beyond the chunk size")


def test_chunks_never_written(tmp_path):
    def partial(h5, name):
        d = h5.create_dataset(name, shape=(3 * N, K), dtype="f4", chunks=(10, K))
        d[:10] = 1.0

    path = _model_with(tmp_path / "m.h5", shapePC=partial)
    _assert_model_file_error(_load_in_child(path), path, "shapePC", "all 3 chunks", "found 1")


def test_fields_that_are_only_tested_for_are_not_read(tmp_path):
    """segbin (which only marks the untrimmed BFM) holding a chunk that inflates to 1 GiB: never
    read (reading it would exceed the child's memory); the file is refused as untrimmed."""
    def bomb(h5, name):
        d = h5.create_dataset(name, shape=(N, 4), dtype="u1", chunks=(N, 4), compression="gzip")
        d.id.write_direct_chunk((0, 0), zlib_zeros(1024))

    path = _model_with(tmp_path / "m.h5", segbin=bomb)
    _assert_model_file_error(_load_in_child(path, mem_mb=256), path, "untrimmed", "mod_struct_mat")


def test_more_components_than_a_model_has_refused_before_reading(tmp_path):
    path = _model_with(tmp_path / "m.h5", shapePC=lambda h5, n: h5.create_dataset(
        n, data=np.zeros((3 * N, MAX_COMPONENTS + 1), np.float32)))
    _assert_model_file_error(_load_in_child(path), path, "shapePC", f"at most {MAX_COMPONENTS} columns")


# --- links, storage, types and filters that no model file needs -------------------------

def _external_file(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["x"] = np.zeros((3 * N, K), np.float32)
    return other


def _virtual(tmp_path):
    other = _external_file(tmp_path)

    def write(h5, name):
        layout = h5py.VirtualLayout(shape=(3 * N, K), dtype="f4")
        layout[:] = h5py.VirtualSource(str(other), "x", shape=(3 * N, K))
        h5.create_virtual_dataset(name, layout)
    return write


def _external_storage(tmp_path):
    raw = tmp_path / "raw.bin"
    raw.write_bytes(bytes(3 * N * K * 4))
    return lambda h5, name: h5.create_dataset(name, shape=(3 * N, K), dtype="f4", external=[(str(raw), 0, 3 * N * K * 4)])


def _compound(h5, name):
    h5[name] = np.zeros(3 * N, dtype=[("x", "f4"), ("y", "f4")])


def _reference(h5, name):
    h5.create_dataset(name, shape=(3 * N,), dtype=h5py.ref_dtype)


def _enum(h5, name):
    h5.create_dataset(name, data=np.zeros(3 * N, np.uint8), dtype=h5py.enum_dtype({"a": 0, "b": 1}, basetype="u1"))


def _vlen(h5, name):
    h5.create_dataset(name, shape=(3 * N,), dtype=h5py.vlen_dtype(np.float32))


HOSTILE = {
    "an external link": (lambda tmp: {"shapePC": lambda h5, n: h5.__setitem__(n, h5py.ExternalLink(str(_external_file(tmp)), "x"))},
                         ["ExternalLink", "other.h5"]),
    "a soft link": (lambda tmp: {"shapePC": lambda h5, n: h5.__setitem__(n, h5py.SoftLink("/texPC"))}, ["SoftLink"]),
    "a virtual dataset": (lambda tmp: {"shapePC": _virtual(tmp)}, ["virtual dataset"]),
    "external storage": (lambda tmp: {"shapePC": _external_storage(tmp)}, ["external storage", "raw.bin"]),
    "a group": (lambda tmp: {"shapePC": lambda h5, n: h5.create_group(n)}, ["numeric dataset", "Group"]),
    "strings": (lambda tmp: {"shapeMU": lambda h5, n: h5.__setitem__(n, np.array([b"1.0"] * 3 * N))},
                ["found strings"]),
    "a compound type": (lambda tmp: {"shapeMU": _compound}, ["compound"]),
    "object references": (lambda tmp: {"shapeMU": _reference}, ["object references"]),
    "an enum": (lambda tmp: {"shapeMU": _enum}, ["an enum"]),
    "variable-length data": (lambda tmp: {"shapeMU": _vlen}, ["variable-length"]),
    "complex numbers": (lambda tmp: {"shapeMU": lambda h5, n: h5.__setitem__(n, np.zeros(3 * N, np.complex64))},
                        ["compound"]),
    "a 3-D dataset": (lambda tmp: {"shapeMU": lambda h5, n: h5.__setitem__(n, np.zeros((3, N, 1)))},
                      ["at most 2 dimensions", "float64[3, 10, 1]"]),
    "the lzf filter": (lambda tmp: {"shapePC": lambda h5, n: h5.create_dataset(
        n, data=np.zeros((3 * N, K), np.float32), compression="lzf")}, ["HDF5 filter 32000", "lzf"]),
    "the scale-offset filter": (lambda tmp: {"shapePC": lambda h5, n: h5.create_dataset(
        n, data=np.zeros((3 * N, K), np.float32), scaleoffset=2)}, ["HDF5 filter 6"]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_datasets(tmp_path, case):
    make, words = HOSTILE[case]
    replace = make(tmp_path)
    path = _model_with(tmp_path / "m.h5", **replace)
    field = next(iter(replace))
    _assert_model_file_error(_load_in_child(path), path, field, *words)


def test_too_many_members(tmp_path):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as h5:
        for i in range(MAX_LINKS + 1):
            h5.create_group(f"g{i}")
    _assert_model_file_error(_load_in_child(path), path, f"at most {MAX_LINKS} members")


def test_truncated_file(tmp_path):
    path = write_h5(tmp_path / "m.h5", trimmed_arrays(N, K, seed=1))
    path.write_bytes(path.read_bytes()[:-4000])
    _assert_model_file_error(_load_in_child(path), path)


# --- filtered chunks decoded here equal h5py's own reading --------------------------

@pytest.mark.parametrize("dtype", ["f4", ">f8", "i2", "u1", "<u8"])
@pytest.mark.parametrize("filters", [dict(compression="gzip"), dict(compression="gzip", shuffle=True),
                                     dict(compression="gzip", shuffle=True, fletcher32=True),
                                     dict(fletcher32=True), dict(shuffle=True)])
def test_filtered_chunks_read_as_h5py_reads_them(tmp_path, dtype, filters):
    """Edge chunks (37 x 11 in chunks of 8 x 4), every supported filter combination, either
    byte order: the decoder's array equals h5py's (libhdf5's) reading of the same dataset."""
    a = (np.random.default_rng(0).uniform(0, 100, (37, 11))).astype(dtype)
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("x", data=a, chunks=(8, 4), **filters)
    src = FieldSource(path, ("x",))
    got = src.raw("x")
    with h5py.File(path, "r") as h5:
        reference = h5["x"][()]
    assert got.dtype == reference.dtype
    np.testing.assert_array_equal(got, reference)


@pytest.mark.parametrize("matlab73", [False, True])
def test_gzip_chunked_model_loads(tmp_path, matlab73):
    fields = trimmed_arrays(N, K, seed=2)
    path = tmp_path / ("m.mat" if matlab73 else "m.h5")
    with h5py.File(path, "w", userblock_size=512 if matlab73 else 0) as h5:
        g = h5.create_group("BFM") if matlab73 else h5
        for name, a in fields.items():
            a = np.asarray(a).T if matlab73 else np.asarray(a)
            g.create_dataset(name, data=a, compression="gzip", shuffle=True, chunks=tuple(max(1, s // 3) for s in a.shape))
    if matlab73:
        from bfm_files import MATLAB73_HEADER

        with open(path, "r+b") as f:
            f.write(MATLAB73_HEADER.ljust(128, b" "))
    model = load_trimmed(path)
    assert_model_matches(model, expected_trimmed(fields))
