"""Meshes posed in a photo by a known rotation, scale and translation, for the render tests.

The posed vertices follow engine.pose's convention (POSE_CONTRACT.md): x right and y down in
pixels of the photo, z along the viewing direction in the same units, smaller z nearer. The
model's frame (Basel Face Model) has y up and z towards the viewer, so the model is turned
180 degrees about x (a rotation: the winding's handedness is kept) after the head rotation.
"""
from __future__ import annotations

import functools

import numpy as np

ASTRONAUT_BOX = (179, 87, 272, 178)  # dlib's face box on skimage.data.astronaut()


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """R = Rz(roll) Rx(pitch) Ry(yaw), degrees, in the model's frame."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


@functools.lru_cache(maxsize=None)
def face_mesh(seed: int = 0):
    """A decoded face of the synthetic model (coefficients drawn from `seed`): float32 vertices
    [N, 3] in millimetres, uint8 colours [N, 3], int32 faces [F, 3], int landmark vertices [68]."""
    import engine

    model = engine.load_model()
    coeffs = np.random.default_rng(seed).normal(0, 1, (1, model.shape_components + model.tex_components))
    out = engine.Decoder(model).decode(coeffs.astype(np.float32), outputs=("vertices", "colors"))
    return out.vertices[0].copy(), out.colors[0].copy(), model.faces.copy(), np.asarray(model.landmarks).copy()


def pose(vertices_mm: np.ndarray, *, yaw=0.0, pitch=0.0, roll=0.0, scale=1.0, center=(0.0, 0.0),
         depth=1000.0) -> np.ndarray:
    """float32 [N, 3] image coordinates: scale * flip * R @ (v - mean) + (cx, cy, depth)."""
    v = np.asarray(vertices_mm, np.float64)
    flip = np.diag([1.0, -1.0, -1.0])  # y up -> down, towards the viewer -> smaller z
    out = (v - v.mean(axis=0)) @ (flip @ rotation(yaw, pitch, roll)).T * scale
    out += [center[0], center[1], depth]
    return out.astype(np.float32)


def face_in_box(box=ASTRONAUT_BOX, *, yaw=0.0, pitch=0.0, roll=0.0, seed=0):
    """The synthetic face posed over a face box (about as wide as the box): vertices_img,
    colours, faces, landmarks [68, 2] (the landmark vertices' x, y)."""
    v, c, f, lm_idx = face_mesh(seed)
    x0, y0, x1, y1 = box
    width_mm = float(np.ptp(v[:, 0]))
    scale = 1.3 * (x1 - x0) / width_mm
    posed = pose(v, yaw=yaw, pitch=pitch, roll=roll, scale=scale, center=((x0 + x1) / 2, (y0 + y1) / 2 + 0.1 * (y1 - y0)))
    return posed, c, f, posed[lm_idx, :2].copy()


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()
