"""The pose conventions: frames, rotation, Euler angles. This module is the one place that
states them; everything else in engine.pose refers here.

Frames
------
- Model frame: the Basel Face Model's, millimetres: x towards the subject's left (the image's
  right in a frontal photo), y up, z out of the face towards the viewer.
- Camera frame (the frame `Pose.rotation` and `Pose.translation` map into): the 3DMM-CNN
  release's, x to the image's right, y up, z towards the viewer. The camera sits at the origin
  and looks down -z, so a face in front of it has a negative z (the release's demo puts the
  head at t = (5, 11, -709) mm). A frontal, upright face has rotation = identity.
  OpenCV's camera frame (x right, y down, z forward, as cv2.solvePnP reports) is this one
  turned 180 degrees about x: R_cv = D @ R and t_cv = D @ t with D = diag(1, -1, -1).
- Image: x to the right, y down, in pixels of the photo, with (0, 0) the centre of the top-left
  pixel (pixel indices, as dlib's landmarks and engine.crop's boxes).

Euler angles (degrees)
----------------------
    rotation = Rz(roll) @ Ry(yaw) @ Rx(pitch)

with right-handed rotations about the camera frame's axes: x (the image's right), y (up), z
(towards the viewer); pitch is applied first, roll last. So:
- yaw > 0: the face turns towards the image's right (the subject turns to their left);
- pitch > 0: the face tilts down (chin towards the chest);
- roll > 0: the face rotates counter-clockwise in the image as displayed.
A mirrored photo therefore has the opposite yaw and roll and the same pitch; rotating a photo
counter-clockwise by a degrees adds a to roll. Ranges: yaw in [-90, 90], pitch and roll in
(-180, 180]; at |yaw| = 90 (gimbal lock) pitch is reported as 0 and roll takes the rest.
"""
from __future__ import annotations

import numpy as np

# The convention in one line, for files that carry angles (summary.json).
CONVENTION = ("degrees; rotation = Rz(roll) Ry(yaw) Rx(pitch), right-handed about the camera's x (image right), "
              "y (up), z (towards the viewer); identity = frontal and upright; yaw > 0: the face turns to the "
              "image's right; pitch > 0: it tilts down; roll > 0: it rotates counter-clockwise in the image")

# The release's camera frame from OpenCV's and back: a 180-degree turn about x.
D = np.diag([1.0, -1.0, -1.0])


def _rx(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _ry(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def rotation_from_euler(yaw, pitch, roll) -> np.ndarray:
    """Rotation matrices [..., 3, 3] (camera frame of the module docstring) from angles in
    degrees (scalars or arrays of one shape): Rz(roll) @ Ry(yaw) @ Rx(pitch)."""
    y, p, r = (np.radians(np.asarray(a, np.float64)) for a in (yaw, pitch, roll))
    return _rz(r) @ _ry(y) @ _rx(p)


def euler_from_rotation(rotation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(yaw, pitch, roll) in degrees of rotation matrices [..., 3, 3], the inverse of
    rotation_from_euler (module docstring: conventions, ranges, gimbal lock)."""
    r = np.asarray(rotation, np.float64)
    yaw = np.arcsin(np.clip(-r[..., 2, 0], -1.0, 1.0))
    lock = np.abs(r[..., 2, 0]) > 1.0 - 1e-12
    pitch = np.where(lock, 0.0, np.arctan2(r[..., 2, 1], r[..., 2, 2]))
    # At the lock only pitch - roll (or pitch + roll) is defined: pitch 0, roll from the top-left block.
    roll = np.where(lock, np.arctan2(-r[..., 0, 1], r[..., 1, 1]), np.arctan2(r[..., 1, 0], r[..., 0, 0]))
    return np.degrees(yaw), np.degrees(pitch), np.degrees(roll)


def rotation_vector(rotation) -> np.ndarray:
    """Axis-angle (Rodrigues) vectors [..., 3] of rotation matrices [..., 3, 3], radians; the
    release re-selects the jaw landmarks by its y component (engine.pose.fit)."""
    r = np.asarray(rotation, np.float64)
    cos = np.clip((np.trace(r, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    w = np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    sin = np.sin(angle)
    small = sin < 1e-6
    out = w * np.where(small, 0.5, angle / (2.0 * np.where(small, 1.0, sin)))[..., None]
    # Near 180 degrees w vanishes: the axis is the column of R + I of largest norm.
    near_pi = small & (cos < 0.0)
    if np.any(near_pi):
        m = (r + np.eye(3))[near_pi]
        col = np.argmax(np.linalg.norm(m, axis=-2), axis=-1)
        axis = m[np.arange(m.shape[0]), :, col]
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
        out[near_pi] = axis * np.pi
    return out


def rotation_from_vector(vec) -> np.ndarray:
    """Rotation matrices [..., 3, 3] of axis-angle vectors [..., 3] (radians), Rodrigues' formula
    R = cos I + sin [k]x + (1 - cos) k k' (k the unit axis; written with few numpy calls, as
    the pose fit's every Levenberg-Marquardt step makes one)."""
    v = np.asarray(vec, np.float64)
    theta = np.sqrt(np.einsum("...i,...i->...", v, v))
    k = v / np.where(theta > 1e-12, theta, 1.0)[..., None]
    s, c = np.sin(theta)[..., None, None], np.cos(theta)[..., None, None]
    return c * np.eye(3) + s * skew(k) + (1.0 - c) * (k[..., :, None] * k[..., None, :])


_SKEW_ROWS = np.array([0, 0, 1, 1, 2, 2])  # [v]x's off-diagonal entries: row, column, v index, sign
_SKEW_COLS = np.array([1, 2, 0, 2, 0, 1])
_SKEW_FROM = np.array([2, 1, 2, 0, 1, 0])
_SKEW_SIGN = np.array([-1.0, 1.0, 1.0, -1.0, -1.0, 1.0])


def skew(v) -> np.ndarray:
    """[v]x [..., 3, 3] of vectors [..., 3]: skew(v) @ u = cross(v, u)."""
    v = np.asarray(v)
    out = np.zeros(v.shape[:-1] + (3, 3), np.result_type(v.dtype, np.float64))
    out[..., _SKEW_ROWS, _SKEW_COLS] = v[..., _SKEW_FROM] * _SKEW_SIGN
    return out
