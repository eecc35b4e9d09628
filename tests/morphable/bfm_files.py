"""Writers of BFM-format test files (BFM 2009, mod_struct, the release's trimmed model) in
every container users have: MATLAB v5 (scipy), h5py's row-major HDF5, and MATLAB v7.3
(HDF5 with a 512-byte MATLAB header, transposed matrices, structs as groups).

The arrays are random but seeded; tests compute the expected model from them directly.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.io

MATLAB73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Wed Nov 25 12:00:00 2026 HDF5 schema 1.00 ."


def bfm2009_arrays(n_vertices: int, n_components: int, seed: int, n_triangles: int = 50) -> dict[str, np.ndarray]:
    """BFM 2009's fields with its units: shape in micrometres, EV as standard deviations,
    tl 1-based, everything float32 like the real file."""
    rng = np.random.default_rng(seed)
    n3 = 3 * n_vertices
    return {
        "shapeMU": (rng.standard_normal((n3, 1)) * 5e4).astype(np.float32),
        "shapePC": rng.standard_normal((n3, n_components), dtype=np.float32),
        "shapeEV": np.sort(rng.uniform(1e4, 9e5, (n_components, 1)))[::-1].astype(np.float32),
        "texMU": rng.uniform(0, 255, (n3, 1)).astype(np.float32),
        "texPC": rng.standard_normal((n3, n_components), dtype=np.float32),
        "texEV": np.sort(rng.uniform(10, 4000, (n_components, 1)))[::-1].astype(np.float32),
        "tl": rng.integers(1, n_vertices + 1, (n_triangles, 3)).astype(np.float64),
        "segbin": (rng.random((n_vertices, 4)) > 0.5).astype(np.uint8),
    }


def mod_struct_arrays(n_bfm: int, n_kept: int, n_faces: int, seed: int) -> dict[str, np.ndarray]:
    """A mod_struct like the release's: uint16 1-based indices, tx, 68 inner landmarks and the
    outer ones, which differ on the 17 jaw points."""
    rng = np.random.default_rng(seed)
    inner = rng.integers(1, n_kept + 1, (1, 68)).astype(np.uint16)
    outer = inner.copy()
    outer[0, :17] = rng.integers(1, n_kept + 1, 17)
    return {
        "tx": np.array([[0.231]]),
        "vertex_indices": (rng.permutation(n_bfm)[:n_kept] + 1).astype(np.uint16)[None, :],
        "faces": rng.integers(1, n_kept + 1, (n_faces, 3)).astype(np.uint16),
        "innerLandmarkIndex": inner,
        "outerLandmarkIndex": outer,
    }


def write_mat_v5(path: Path, fields: dict[str, np.ndarray], struct: str | None = None) -> Path:
    scipy.io.savemat(str(path), {struct: fields} if struct else fields, do_compression=False)
    return path


def write_h5(path: Path, fields: dict[str, np.ndarray], *, matlab73: bool = False, group: str | None = None) -> Path:
    """h5py layout (as the release's trimBaselFace.py writes it) or, with `matlab73`, what
    MATLAB's save -v7.3 writes: the same matrices transposed, behind a 512-byte text header."""
    with h5py.File(path, "w", userblock_size=512 if matlab73 else 0) as h5:
        g = h5.create_group(group) if group else h5
        for name, a in fields.items():
            a = np.asarray(a)
            g[name] = a.T if matlab73 else a
    if matlab73:
        with open(path, "r+b") as f:
            f.write(MATLAB73_HEADER.ljust(128, b" "))
    return path


def trimmed_arrays(n_vertices: int, n_components: int, seed: int, n_faces: int = 40,
                   n_expression: int = 0) -> dict[str, np.ndarray]:
    """The release's BaselFaceModel_mod fields (already millimetres, EV as column vectors,
    faces and landmarks 1-based); `n_expression` > 0 adds trimBaselFace.py's expMU, expPC, expEV
    and outerLandmarkIndex, as the release's files have them."""
    rng = np.random.default_rng(seed)
    n3 = 3 * n_vertices
    extra = {}
    if n_expression:
        extra = {"expMU": rng.standard_normal((n3, 1)) * 0.5,
                 "expPC": rng.standard_normal((n3, n_expression)) * 0.01,
                 "expEV": np.sort(rng.uniform(0.1, 2.2, (n_expression, 1)))[::-1],
                 "outerLandmarkIndex": rng.integers(1, n_vertices + 1, (68, 1)).astype(np.float64)}
    return {**extra,
        "shapeMU": rng.standard_normal((n3, 1)) * 50.0,
        "shapePC": rng.standard_normal((n3, n_components), dtype=np.float32),
        "shapeEV": np.sort(rng.uniform(10, 900, (n_components, 1)))[::-1],
        "texMU": rng.uniform(0, 255, (n3, 1)).astype(np.float32),
        "texPC": rng.standard_normal((n3, n_components), dtype=np.float32),
        "texEV": np.sort(rng.uniform(10, 4000, (n_components, 1)))[::-1],
        "faces": rng.integers(1, n_vertices + 1, (n_faces, 3)).astype(np.uint16),
        "innerLandmarkIndex": rng.integers(1, n_vertices + 1, (68, 1)).astype(np.float64),
    }


def expected_trimmed(fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What a trimmed file must load as, computed directly: fold EV into the first 99 PCs."""
    ev_s = fields["shapeEV"].ravel()[:99].astype(np.float64)
    ev_t = fields["texEV"].ravel()[:99].astype(np.float64)
    faces = fields.get("faces", fields.get("tl"))
    return {
        "shape_mean": fields["shapeMU"].ravel(),
        "shape_basis": (fields["shapePC"][:, :99] * ev_s).T,
        "shape_sigma": ev_s,
        "tex_mean": fields["texMU"].ravel(),
        "tex_basis": (fields["texPC"][:, :99] * ev_t).T,
        "tex_sigma": ev_t,
        "faces": np.asarray(faces).astype(np.int64) - 1,
        "landmarks": np.asarray(fields["innerLandmarkIndex"]).ravel().astype(np.int64) - 1,
        **({} if "expMU" not in fields else {
            "landmarks_outer": np.asarray(fields["outerLandmarkIndex"]).ravel().astype(np.int64) - 1,
            "expression_mean": fields["expMU"].ravel(),
            "expression_basis": (fields["expPC"] * fields["expEV"].ravel()).T,
            "expression_sigma": fields["expEV"].ravel()}),
    }


def expected_bfm2009(bfm: dict[str, np.ndarray], ms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The release's trimBaselFace.py, transcribed: rows 3(i-1)+{0,1,2} per kept vertex,
    shape /1000 then x += tx, first 99 components, shape EV /1000."""
    vi = ms["vertex_indices"].ravel().astype(np.int64)
    rows = np.empty(3 * vi.size, np.int64)
    rows[0::3], rows[1::3], rows[2::3] = 3 * (vi - 1), 3 * (vi - 1) + 1, 3 * (vi - 1) + 2
    shape_mu = bfm["shapeMU"].ravel()[rows].astype(np.float64) / 1000
    shape_mu[0::3] += float(ms["tx"].ravel()[0])
    shape_ev = bfm["shapeEV"].ravel()[:99].astype(np.float64) / 1000
    tex_ev = bfm["texEV"].ravel()[:99].astype(np.float64)
    return {
        "shape_mean": shape_mu,
        "shape_basis": (bfm["shapePC"][rows, :99] * shape_ev).T,
        "shape_sigma": shape_ev,
        "tex_mean": bfm["texMU"].ravel()[rows],
        "tex_basis": (bfm["texPC"][rows, :99] * tex_ev).T,
        "tex_sigma": tex_ev,
        "faces": ms["faces"].astype(np.int64) - 1,
        "landmarks": ms["innerLandmarkIndex"].ravel().astype(np.int64) - 1,
        **({"landmarks_outer": ms["outerLandmarkIndex"].ravel().astype(np.int64) - 1}
           if "outerLandmarkIndex" in ms else {}),
    }


def assert_model_matches(model, expected: dict[str, np.ndarray]) -> None:
    """float32 storage of float64 values: 1e-6 relative (plus a hair absolute for zeros)."""
    for name in ("shape_mean", "shape_basis", "shape_sigma", "tex_mean", "tex_basis", "tex_sigma"):
        got = getattr(model, name)
        assert got.dtype == np.float32 and got.flags.c_contiguous, name
        assert got.shape == expected[name].shape, (name, got.shape, expected[name].shape)
        np.testing.assert_allclose(got, expected[name], rtol=1e-6, atol=1e-6 * np.abs(expected[name]).max(),
                                   err_msg=name)
    assert model.faces.dtype == np.int32
    np.testing.assert_array_equal(model.faces, expected["faces"])
    np.testing.assert_array_equal(model.landmarks, expected["landmarks"])
    if "landmarks_outer" in expected:
        np.testing.assert_array_equal(model.landmarks_outer, expected["landmarks_outer"])
    for name in ("expression_mean", "expression_basis", "expression_sigma"):
        if name in expected:
            np.testing.assert_allclose(getattr(model, name), expected[name], rtol=1e-6,
                                       atol=1e-6 * np.abs(expected[name]).max(), err_msg=name)
        else:
            assert getattr(model, name) is None, name
