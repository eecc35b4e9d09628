"""The release's crop rule: face box -> 224x224 network input (planar BGR float32 0..255).

This reproduces ``utils.cropImg`` + ``cv2.resize`` of the original 3DMM-CNN demo:

1. centre (cx, cy) of the box, half-size t = max(w, h) / 2 with w = x1 - x0, h = y1 - y0;
2. crop [cx - r0*t, cy - r1*t, cx + r2*t, cy + r3*t] with
   r = (1.785974, 1.951171, 1.835600, 1.670403) for detector (and caller-given) boxes,
   r = (1.9255, 2.2591, 1.9423, 1.6087) for landmark boxes;
3. each bound rounded half away from zero (Python 2 ``round``, as the release ran);
4. pixels outside the image are zero (black). Like the release, a region that leaves the
   image is zero-padded into a copy; a region too large to copy (a huge caller box) is
   sampled straight from the image instead (see _MAX_PADDED_PIXELS), so every box the
   box rule below admits works with memory bounded by the output;
5. the integer crop is resized to size x size with bilinear interpolation on uint8
   (``cv2.resize(..., INTER_LINEAR)``), then laid out as planar BGR float32 0..255.
   The mean image is NOT subtracted here: the network graph does that.

Pixel convention. Box coordinates are pixel indices as dlib reports them: x0 = left(),
x1 = right() (dlib's right/bottom are the last column/row inside the box, and the
release still used w = right - left; we keep that so crops match the release). The
rounded crop bounds select columns [bl, br) and rows [bt, bb) of the image. The resize
uses OpenCV's half-pixel-centre mapping: output pixel j samples the crop at
src = (j + 0.5) * n_in / n_out - 0.5, clamped to [0, n_in - 1] (edge replication
of the already zero-padded crop).

The box rule (every box, whoever made it: detector, sidecar, API caller). A box is
refused with an InputError naming it, the field and the value unless
- every coordinate is a finite number with |value| <= MAX_COORD (2**31 px: no image has a
  side that long; this part needs no image, and keeps every computation below exact and
  far from overflow);
- x1 - x0 >= 1 and y1 - y0 >= 1 (MIN_SIDE: pixel coordinates; a box in normalised
  0..1 coordinates is refused, not cropped to a pixel);
- when the image is known (at crop time): every coordinate lies within
  +-IMAGE_SPAN (10) x the image's longer side (a face box 10 image sizes away from the
  image is a coordinate mistake, not a face; the bound also caps the crop arithmetic), and
  the box overlaps the image: part of it, of positive area, lies inside the image's
  rectangle [0, W] x [0, H] (x0 < W, x1 > 0, y0 < H, y1 > 0). A box wholly outside would
  crop nothing but padding: a "face" of black pixels.
``check_box`` applies it to every box: the detector's, a sidecar's, an API caller's
(FaceBox and the sidecar reader call it too, for the image-independent part).

Public API
----------
- ``RATIOS``: {"detector": (...), "landmarks": (...)}
- ``check_box(coords, where="box", image_shape=None) -> (x0, y0, x1, y1)``  the box rule
- ``crop_rule(box) -> str``  "landmarks", "detector" or "whole image" (which ratios crop it)
- ``crop_region(box, kind=None) -> (x0, y0, x1, y1)``  float bounds before rounding
- ``crop_bounds(box, kind=None) -> (bl, bt, br, bb)``  integer bounds actually cropped
- ``crop_face(image_rgb, box, kind=None, size=224, out=None) -> float32 [3, size, size]``
- ``crop_faces(images, boxes, kind=None, size=224, out=None) -> float32 [B, 3, size, size]``
- ``prepare_cropped(image_rgb, size=224, out=None) -> float32 [3, size, size]``
  ("already cropped" mode: the whole image is resized, as the release's needCrop=0)
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Sequence

import numpy as np

from engine.errors import InputError, describe_array

RATIOS: dict[str, tuple[float, float, float, float]] = {
    # utils.rescaleBB of the release: expansion of a dlib detector box.
    "detector": (1.785974, 1.951171, 1.835600, 1.670403),
    # utils.rescaleCASIA: expansion of the tight box around the 68 landmarks.
    "landmarks": (1.9255, 2.2591, 1.9423, 1.6087),
}
# Caller-given boxes are taken to be face-detector-like boxes.
_KIND_TO_RATIOS = {"detector": "detector", "given": "detector", "landmarks": "landmarks"}


@functools.lru_cache(maxsize=1)
def _cv2_or_none():
    """OpenCV when installed (imported on first crop, not at import); else None and the
    numpy fallback below is used (same sampling, within 1 grey level)."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - depends on the installation
        return None
    return cv2


