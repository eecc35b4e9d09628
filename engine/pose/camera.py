"""The cameras a pose is fitted with, and the release's rule for its perspective one.

The release (anhttran/3dmm_cnn, main.cpp + modules/PoseExpr/src/FaceServices2.cpp) fits the
pose in an image of its own: the photo cropped around the 68 landmarks (the landmark box grown
by 1.7/3 of its size on each side), rescaled so that the crop's area lies between 250 x 250 and
300 x 300 pixels times (3 + 2 x 1.7) / 5, and then to 380 rows; there its camera has

    K = [[-f, 0, w/2], [0, f, h/2], [0, 0, 1]],   f = 1000 px at the rescaled size.

In the photo's own pixels that is a camera centred on the face: the principal point is the
centre of the landmark box (the crop's centre), and f = 1000 x the crop's rescaling factor.
`release_camera` computes exactly that (without the crop's clamping to the photo's borders,
which would move the camera when a face nears an edge).

Why -f: the release's camera frame looks down -z with y up (OpenGL's; engine.pose.angles), so
a point in front of it has Z < 0. Dividing by that negative Z flips both image axes; the -f
flips x back, so x stays to the right while y comes out pointing down, as image rows do:
u = w/2 + f X / |Z|, v = h/2 - f Y / |Z|. It is OpenCV's K = [[f, 0, cx], [0, f, cy], [0, 0, 1]]
seen from that frame (K_release = -K_opencv @ diag(1, -1, -1), the same projection), which is
why its modified EPnP (epnp.cpp, solve_for_sign) keeps the solution with the points at Z < 0.
"""
from __future__ import annotations

import numpy as np

RELEASE_FOCAL_PX = 1000.0  # main.cpp: "normalize image size ..., assuming focal length 1000"
RELEASE_PADDING = 1.7  # getCroppedIm: the landmark box grows by padding / 3 of its size per side
_GROWTH = (3.0 + 2.0 * RELEASE_PADDING) / 3.0  # crop side / landmark box side
RELEASE_MIN_AREA = 250.0 * 250.0 * (3.0 + 2.0 * RELEASE_PADDING) / 5.0  # minRes
RELEASE_MAX_AREA = 300.0 * 300.0 * (3.0 + 2.0 * RELEASE_PADDING) / 5.0  # maxRes
MIN_FACE_PX = 5.0  # getCroppedIm refuses landmark boxes narrower or lower than 5 px ...
MIN_FACE_AREA_PX = 100.0  # ... or of less than 100 px^2 ("Input face is too small")


def release_camera(landmarks) -> np.ndarray:
    """[B, 3] (focal_px, cx, cy) of the release's perspective camera for each face's landmarks
    [B, L, 2] (image pixels): principal point at the landmark box's centre, f = 1000 px times
    the release's rescaling of its crop (module docstring). Non-finite for non-finite input."""
    lm = np.asarray(landmarks, np.float64)
    lo, hi = lm.min(axis=-2), lm.max(axis=-2)
    w, h = (hi - lo)[..., 0], (hi - lo)[..., 1]
    area = (w * _GROWTH) * (h * _GROWTH)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaling = np.where(area < RELEASE_MIN_AREA, np.sqrt(area / RELEASE_MIN_AREA),
                           np.where(area > RELEASE_MAX_AREA, np.sqrt(area / RELEASE_MAX_AREA), 1.0))
    centre = (lo + hi) / 2.0
    return np.stack([RELEASE_FOCAL_PX * scaling, centre[..., 0], centre[..., 1]], axis=-1)


def project_opencv(points_cam, cam) -> np.ndarray:
    """[..., n, 2] pixels of camera-frame points [..., n, 3] in OpenCV's frame (z forward) through
    cameras [..., 3] (focal_px, cx, cy)."""
    z = points_cam[..., 2]
    f, c = cam[..., None, 0], cam[..., None, 1:]
    return f[..., None] * points_cam[..., :2] / z[..., None] + c
