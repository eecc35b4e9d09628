"""`Pose`: one face's fitted head pose, its camera, and the mapping into the photo."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import InputError, describe_array
from engine.pose.angles import D, euler_from_rotation

CAMERA_MODELS = ("perspective", "weak_perspective")


@dataclass(frozen=True, eq=False)
class Pose:
    """A face's pose; conventions (frames, Euler angles, pixels) in engine.pose.angles.

    rotation: float64 [3, 3], model frame -> camera frame (identity: frontal and upright).
    translation: float64 [3]: perspective, millimetres in the camera frame (z < 0: the camera
        looks down -z); weak perspective, (tx, ty, 0): where the model's origin lands, in pixels.
    camera: {"model": "perspective", "focal_px": f, "cx": cx, "cy": cy} or
        {"model": "weak_perspective", "scale": s (pixels per millimetre)}.
    projection: float64 [3, 4]. Perspective: P = K @ [rotation | translation] with the
        release's K = [[-f, 0, cx], [0, f, cy], [0, 0, 1]], so [u w, v w, w] = P @ [X, Y, Z, 1]
        (w is the camera-frame z, negative). Weak perspective: the affine [2, 4] camera
        [u, v] = A @ [X, Y, Z, 1] (A = [[s r0, tx], [-s r1, ty]] with r0, r1 the rotation's rows)
        extended with the row [0, 0, 0, 1].
    yaw, pitch, roll: degrees (engine.pose.angles).
    landmark_error_px: root-mean-square distance, in pixels, between the given landmarks and the
        projected model landmarks the fit used.
    landmarks_used: bool [68]: which of the 68 landmarks the final fit used (the release drops the
        hidden side of the jaw beyond about 18 degrees of yaw).
    """

    rotation: np.ndarray
    translation: np.ndarray
    camera: dict
    projection: np.ndarray
    yaw: float
    pitch: float
    roll: float
    landmark_error_px: float
    landmarks_used: np.ndarray = field(default=None, repr=False)

    @classmethod
    def from_opencv(cls, r_cv: np.ndarray, t_cv: np.ndarray, camera: dict, rms: float,
                    used: np.ndarray | None = None) -> "Pose":
        """From OpenCV's frame (x right, y down, z forward): perspective t_cv [3] in mm, weak
        perspective t_cv = (tx, ty) in pixels with camera["scale"]."""
        r = D @ r_cv
        if camera["model"] == "perspective":
            f, cx, cy = camera["focal_px"], camera["cx"], camera["cy"]
            t = D @ t_cv
            k = np.array([[-f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
            proj = k @ np.concatenate([r, t[:, None]], axis=1)
        else:
            s = camera["scale"]
            t = np.array([t_cv[0], t_cv[1], 0.0])
            proj = np.zeros((3, 4))
            proj[:2, :3] = s * r_cv[:2]
            proj[:2, 3] = t_cv
            proj[2, 3] = 1.0
        yaw, pitch, roll = (float(a) for a in euler_from_rotation(r))
        return cls(r, t, dict(camera), proj, yaw, pitch, roll, float(rms),
                   None if used is None else np.asarray(used, bool))

    def to_image(self, vertices) -> np.ndarray:
        """Posed vertices float32 [N, 3] of model vertices [N, 3] (millimetres): x to the right and
        y down in pixels of the photo ((0, 0) the centre of its top-left pixel), z along the
        viewing direction, scaled like x and y (pixels at the face's depth), smaller = closer to
        the camera (what a z-buffer keeps is the minimum). Perspective: z = f (d - d0) / d0 for a
        vertex at depth d and the model's origin at depth d0; weak perspective: z = s * depth."""
        v = np.asarray(vertices)
        if v.ndim != 2 or v.shape[1] != 3:
            raise InputError(f"Pose.to_image: vertices: expected [N, 3], found {describe_array(v)}")
        r_cv = D @ self.rotation
        q = v.astype(np.float64) @ r_cv.T
        out = np.empty(v.shape, np.float32)
        if self.camera["model"] == "perspective":
            f, cx, cy = self.camera["focal_px"], self.camera["cx"], self.camera["cy"]
            t_cv = D @ self.translation
            xc = q + t_cv
            out[:, 0] = f * xc[:, 0] / xc[:, 2] + cx
            out[:, 1] = f * xc[:, 1] / xc[:, 2] + cy
            out[:, 2] = f * (xc[:, 2] - t_cv[2]) / t_cv[2]
        else:
            s = self.camera["scale"]
            out[:, 0] = s * q[:, 0] + self.translation[0]
            out[:, 1] = s * q[:, 1] + self.translation[1]
            out[:, 2] = s * q[:, 2]
        return out

    def project(self, points) -> np.ndarray:
        """Pixels [N, 2] of model points [N, 3] (x and y of `to_image`)."""
        return self.to_image(points)[:, :2].astype(np.float64)

    def to_dict(self) -> dict[str, Any]:
        """What summary.json holds: yaw, pitch, roll, rotation, translation, camera, projection,
        landmark_error_px (plain floats and lists)."""
        return {"yaw": self.yaw, "pitch": self.pitch, "roll": self.roll,
                "rotation": self.rotation.tolist(), "translation": self.translation.tolist(),
                "camera": {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in self.camera.items()},
                "projection": self.projection.tolist(), "landmark_error_px": self.landmark_error_px}