# The box rule (see the module docstring).
MAX_COORD = float(2**31)
MIN_SIDE = 1.0
IMAGE_SPAN = 10
_FIELDS = ("x0", "y0", "x1", "y1")


def _as_float(v, where: str, field: str) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise InputError(f"{where}, field {field}: expected a number, found {_short(v)}")
    try:
        f = float(v)  # a Python int too large for a float raises OverflowError here
    except OverflowError:
        f = math.inf
    if not math.isfinite(f) or abs(f) > MAX_COORD:
        raise InputError(f"{where}, field {field}: expected a finite number within +-{MAX_COORD:.0f} px, "
                         f"found {_short(v)}")
    return f


def _short(v) -> str:
    # A 5,000-digit integer must not flood the message (nor hit Python's int-to-str limit).
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 64:
        return f"an integer of about {int(v.bit_length() * 0.30103) + 1} digits"
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def check_box(coords, where: str = "box", image_shape=None) -> tuple[float, float, float, float]:
    """The box rule: (x0, y0, x1, y1) as floats, or an InputError naming `where`, the field
    and the value. Without `image_shape` only the image-independent part is checked
    (numbers, finite, |v| <= MAX_COORD, sides >= MIN_SIDE px); with `image_shape` ([H, W,
    ...]) also that every coordinate lies within +-IMAGE_SPAN x the image's longer side and
    that the box overlaps the image (x0 < W, x1 > 0, y0 < H, y1 > 0)."""
    vals = tuple(_as_float(v, where, f) for v, f in zip(coords, _FIELDS))
    x0, y0, x1, y1 = vals
    if not (x1 - x0 >= MIN_SIDE and y1 - y0 >= MIN_SIDE):
        raise InputError(f"{where}: expected x1 > x0 and y1 > y0, each side at least {MIN_SIDE:g} px (pixel "
                         f"coordinates), found x0={x0:g} y0={y0:g} x1={x1:g} y1={y1:g}")
    if image_shape is not None:
        h, w = int(image_shape[0]), int(image_shape[1])
        span = IMAGE_SPAN * max(h, w)
        for v, f in zip(vals, _FIELDS):
            if abs(v) > span:
                raise InputError(f"{where}, field {f}: expected a coordinate within +-{span} px ({IMAGE_SPAN} x "
                                 f"the longer side of this {w}x{h} image), found {v:g}")
        if not (x0 < w and x1 > 0 and y0 < h and y1 > 0):
            raise InputError(f"{where}: the box (x0={x0:g} y0={y0:g} x1={x1:g} y1={y1:g}) lies wholly outside this "
                             f"{w}x{h} image: expected part of it inside (x0 < {w}, x1 > 0, y0 < {h}, y1 > 0)")
    return vals


def crop_rule(box) -> str:
    """Which crop rule a result's box was cropped with: "landmarks" (the release's default:
    the tight box of the 68 landmarks, rescaleCASIA ratios), "detector" (a dlib or caller-given
    box, rescaleBB ratios) or "whole image" (already-cropped mode: no box)."""
    if box is None:
        return "whole image"
    return _KIND_TO_RATIOS.get(getattr(box, "kind", "detector"), "detector")


def _box_and_kind(box, kind: str | None) -> tuple[tuple[float, float, float, float], str]:
    """Accept a FaceBox (any object with x0..y1 and kind) or a 4-sequence; applies the
    image-independent part of the box rule."""
    where = "box"
    if hasattr(box, "x0"):
        coords = (box.x0, box.y0, box.x1, box.y1)
        kind = kind if kind is not None else getattr(box, "kind", "detector")
        where = getattr(box, "origin", None) or where
    else:
        try:
            coords = tuple(itertools.islice(box, 5))  # never read on: an endless iterator is an error too
        except TypeError:
            raise InputError(f"box: expected a FaceBox or (x0, y0, x1, y1), found {type(box).__name__}") from None
        if len(coords) != 4:
            raise InputError(f"box: expected 4 numbers (x0, y0, x1, y1), found {len(coords)}"
                             f"{' or more' if len(coords) > 4 else ''}")
        kind = kind if kind is not None else "detector"
    coords = check_box(coords, where)
    if kind not in _KIND_TO_RATIOS:
        raise InputError(f"kind: expected one of {sorted(_KIND_TO_RATIOS)}, found {kind!r}")
    return coords, _KIND_TO_RATIOS[kind]


