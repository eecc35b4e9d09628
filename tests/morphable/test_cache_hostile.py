"""The hostile caches of issue 13 (findings 2, 3, 4, 7, 8), each built exactly, tiny: the
Python reader refuses every one with a ModelFileError naming the file and the field (never a
ValueError, RecursionError or OSError), and the C++ reader (engine._C) gives the same verdict."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

import cache_bytes as cb
from engine.errors import InputError
from engine.morphable import MorphableModel, write_cache
from engine.morphable import model as model_module
from engine.morphable.cache import read_cache

HAVE_CPP = cb.cpp_reader() is not None


def refused_by_both(path, *parts) -> str:
    """Both readers refuse `path`; every part is in the Python message. Returns it."""
    ok, msg = cb.python_verdict(path)
    assert not ok, f"Python accepted {path}: {msg}"
    assert msg.startswith(f"{path}: ") and "expected" in msg and "found" in msg, msg
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"
    if HAVE_CPP:
        ok, cpp_msg = cb.cpp_verdict(path)
        assert not ok, f"C++ accepted what Python refused: {msg}"
        assert cpp_msg.startswith(f"{path}: "), cpp_msg
    return msg


def write(tmp_path, name, data) -> str:
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return str(path)


# --- finding 2: Ks + Kt wrapped negative in C++ ------------------------------------

def test_finding2_huge_texture_basis_overlapping_its_sigma_in_a_sparse_file(tmp_path):
    """1 vertex, 1 shape component, 2^31 - 1 texture components; tex_basis and tex_sigma share
    one sparse region (25.8 GB on paper, 8 KB on disk)."""
    kt, meta = 2**31 - 1, cb.meta_bytes()
    recs = [("shape_mean", 1, 1, 3, 1), ("shape_basis", 1, 2, 1, 3), ("shape_sigma", 1, 1, 1, 1),
            ("tex_mean", 1, 1, 3, 1), ("faces", 3, 2, 1, 3), ("tex_basis", 1, 2, kt, 3), ("tex_sigma", 1, 1, kt, 1)]
    data = bytearray(1024)
    pos = 640
    for i, (name, code, ndim, d0, d1) in enumerate(recs):
        off = pos if name != "tex_sigma" else pos - 64  # tex_sigma at tex_basis's offset
        struct.pack_into(cb.RECORD, data, 64 + 64 * i, name.encode(), code, ndim, d0, d1, off, d0 * d1 * 4)
        pos += 64
    size = (pos - 128) + kt * 3 * 4
    struct.pack_into(cb.HEADER, data, 0, b"E3DMMBIN", 1, 7, 512, len(meta), size, bytes(24))
    data[512:512 + len(meta)] = meta
    path = write(tmp_path, "kt_overflow.e3dmm", data)
    os.truncate(path, size)  # sparse
    refused_by_both(path, "array 'tex_basis' offset", "does not overlap array 'tex_sigma'")
    # Without the overlap, a component count past the bound is refused as a shape.
    arrays = cb.tiny_arrays(kt=model_module.MAX_COMPONENTS + 1)
    refused_by_both(write(tmp_path, "kt401.e3dmm", cb.build(arrays)), "array 'tex_basis' shape",
                    f"Kt <= {model_module.MAX_COMPONENTS}", f"[{model_module.MAX_COMPONENTS + 1}, 12]")


# --- finding 3: dims that multiply to 0 with 0 bytes ---------------------------------

@pytest.mark.parametrize("name, dims", [("shape_basis", (2**64 - 64, 0)), ("shape_basis", (0, 2**62)),
                                        ("faces", (0, 3)), ("tex_sigma", (0, 1)), ("faces", (2**33, 2**31))])
def test_finding3_dims_with_a_zero_or_wrapping_product(tmp_path, name, dims):
    data = cb.valid()
    cb.put(data, name, cb.DIM0, dims[0])
    cb.put(data, name, cb.DIM1, dims[1])
    cb.put(data, name, cb.NBYTES, (dims[0] * dims[1] * 4) % 2**64)
    refused_by_both(write(tmp_path, "dims.e3dmm", data), f"array '{name}' dims", "[1, 2147483647]",
                    f"({dims[0]}, {dims[1]})")


def test_an_empty_landmark_list_is_written_as_no_record(tmp_path):
    """Zero-sized arrays are never in a file: a model with no landmark rows has no record."""
    arrays = cb.tiny_arrays()
    m = MorphableModel(**{k: arrays[k] for k in cb.ORDER[:7]}, landmarks=np.zeros(0, np.int32),
                       metadata={"name": "x", "source": "y"})
    write_cache(m, tmp_path / "m.e3dmm")
    assert read_cache(tmp_path / "m.e3dmm").landmarks is None


# --- finding 4: nesting ---------------------------------------------------------------

@pytest.mark.parametrize("arrays, ok", [(63, True), (64, False), (1000, False), (100_000, False)])
def test_finding4_nesting_depth_limit_is_the_same_in_both(tmp_path, arrays, ok):
    meta = cb.meta_bytes()[:-1] + b', "deep": ' + b"[" * arrays + b"]" * arrays + b"}"
    path = write(tmp_path, "deep.e3dmm", cb.valid(meta=meta))
    if ok:
        assert cb.python_verdict(path)[0] and (not HAVE_CPP or cb.cpp_verdict(path)[0])
    else:
        refused_by_both(path, "metadata", "nesting depth of at most 64", f"depth {arrays + 1}")


def test_finding4_brackets_inside_strings_do_not_count(tmp_path):
    meta = cb.meta_bytes(deep="[" * 500 + '\\"{' * 100, arr=[[['"]]]]\\"[[[']]])
    path = write(tmp_path, "s.e3dmm", cb.valid(meta=meta))
    assert cb.python_verdict(path)[0] and (not HAVE_CPP or cb.cpp_verdict(path)[0])


# --- finding 7: what the two readers disagreed on ---------------------------------------

HEAD = cb.meta_bytes()[:-1]
META_VARIANTS = {  # metadata -> a part of the Python message
    "nan literal": (HEAD + b', "v": NaN}', "non-standard literal NaN"),
    "infinity literal": (HEAD + b', "v": Infinity}', "non-standard literal Infinity"),
    "-infinity literal": (HEAD + b', "v": -Infinity}', "non-standard literal -Infinity"),
    "leading zero": (HEAD + b', "v": 01}', "invalid JSON"),
    "negative leading zero": (HEAD + b', "v": -00.5}', "invalid JSON"),
    "duplicate top-level key": (HEAD + b', "name": "again"}', "the key 'name' twice"),
    "duplicate nested key": (HEAD + b', "o": {"a": 1, "a": 2}}', "the key 'a' twice"),
    "duplicate after unescaping": (HEAD + b', "o": {"a": 1, "\\u0061": 2}}', "the key 'a' twice"),
    "lone high surrogate": (HEAD + b', "s": "\\ud800"}', "lone surrogate"),
    "lone low surrogate": (HEAD + b', "s": "x\\udc00"}', "lone surrogate"),
    "high then not low": (HEAD + b', "s": "\\ud800\\u0041"}', "lone surrogate"),
    "65-character number": (HEAD + b', "v": 1' + b"0" * 64 + b"}", "numbers of at most 64 characters"),
    "5000-digit integer": (HEAD + b', "v": ' + b"9" * 5000 + b"}", "numbers of at most 64 characters"),
    "plus sign": (HEAD + b', "v": +1}', "invalid JSON"),
    "bare fraction": (HEAD + b', "v": .5}', "invalid JSON"),
    "trailing comma": (HEAD + b", }", "invalid JSON"),
    "comment": (HEAD + b"} // c", "invalid JSON"),
    "single quotes": (HEAD + b", 'v': 1}", "invalid JSON"),
    "byte-order mark": (b"\xef\xbb\xbf" + HEAD + b"}", "invalid JSON"),
    "control character": (HEAD + b', "s": "a\tb"}', "invalid JSON"),
    "form feed as whitespace": (HEAD + b',\x0c"v": 1}', "invalid JSON"),
    "non-ASCII digit": (HEAD + b', "v": \xd9\xa1}', "invalid JSON"),
    "overlong UTF-8": (HEAD + b', "s": "\xc0\xaf"}', "UTF-8"),
    "encoded surrogate": (HEAD + b', "s": "\xed\xa0\x80"}', "UTF-8"),
    "not an object": (b"[1, 2]", "a JSON object"),
    "name not a string": (json.dumps({**cb.META, "name": 1}).encode(), "\"name\": expected a string"),
    "synthetic not a bool": (json.dumps({**cb.META, "synthetic": 1}).encode(), "\"synthetic\""),
    "format missing": (json.dumps({k: v for k, v in cb.META.items() if k != "format"}).encode(), "\"format\""),
}


@pytest.mark.parametrize("kind", META_VARIANTS)
def test_finding7_metadata_outside_the_dialect(tmp_path, kind):
    meta, part = META_VARIANTS[kind]
    refused_by_both(write(tmp_path, "meta.e3dmm", cb.valid(meta=meta)), "metadata", part)


def test_finding7_metadata_inside_the_dialect_is_accepted_by_both(tmp_path):
    meta = HEAD + (b', "n": -0.5e+3, "z": 0, "e": 1E400, "emoji": "\\ud83d\\ude00", "esc": "\\"\\\\\\/\\b\\f\\n\\r\\t",'
                   b' "w": 1' + b"0" * 63 + b', "u": "\xc3\xa9", "nested": {"a": [null, true, false, {}]},'
                   b' "ws":\t\r\n [ ] }')
    path = write(tmp_path, "ok.e3dmm", cb.valid(meta=meta))
    ok, msg = cb.python_verdict(path)
    assert ok, msg
    if HAVE_CPP:
        assert cb.cpp_verdict(path) == (ok, msg)


def _in_header(d):
    return cb.put(d, "shape_sigma", cb.OFFSET, 0)


TABLE_VARIANTS = {
    "array inside the header": (_in_header, "array 'shape_sigma' offset/nbytes"),
    "array inside the table": (lambda d: cb.put(d, "shape_sigma", cb.OFFSET, 64), "array 'shape_sigma' offset/nbytes"),
    "arrays overlapping": (lambda d: cb.put(d, "tex_sigma", cb.OFFSET, cb.get(d, "tex_basis", cb.OFFSET)),
                           "does not overlap"),
    "array over the metadata": (lambda d: cb.put(d, "landmarks", cb.OFFSET, 64 * 9), "does not overlap"),
    "metadata inside the table": (lambda d: cb.put_header(d, 16, 64 + 64 * 7), "metadata_offset"),
    "metadata over an array": (lambda d: cb.put_header(d, 16, cb.get(d, "shape_basis", cb.OFFSET)), "does not overlap"),
    "NUL inside a name": (lambda d: d.__setitem__(64 + 5, 0), "record 0 name"),
    "non-printable name byte": (lambda d: d.__setitem__(64 + 64 * 3 + 2, 0x7F), "record 3 name"),
    "bytes after the name's NUL": (lambda d: d.__setitem__(64 + 64 * 6 + 20, ord("x")), "record 6 name"),
    "unknown name": (lambda d: d.__setitem__(slice(64, 74), b"shape_meen"), "record 0 name"),
    "reserved byte": (lambda d: d.__setitem__(50, 1), "reserved"),
    "float16 dtype": (lambda d: cb.put(d, "shape_mean", cb.DTYPE, 2), "array 'shape_mean' dtype"),
    "array_count 13": (lambda d: cb.put_header(d, 12, 13), "array_count"),  # 7 to 12 arrays exist
    "array_count 6": (lambda d: cb.put_header(d, 12, 6), "array_count"),
    "metadata of 1 byte": (lambda d: cb.put_header(d, 24, 1), "metadata_offset"),
}


@pytest.mark.parametrize("kind", TABLE_VARIANTS)
def test_finding7_placement_names_and_header(tmp_path, kind):
    mutate, part = TABLE_VARIANTS[kind]
    data = cb.valid()
    mutate(data)
    refused_by_both(write(tmp_path, "bad.e3dmm", data), part)


# --- finding 8: errors that named nothing ------------------------------------------------

@pytest.mark.parametrize("name", ["shape_mean", "shape_basis", "shape_sigma", "tex_mean", "tex_basis", "tex_sigma"])
@pytest.mark.parametrize("value", [np.nan, -np.inf])
def test_finding8_non_finite_values_name_the_file_and_the_field(tmp_path, name, value):
    arrays = cb.tiny_arrays()
    arrays[name].reshape(-1)[1] = value
    path = write(tmp_path, "nan.e3dmm", cb.build(arrays))
    msg = refused_by_both(path, f"{path}: {name}: expected finite values", f"the first {float(value)} at")
    if HAVE_CPP:
        assert cb.cpp_verdict(path)[1] == msg  # word for word


def test_open_and_stat_failures_are_model_file_errors(tmp_path):
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.e3dmm")
    os.symlink(tmp_path / "loop.e3dmm", tmp_path / "loop.e3dmm")
    (tmp_path / "plain").write_bytes(b"x")
    os.mkfifo(tmp_path / "fifo.e3dmm")  # must be refused without waiting for a writer
    (tmp_path / "empty.e3dmm").write_bytes(b"")
    cases = {tmp_path: "a folder", tmp_path / "absent.e3dmm": "nothing at this path",
             tmp_path / "dangling.e3dmm": "nothing at this path", tmp_path / "loop.e3dmm": "symbolic links",
             tmp_path / "plain" / "x.e3dmm": "Not a directory", tmp_path / ("n" * 300): "File name too long",
             tmp_path / "fifo.e3dmm": "a special file", tmp_path / "empty.e3dmm": "a file of 0 bytes"}
    for path, part in cases.items():
        refused_by_both(str(path), part)


def test_finding8_a_mapping_that_fails_is_a_model_file_error(tmp_path):
    """ENOMEM from mmap (here: too little address space left) names the file, typed."""
    path = tmp_path / "big.e3dmm"
    path.write_bytes(bytes(cb.valid()))
    os.truncate(path, 256 << 20)  # sparse
    code = textwrap.dedent("""
        import resource, sys
        from engine.errors import ModelFileError
        from engine.morphable.cache import read_cache
        vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (64 << 20), vm + (64 << 20)))
        try:
            read_cache(sys.argv[1])
        except ModelFileError as e:
            print("ModelFileError:", e)
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"ModelFileError: {path}: file: expected a readable file that can be "
                                  "memory-mapped, found "), proc.stdout


