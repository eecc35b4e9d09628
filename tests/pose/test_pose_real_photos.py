"""Known answers on real photos (issue 9 section 5), dlib's 68 landmarks, the synthetic model's
landmark vertices (its mean shape; the network is not involved):
- mirroring the photo flips the sign of yaw and roll (within 3 degrees) and keeps pitch (3);
- rotating it in-plane by 15 degrees (counter-clockwise) adds 15 to roll (within 2);
- the projected landmark vertices land within a few pixels of dlib's landmarks.
The photos: scikit-image's astronaut and 9 faces of its LFW subset (25 x 25 px, upscaled to
250 px and padded). The fit itself is exactly mirror-symmetric (checked on mirrored landmark
sets); dlib is not: on a mirrored or rotated photo it finds landmarks that differ from the
transformed originals, by 1-3 px RMS here. A pair where they differ by more than
DLIB_CONSISTENT_PX measures dlib, not the fit, and is left out (the test says how many remain).
Measured on the release's 17 demo photos too (not in the repository): see the report of issue 9.
"""
from __future__ import annotations

import numpy as np
import pytest

from engine.detect import landmark_model_path
from engine.pose import fit_poses
from tests.pose.faces import face_points, landmark_model

dlib = pytest.importorskip("dlib", reason="dlib-bin not installed")
skdata = pytest.importorskip("skimage.data", reason="scikit-image not installed")
if landmark_model_path() is None:
    pytest.skip("face-recognition-models not installed (no 68-point model)", allow_module_level=True)

DLIB_CONSISTENT_PX = 2.0
MIRROR_68 = np.array([16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                      17, 27, 28, 29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53,
                      52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65])


def _photos():
    from skimage.transform import resize

    out = {"astronaut": skdata.astronaut()}
    lfw = skdata.lfw_subset()
    for i in range(0, 100, 12):
        g = np.pad((resize(lfw[i], (250, 250), order=3) * 255).clip(0, 255).astype(np.uint8), 60, mode="edge")
        out[f"lfw{i}"] = np.stack([g] * 3, -1)
    return out


@pytest.fixture(scope="module")
def measured():
    """Per photo: dlib's landmarks of the photo, its mirror image and its 15-degree rotation."""
    from skimage.transform import rotate

    from engine.detect import FaceDetector

    det = FaceDetector(landmarks=True)

    def lms(im):
        faces = det.detect(im)
        return None if not faces else faces[0].landmarks.astype(np.float64)

    out = {}
    for name, im in _photos().items():
        rim = (rotate(im, 15, resize=False, order=1, mode="edge") * 255).astype(np.uint8)
        out[name] = (im.shape, lms(im), lms(np.ascontiguousarray(im[:, ::-1])), lms(rim))
    return out


def _mirror(lm, width):
    m = lm[MIRROR_68].copy()
    m[:, 0] = width - 1 - m[:, 0]
    return m


def _rotate(lm, shape, degrees=15.0):
    """Where skimage.transform.rotate(..., degrees) takes pixel positions (about the image centre)."""
    c = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2])
    a = np.radians(degrees)
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    return (lm - c) @ rot.T + c


def _fit(lm, camera, expression, lmm):
    inner, outer = face_points(lmm, len(lm))
    return fit_poses(np.asarray(lm), inner, outer, camera=camera,
                     expr_basis=lmm.expr_basis if expression else None)


def _rms(a, b):
    return float(np.sqrt(((a - b) ** 2).sum(1).mean()))


@pytest.mark.parametrize("camera", ["perspective", "weak_perspective"])
def test_the_fit_is_exactly_mirror_and_rotation_consistent(measured, camera):
    """On mirrored / rotated copies of the same landmark sets (no detector in between), with the
    synthetic model's mirror-symmetric landmark vertices (its expression basis is not symmetric,
    so the pose alone). Within 0.3 degrees: near yaw 0 the jaw rule's weights have a kink
    (engine.pose.fit._inner_weight), and a fit may settle a little to either side of it."""
    lmm = landmark_model()
    for shape, lm, _, _ in measured.values():
        if lm is None:
            continue
        a, m = _fit([lm, _mirror(lm, shape[1])], camera, False, lmm)
        assert abs(a.pose.yaw + m.pose.yaw) < 0.3 and abs(a.pose.roll + m.pose.roll) < 0.3
        assert abs(a.pose.pitch - m.pose.pitch) < 0.3
    if camera == "weak_perspective":  # no principal point to move: an in-plane turn is exactly roll
        for shape, lm, _, _ in measured.values():
            if lm is None:
                continue
            a, r = _fit([lm, _rotate(lm, shape)], camera, False, lmm)
            assert abs(r.pose.roll - a.pose.roll - 15) < 1e-3 and abs(r.pose.yaw - a.pose.yaw) < 1e-3


@pytest.mark.parametrize("camera", ["perspective", "weak_perspective"])
@pytest.mark.parametrize("expression", [False, True], ids=["pose-only", "with-expression"])
def test_mirrored_and_rotated_photos(measured, camera, expression):
    lmm = landmark_model()
    mirrored = rotated = 0
    for name, (shape, lm, lm_m, lm_r) in measured.items():
        assert lm is not None, f"{name}: dlib found no face"
        a = _fit([lm], camera, expression, lmm)[0].pose
        if lm_m is not None and _rms(_mirror(lm_m, shape[1]), lm) < DLIB_CONSISTENT_PX:
            m = _fit([lm_m], camera, expression, lmm)[0].pose
            assert abs(a.yaw + m.yaw) < 3.0, (name, a.yaw, m.yaw)
            assert abs(a.roll + m.roll) < 3.0, (name, a.roll, m.roll)
            assert abs(a.pitch - m.pitch) < 3.0, (name, a.pitch, m.pitch)
            mirrored += 1
        if lm_r is not None and _rms(_rotate(lm, shape), lm_r) < DLIB_CONSISTENT_PX:
            r = _fit([lm_r], camera, expression, lmm)[0].pose
            assert abs(r.roll - a.roll - 15.0) < 2.0, (name, a.roll, r.roll)
            rotated += 1
    assert mirrored >= 6 and rotated >= 6, (mirrored, rotated)


def test_projected_landmark_vertices_land_near_dlibs(measured):
    """The default fit (perspective, with the synthetic expression basis): RMS distance under 4%
    of the landmark box's width (a few pixels: 2 px on the astronaut's 93 px face)."""
    lmm = landmark_model()
    for name, (_, lm, _, _) in measured.items():
        pose = _fit([lm], "perspective", True, lmm)[0].pose
        width = np.ptp(lm[:, 0])
        assert pose.landmark_error_px < 0.04 * width, (name, pose.landmark_error_px, width)
        if name == "astronaut":
            assert pose.landmark_error_px < 2.5
