"""The `.e3dmm` cache: round trips, the byte layout of docs/model_cache_format.md (parsed here
with `struct`, independently of the reader), and one ModelFileError per kind of damage."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from engine.errors import InputError, ModelFileError
from engine.morphable import MorphableModel, load_model, read_cache, synthetic_model, write_cache

FIELDS = ("shape_mean", "shape_basis", "shape_sigma", "tex_mean", "tex_basis", "tex_sigma", "faces", "landmarks")


def small_model(n=10, ks=4, kt=3, landmarks=True, seed=0) -> MorphableModel:
    rng = np.random.default_rng(seed)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return MorphableModel(
        shape_mean=f32(3 * n), shape_basis=f32(ks, 3 * n), shape_sigma=f32(ks),
        tex_mean=f32(3 * n), tex_basis=f32(kt, 3 * n), tex_sigma=f32(kt),
        faces=rng.integers(0, n, (7, 3)).astype(np.int32),
        landmarks=rng.integers(0, n, 68).astype(np.int32) if landmarks else None,
        metadata={"synthetic": False, "name": "small", "source": "test arrays"})


def parse(path):
    """Header and array table by the spec, with nothing from engine."""
    data = path.read_bytes()
    magic, version, count, meta_off, meta_n, file_n = struct.unpack_from("<8sIIQQQ", data, 0)
    table = {}
    for i in range(count):
        name, dt, ndim, d0, d1, off, nb = struct.unpack_from("<24sIIQQQQ", data, 64 + 64 * i)
        table[name.rstrip(b"\0").decode()] = dict(dtype=dt, ndim=ndim, dims=(d0, d1), offset=off, nbytes=nb, at=64 + 64 * i)
    meta = json.loads(data[meta_off:meta_off + meta_n])
    return dict(magic=magic, version=version, count=count, file_nbytes=file_n, size=len(data), table=table, meta=meta)


@pytest.mark.parametrize("landmarks", [True, False])
def test_round_trip_small(tmp_path, landmarks):
    model = small_model(landmarks=landmarks)
    write_cache(model, tmp_path / "m.e3dmm")
    back = read_cache(tmp_path / "m.e3dmm")
    for name in FIELDS:
        a, b = getattr(model, name), getattr(back, name)
        if a is None:
            assert b is None
            continue
        assert b.dtype == a.dtype and b.shape == a.shape
        np.testing.assert_array_equal(a, b)
    assert back.metadata["name"] == "small" and back.metadata["synthetic"] is False


def test_layout_follows_the_spec(tmp_path):
    write_cache(small_model(), tmp_path / "m.e3dmm")
    p = parse(tmp_path / "m.e3dmm")
    assert p["magic"] == b"E3DMMBIN" and p["version"] == 1 and p["file_nbytes"] == p["size"]
    assert p["meta"]["format"] == "e3dmm-cache" and p["meta"]["synthetic"] is False
    expected = {"shape_mean": (1, 1, (30, 1)), "shape_basis": (1, 2, (4, 30)), "shape_sigma": (1, 1, (4, 1)),
                "tex_mean": (1, 1, (30, 1)), "tex_basis": (1, 2, (3, 30)), "tex_sigma": (1, 1, (3, 1)),
                "faces": (3, 2, (7, 3)), "landmarks": (3, 1, (68, 1))}
    assert {k: (v["dtype"], v["ndim"], v["dims"]) for k, v in p["table"].items()} == expected
    data = (tmp_path / "m.e3dmm").read_bytes()
    model = small_model()
    for name, rec in p["table"].items():
        assert rec["offset"] % 64 == 0 and rec["offset"] + rec["nbytes"] <= p["size"]
        dt = {1: "<f4", 3: "<i4"}[rec["dtype"]]
        got = np.frombuffer(data, dt, rec["nbytes"] // 4, rec["offset"])
        np.testing.assert_array_equal(got, getattr(model, name).ravel())


def test_synthetic_round_trip_is_a_read_only_memmap(tmp_path):
    model = synthetic_model(0)
    write_cache(model, tmp_path / "syn.e3dmm")
    back = load_model(tmp_path / "syn.e3dmm")
    assert back.synthetic and back.metadata["name"] == "synthetic-bfm-46990"
    for name in FIELDS[:-1]:
        a = getattr(back, name)
        np.testing.assert_array_equal(a, getattr(model, name))
        assert not a.flags.writeable and a.flags.c_contiguous
        base = a
        while base is not None and not isinstance(base, np.memmap):
            base = base.base
        assert isinstance(base, np.memmap), f"{name} is a copy, not a view of the mapped file"
    assert parse(tmp_path / "syn.e3dmm")["meta"]["synthetic"] is True


def test_write_into_missing_folder_leaves_nothing(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_cache(small_model(), tmp_path / "no" / "m.e3dmm")
    assert not (tmp_path / "no").exists()


# --- damage: every kind is a ModelFileError naming the file and the field --------------

def _patch(data: bytearray, offset: int, fmt: str, *values) -> None:
    struct.pack_into(fmt, data, offset, *values)


def _damage(kind, data: bytearray, p) -> None:
    t = p["table"]
    if kind == "truncated":
        del data[-100:]
    elif kind == "magic":
        data[0:8] = b"E3DMMBIX"
    elif kind == "version":
        _patch(data, 8, "<I", 2)
    elif kind == "file_nbytes":
        _patch(data, 32, "<Q", p["file_nbytes"] + 64)
    elif kind == "count":
        _patch(data, 12, "<I", 10_000)
    elif kind == "misaligned":
        _patch(data, t["tex_mean"]["at"] + 48, "<Q", t["tex_mean"]["offset"] + 4)
    elif kind == "outside":
        _patch(data, t["tex_basis"]["at"] + 48, "<Q", p["size"] // 64 * 64)  # aligned, runs past the end
    elif kind == "nbytes":
        _patch(data, t["shape_sigma"]["at"] + 56, "<Q", t["shape_sigma"]["nbytes"] + 4)
    elif kind == "dtype code":
        _patch(data, t["faces"]["at"] + 24, "<I", 7)
    elif kind == "faces dtype":
        _patch(data, t["faces"]["at"] + 24, "<I", 1)
    elif kind == "misshaped":  # shape_basis as [2, 60]: same bytes, wrong shape
        _patch(data, t["shape_basis"]["at"] + 32, "<QQ", 2, 60)
    elif kind == "ndim":
        _patch(data, t["faces"]["at"] + 28, "<I", 3)
    elif kind == "missing":  # the landmarks record moves over tex_sigma's, and the table shrinks to 7
        at, lm = t["tex_sigma"]["at"], t["landmarks"]["at"]
        data[at:at + 64] = data[lm:lm + 64]
        _patch(data, 12, "<I", 7)
    elif kind == "unknown name":
        _patch(data, t["tex_sigma"]["at"], "<24s", b"tex_sigmb")
    elif kind == "duplicate":
        _patch(data, t["tex_sigma"]["at"], "<24s", b"shape_sigma")
    elif kind == "face range":
        _patch(data, t["faces"]["offset"] + 8, "<i", 10)
    elif kind == "negative face":
        _patch(data, t["faces"]["offset"], "<i", -1)
    elif kind == "landmark range":
        _patch(data, t["landmarks"]["offset"], "<i", 99)
    elif kind == "metadata json":
        off = t["shape_mean"]["at"] + 64 * len(t)  # metadata follows the table
        data[off] = ord("[")
    else:
        raise AssertionError(kind)


DAMAGE = {
    "truncated": "file_nbytes", "magic": "magic", "version": "version", "file_nbytes": "file_nbytes",
    "count": "array_count", "misaligned": "array 'tex_mean' offset", "outside": "array 'tex_basis' offset",
    "nbytes": "array 'shape_sigma' nbytes", "dtype code": "array 'faces' dtype", "faces dtype": "array 'faces' dtype",
    "misshaped": "shape_basis", "ndim": "array 'faces' ndim", "missing": "array 'tex_sigma': expected present (required)",
    "unknown name": "array table record 5 name: expected one of shape_mean",
    "duplicate": "array 'shape_sigma'", "face range": "faces", "negative face": "faces",
    "landmark range": "landmarks", "metadata json": "metadata",
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_cache_is_a_model_file_error(tmp_path, kind):
    path = tmp_path / "m.e3dmm"
    write_cache(small_model(), path)
    data = bytearray(path.read_bytes())
    _damage(kind, data, parse(path))
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as e:
        read_cache(path)
    msg = str(e.value)
    assert str(path) in msg and DAMAGE[kind] in msg and "expected" in msg and "found" in msg, msg


def test_tiny_and_absent_files(tmp_path):
    (tmp_path / "t.e3dmm").write_bytes(b"E3DMMBIN")
    with pytest.raises(ModelFileError, match="header: expected 64 bytes, found a file of 8 bytes"):
        load_model(tmp_path / "t.e3dmm")
    (tmp_path / "z.e3dmm").write_bytes(b"")
    with pytest.raises(ModelFileError, match="z.e3dmm"):
        load_model(tmp_path / "z.e3dmm")
    with pytest.raises(ModelFileError, match="nothing at this path"):
        read_cache(tmp_path / "absent.e3dmm")


def test_inconsistent_arrays_are_rejected_at_construction():
    m = small_model()
    with pytest.raises(ModelFileError, match=r"tex_basis: expected float32\[K, 30\]"):
        MorphableModel(m.shape_mean, m.shape_basis, m.shape_sigma, m.tex_mean, m.tex_basis[:, :12],
                       m.tex_sigma, m.faces)
    with pytest.raises(ModelFileError, match="shape_basis: expected float32, found float64"):
        MorphableModel(m.shape_mean, m.shape_basis.astype(np.float64), m.shape_sigma, m.tex_mean,
                       m.tex_basis, m.tex_sigma, m.faces)
