"""The built-in synthetic model: exact BFM sizes, deterministic, a valid face-like mesh with
smooth orthonormal modes, labelled synthetic."""
from __future__ import annotations


import numpy as np
import pytest

from engine.errors import InputError
from engine.morphable import MorphableModel, load_model
from engine.morphable.synthetic import synthetic_model


@pytest.fixture(scope="module")
def model():
    return MorphableModel.synthetic(0)


def test_sizes_labels_and_default(model):
    assert (model.num_vertices, model.num_faces) == (46_990, 93_323)
    assert (model.shape_components, model.tex_components) == (99, 99)
    assert model.synthetic is True and model.metadata["synthetic"] is True
    assert model.metadata["name"] == "synthetic-bfm-46990" and "synthetic" in model.metadata["source"]
    assert "SYNTHETIC" in repr(model)
    assert load_model() is model  # no path: the synthetic model (memoised per seed)
    for name in ("shape_mean", "shape_basis", "tex_basis", "faces"):
        a = getattr(model, name)
        assert a.flags.c_contiguous and not a.flags.writeable, name


def test_deterministic_per_seed():
    fresh = synthetic_model.__wrapped__(0)  # bypass the memo: a real rebuild
    memo = MorphableModel.synthetic(0)
    for name in ("shape_mean", "shape_basis", "shape_sigma", "tex_mean", "tex_basis", "tex_sigma", "faces"):
        np.testing.assert_array_equal(getattr(fresh, name), getattr(memo, name), err_msg=name)
    other = MorphableModel.synthetic(1)
    np.testing.assert_array_equal(other.faces, memo.faces)
    assert not np.array_equal(other.shape_basis, memo.shape_basis)
    with pytest.raises(InputError, match="seed"):
        MorphableModel.synthetic(-1)


def test_mesh_is_a_valid_oriented_disk(model):
    f, v = model.faces, model.shape_mean.reshape(-1, 3).astype(np.float64)
    assert f.min() == 0 and f.max() == model.num_vertices - 1
    assert np.unique(f).size == model.num_vertices  # every vertex is used
    cross = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert (np.linalg.norm(cross, axis=1) / 2).min() > 0.1  # mm^2: no degenerate triangle
    assert (cross[:, 2] > 0).all()  # counter-clockwise seen from the front (+z), like a face mesh
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, uses = np.unique(edges, axis=0, return_counts=True)
    assert uses.max() == 2  # manifold
    n_edges, boundary = uses.size, int((uses == 1).sum())
    assert model.num_vertices - n_edges + model.num_faces == 1 and boundary == 655  # one disk


def test_face_like_geometry_and_colour(model):
    v = model.shape_mean.reshape(-1, 3)
    width, height = np.ptp(v[:, 0]), np.ptp(v[:, 1])
    assert 130 < width < 170 and 170 < height < 220
    assert np.abs(v[:, :2].mean(0)).max() < 5  # centred near the origin like the BFM
    tip = v[np.argmax(v[:, 2])]
    assert abs(tip[0]) < 2 and -15 < tip[1] < 15  # the nose is the most forward point
    c = model.tex_mean.reshape(-1, 3)
    assert c.min() >= 0 and c.max() <= 255
    r, g, b = np.median(c, axis=0)
    assert r > g > b > 80  # skin-like


def test_modes_are_smooth_orthonormal_and_decreasing(model):
    for basis, sigma in ((model.shape_basis, model.shape_sigma), (model.tex_basis, model.tex_sigma)):
        assert (np.diff(sigma) < 0).all() and sigma.min() > 0
        pc = basis / sigma[:, None]  # float32: the float64 product is 10x slower and not needed
        np.testing.assert_allclose(pc @ pc.T, np.eye(99), atol=1e-4)
        # Smooth: across any edge a mode changes by a small fraction of its range.
        f = model.faces
        # (A full-frequency noise mode would jump by about its whole range.)
        for k, limit in ((0, 0.04), (1, 0.04), (5, 0.04), (50, 0.1), (98, 0.1)):
            d = basis[k].reshape(-1, 3)
            jump = np.abs(d[f[:, 0]] - d[f[:, 1]]).max()
            assert jump < limit * np.ptp(d), k
    # BFM-like magnitude: one standard deviation of mode 0 moves vertices by millimetres.
    rms = np.sqrt((model.shape_basis[0].reshape(-1, 3) ** 2).sum(1).mean())
    assert 1.0 < rms < 10.0
    # A random face at 3 standard deviations keeps the shape's size and plausible colours.
    alpha = np.random.default_rng(0).uniform(-3, 3, 99).astype(np.float32)
    s = (model.shape_mean + alpha @ model.shape_basis).reshape(-1, 3)
    assert 100 < np.ptp(s[:, 0]) < 220
    t = model.tex_mean + alpha @ model.tex_basis
    assert np.mean((t < 0) | (t > 255)) < 0.05