def crop_region(box, kind: str | None = None) -> tuple[float, float, float, float]:
    """Crop rectangle (x0, y0, x1, y1) in image pixels, before rounding.

    `kind` selects the ratios ("detector", "landmarks"; "given" = detector); when None
    it is taken from ``box.kind`` (FaceBox) or defaults to "detector". The box must pass
    the image-independent part of the box rule (InputError otherwise).
    """
    (x0, y0, x1, y1), rk = _box_and_kind(box, kind)
    r0, r1, r2, r3 = RATIOS[rk]
    cx = x0 + (x1 - x0) / 2.0
    cy = y0 + (y1 - y0) / 2.0
    t = max(x1 - x0, y1 - y0) / 2.0
    return (cx - r0 * t, cy - r1 * t, cx + r2 * t, cy + r3 * t)


def _round_half_away(v: float) -> int:
    # The release ran under Python 2, whose round() rounds halves away from zero
    # (Python 3's round() goes to even, which would move some crops by a pixel).
    return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))


def crop_bounds(box, kind: str | None = None) -> tuple[int, int, int, int]:
    """Integer crop bounds (bl, bt, br, bb): columns [bl, br), rows [bt, bb)."""
    return tuple(_round_half_away(v) for v in crop_region(box, kind))  # type: ignore[return-value]


def _check_image(image: np.ndarray, name: str = "image") -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{name}: expected RGB uint8 [H, W, 3] (see engine.images.as_rgb), found {describe_array(image)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"{name}: expected a non-empty image, found {describe_array(image)}")


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"size: expected a positive integer, found {size!r}")
    return int(size)


def _check_out(out, shape: tuple[int, ...]) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or tuple(out.shape) != shape:
        raise InputError(f"out: expected float32{list(shape)}, found {describe_array(out)}")
    return out


# Up to this many pixels, a crop region that leaves the image is zero-padded into a copy
# and resized by OpenCV, which is exactly what the release did (bit-identical crops). A
# larger region (a huge caller box: the copy could need terabytes) is sampled straight
# from the image instead: the same bilinear sampling, within 1 grey level of OpenCV's
# 11-bit fixed-point weights, with memory bounded by the output.
_MAX_PADDED_PIXELS = 1 << 24  # 48 MiB of uint8 RGB


