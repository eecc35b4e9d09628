"""Posed meshes drawn over the photo they were fitted to, with their landmarks."""
from __future__ import annotations

import numpy as np

from engine.errors import InputError, describe_array
from engine.render.raster import DEFAULT_AMBIENT, DEFAULT_LIGHT, render_buffers

# dlib's 68-point layout (iBUG 300-W): name, first index, end index (exclusive), dot colour.
LANDMARK_GROUPS_68 = (
    ("jaw", 0, 17, (255, 214, 0)),
    ("right brow", 17, 22, (255, 128, 0)),
    ("left brow", 22, 27, (255, 128, 0)),
    ("nose", 27, 36, (0, 200, 255)),
    ("right eye", 36, 42, (64, 255, 64)),
    ("left eye", 42, 48, (64, 255, 64)),
    ("mouth", 48, 68, (255, 64, 160)),
)
OTHER_LANDMARK_COLOR = (64, 255, 64)  # landmarks of another layout than dlib's 68
DEFAULT_ALPHA = 1.0  # opaque: a smooth mesh at partial opacity shows the photo's eyes and mouth as ghosts
_COORD_LIMIT = 1e7   # landmarks farther out than this (pixels) are not drawing coordinates


def overlay(photo_rgb, faces_to_draw, triangles, *, alpha: float = DEFAULT_ALPHA, light=DEFAULT_LIGHT,
            ambient: float = DEFAULT_AMBIENT, landmark_radius: float | None = None, num_threads: int = 0) -> np.ndarray:
    """The photo with each face's posed, shaded, vertex-coloured mesh drawn over it, and its landmarks.

    photo_rgb: uint8 [H, W, 3]. faces_to_draw: a list of (vertices_img float [N, 3] or None (the
    landmarks alone), colors uint8 [N, 3] or None, landmarks float [L, 2] or None), vertices in the
    photo's image coordinates
    (engine.pose: x right, y down, pixel centres at integers, smaller z nearer). triangles: int
    [F, 3], shared by every mesh. Meshes are drawn in list order, each with its own depth buffer
    (two poses' depths are not on one scale), blended with opacity `alpha` in [0, 1]; then every
    face's landmarks as dots of `landmark_radius` pixels (default: a 250th of the photo's shorter
    side, at least 1.5), coloured by dlib's 68-point groups when there are 68.
    Returns a new uint8 [H, W, 3]; the photo is not changed.
    Errors: InputError naming the argument, and the face (faces_to_draw[k]) it belongs to.
    """
    photo = np.asarray(photo_rgb)
    if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3 or 0 in photo.shape:
        raise InputError(f"overlay: photo_rgb: expected a non-empty uint8 image [H, W, 3], found {describe_array(photo)}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) or not 0 <= alpha <= 1:
        raise InputError(f"overlay: alpha: expected a number in [0, 1], found {alpha!r}")
    if isinstance(faces_to_draw, (str, bytes)) or not hasattr(faces_to_draw, "__iter__"):
        raise InputError(f"overlay: faces_to_draw: expected a list of (vertices, colors, landmarks), "
                         f"found {type(faces_to_draw).__name__}")
    h, w = photo.shape[:2]
    canvas = np.array(photo, copy=True)
    dots = []
    for k, item in enumerate(faces_to_draw):
        try:
            vertices, colors, landmarks = item
        except (TypeError, ValueError):
            raise InputError(f"overlay: faces_to_draw[{k}]: expected (vertices, colors, landmarks), "
                             f"found {type(item).__name__}") from None
        if vertices is not None:
            try:
                out = render_buffers(vertices, triangles, colors, w, h, light=light, ambient=ambient,
                                     num_threads=num_threads)
            except InputError as e:
                raise InputError(f"overlay: faces_to_draw[{k}]: {e}") from None
            m = out.mask
            if alpha >= 1:
                canvas[m] = out.rgb[m]
            else:
                mixed = alpha * out.rgb[m].astype(np.float32) + (1 - alpha) * canvas[m].astype(np.float32)
                canvas[m] = np.clip(np.floor(mixed + 0.5), 0, 255).astype(np.uint8)
        if landmarks is not None:
            dots.append(_check_landmarks(landmarks, k))
    if dots:
        canvas = _draw_dots(canvas, dots, landmark_radius)
    return canvas


def _check_landmarks(landmarks, k: int) -> np.ndarray:
    lm = np.asarray(landmarks)
    if lm.ndim != 2 or lm.shape[1] != 2 or lm.dtype.kind not in "fiu":
        raise InputError(f"overlay: faces_to_draw[{k}]: landmarks: expected a real array [L, 2], "
                         f"found {describe_array(lm)}")
    lm = lm.astype(np.float64)
    bad = ~np.isfinite(lm) | (np.abs(lm) > _COORD_LIMIT)
    if bad.any():
        i, c = (int(x) for x in np.argwhere(bad)[0])
        raise InputError(f"overlay: faces_to_draw[{k}]: landmarks[{i}, {c}]: expected a finite pixel coordinate "
                         f"within {_COORD_LIMIT:g}, found {lm[i, c]!r}")
    return lm


def _draw_dots(canvas: np.ndarray, dots: list[np.ndarray], radius: float | None) -> np.ndarray:
    from PIL import Image, ImageDraw

    h, w = canvas.shape[:2]
    r = max(1.5, min(h, w) / 250) if radius is None else float(radius)
    if not np.isfinite(r) or not 0 < r <= 1000:
        raise InputError(f"overlay: landmark_radius: expected a number in (0, 1000], found {radius!r}")
    im = Image.fromarray(canvas)
    draw = ImageDraw.Draw(im)
    points = []
    for lm in dots:
        colors = [OTHER_LANDMARK_COLOR] * len(lm)
        if len(lm) == 68:
            for _, lo, hi, color in LANDMARK_GROUPS_68:
                colors[lo:hi] = [color] * (hi - lo)
        points += zip(lm, colors)
    # Pixel centres are at integers in our coordinates and in Pillow's ellipse box alike. Dark
    # rims first, then every fill: close dots (a mouth's) keep their colours instead of being
    # cut by each other's rims.
    if r >= 2:
        for (x, y), _ in points:
            draw.ellipse((x - r - 1, y - r - 1, x + r + 1, y + r + 1), fill=(0, 0, 0))
    for (x, y), color in points:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
    return np.asarray(im).copy()


def stamp(image, lines: list[str]) -> np.ndarray:
    """A copy of uint8 [H, W, 3] `image` with `lines` of text in a dark box at its top left (for
    marks a picture must carry, such as SYNTHETIC). The text is sized to the image (a 40th of its
    shorter side, 10 to 48 pixels)."""
    from PIL import Image, ImageDraw, ImageFont

    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or 0 in a.shape:
        raise InputError(f"stamp: image: expected a non-empty uint8 image [H, W, 3], found {describe_array(a)}")
    size = int(min(48, max(10, min(a.shape[:2]) / 40)))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: its one fixed-size bitmap font
        font = ImageFont.load_default()
    im = Image.fromarray(a)
    draw = ImageDraw.Draw(im)
    pad = max(2, size // 4)
    boxes = [draw.textbbox((0, 0), line, font=font) for line in lines]
    width = max((b[2] for b in boxes), default=0) + 2 * pad
    step = size + pad
    draw.rectangle((0, 0, width, pad + step * len(lines)), fill=(0, 0, 0))
    for k, line in enumerate(lines):
        draw.text((pad, pad + step * k), line, fill=(255, 255, 255), font=font)
    return np.asarray(im).copy()
