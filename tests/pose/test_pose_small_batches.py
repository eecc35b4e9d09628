"""The fit at batch 1 and small batches (issue 9's < 0.5 ms per face at batch 1): one code path
for every batch size (engine.pose.solvers.refine: one loop, the faces still converging after
FIRST_PASS continue as a subset of the same loop), so a face fitted alone gets the pose it gets
inside any batch, next to faces that converge at other steps or cannot be fitted at all. The
pieces rewritten for fewer numpy calls are checked against plain references: Rodrigues against
scipy, EPnP's three linearisations (one padded pinv) against exact poses, the Jacobian against
finite differences of the cost, and the fit's result is a minimum of a cost written out here.
No timing here (bench/results/engine_bench_variants_pose_cpu.md)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.pose import fit_poses, rotation_from_euler, solvers
from engine.pose.angles import D, rotation_from_vector
from engine.pose.fit import _inner_weight, _release_yaw, _visible
from tests.pose.faces import CAMERA, landmark_model, pose_landmarks


@pytest.fixture(scope="module")
def lmm():
    return landmark_model()


@pytest.fixture(scope="module")
def astronaut():
    """dlib's 68 landmarks of scikit-image's astronaut (the bench's face)."""
    pytest.importorskip("dlib", reason="dlib-bin not installed")
    skdata = pytest.importorskip("skimage.data", reason="scikit-image not installed")
    from engine.detect import FaceDetector, landmark_model_path

    if landmark_model_path() is None:
        pytest.skip("face-recognition-models not installed (no 68-point model)")
    return FaceDetector(landmarks=True).detect(skdata.astronaut())[0].landmarks.astype(np.float64)


def _angles(f):
    return np.array([f.pose.yaw, f.pose.pitch, f.pose.roll])


def test_rotation_from_vector_matches_scipy():
    rot = pytest.importorskip("scipy.spatial.transform").Rotation
    v = np.random.default_rng(0).normal(0.0, 1.0, (50, 3))
    v[0] = 0.0
    v[1] = [1e-14, 0.0, 0.0]
    v[2] = [np.pi, 0.0, 0.0]
    np.testing.assert_allclose(rotation_from_vector(v), rot.from_rotvec(v).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(rotation_from_vector(v[3]), rot.from_rotvec(v[3]).as_matrix(), atol=1e-12)


@pytest.mark.parametrize("b", [1, 3])
def test_epnp_recovers_exact_poses(lmm, b):
    """Noise-free points: every face's exact pose, at batch 1 as in a batch (the three betas'
    least-squares problems solved as one padded pinv)."""
    yaw, pitch, roll = np.array([5.0, -40.0, 65.0])[:b], np.array([10.0, -20.0, 0.0])[:b], np.array([0.0, 15.0, -25.0])[:b]
    uv, inner, outer = pose_landmarks(lmm, yaw, pitch, roll)
    r_true = D @ rotation_from_euler(yaw, pitch, roll)
    lam = _inner_weight(_release_yaw(r_true))
    pts = outer + lam[..., None] * (inner - outer)
    w = np.ones((b, 68))
    r, t = solvers.epnp(pts, uv, w, np.tile(CAMERA, (b, 1)))
    np.testing.assert_allclose(r, r_true, atol=1e-6)
    np.testing.assert_allclose(t, np.tile([0.0, 0.0, 700.0], (b, 1)), atol=1e-3)


def _cost(lmm, uv, inner, outer, r_cv, t, e, cam, prior=1.0, noise=0.02):
    """The fit's objective (engine.pose.fit: step 4) for one face, written out plainly: the jaw
    selection read from the rotation, the expression basis between its inner and outer vertices."""
    y = _release_yaw(r_cv[None])
    lam, w = _inner_weight(y)[0], _visible(y)[0]
    w[60:] = 1.0
    basis = lmm.expr_basis[1] + lam[None, :, None] * (lmm.expr_basis[0] - lmm.expr_basis[1])  # [Ke, 68, 3]
    p = outer + lam[:, None] * (inner - outer) + np.tensordot(e, basis, 1)
    xc = p @ r_cv.T + t
    proj = cam[0] * xc[:, :2] / xc[:, 2:] + cam[1:]
    sigma = noise * np.sqrt(np.ptp(uv[:, 0]) * np.ptp(uv[:, 1]))
    return float((w[:, None] ** 2 * (proj - uv) ** 2).sum() / sigma ** 2 + prior * (e ** 2).sum())


def test_astronaut_alone_is_a_minimum_of_the_objective(lmm, astronaut):
    """Batch 1 on real landmarks: no small rotation, translation or expression change lowers the
    objective (written out in _cost, independently of solvers.refine's fused arrays)."""
    inner, outer = (x[0] for x in lmm.points_from_alpha(np.zeros((1, lmm.shape_basis.shape[1]))))
    fit = fit_poses(astronaut[None], inner[None], outer[None], expr_basis=lmm.expr_basis)[0]
    cam = np.array([fit.pose.camera["focal_px"], fit.pose.camera["cx"], fit.pose.camera["cy"]])
    r_cv, t = D @ fit.pose.rotation, D @ fit.pose.translation
    e = fit.expression.astype(np.float64)
    best = _cost(lmm, astronaut, inner, outer, r_cv, t, e, cam)
    rng = np.random.default_rng(3)
    for _ in range(30):
        dr = rotation_from_vector(rng.normal(0.0, 2e-3, 3))
        dt = rng.normal(0.0, 0.5, 3)
        de = rng.normal(0.0, 0.02, e.size)
        moved = _cost(lmm, astronaut, inner, outer, dr @ r_cv, t + dt, e + de, cam)
        assert moved > best * (1.0 - 1e-4), (moved, best)  # the float32 expression's rounding aside


def test_the_jacobian_matches_finite_differences(lmm):
    """solvers._jacobian (fused, written into one buffer) against central differences of
    solvers._residual, perspective and weak perspective, with the expression basis."""
    uv, inner, outer = pose_landmarks(lmm, [30.0, -12.0], [10.0, 5.0], [-5.0, 20.0], noise=1.0, seed=2)
    b, n = uv.shape[:2]
    eb = lmm.expr_basis
    basis = solvers._Basis((eb[1], eb[0] - eb[1]))
    rng = np.random.default_rng(4)
    lam, w = rng.random((b, n)), np.ones((b, n))
    e = rng.normal(0.0, 0.5, (b, basis.ke))
    r = D @ rotation_from_euler([28.0, -10.0], [8.0, 3.0], [-4.0, 18.0])
    for weak in (False, True):
        cam = None if weak else np.tile(CAMERA, (b, 1))
        fc = solvers._Faces(uv, np.full(b, 4.0), cam, 6 + basis.ke)
        st = solvers._prepare(outer + lam[..., None] * (inner - outer), lam, w, fc, basis)
        t = np.tile([320.0, 240.0], (b, 1)) if weak else np.tile([2.0, -3.0, 700.0], (b, 1))
        logs = np.log(np.full(b, 1.4)) if weak else None

        def res(x, weak=weak, st=st, t=t, logs=logs, fc=fc):  # parameters [b, P] -> residuals [b, 2n]
            r_ = np.matmul(rotation_from_vector(x[:, :3]), r)
            if weak:
                return solvers._residual(st, r_, t + x[:, 4:6], logs + x[:, 3], e + x[:, 6:], fc, 1.0)[1] \
                    .reshape(b, -1)
            return solvers._residual(st, r_, t + x[:, 3:6], None, e + x[:, 6:], fc, 1.0)[1].reshape(b, -1)

        q = solvers._residual(st, r, t, logs, e, fc, 1.0)[0]
        j = solvers._jacobian(q, r, t, logs, st, fc).copy()
        h = 1e-6
        for k in range(j.shape[-1]):
            dx = np.zeros((b, j.shape[-1]))
            dx[:, k] = h
            np.testing.assert_allclose(j[..., k], (res(dx) - res(-dx)) / (2 * h), rtol=1e-4, atol=1e-5,
                                       err_msg=f"parameter {k}, weak={weak}")


def test_a_face_alone_equals_the_face_in_small_batches(lmm, astronaut):
    """The astronaut fitted alone, and inside batches of 2..8 next to adversarial faces: a face in
    profile (yaw 70), a near-degenerate set (the landmarks squashed to a thin band just above the
    release's smallest face), non-finite landmarks (their face fails with the usual message, the
    others are fitted) and synthetic faces that converge at other steps."""
    inner1, outer1 = lmm.points_from_alpha(np.zeros((1, lmm.shape_basis.shape[1])))
    alone = fit_poses(astronaut[None], inner1, outer1, expr_basis=lmm.expr_basis)[0]
    prof, pin, pout = pose_landmarks(lmm, [70.0, -3.0, 21.0], [-25.0, 0.0, 12.0], [10.0, 0.0, -30.0], noise=1.0, seed=8)
    thin = astronaut.copy()
    thin[:, 1] = thin[:, 1].mean() + (thin[:, 1] - thin[:, 1].mean()) * (12.0 / np.ptp(thin[:, 1]))
    nan = astronaut.copy()
    nan[40, 1] = np.nan
    inf = astronaut.copy()
    inf[3, 0] = np.inf
    faces = [astronaut, prof[0], thin, nan, prof[1], inf, prof[2], astronaut + 0.3]
    inner = np.concatenate([inner1] * 3 + [pin[:1], inner1, inner1, pin[1:2], inner1, pin[2:], inner1])[[0, 3, 1, 2, 5, 6, 7, 8]]
    outer = np.concatenate([outer1] * 3 + [pout[:1], outer1, outer1, pout[1:2], outer1, pout[2:], outer1])[[0, 3, 1, 2, 5, 6, 7, 8]]
    for b in range(2, 9):
        fits = fit_poses(np.stack(faces[:b]), inner[:b], outer[:b], expr_basis=lmm.expr_basis)
        # The same minimum (a batch may stop a step later: it stops once every face has converged).
        np.testing.assert_allclose(_angles(fits[0]), _angles(alone), atol=0.05)
        np.testing.assert_allclose(fits[0].expression, alone.expression, atol=0.05)
        for k, f in enumerate(fits):
            one = fit_poses(np.stack(faces[k:k + 1]), inner[k:k + 1], outer[k:k + 1], expr_basis=lmm.expr_basis)[0]
            assert (f.pose is None) == (one.pose is None) and f.error == one.error
            if f.pose is not None:
                np.testing.assert_allclose(_angles(f), _angles(one), atol=0.05, err_msg=f"face {k} in batch {b}")
    assert "expected finite pixel coordinates, found nan at point 40 (y)" in fits[3].error
    assert "expected finite pixel coordinates, found inf at point 3 (x)" in fits[5].error
    assert fits[2].pose is not None  # thin but above the smallest face: fitted, not rejected
    assert fits[1].pose.yaw > 60.0  # in profile (its accuracy: test_pose_synthetic's known answers)