def _padded_crop(image: np.ndarray, bl: int, bt: int, br: int, bb: int) -> np.ndarray:
    """image[bt:bb, bl:br] with zeros where the rectangle leaves the image (a view when inside)."""
    h, w = image.shape[:2]
    if bl >= 0 and bt >= 0 and br <= w and bb <= h:
        return image[bt:bb, bl:br]
    region = np.zeros((bb - bt, br - bl, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(bl, 0), max(bt, 0), min(br, w), min(bb, h)
    if sx1 > sx0 and sy1 > sy0:
        region[sy0 - bt : sy1 - bt, sx0 - bl : sx1 - bl] = image[sy0:sy1, sx0:sx1]
    return region


def _resize_region(image: np.ndarray, bl: int, bt: int, br: int, bb: int, size: int) -> np.ndarray:
    """The zero-padded region [bt, bb) x [bl, br) of `image` resized to [size, size, 3] uint8."""
    h, w = image.shape[:2]
    inside = bl >= 0 and bt >= 0 and br <= w and bb <= h
    cv2 = _cv2_or_none()
    if cv2 is not None and (inside or (br - bl) * (bb - bt) <= _MAX_PADDED_PIXELS):
        region = _padded_crop(image, bl, bt, br, bb)
        return cv2.resize(region, (size, size), interpolation=cv2.INTER_LINEAR)
    return _sample_bilinear(image, bl, bt, br, bb, size)


def _axis_taps(start: int, n_in: int, n_out: int, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For one axis: image indices [2, n_out] of the two taps of each output pixel (clipped
    into the image), whether each tap lies in the image, and the taps' weights. The crop
    coordinates follow OpenCV (half-pixel centres, clamped to the crop: edge replication);
    float64 throughout (the box rule keeps every bound within about 4 x MAX_COORD)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (float(n_in) / n_out) - 0.5
    src = np.clip(src, 0.0, float(n_in - 1))
    i0 = np.floor(src)
    i1 = np.minimum(i0 + 1.0, float(n_in - 1))
    frac = src - i0
    p0, p1 = float(start) + i0, float(start) + i1
    ok0, ok1 = (p0 >= 0) & (p0 < limit), (p1 >= 0) & (p1 < limit)
    as_index = lambda p: np.clip(p, 0, limit - 1).astype(np.intp)  # noqa: E731
    return np.stack([as_index(p0), as_index(p1)]), np.stack([ok0, ok1]), np.stack([1.0 - frac, frac])


def _sample_bilinear(image: np.ndarray, bl: int, bt: int, br: int, bb: int, size: int) -> np.ndarray:
    """Bilinear resize of the zero-padded region without building it: each output pixel
    reads its 2 x 2 taps from the image (zero outside). Also the resize when OpenCV is
    absent (same sampling; exact float weights, so within 1 grey level of OpenCV)."""
    h, w = image.shape[:2]
    ry, oky, wy = _axis_taps(bt, bb - bt, size, h)
    rx, okx, wx = _axis_taps(bl, br - bl, size, w)
    out = np.zeros((size, size, 3), dtype=np.float32)
    for a in range(2):
        for b in range(2):
            weight = (wy[a] * oky[a])[:, None] * (wx[b] * okx[b])[None, :]  # zero where a tap is outside
            out += image[ry[a][:, None], rx[b][None, :]].astype(np.float32) * weight[:, :, None].astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _to_planar_bgr(resized: np.ndarray, out: np.ndarray) -> np.ndarray:
    # RGB HWC uint8 -> BGR CHW float32 in one strided copy into the caller's buffer.
    np.copyto(out, resized[:, :, ::-1].transpose(2, 0, 1), casting="unsafe")
    return out


def crop_face(image_rgb: np.ndarray, box, kind: str | None = None, size: int = 224, out: np.ndarray | None = None) -> np.ndarray:
    """Crop one face by the release's rule; returns float32 [3, size, size], planar BGR 0..255.

    `image_rgb` is RGB uint8 [H, W, 3] (engine.images gives exactly that). `box` is a
    FaceBox or (x0, y0, x1, y1); `kind` as in `crop_region`. `out`, when given, is a
    float32 [3, size, size] buffer written in place and returned. A box outside the box
    rule (module docstring; e.g. 10 image sizes away) raises InputError naming the box's
    origin (a sidecar's file and line) and the value.
    """
    _check_image(image_rgb)
    size = _check_size(size)
    out = _check_out(out, (3, size, size))
    coords, rk = _box_and_kind(box, kind)
    check_box(coords, getattr(box, "origin", None) or "box", image_rgb.shape)  # the image-dependent part
    bl, bt, br, bb = crop_bounds(coords, rk)
    return _to_planar_bgr(_resize_region(image_rgb, bl, bt, br, bb, size), out)


def crop_faces(
    images: np.ndarray | Sequence[np.ndarray],
    boxes: Sequence,
    kind: str | None = None,
    size: int = 224,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Crop many faces into one [B, 3, size, size] float32 batch (B = len(boxes)).

    `images` is either one image (all boxes refer to it) or a sequence with one image
    per box. `out` may be a preallocated float32 buffer with at least B rows; the
    first B rows are written and ``out[:B]`` is returned (no allocation per call).
    """
    size = _check_size(size)
    boxes = list(boxes)
    n = len(boxes)
    if isinstance(images, np.ndarray):
        per_box = [images] * n
    else:
        per_box = list(images)
        if len(per_box) != n:
            raise InputError(f"images: expected one image per box ({n}), found {len(per_box)}")
    if out is None:
        out = np.empty((n, 3, size, size), dtype=np.float32)
    elif (
        not isinstance(out, np.ndarray)
        or out.dtype != np.float32
        or out.ndim != 4
        or tuple(out.shape[1:]) != (3, size, size)
        or out.shape[0] < n
    ):
        raise InputError(f"out: expected float32[>={n}, 3, {size}, {size}], found {describe_array(out)}")
    for i, (img, box) in enumerate(zip(per_box, boxes)):
        crop_face(img, box, kind=kind, size=size, out=out[i])
    return out[:n]


def prepare_cropped(image_rgb: np.ndarray, size: int = 224, out: np.ndarray | None = None) -> np.ndarray:
    """'Already cropped' mode: resize the whole image to size x size (release, needCrop=0).

    Use it for images that already follow the release's crop (e.g. CASIA-like
    square crops); returns float32 [3, size, size] planar BGR 0..255.
    """
    _check_image(image_rgb)
    size = _check_size(size)
    out = _check_out(out, (3, size, size))
    h, w = image_rgb.shape[:2]
    return _to_planar_bgr(_resize_region(image_rgb, 0, 0, w, h, size), out)
