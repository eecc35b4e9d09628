"""The angle convention of engine.pose.angles, checked by what it promises: the composition
order, the signs seen in the image, the mirror and in-plane rotation identities, the inverse."""
from __future__ import annotations

import numpy as np
import pytest

from engine.pose.angles import (D, euler_from_rotation, rotation_from_euler, rotation_from_vector,
                                rotation_vector)


def test_round_trip_over_the_ranges():
    rng = np.random.default_rng(0)
    y, p, r = rng.uniform(-89, 89, 500), rng.uniform(-179, 179, 500), rng.uniform(-179, 179, 500)
    R = rotation_from_euler(y, p, r)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    got = np.stack(euler_from_rotation(R))
    np.testing.assert_allclose(got, np.stack([y, p, r]), atol=1e-9)


def test_composition_order_is_roll_yaw_pitch():
    y, p, r = 20.0, -10.0, 35.0
    def axis(a, k):
        c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
        m = np.eye(3)
        i, j = [(1, 2), (2, 0), (0, 1)][k]
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m
    np.testing.assert_allclose(rotation_from_euler(y, p, r), axis(r, 2) @ axis(y, 1) @ axis(p, 0), atol=1e-15)


def _nose_in_image(R):
    """Where the nose (model +z) points in the image: x right, y down (camera frame: y up)."""
    n = R @ np.array([0.0, 0.0, 1.0])
    return n[0], -n[1]


def test_signs_as_seen_in_the_image():
    x, _ = _nose_in_image(rotation_from_euler(30, 0, 0))
    assert x > 0.4  # yaw > 0: the face turns to the image's right
    _, y = _nose_in_image(rotation_from_euler(0, 30, 0))
    assert y > 0.4  # pitch > 0: the nose goes down in the image
    up = rotation_from_euler(0, 0, 30) @ np.array([0.0, 1.0, 0.0])  # the head's up direction
    assert up[0] < -0.4  # roll > 0: the top of the head goes left, counter-clockwise as displayed


def test_mirror_flips_yaw_and_roll_and_keeps_pitch():
    rng = np.random.default_rng(1)
    y, p, r = rng.uniform(-80, 80, 50), rng.uniform(-60, 60, 50), rng.uniform(-60, 60, 50)
    M = np.diag([-1.0, 1.0, 1.0])  # mirror the image's x (and the model's)
    got = np.stack(euler_from_rotation(M @ rotation_from_euler(y, p, r) @ M))
    np.testing.assert_allclose(got, np.stack([-y, p, -r]), atol=1e-9)


def test_in_plane_rotation_adds_to_roll():
    rng = np.random.default_rng(2)
    y, p, r = rng.uniform(-80, 80, 50), rng.uniform(-60, 60, 50), rng.uniform(-60, 60, 50)
    got = np.stack(euler_from_rotation(rotation_from_euler(0, 0, 15) @ rotation_from_euler(y, p, r)))
    np.testing.assert_allclose(got, np.stack([y, p, (r + 15 + 180) % 360 - 180]), atol=1e-9)


@pytest.mark.parametrize("yaw", [90.0, -90.0])
def test_gimbal_lock(yaw):
    R = rotation_from_euler(yaw, 20.0, 35.0)
    y, p, r = euler_from_rotation(R)
    assert abs(y - yaw) < 1e-6 and p == 0.0
    np.testing.assert_allclose(rotation_from_euler(y, p, r), R, atol=1e-6)


def test_rotation_vector_round_trip_and_opencv_frame():
    rng = np.random.default_rng(3)
    v = rng.normal(0, 1, (200, 3))
    v *= (rng.uniform(0, np.pi - 1e-3, 200) / np.linalg.norm(v, axis=1))[:, None]
    np.testing.assert_allclose(rotation_vector(rotation_from_vector(v)), v, atol=1e-9)
    R = rotation_from_vector(np.array([0.0, 0.0, np.pi]))  # 180 degrees: the axis is recovered
    np.testing.assert_allclose(np.abs(rotation_vector(R)), [0, 0, np.pi], atol=1e-9)
    # OpenCV's frame is the release's turned 180 degrees about x (D is its own inverse).
    np.testing.assert_allclose(D @ D, np.eye(3))
    np.testing.assert_allclose(D, rotation_from_vector(np.array([np.pi, 0.0, 0.0])), atol=1e-12)
