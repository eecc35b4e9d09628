"""The release's `.pts` landmark files.

Written as the release's demo writes them (demoCode/testModel_PoseExpr.py: one line
"%f %f\\n" per landmark, x then y in image pixels, nothing else), read as its two readers read
them: numpy.loadtxt (the Python demo) and main.cpp's loadLM, which also skips empty lines,
lines starting with '#' and lines that do not start with two numbers, so the iBUG layout
("version: 1", "n_points: 68", "{", ..., "}") reads too. 68 points, finite, or an InputError.
"""
from __future__ import annotations

import os

import numpy as np

from engine.errors import InputError, describe_array
from engine.fileio import atomic_write

NUM_POINTS = 68
MAX_PTS_BYTES = 1 << 20  # 68 lines of two numbers are ~1.5 KB; anything this large is not a .pts
MAX_COORD = float(2 ** 31)  # pixels: engine.crop's bound on box coordinates (no image is larger)


def pts_text(landmarks) -> str:
    """The file's text for landmarks [68, 2] (finite pixel coordinates)."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (NUM_POINTS, 2) or not np.isfinite(lm).all():
        raise InputError(f".pts: landmarks: expected 68 finite (x, y) points [68, 2], found {describe_array(lm)}"
                         + ("" if lm.shape != (NUM_POINTS, 2) else " with non-finite values"))
    return "".join("%f %f\n" % (x, y) for x, y in lm)


def write_pts(path: str | os.PathLike, landmarks) -> None:
    """Write landmarks [68, 2] as the release's .pts, atomically."""
    text = pts_text(landmarks)
    with atomic_write(path, "w") as f:
        f.write(text)


def read_pts(path: str | os.PathLike) -> np.ndarray:
    """float32 [68, 2] of a .pts file (the release's layout or iBUG's). InputError naming the
    file: missing, over 1 MiB, not text, or not 68 finite points."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PTS_BYTES + 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read the landmark file: {e.strerror or e}") from None
    if len(data) > MAX_PTS_BYTES:
        raise InputError(f"{path}: expected a .pts landmark file (68 lines), found more than {MAX_PTS_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: expected UTF-8 text, found byte 0x{data[e.start]:02x} at offset {e.start}") from None
    points = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or line.startswith("#"):
            continue
        try:
            x, y = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            continue  # "version: 1", "{", ...: skipped, as loadLM skips them
        points.append((x, y))
        if len(points) > NUM_POINTS:
            break
    lm = np.array(points, np.float64).reshape(-1, 2)
    if lm.shape[0] != NUM_POINTS:
        raise InputError(f"{path}: expected 68 landmark points (lines 'x y'), found "
                         f"{'more than 68' if lm.shape[0] > NUM_POINTS else lm.shape[0]}")
    bad = ~(np.abs(lm) <= MAX_COORD)  # NaN too
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise InputError(f"{path}: point {i}: expected finite coordinates within +-2^31 px, found {lm[i].tolist()}")
    return lm.astype(np.float32)
