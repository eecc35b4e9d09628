"""Head pose (and expression) from 68 landmarks, batched: the release's procedure.

What the release does (anhttran/3dmm_cnn, modules/PoseExpr: FaceServices2::estimatePoseExpr,
BaselFaceEstimator::getLM / estimatePose3D), and what `fit_poses` does for a whole batch at once:

1. the 3D landmarks of the face's own shape (the network's alpha decoded; plus the expression
   mean when the model has an expression basis, as the release's getShape always adds it),
   with the outer (contour) jaw points, and the pose from the first 60 correspondences (all
   but the 8 inner-mouth points 60..67) by EPnP;
2. the yaw read from that pose re-selects the jaw's 3D landmarks (getLM: below 20 degrees of
   yaw, the side turning away takes the inner landmark vertices) and, beyond 18 degrees (pi/10),
   keeps only the visible side of the jaw (points 0..8 or 8..16);
3. the pose is estimated again (EPnP) from that selection;
4. with an expression basis, the 29 expression weights are fitted jointly with the pose, the
   inner-mouth points 60..67 added, regularised by their prior (the weights are in standard
   deviations, expEV, so the prior is a unit Gaussian).

Ours differs where the release's code is a device of its optimiser rather than a choice, or
where its rule misbehaves (each measured; tests/pose):
- after step 3's EPnP (without an expression basis) and in step 4, Levenberg-Marquardt on the
  reprojection error (the release refines only in step 4, by a diagonal-Hessian line search of
  60 + 140 iterations); step 4 minimises sum ||reprojection||^2 / sigma^2 + prior * ||e||^2,
  sigma = LANDMARK_NOISE x the landmark box's size (the release weighs 8 x the RMS error against
  sum e^2 / 14.5, plus a weak pull of the pose towards step 3's);
- step 2 reads the Euler yaw (engine.pose.angles); the release reads minus the y component of
  the rotation vector, which mixes in roll and pitch, so an in-plane rotation of the photo
  changed its selection;
- the side turning away moves to its inner vertices gradually over the first 6 degrees of yaw
  (`_inner_weight`) instead of at once at 0, which made near-frontal fits bistable;
- the hidden jaw side's points fade out between 15 and 21 degrees of yaw (`_visible`) instead of
  being dropped at 18, for the same reason;
- the selection is re-read at every evaluation of the refinement's cost during its first steps
  (solvers.FIRST_PASS), as the release's step 4 re-reads it (which also indexes its inner/outer
  rule by position in its list of points rather than by landmark number, which differs once jaw
  points are dropped), also without step 4; the faces still converging then keep the selection
  reached, so that they converge quickly (tests/pose: 0.05 degrees from the known answers).

The weak-perspective camera (3DDFA's: scale, rotation, 2D translation) goes through the same
steps with an affine fit in place of EPnP.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import InputError, describe_array
from engine.pose import solvers
from engine.pose.camera import MIN_FACE_AREA_PX, MIN_FACE_PX, release_camera
from engine.pose.result import CAMERA_MODELS, Pose

NUM_LANDMARKS = 68
POSE_POINTS = 60  # step 1 and 3: the first 60 of dlib's 68
INNER_MOUTH = np.arange(60, 68)
INNER_SIDE_MAX = np.pi / 9  # getLM: below 20 degrees the side turning away takes the inner vertices
VISIBLE_SIDE_FROM = np.pi / 10  # estimatePoseExpr: beyond 18 degrees only the visible side of the jaw
VISIBLE_FADE = np.radians(6.0)  # ... here faded out from 15 to 21 degrees (_visible)
INNER_RAMP = np.radians(6.0)  # the turning-away jaw side reaches its inner vertices here (_inner_weight)
LANDMARK_NOISE = 0.02  # sigma of a landmark, relative to its landmark box's size (dlib: ~3 px at 150 px)
EXPRESSION_PRIOR = 1.0  # weight of the unit-Gaussian prior on the expression weights
REFINE_ITERATIONS = 16  # at most, Levenberg-Marquardt after step 3 without step 4 (it stops once converged)
JOINT_ITERATIONS = 16  # at most, step 4 (it stops once converged: 3 to 6 on the known answers)
CAMERA_ALIASES = {"perspective": "perspective", "weak_perspective": "weak_perspective",
                  "weak-perspective": "weak_perspective"}


@dataclass(frozen=True)
class LandmarkModel:
    """A morphable model's 68 landmark vertices and its expression basis at them (built once
    per model by `from_model`; what fit_poses needs besides each face's shape).

    inner, outer: int32 [68] vertex indices (the release's innerLandmarkIndex and
        outerLandmarkIndex; outer = inner when the model has only one set).
    shape_mean: float64 [2, 68, 3] and shape_basis: float64 [2, Ks, 68, 3]: the shape model at
        them (inner, outer), so a face's landmarks come from its coefficients alone;
    expr_mean: float64 [2, 68, 3] expression mean at them, or None;
    expr_basis: float64 [2, Ke, 68, 3] the folded expression basis at them, or None.
    """

    inner: np.ndarray
    outer: np.ndarray
    shape_mean: np.ndarray
    shape_basis: np.ndarray
    expr_mean: np.ndarray | None = None
    expr_basis: np.ndarray | None = None
    name: str = "model"

    def __post_init__(self):
        # C-contiguous float64 once, so that points_from_alpha's reshape is a view: a strided
        # basis was copied at every call (80 us of a single face's fit).
        for name in ("shape_mean", "shape_basis", "expr_mean", "expr_basis"):
            a = getattr(self, name)
            if a is not None:
                object.__setattr__(self, name, np.ascontiguousarray(a, np.float64))

    @classmethod
    def from_model(cls, model) -> "LandmarkModel":
        """InputError when the model has no 68 landmark vertices (a model converted without the
        release's mod_struct_expr.mat, or a cache without the `landmarks` array)."""
        name = str(model.metadata.get("name", "model"))
        lm = model.landmarks
        if lm is None or lm.shape != (NUM_LANDMARKS,):
            found = "none" if lm is None else describe_array(lm)
            raise InputError(f"pose: the morphable model {name!r} has no 68 landmark vertices (expected "
                             f"int32[68], the release's innerLandmarkIndex of mod_struct_expr.mat; found {found}): "
                             "convert the model with --topology mod_struct_expr.mat")
        outer = model.landmarks_outer if model.landmarks_outer is not None else lm
        inner, outer = np.asarray(lm, np.int64), np.asarray(outer, np.int64)
        sm = np.asarray(model.shape_mean, np.float64).reshape(-1, 3)
        sb = np.asarray(model.shape_basis).reshape(model.shape_basis.shape[0], -1, 3)
        shape_mean = np.stack([sm[inner], sm[outer]])
        shape_basis = np.stack([sb[:, inner], sb[:, outer]]).astype(np.float64)
        mean = basis = None
        if model.expression_basis is not None:
            em = np.asarray(model.expression_mean, np.float64).reshape(-1, 3)
            eb = np.asarray(model.expression_basis).reshape(model.expression_basis.shape[0], -1, 3)
            mean = np.stack([em[inner], em[outer]])
            basis = np.stack([eb[:, inner], eb[:, outer]]).astype(np.float64)
        return cls(inner.astype(np.int32), outer.astype(np.int32), shape_mean, shape_basis, mean, basis, name)

    @property
    def expression_components(self) -> int:
        return 0 if self.expr_basis is None else self.expr_basis.shape[1]

    def points_from_alpha(self, alpha) -> tuple[np.ndarray, np.ndarray]:
        """(inner [B, 68, 3], outer [B, 68, 3]) float64 landmark points of the shapes of shape
        coefficients alpha [B, Ks] (the network's, in standard deviations): the decoded shape at
        the landmark vertices, computed here in float64 (the decode kernel's float32 vertices
        there differ by rounding only), plus the expression mean when the model has a basis."""
        a = np.asarray(alpha, np.float64)
        ks = self.shape_basis.shape[1]
        flat = self.shape_basis.reshape(2, ks, -1)
        with _one_blas_thread():  # a small product, beside the network's threads (fit_poses)
            pts = (self.shape_mean.reshape(2, 1, -1) + np.matmul(a[None], flat)).reshape(2, a.shape[0], -1, 3)
        if self.expr_mean is not None:
            pts += self.expr_mean[:, None]
        return pts[0], pts[1]

    def points(self, vertices) -> tuple[np.ndarray, np.ndarray]:
        """(inner [B, 68, 3], outer [B, 68, 3]) float64 landmark points of decoded shapes
        [B, N, 3] (millimetres), the expression mean added when the model has a basis."""
        v = np.asarray(vertices)
        inner = v[:, self.inner].astype(np.float64)
        outer = v[:, self.outer].astype(np.float64)
        if self.expr_mean is not None:
            inner += self.expr_mean[0]
            outer += self.expr_mean[1]
        return inner, outer


@dataclass
class PoseFit:
    """One face's result: `pose` and `expression` (float32 [Ke] or None), or `error`."""

    pose: Pose | None = None
    expression: np.ndarray | None = None
    error: str | None = None


def check_landmarks(lm, where: str = "landmarks") -> np.ndarray:
    """float64 [68, 2] of a caller's landmarks (anything array-like); InputError naming `where`
    when the shape is wrong. Values are not checked here (fit_poses reports NaN per face)."""
    try:
        a = np.asarray(lm, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected 68 (x, y) pixel coordinates [68, 2], found {type(lm).__name__}") from None
    if a.shape != (NUM_LANDMARKS, 2):
        raise InputError(f"{where}: expected 68 (x, y) pixel coordinates [68, 2], found {describe_array(a)}")
    return a


def landmark_problem(lm: np.ndarray) -> str | None:
    """Why landmarks [68, 2] cannot be fitted (non-finite values, collapsed to a point or a line:
    the release's "Input face is too small" rule), or None."""
    bad = ~np.isfinite(lm)
    if bad.any():
        i, c = (int(x) for x in np.argwhere(bad)[0])
        return (f"landmarks: expected finite pixel coordinates, found {lm[i, c]} at point {i} ({'xy'[c]}) "
                f"({int(bad.any(axis=1).sum())} of 68 points non-finite)")
    w, h = np.ptp(lm[:, 0]), np.ptp(lm[:, 1])
    if w < MIN_FACE_PX or h < MIN_FACE_PX or w * h < MIN_FACE_AREA_PX:
        return (f"landmarks: expected a landmark box of at least {MIN_FACE_PX:g} x {MIN_FACE_PX:g} px and "
                f"{MIN_FACE_AREA_PX:g} px^2 (the release's smallest face), found {w:.3g} x {h:.3g} px "
                "(collapsed)")
    return None


def _inner_weight(release_yaw):
    """getLM, made continuous: float [B, 68], how far each landmark moves from its outer vertex to
    its inner one for each face's release yaw [B] (radians). The release's rule: the jaw side
    turning away (points 0..7 for a positive release yaw, 9..16 for a negative one) takes the
    inner vertices below 20 degrees of yaw, all others the outer ones. Here that side's weight
    ramps smoothly from 0 at yaw 0 to 1 at INNER_RAMP instead of jumping at 0: the release's jump makes
    near-frontal fits bistable (the side switches with the sign of the yaw, and each choice
    moves the fitted yaw to its own side: on the release's demo photo Noah_Wyle_0003 the
    photo and its mirror image came out 6 degrees apart)."""
    return _jaw_weights(release_yaw)[0]


_LEFT_JAW = np.arange(NUM_LANDMARKS) < 8  # points 0..7
_RIGHT_JAW = (np.arange(NUM_LANDMARKS) > 8) & (np.arange(NUM_LANDMARKS) < 17)  # points 9..16
_POSE_POINTS = (np.arange(NUM_LANDMARKS) < POSE_POINTS).astype(np.float64)


def _turning_away(y):
    """bool [B, 68]: the jaw side turning away for release yaws y [B, 1]: 0..7 for a positive
    yaw, 9..16 for a negative one."""
    return np.where(y > 0, _LEFT_JAW, np.where(y < 0, _RIGHT_JAW, False))


def _smoothstep(x):
    """0 below 0, 1 above 1, 3x^2 - 2x^3 between: flat at both ends, so the weights are smooth
    in the yaw (a kink at yaw 0 would make the fit of a frontal face crawl there)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _visible(release_yaw):
    """estimatePoseExpr, made continuous: weights [B, 68] of the points steps 3 and 4 use (before
    the mouth's). The release keeps the first 60 points but, beyond 18 degrees of yaw, drops the
    jaw side turning away (0..7 or 9..16). Here that side's weight fades from 1 at 15 to 0 at 21
    degrees instead (VISIBLE_FADE), so that a face near 18 degrees does not jump between two
    fits (on the release's demo photo Vitali_Klitschko_0004 at 16 degrees of yaw, turning the
    photo by 15 degrees moved the fitted roll by 18.6 with the jump, 15.x without)."""
    return _jaw_weights(release_yaw)[1]


def _jaw_weights(release_yaw):
    """(_inner_weight, _visible) of release yaws [B]: both jaw rules in one pass, [B, 68] each (the
    fit reads them at every evaluation of its cost, so they are computed together, with few
    numpy calls)."""
    y = release_yaw[:, None]
    ay = np.abs(y)
    ramp_fade = _smoothstep(np.concatenate([ay / INNER_RAMP, (VISIBLE_SIDE_FROM - ay) / VISIBLE_FADE + 0.5], 1))
    away = _turning_away(y)
    return (np.where(away, ramp_fade[:, :1] * (ay < INNER_SIDE_MAX), 0.0),
            np.where(away, ramp_fade[:, 1:], 1.0) * _POSE_POINTS)


def _release_yaw(r_cv):
    """The yaw the jaw rule reads, in the release's sign (positive: the face turns to the
    image's left), radians: minus our Euler yaw (engine.pose.angles). The release reads minus
    the y component of the rotation vector instead, which mixes roll and pitch into it: an
    in-plane rotation of the photo would change which jaw landmarks are used.
    (Our yaw is asin(-R[2, 0]) of R = D @ r_cv, and (D @ r_cv)[2, 0] = -r_cv[2, 0].)"""
    return -np.arcsin(np.clip(r_cv[..., 2, 0], -1.0, 1.0))


def _initial(points, uv, w, cams, weak):
    """EPnP (perspective) or the affine fit (weak perspective): (r, t, scale or None)."""
    if weak:
        r, s, t = solvers.affine_pose(points, uv, w)
        return r, t, s
    r, t = solvers.epnp(points, uv, w, cams)
    return r, t, None


_BLAS = []  # the process's threadpoolctl.ThreadpoolController, made once (it scans the loaded libraries)


def _one_blas_thread():
    """A context in which numpy's BLAS runs on one thread. The fit's matrices are small (68
    points, a few dozen parameters per face), and a multi-threaded BLAS spends its time waking
    threads that compete with the network's own threads, which run the next batch beside the
    fit in a pipeline: measured here at batch 128, 536 ms per fit against 56 ms on one thread.
    threadpoolctl does it for every BLAS numpy may use (OpenBLAS, MKL, BLIS), loaded when the
    first fit runs (numpy's always is); without threadpoolctl, as is."""
    import contextlib

    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return contextlib.nullcontext()
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


def fit_poses(landmarks, inner, outer, *, camera: str = "perspective", focal_px=None, principal_point=None,
              expr_basis=None, expression_prior: float = EXPRESSION_PRIOR,
              landmark_noise: float = LANDMARK_NOISE) -> list[PoseFit]:
    """Fit every face of a batch at once (module docstring: the release's steps), with numpy's
    BLAS on one thread (`_one_blas_thread`).

    landmarks: [B, 68, 2] image pixels (dlib's order); a face with non-finite or collapsed
        landmarks gets an error, the others are fitted.
    inner, outer: [B, 68, 3] the face's 3D landmarks (LandmarkModel.points).
    camera: "perspective" (the release's) or "weak_perspective" (3DDFA's scaled orthographic).
    focal_px, principal_point: the perspective camera, a scalar / (cx, cy) or per face ([B],
        [B, 2]); None: the release's rule (engine.pose.camera.release_camera).
    expr_basis: [2, Ke, 68, 3] the expression basis at the inner and outer landmark vertices
        (LandmarkModel.expr_basis), or None: pose only.
    expression_prior: weight of the unit-Gaussian prior on the expression weights;
    landmark_noise: a landmark's standard deviation relative to its landmark box's size.
    Returns one PoseFit per face, in order.
    """
    with _one_blas_thread():
        return _fit_poses(landmarks, inner, outer, camera, focal_px, principal_point, expr_basis, expression_prior,
                          landmark_noise)


def _fit_poses(landmarks, inner, outer, camera, focal_px, principal_point, expr_basis, expression_prior,
               landmark_noise) -> list[PoseFit]:
    cam_model = CAMERA_ALIASES.get(camera)
    if cam_model not in CAMERA_MODELS:
        raise InputError(f"pose: camera: expected one of {', '.join(CAMERA_ALIASES)}, found {camera!r}")
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (NUM_LANDMARKS, 2):
        raise InputError(f"pose: landmarks: expected [B, 68, 2], found {describe_array(lm)}")
    b = lm.shape[0]
    for name, a in (("inner", inner), ("outer", outer)):
        if np.shape(a) != (b, NUM_LANDMARKS, 3):
            raise InputError(f"pose: {name}: expected [{b}, 68, 3] landmark points, found {describe_array(np.asarray(a))}")
    if b == 0:
        return []
    results = [PoseFit() for _ in range(b)]
    # Which faces can be fitted: one vectorised pass, a message only for those that cannot.
    with np.errstate(invalid="ignore"):
        span = np.ptp(lm, axis=1)
    ok = np.isfinite(lm).all((1, 2)) & (span[:, 0] >= MIN_FACE_PX) & (span[:, 1] >= MIN_FACE_PX) \
        & (span[:, 0] * span[:, 1] >= MIN_FACE_AREA_PX)
    for i in np.flatnonzero(~ok):
        results[i].error = f"pose: {landmark_problem(lm[i])}"
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return results
    uv = lm[idx]
    p_in, p_out = np.asarray(inner, np.float64)[idx], np.asarray(outer, np.float64)[idx]
    weak = cam_model == "weak_perspective"
    cams = None if weak else _cameras(uv, focal_px, principal_point, b, idx)
    size = np.sqrt(np.ptp(uv[..., 0], axis=1) * np.ptp(uv[..., 1], axis=1))
    sigma = landmark_noise * size

    # Step 1: the first 60 points, the outer jaw contour (getLM at yaw 0); EPnP's yaw is all
    # step 2 reads, so no refinement here (the release has none either).
    w1 = np.zeros((idx.size, NUM_LANDMARKS))
    w1[:, :POSE_POINTS] = 1.0
    r, t, s = _initial(p_out, uv, w1, cams, weak)
    # Steps 2-3: the jaw selected by that yaw, the pose estimated again.
    lam, w_pose = _jaw_weights(_release_yaw(r))
    r, t, s = _initial(p_out + lam[..., None] * (p_in - p_out), uv, w_pose, cams, weak)
    eb = None if expr_basis is None else np.asarray(expr_basis, np.float64)

    last = {}
    mouth = np.zeros(NUM_LANDMARKS)
    mouth[INNER_MOUTH] = 1.0

    def select(r_, rows):
        """The points, jaw weights and point weights of the rotations r_ of the faces `rows` (the
        release's rule, read at every evaluation of the cost, as its step 4 does): step 4 adds the
        inner mouth. The same tuple again while no face's selection moved (most evaluations:
        solvers.refine then prepares nothing)."""
        lam_, w_ = _jaw_weights(_release_yaw(r_))
        if last.get("rows") is rows and np.array_equal(lam_, last["lam"]) and np.array_equal(w_, last["w"]):
            return last["sel"]
        w_used = w_
        if eb is not None:
            w_used = w_ + mouth  # the inner mouth's weights are 0 in w_
        if rows is not last.get("rows"):
            last.update(rows=rows, p_out=p_out[rows], d=p_in[rows] - p_out[rows])
        sel = (last["p_out"] + lam_[..., None] * last["d"], lam_, w_used)
        last.update(lam=lam_, w=w_, sel=sel)
        return sel

    # Step 4 (or, without an expression basis, the pose's refinement).
    r, t, s, e, rms, _, w_final = solvers.refine(
        None, uv, None, sigma, cam=cams, r=r, t=t, scale=s, prior=expression_prior, select=select,
        expr=None if eb is None else (eb[1], eb[0] - eb[1]),
        iterations=REFINE_ITERATIONS if eb is None else JOINT_ITERATIONS)
    if eb is None:
        e = None
    finite = np.isfinite(r).all((1, 2)) & np.isfinite(t).all(1) & np.isfinite(rms)
    if not weak:
        finite &= t[:, 2] > 0  # in front of the camera
    for k, face in enumerate(idx):
        if not finite[k]:
            results[face].error = ("pose: the fit did not converge (non-finite or behind the camera); "
                                   f"landmarks {_describe_box(uv[k])}")
            continue
        if weak:
            camdict = {"model": "weak_perspective", "scale": float(s[k])}
        else:
            camdict = {"model": "perspective", "focal_px": float(cams[k, 0]), "cx": float(cams[k, 1]),
                       "cy": float(cams[k, 2])}
        results[face].pose = Pose.from_opencv(r[k], t[k], camdict, rms[k], w_final[k] > 0)
        if e is not None:
            results[face].expression = e[k].astype(np.float32)
    return results


def _describe_box(uv) -> str:
    lo, hi = uv.min(0), uv.max(0)
    return f"box ({lo[0]:.1f}, {lo[1]:.1f})-({hi[0]:.1f}, {hi[1]:.1f})"


def _cameras(uv, focal_px, principal_point, b, idx) -> np.ndarray:
    """[len(idx), 3] (f, cx, cy) per face: the release's rule, or the caller's values."""
    cams = release_camera(uv)
    if focal_px is not None:
        f = np.broadcast_to(np.asarray(focal_px, np.float64), (b,))[idx] if np.ndim(focal_px) else \
            np.full(idx.size, float(focal_px))
        if not (np.isfinite(f).all() and (f > 0).all()):
            raise InputError(f"pose: focal_px: expected positive finite pixels, found {focal_px!r}")
        cams[:, 0] = f
    if principal_point is not None:
        pp = np.asarray(principal_point, np.float64)
        pp = np.broadcast_to(pp, (b, 2))[idx] if pp.ndim == 2 else np.broadcast_to(pp, (idx.size, 2))
        if not np.isfinite(pp).all():
            raise InputError(f"pose: principal_point: expected finite pixels, found {principal_point!r}")
        cams[:, 1:] = pp
    return cams