# --- the bounds and the writer ---------------------------------------------------------

def test_cpp_limits_are_the_model_bounds():
    if not HAVE_CPP:
        pytest.skip("engine._C not built")
    from engine import _C

    assert _C.LIMITS == {"max_vertices": model_module.MAX_VERTICES, "max_components": model_module.MAX_COMPONENTS,
                         "max_faces": model_module.MAX_FACES, "max_landmarks": model_module.MAX_VERTICES}


@pytest.mark.parametrize("metadata, part", [
    ({"bad": float("nan")}, "ValueError"),
    ({"deep": json.loads("[" * 70 + "]" * 70)}, "nesting depth"),
    ({1: "a", "1": "b"}, "TypeError"),  # keys that JSON would turn into one
    ({"s": "\ud800"}, "UnicodeEncodeError"),
    ({"big": 10**70}, "numbers of at most 64 characters"),
])
def test_the_writer_never_writes_what_the_reader_refuses(tmp_path, metadata, part):
    arrays = cb.tiny_arrays()
    m = MorphableModel(**arrays, metadata={"name": "x", "source": "y", **metadata})
    with pytest.raises(InputError, match="cannot write this model as a cache") as e:
        write_cache(m, tmp_path / "m.e3dmm")
    assert part in str(e.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("reachable", [True, False], ids=["open-denied", "stat-denied"])
def test_a_file_without_read_permission_is_a_model_file_error(tmp_path, reachable):
    """EACCES on open (a 0000 file in a folder 'nobody' can reach) and on stat (a folder it
    cannot enter). Root reads any file, so the reader runs in a child that drops to 'nobody'
    after its imports (or is not root to begin with)."""
    with tempfile.TemporaryDirectory(dir="/tmp" if reachable else tmp_path) as folder:
        os.chmod(folder, 0o755 if reachable else 0o700)
        path = Path(folder) / "private.e3dmm"
        path.write_bytes(bytes(cb.valid()))
        path.chmod(0o000)
        code = textwrap.dedent("""
            import mmap, os, sys  # numpy imports mmap lazily; 'nobody' may not read the interpreter's folder
            from engine.errors import ModelFileError
            from engine.morphable.cache import read_cache
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                read_cache(sys.argv[1])
            except ModelFileError as e:
                print("ModelFileError:", e)
        """)
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = "a readable file that can be memory-mapped" if reachable else "a readable .e3dmm cache file"
    assert proc.stdout.startswith(f"ModelFileError: {path}: file: expected {expected}, found PermissionError: "
                                  "Permission denied"), proc.stdout
