"""The built-in synthetic model: exact BFM sizes, deterministic, a valid face-like mesh with
smooth orthonormal modes, labelled synthetic."""
from __future__ import annotations


import numpy as np
import pytest

from engine.errors import InputError
from engine.morphable import load_model, synthetic_model


@pytest.fixture(scope="module")
def model():
    return synthetic_model(0)


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
    memo = synthetic_model(0)
    for name in ("shape_mean", "shape_basis", "shape_sigma", "tex_mean", "tex_basis", "tex_sigma", "faces"):
        np.testing.assert_array_equal(getattr(fresh, name), getattr(memo, name), err_msg=name)
    other = synthetic_model(1)
    np.testing.assert_array_equal(other.faces, memo.faces)
    assert not np.array_equal(other.shape_basis, memo.shape_basis)
    with pytest.raises(InputError, match="seed"):
        synthetic_model(-1)


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


# --- issue 9: the synthetic model's landmarks and expression basis, labelled synthetic -------

MIRROR_68 = np.array([16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                      17, 27, 28, 29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53,
                      52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65])  # dlib's 68, mirrored


def test_synthetic_landmarks_follow_dlibs_layout(model):
    assert "SYNTHETIC" in model.metadata["landmarks"]
    inner, outer = model.landmarks, model.landmarks_outer
    assert inner.shape == outer.shape == (68,) and inner.dtype == np.int32
    # Like the release's two sets: they differ on the jaw only (16 side points; the chin is shared).
    np.testing.assert_array_equal(np.flatnonzero(inner != outer), np.r_[0:8, 9:17])
    v = model.shape_mean.reshape(-1, 3)
    for idx in (inner, outer):
        p = v[idx]
        # Mirror-symmetric: point i and its mirror point have opposite x, the same y and z.
        np.testing.assert_allclose(p[:, 0], -p[MIRROR_68, 0], atol=1e-4)
        np.testing.assert_allclose(p[:, 1:], p[MIRROR_68, 1:], atol=1e-4)
    p = v[inner]
    eyes = (p[36:42].mean(0), p[42:48].mean(0))
    assert eyes[0][0] < -25 and eyes[1][0] > 25 and abs(eyes[0][1] - 28) < 3  # the eye sockets
    assert p[28:31, 2].min() > p[36:48, 2].max() + 15  # the nose stands out in front of the eyes
    assert p[8, 1] < p[:, 1].min() + 1 and p[19, 1] > eyes[0][1]  # chin lowest, brows above the eyes
    assert abs(p[48:68, 1].mean() + 46) < 4  # the mouth on the lips
    # The inner jaw points lie towards the middle of the outer contour ones.
    side = np.r_[0:8, 9:17]
    assert (np.abs(v[inner[side], 0]) < np.abs(v[outer[side], 0])).all()


def test_synthetic_expression_basis(model):
    assert "SYNTHETIC" in model.metadata["expression"] and model.expression_components == 29
    b = model.expression_basis.astype(np.float64) / model.expression_sigma[:, None]
    np.testing.assert_allclose(b @ b.T, np.eye(29), atol=1e-5)  # unit-norm, orthogonal modes
    assert (np.diff(model.expression_sigma) < 0).all()
    # Concentrated on the mouth and jaw: most of each mode's energy below the nose.
    y = model.shape_mean[1::3]
    energy = (b.reshape(29, -1, 3) ** 2).sum(-1)
    assert (energy[:, y < -25].sum(1) / energy.sum(1)).mean() > 0.6
    fresh = synthetic_model.__wrapped__(0)
    np.testing.assert_array_equal(fresh.expression_basis, model.expression_basis)
    np.testing.assert_array_equal(fresh.landmarks_outer, model.landmarks_outer)
