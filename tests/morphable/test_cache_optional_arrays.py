"""The cache's optional arrays of issue 9 (docs/model_cache_format.md): `landmarks_outer` (only
with `landmarks`, same length, indices in range) and the expression basis (`expression_mean`,
`expression_basis`, `expression_sigma`: all or none, [3N], [Ke, 3N] with 1 <= Ke <= 384, [Ke],
finite). Both readers refuse each broken file with the same message, and accept and see the
same model in the valid ones; the writer round-trips them."""
from __future__ import annotations

import numpy as np
import pytest

import cache_bytes as cb
from engine.errors import InputError, ModelFileError
from engine.morphable import MorphableModel, synthetic_model, write_cache
from engine.morphable.cache import read_cache
from engine.morphable.model import MAX_COMPONENTS

HAVE_CPP = cb.cpp_reader() is not None


def _write(tmp_path, arrays, name="m.e3dmm"):
    path = tmp_path / name
    path.write_bytes(bytes(cb.build(arrays)))
    return path


def _both_refuse(path, *parts, field=None):
    """Both refuse; the Python message holds every part. The C++ message is the same words,
    except for an index out of range, where each reader words it its own way (as for faces and
    landmarks before): then it names `field` and the index."""
    ok, msg = cb.python_verdict(path)
    assert not ok, msg
    for p in parts:
        assert p in msg, (p, msg)
    if HAVE_CPP:
        ok_c, msg_c = cb.cpp_verdict(path)
        assert not ok_c
        if field is None:
            assert msg_c == msg  # the one spec, the same words
        else:
            assert field in msg_c and parts[-1] in msg_c, msg_c
    return msg


def _drop(arrays, *names):
    return {k: v for k, v in arrays.items() if k not in names}


CASES = {
    "outer without landmarks": (lambda a: _drop(a, "landmarks"),
                                ["array 'landmarks'", "present (required with landmarks_outer)"]),
    "expression mean missing": (lambda a: _drop(a, "expression_mean"),
                                ["array 'expression_mean'", "the expression arrays come together"]),
    "expression basis and sigma missing": (lambda a: _drop(a, "expression_basis", "expression_sigma"),
                                           ["array 'expression_basis'", "come together"]),
    "outer of another length": (lambda a: {**a, "landmarks_outer": a["landmarks_outer"][:2].copy()},
                                ["array 'landmarks_outer' shape", "expected [3] (L from landmarks)", "found [2]"]),
    "expression mean of another model": (lambda a: {**a, "expression_mean": np.zeros(9, "<f4")},
                                         ["array 'expression_mean' shape", "expected [12] (3N from shape_mean)"]),
    "expression basis columns": (lambda a: {**a, "expression_basis": np.zeros((2, 9), "<f4")},
                                 ["array 'expression_basis' shape", "[Ke, 12] with 1 <= Ke <= 384"]),
    "too many expression components": (
        lambda a: {**a, "expression_basis": np.zeros((MAX_COMPONENTS + 1, 12), "<f4"),
                   "expression_sigma": np.ones(MAX_COMPONENTS + 1, "<f4")},
        ["array 'expression_basis' shape", f"found [{MAX_COMPONENTS + 1}, 12]"]),
    "expression sigma length": (lambda a: {**a, "expression_sigma": np.ones(3, "<f4")},
                                ["array 'expression_sigma' shape", "expected [2] (Ke from expression_basis)"]),
    "outer index out of range": (lambda a: {**a, "landmarks_outer": np.array([0, 4, 1], "<i4")},
                                 ["landmarks_outer", "vertex indices in [0, 3]", "4"]),
    "negative outer index": (lambda a: {**a, "landmarks_outer": np.array([0, 1, -1], "<i4")},
                             ["landmarks_outer", "-1"]),
    "NaN in the expression basis": (
        lambda a: {**a, "expression_basis": np.where(np.arange(24).reshape(2, 12) == 13, np.nan,
                                                     a["expression_basis"]).astype("<f4")},
        ["expression_basis", "finite values", "nan at [1, 1]"]),
    "Inf in the expression mean": (lambda a: {**a, "expression_mean": np.full(12, np.inf, "<f4")},
                                   ["expression_mean", "12 non-finite values"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_optional_arrays_are_refused_alike(tmp_path, case):
    change, parts = CASES[case]
    arrays = change(cb.tiny_arrays(n=4, landmarks=3, outer=True, ke=2, seed=1))
    _both_refuse(_write(tmp_path, arrays), *parts, field="landmarks_outer" if "index" in case else None)


def test_valid_optional_arrays_are_read_alike_and_round_trip(tmp_path):
    arrays = cb.tiny_arrays(n=4, landmarks=3, outer=True, ke=2, seed=2)
    path = _write(tmp_path, arrays)
    py = cb.python_verdict(path)
    assert py[0] and "outer True Ke 2" in py[1]
    if HAVE_CPP:
        assert cb.cpp_verdict(path) == py
    m = read_cache(path)
    for name in ("landmarks_outer", "expression_mean", "expression_basis", "expression_sigma"):
        np.testing.assert_array_equal(getattr(m, name), arrays[name], err_msg=name)
    # The writer writes them back in the spec's table order, byte for byte the same arrays.
    write_cache(m, tmp_path / "again.e3dmm")
    again = read_cache(tmp_path / "again.e3dmm")
    for name in ("landmarks", "landmarks_outer", "expression_mean", "expression_basis", "expression_sigma"):
        np.testing.assert_array_equal(getattr(again, name), arrays[name], err_msg=name)


def test_synthetic_model_round_trips_with_its_landmarks_and_expression(tmp_path):
    m = synthetic_model(0)
    write_cache(m, tmp_path / "s.e3dmm")
    c = read_cache(tmp_path / "s.e3dmm")
    assert c.synthetic and c.expression_components == 29
    for name in ("landmarks", "landmarks_outer", "expression_mean", "expression_basis", "expression_sigma"):
        np.testing.assert_array_equal(getattr(c, name), getattr(m, name), err_msg=name)
    if HAVE_CPP:
        s = cb.cpp_reader()(str(tmp_path / "s.e3dmm"))
        assert (s["num_landmarks"], s["has_landmarks_outer"], s["expression_components"]) == (68, True, 29)


def test_models_the_writer_refuses(tmp_path):
    """The model's own check comes first (a MorphableModel cannot hold a broken group), and the
    writer never writes what a reader would refuse."""
    a = cb.tiny_arrays(n=4, landmarks=3, outer=True, ke=2, seed=3)
    base = {k: v for k, v in a.items() if not k.startswith("expression") and k != "landmarks_outer"}
    with pytest.raises(ModelFileError, match="landmarks_outer: expected only with 'landmarks'"):
        MorphableModel(**_drop(base, "landmarks"), landmarks_outer=a["landmarks_outer"])
    with pytest.raises(ModelFileError, match="expression_sigma: expected present"):
        MorphableModel(**base, expression_mean=a["expression_mean"], expression_basis=a["expression_basis"])
    with pytest.raises(ModelFileError, match="expression_basis: expected float32"):
        MorphableModel(**base, expression_mean=a["expression_mean"],
                       expression_basis=a["expression_basis"].astype(np.float64), expression_sigma=a["expression_sigma"])
    m = MorphableModel(**base)
    object.__setattr__(m, "expression_mean", a["expression_mean"])  # bypassing the model's check
    with pytest.raises(InputError, match="cannot write this model as a cache: array 'expression_basis'"):
        write_cache(m, tmp_path / "x.e3dmm")
    assert not (tmp_path / "x.e3dmm").exists()
