"""Synthetic faces for the pose tests: the synthetic model's landmark vertices posed at known
angles by the conventions of engine.pose.angles and projected through a known camera, with the
release's jaw rule applied for the true pose (as a landmark detector sees the contour)."""
from __future__ import annotations

import numpy as np

from engine.morphable import synthetic_model
from engine.pose import LandmarkModel, rotation_from_euler
from engine.pose.angles import D
from engine.pose.fit import _inner_weight, _release_yaw

CAMERA = (1000.0, 320.0, 240.0)  # focal_px, cx, cy
DEPTH_MM = 700.0  # the release's demo puts the head 709 mm from its camera
WEAK_SCALE = 1000.0 / 700.0  # the same face size in pixels for the weak-perspective camera


def landmark_model() -> LandmarkModel:
    return LandmarkModel.from_model(synthetic_model(0))


def face_points(lmm: LandmarkModel, b: int, alpha=None):
    """(inner, outer) [b, 68, 3] of the mean shape, or of shape coefficients alpha [b, Ks]."""
    a = np.zeros((b, lmm.shape_basis.shape[1])) if alpha is None else alpha
    return lmm.points_from_alpha(a)


def pose_landmarks(lmm, yaw, pitch, roll, *, weak=False, noise=0.0, seed=0, expression=None, alpha=None,
                   camera=CAMERA, depth=DEPTH_MM, offset=(0.0, 0.0)):
    """Image landmarks [B, 68, 2] of faces at the given angles (degrees, arrays of B), and the
    (inner, outer) points the fit gets. `expression` [B, Ke] moves the points first; `offset`
    moves the head sideways (mm) before the perspective projection."""
    yaw, pitch, roll = (np.atleast_1d(np.asarray(a, np.float64)) for a in (yaw, pitch, roll))
    b = yaw.size
    inner, outer = face_points(lmm, b, alpha)
    r_cv = D @ rotation_from_euler(yaw, pitch, roll)
    lam = _inner_weight(_release_yaw(r_cv))
    p = outer + lam[..., None] * (inner - outer)
    if expression is not None:
        eb = lmm.expr_basis[1][None] + lam[:, None, :, None] * (lmm.expr_basis[0] - lmm.expr_basis[1])[None]
        p = p + np.einsum("bk,bknx->bnx", expression, eb)
    q = np.einsum("bij,bnj->bni", r_cv, p)
    if weak:
        uv = WEAK_SCALE * q[..., :2] + np.array(camera[1:])
    else:
        xc = q + np.array([offset[0], offset[1], depth])
        uv = camera[0] * xc[..., :2] / xc[..., 2:3] + np.array(camera[1:])
    uv = uv + np.random.default_rng(seed).normal(0.0, noise, uv.shape) if noise else uv
    return uv, inner, outer


def angle_grid():
    """Known angles over the issue's ranges: yaw -70..70, pitch -30..30, roll -30..30 (degrees)."""
    y, p, r = np.meshgrid(np.arange(-70, 71, 10), np.arange(-30, 31, 15), np.arange(-30, 31, 15), indexing="ij")
    return y.ravel().astype(float), p.ravel().astype(float), r.ravel().astype(float)
