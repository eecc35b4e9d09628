"""Face boxes: dlib's HOG frontal detector, its 68-point landmark box, and caller-given boxes.

Public API
----------
- ``FaceBox(x0, y0, x1, y1, score=1.0, kind="given", landmarks=None, origin="")`` (frozen dataclass)
- ``FaceDetector(threshold=None, upsample=1, landmarks="auto", max_side=2048, predictor_path=None)``
  with ``.detect(image) -> list[FaceBox]`` (also callable)
- ``detect_faces(image, **kwargs) -> list[FaceBox]``  (one-off convenience)
- ``check_detector_options(threshold, upsample, max_side)``  validate without dlib
- ``describe_rule(threshold) -> str``  the score rule in words (for messages)
- ``landmark_model_path() -> Path | None``   where face-recognition-models keeps the 68-point model
- ``load_boxes(path, kind="given") -> BoxSidecar``  CSV or JSON sidecar ({image name: [FaceBox, ...]})
- ``match_boxes(boxes, inputs)``  which input each entry belongs to: the one rule (engine.box_match)
- ``lookup_boxes(boxes, image_path) -> list[FaceBox]``  that rule for a run of one image

What the release did and what we do
------------------------------------
The original demo ran ``dlib.get_frontal_face_detector()(img, 1)``: one upsampling, and
dlib's default adjust_threshold 0, so every box scoring above 0 was kept; it used the
first face, then took the tight box around the 68 landmarks and cropped it with the
"landmarks" ratios (see engine.crop). We crop *every* face the same way.

The default score rule (threshold=None; the CLI's --det-threshold not given):
- each image's best face is kept down to the release's threshold, score >= 0;
- every further face of the image needs score >= 0.5 (OTHER_FACES_THRESHOLD).
Why: at 0 dlib also keeps weak false boxes next to a real face. On
``skimage.data.astronaut()`` (upsample 1) it scores the face 1.16 and a false box on the
suit 0.12: the rule keeps the face and drops the suit. A single 0.5 threshold for all
faces (what this engine did before) loses real faces the release found: on the
release's own demo images (LFW photos in anhttran/3dmm_cnn, demoCode/data) dlib scores
16 of the 17 faces 1.08-2.56, but Brawley_King_0001.jpg's only face 0.39; a blurred
face scores about 0.2-0.3. Both are kept by the rule, as the release kept them.
An explicit threshold T (--det-threshold T) replaces the rule: every face scoring >= T is
kept (T is passed to dlib as adjust_threshold; negative values find more, weaker faces).
tests/inputs/test_detect.py checks the rule on real photos.

Large photos: detection runs on a copy whose longer side is at most `max_side` pixels
(default 2048; None: full resolution), with the boxes mapped back to the original and the
landmarks found on the original; the crop is always taken from the original. dlib's HOG
window is 80 px and upsample=1 doubles the image, so faces of about 40 px and more in
the copy are found: in a photo of longer side L that is about 40 * L / 2048 px (all
faces of 40 px and up in photos up to 2048 px, where nothing changes; 176 px in a
9000 x 9000 photo). Detection time and memory grow with the pixels detected on: on an
81-megapixel photo, detecting took 24 s at full size (the whole process peaking at 4.6 GB)
and 1.4 s at 2048 (1.0 GB, the decoded photo included); bench/results/engine_bench_cpu.md,
the detect_81mp rows (2-core machine). Why 2048: photos up to 2048 px (LFW, web images,
HD video) are detected exactly as at full size; a 12-megapixel phone photo (4032 px) still
finds faces from about 80 px; and the cost of any photo is capped near that of a 4-megapixel
one. --det-max-side 0 (max_side=None) detects at full size, for small faces in large photos.

Note: the release passed OpenCV's BGR image to the detector (a slip); we pass RGB,
which is what dlib expects. Scores can therefore differ slightly from the release's.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.box_match import match_boxes  # noqa: F401 (public here: the sidecar's matching rule)
from engine.crop import MAX_COORD, check_box
from engine.errors import InputError, UnavailableError
from engine.images import as_rgb

KINDS = ("detector", "landmarks", "given")
BEST_FACE_THRESHOLD = 0.0  # the release's: dlib's default adjust_threshold
OTHER_FACES_THRESHOLD = 0.5  # further faces of an image (weak false boxes score 0-0.3)
DEFAULT_UPSAMPLE = 1  # as the release
MAX_UPSAMPLE = 4  # each step quadruples dlib's time and memory
DEFAULT_MAX_SIDE = 2048  # see "Large photos" above
MIN_MAX_SIDE = 32
LANDMARK_MODEL_NAME = "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True, slots=True)  # slots: a sidecar may hold 10^5 boxes
class FaceBox:
    """A face rectangle in image pixel indices (dlib convention; see engine.crop).

    kind: "detector" (dlib HOG box), "landmarks" (tight box of the 68 landmarks; crop
    with the landmark ratios) or "given" (a caller's box; cropped like a detector box).
    score: detector score (higher is more confident); 1.0 for a given box without one.
    landmarks: float32 [68, 2] (x, y) image pixels in dlib's order, or None: dlib's for kind
        "landmarks", or a caller's (any kind; `from_landmarks` makes the box from them). Only
        the shape is checked here: a caller's non-finite landmarks are that face's pose error.
    origin: where the box came from, for error messages (e.g. "boxes.csv line 3").
    The coordinates must pass the image-independent part of engine.crop's box rule
    (finite, |v| <= 2**31, each side >= 1 px); InputError otherwise. They are stored as floats.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    kind: str = "given"
    landmarks: np.ndarray | None = field(default=None, compare=False, repr=False)
    origin: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        where = self.origin or "FaceBox"
        for name, v in zip(("x0", "y0", "x1", "y1"), check_box((self.x0, self.y0, self.x1, self.y1), where)):
            object.__setattr__(self, name, v)
        object.__setattr__(self, "score", _finite(self.score, f"{where}, field score"))
        if self.kind not in KINDS:
            raise InputError(f"{where}: kind: expected one of {KINDS}, found {self.kind!r}")
        if self.landmarks is not None:
            lm = _landmark_array(self.landmarks, f"{where}, field landmarks")
            object.__setattr__(self, "landmarks", lm)
            if np.isfinite(lm).all():  # non-finite landmarks are that face's pose error, not the box's
                cx, cy = (lm.min(axis=0) + lm.max(axis=0)) / 2.0
                if not (self.x0 <= cx <= self.x1 and self.y0 <= cy <= self.y1):
                    # The crop comes from the box and the pose from the landmarks: they must be one face.
                    raise InputError(f"{where}: the landmarks and the box describe different faces: expected the "
                                     f"landmarks' centre inside the box ({self.x0:g}, {self.y0:g})-({self.x1:g}, "
                                     f"{self.y1:g}), found it at ({cx:.1f}, {cy:.1f})")

    @classmethod
    def from_landmarks(cls, landmarks, *, score: float = 1.0, origin: str = "") -> "FaceBox":
        """The face of 68 landmarks [68, 2]: their tight box, cropped by the landmark ratios as the
        release cropped dlib's (kind "landmarks"). InputError naming `origin` when the landmarks
        are not [68, 2] numbers, not finite, or span less than the box rule's 1 px."""
        where = origin or "FaceBox"
        lm = _landmark_array(landmarks, f"{where}, field landmarks")
        bad = ~np.isfinite(lm)
        if bad.any():
            i, c = (int(x) for x in np.argwhere(bad)[0])
            raise InputError(f"{where}, field landmarks: expected finite pixel coordinates (the face's box is "
                             f"their tight box), found {lm[i, c]} at point {i} ({'xy'[c]})")
        (x0, y0), (x1, y1) = lm.min(axis=0), lm.max(axis=0)
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise InputError(f"{where}, field landmarks: expected 68 points spread over a face (their tight box is "
                             f"the face's, at least 1 px wide and high), found them collapsed to "
                             f"{x1 - x0:g} x {y1 - y0:g} px at ({x0:g}, {y0:g})")
        return cls(float(x0), float(y0), float(x1), float(y1), score, "landmarks", lm, origin)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)


NUM_LANDMARKS = 68  # dlib's 68-point layout (iBUG 300-W), the release's


def _landmark_array(landmarks, where: str) -> np.ndarray:
    """float32 [68, 2], read-only, of array-like landmarks; InputError naming `where` otherwise."""
    try:
        a = np.array(landmarks, dtype=np.float64)  # a copy: the caller's array may change later
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{where}: expected 68 (x, y) pixel coordinates [68, 2], "
                         f"found {type(landmarks).__name__} that is not numbers") from None
    if a.shape != (NUM_LANDMARKS, 2):
        raise InputError(f"{where}: expected 68 (x, y) pixel coordinates [68, 2], found shape {list(a.shape)}")
    # Finite values beyond the boxes' bound (engine.crop.check_box) are no pixel of any photo, and
    # would overflow float32 (read in float64 first, so the message quotes the caller's number).
    huge = np.isfinite(a) & (np.abs(a) > MAX_COORD)
    if huge.any():
        i, c = (int(x) for x in np.argwhere(huge)[0])
        raise InputError(f"{where}: expected pixel coordinates within +-{MAX_COORD:.0f}, found {a[i, c]:g} at point {i} "
                         f"({'xy'[c]})")
    a = a.astype(np.float32)
    a.setflags(write=False)
    return a


def _finite(v, where: str) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise InputError(f"{where}: expected a number, found {type(v).__name__}")
    try:
        f = float(v)
    except OverflowError:  # a Python int beyond the float range
        f = math.inf
    if not math.isfinite(f):
        raise InputError(f"{where}: expected a finite number, found {f}")
    return f


def _sort_key(b: FaceBox):
    # Most confident first; position breaks ties so the order never depends on dlib internals.
    return (-b.score, b.y0, b.x0, b.y1, b.x1)


def landmark_model_path() -> Path | None:
    """Path of dlib's 68-point model shipped by the PyPI package face-recognition-models.

    Found via importlib's spec, without importing the package: its __init__ imports
    pkg_resources, which recent setuptools no longer provides.
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "models" / LANDMARK_MODEL_NAME
        if p.is_file():
            return p
    return None


def _dlib():
    try:
        import dlib
    except ImportError:
        raise UnavailableError(
            "face detection needs dlib: pip install dlib-bin (and face-recognition-models for "
            "the 68-point landmark box), or install the 'detect' extra; or pass your own boxes"
        ) from None
    return dlib


def check_detector_options(threshold=None, upsample=DEFAULT_UPSAMPLE, max_side=DEFAULT_MAX_SIDE,
                           prefix: str = "") -> tuple[float | None, int, int | None]:
    """Validate the detector's options (no dlib needed): (threshold, upsample, max_side).

    threshold: None (the default rule) or a finite number; upsample: an integer 0..4;
    max_side: None (full resolution) or an integer >= 32. `prefix` starts each message
    (e.g. "Reconstructor: det_"). InputError naming the option otherwise."""
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
                or not math.isfinite(threshold):
            raise InputError(f"{prefix}threshold: expected None (the default rule) or a finite number, "
                             f"found {threshold!r}")
        threshold = float(threshold)
    if isinstance(upsample, bool) or not isinstance(upsample, (int, np.integer)) \
            or not 0 <= upsample <= MAX_UPSAMPLE:
        raise InputError(f"{prefix}upsample: expected an integer in 0..{MAX_UPSAMPLE}, found {upsample!r}")
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer))
                                 or max_side < MIN_MAX_SIDE):
        raise InputError(f"{prefix}max_side: expected None (full resolution) or an integer >= {MIN_MAX_SIDE}, "
                         f"found {max_side!r}")
    return threshold, int(upsample), None if max_side is None else int(max_side)


def describe_rule(threshold: float | None) -> str:
    """The score rule in words, e.g. for "no face found (...)" messages."""
    if threshold is None:
        return (f"best face of an image from score {BEST_FACE_THRESHOLD:g}, further faces from "
                f"{OTHER_FACES_THRESHOLD:g}")
    return f"faces from score {threshold:g}"


class FaceDetector:
    """dlib HOG frontal face detector, optionally refined to the 68-landmark box.

    threshold: None (default) for the default rule: each image's best face is kept when it
        scores >= 0 (the release's threshold), further faces when they score >= 0.5. A number
        T instead keeps every face scoring >= T (passed to dlib as adjust_threshold).
    upsample: times dlib upsamples the image, 0..4 (1 as the release; finds faces down to
        about 40 px, costs about 4x the time of 0).
    landmarks: "auto" (use the 68-point model when found), True (require it:
        UnavailableError otherwise) or False (detector boxes only).
    max_side: images whose longer side exceeds it are downscaled for the detector only
        (boxes are mapped back; landmarks run on the full image); None: full resolution.
        Default 2048: bounds time and memory on large photos (module docstring).
    predictor_path: an explicit shape_predictor_68_face_landmarks.dat.

    Not thread-safe (dlib objects are not): use one detector per thread.
    """

    def __init__(
        self,
        *,
        threshold: float | None = None,
        upsample: int = DEFAULT_UPSAMPLE,
        landmarks: bool | str = "auto",
        max_side: int | None = DEFAULT_MAX_SIDE,
        predictor_path: str | os.PathLike | None = None,
    ) -> None:
        self.threshold, self.upsample, self.max_side = check_detector_options(threshold, upsample, max_side)
        if landmarks not in ("auto", True, False):
            raise InputError(f"landmarks: expected 'auto', True or False, found {landmarks!r}")
        dlib = _dlib()
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = None
        self.predictor_path: Path | None = None
        if landmarks is not False:
            path = Path(predictor_path) if predictor_path is not None else landmark_model_path()
            if path is None or not path.is_file():
                if landmarks is True or predictor_path is not None:
                    raise UnavailableError(
                        f"68-point landmark model not found ({path or LANDMARK_MODEL_NAME}): "
                        "pip install face-recognition-models, or pass predictor_path"
                    )
            else:
                try:
                    self._predictor = dlib.shape_predictor(str(path))
                except RuntimeError as e:
                    raise InputError(f"{path}: cannot load as a dlib shape predictor: {e}") from None
                self.predictor_path = path

    @property
    def uses_landmarks(self) -> bool:
        return self._predictor is not None

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """All faces in an RGB image (any array `engine.images.as_rgb` accepts) that pass the
        score rule, sorted by descending score then position. Empty list when there is none."""
        img = as_rgb(image, "image")
        small, sx, sy = self._detector_input(img)
        adjust = min(BEST_FACE_THRESHOLD, OTHER_FACES_THRESHOLD) if self.threshold is None else self.threshold
        rects, scores, _ = self._detector.run(small, self.upsample, adjust)
        found = sorted(zip(scores, range(len(rects))), key=lambda t: -t[0])
        keep = [(score, rects[i]) for rank, (score, i) in enumerate(found) if self._passes(score, rank)]
        dlib = _dlib()
        out = []
        for score, rect in keep:
            x0, y0, x1, y1 = (rect.left() / sx, rect.top() / sy, rect.right() / sx, rect.bottom() / sy)
            if self._predictor is not None:
                r = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
                shape = self._predictor(img, r)
                pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
                lx0, ly0 = pts.min(axis=0)
                lx1, ly1 = pts.max(axis=0)
                if lx1 - lx0 >= 1 and ly1 - ly0 >= 1:
                    out.append(FaceBox(float(lx0), float(ly0), float(lx1), float(ly1), float(score), "landmarks", pts))
                    continue
            if x1 - x0 >= 1 and y1 - y0 >= 1:
                out.append(FaceBox(float(x0), float(y0), float(x1), float(y1), float(score), "detector"))
        out.sort(key=_sort_key)
        return out

    __call__ = detect

    def _passes(self, score: float, rank: int) -> bool:
        """The score rule; rank 0 is the image's best face. dlib's own adjust_threshold test is
        not documented as >= vs >, so the rule is applied here again."""
        if self.threshold is not None:
            return score >= self.threshold
        return score >= (BEST_FACE_THRESHOLD if rank == 0 else OTHER_FACES_THRESHOLD)

    def _detector_input(self, img: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(image the detector runs on, x scale, y scale): `img` itself, or a copy whose longer
        side is max_side, built without any full-size copy (see downscale)."""
        h, w = img.shape[:2]
        if self.max_side is None or max(h, w) <= self.max_side:
            return img, 1.0, 1.0
        small = downscale(img, self.max_side)
        return small, small.shape[1] / w, small.shape[0] / h


# Rows of the source image converted to Pillow at a time in `downscale`: bounds its extra
# memory (Pillow stores RGB in 4 bytes per pixel) whatever the image size.
_STRIP_PIXELS = 1 << 22


def downscale(img: np.ndarray, max_side: int) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> a copy whose longer side is max_side (aspect kept), antialiased.

    Exactly Pillow's ``resize(size, BILINEAR, reducing_gap=1.0)`` (a box reduction by the
    integer factors that leave 1x-2x the target size, then an antialiased bilinear resize
    of the result), except that the box reduction runs in strips of rows, so memory stays
    bounded by a strip and the outputs: never a full-size copy (Pillow would first copy an
    81-megapixel array into 324 MB of its own)."""
    from PIL import Image

    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    fx, fy = max(1, w // size[0]), max(1, h // size[1])  # Pillow's factors for reducing_gap=1.0
    if fx > 1 or fy > 1:
        rows = fy * max(1, _STRIP_PIXELS // (w * fy))  # a multiple of fy: strips reduce without seams
        parts = [np.asarray(Image.fromarray(np.ascontiguousarray(img[r:r + rows])).reduce((fx, fy)))
                 for r in range(0, h, rows)]
        reduced = Image.fromarray(np.concatenate(parts, axis=0))
        # The reduced image's last column/row may average fewer pixels: the box says where
        # the original's edge falls in it, as Pillow does.
        small = reduced.resize(size, Image.BILINEAR, box=(0, 0, w / fx, h / fy))
    else:
        small = Image.fromarray(img).resize(size, Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(small))


def detect_faces(image: np.ndarray, **kwargs) -> list[FaceBox]:
    """One-off detection (builds a FaceDetector each call; keep one for many images)."""
    return FaceDetector(**kwargs).detect(image)


# --------------------------------------------------------------------------- sidecars

_CSV_REQUIRED = ("image", "x0", "y0", "x1", "y1")
_CSV_ALLOWED = set(_CSV_REQUIRED) | {"score"}
_FIELDS = ("x0", "y0", "x1", "y1", "score")
# A sidecar is read whole, and its boxes become Python objects: about 300 bytes per box, and
# the parse peaks at about 45x the file's size (measured: 16 MiB of 10-byte CSV rows, 650 MB;
# of JSON boxes, 750 MB). 8 MiB (about 200,000 boxes of a dataset's usual names) keeps a
# worst-case file under ~400 MB.
MAX_SIDECAR_BYTES = 8 << 20
# A decimal number as a spreadsheet writes it (float() would also take "1_0", "infinity",
# non-ASCII digits...). Unambiguous, so a failed match of a 100,000-digit field is linear
# ("\d+\.?\d*" can split a run of digits n ways: quadratic, 30 s for 65,000 digits).
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


class BoxSidecar(Mapping):
    """What `load_boxes` returns: a read-only mapping {image name: [FaceBox, ...]}, names in
    file order, boxes in file order.

    An image whose boxes break the box rule (a value that is not a finite number, beyond
    +-2**31, a side under 1 px...) or its entry's shape keeps its place: looking it up raises
    that image's InputError (file, line or key, field and value), so a pipeline fails that
    input alone and the others run. `errors` lists them: {image name: message}.
    """

    def __init__(self, path, entries: dict[str, list[FaceBox] | str]):
        self.path = Path(path)
        self._entries = entries

    def __getitem__(self, name: str) -> list[FaceBox]:
        v = self._entries[name]
        if isinstance(v, str):
            raise InputError(v)
        return list(v)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def errors(self) -> dict[str, str]:
        return {k: v for k, v in self._entries.items() if isinstance(v, str)}

    def __repr__(self) -> str:
        return f"<BoxSidecar {self.path}: {len(self)} images, {len(self.errors)} with bad boxes>"


class _Entries:
    """Builds a BoxSidecar's entries: the first bad box of an image is its error."""

    def __init__(self):
        self.d: dict[str, list[FaceBox] | str] = {}

    def add(self, name: str, make) -> None:
        if isinstance(self.d.get(name), str):
            return  # already failed: its first error stands
        try:
            box = make()
        except InputError as e:
            self.d[name] = str(e)
            return
        self.d.setdefault(name, []).append(box)

    def fail(self, name: str, message: str) -> None:
        if not isinstance(self.d.get(name), str):
            self.d[name] = message


def _abbrev(text: str) -> str:
    # A 5,000-digit number must not flood the message.
    return repr(text) if len(text) <= 40 else f"{text[:24]!r}... ({len(text)} characters)"


def _beyond(where: str, text: str) -> InputError:
    return InputError(f"{where}: expected a finite number, found {_abbrev(text)} (beyond the float range)")


def _csv_number(text: str, where: str) -> float:
    t = text.strip()
    if _DECIMAL.fullmatch(t):
        v = float(t)
        if not math.isfinite(v):
            raise _beyond(where, t)
        return v
    if t.lower().lstrip("+-") in ("inf", "infinity", "nan"):
        raise InputError(f"{where}: expected a finite number, found {t!r}")
    raise InputError(f"{where}: expected a number, found {_abbrev(t)}")


def _make_box(vals, kind: str, where: str) -> FaceBox:
    """A FaceBox under the image-independent box rule; its origin names the file and line."""
    score = vals[4] if len(vals) > 4 else 1.0
    return FaceBox(*vals[:4], score=score, kind=kind, origin=where)


def load_boxes(path: str | os.PathLike, *, kind: str = "given") -> BoxSidecar:
    """Read caller-given face boxes from a CSV or JSON sidecar.

    CSV (``.csv``): a header naming the columns image,x0,y0,x1,y1 and optionally score
    (any order), then one row per face. JSON (``.json``): {"image name": [[x0, y0, x1,
    y1], [x0, y0, x1, y1, score], ...], ...}; in JSON a face may also be given by its 68
    landmarks (dlib's order, image pixels): {"landmarks": [[x, y], ...]} (the box is their
    tight box, cropped like dlib's landmark box) or {"box": [x0, y0, x1, y1], "landmarks":
    [...]} (that box), each with an optional "score"; the landmarks are what the pose is
    fitted to (reconstruct --pose). Returns a BoxSidecar {image name: [FaceBox,
    ...]}. `kind` is "given" (cropped like detector boxes) or "landmarks" when the boxes are
    tight landmark boxes. Which input an image name belongs to is engine.box_match's rule
    (the same path, relative to the working directory or to this file's folder; the path
    below the folder given; the end of one input's path alone), applied by the pipeline.

    Every number is checked by engine.crop's box rule: here the image-independent part
    (finite, |v| <= 2**31, each side >= 1 px; a score finite), at crop time the part that
    needs the image (within +-10 x its longer side). A bad box fails its image only (see
    BoxSidecar). A file that cannot be read as a sidecar at all (missing, over
    MAX_SIDECAR_BYTES = 8 MiB, not UTF-8, a bad CSV header or row length, invalid or
    too deeply nested JSON, not a JSON object) raises InputError naming the file and line.
    """
    if kind not in KINDS:
        raise InputError(f"kind: expected one of {KINDS}, found {kind!r}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise InputError(f"{path}: boxes file: expected a .csv or .json extension, found {path.suffix or 'none'}")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SIDECAR_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such boxes file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read boxes file: {e.strerror or e}") from None
    if len(data) > MAX_SIDECAR_BYTES:
        raise InputError(f"{path}: boxes file larger than {MAX_SIDECAR_BYTES >> 20} MiB (about 200,000 boxes): "
                         "split it, one file per run")
    try:
        text = data.decode("utf-8-sig")  # -sig: tolerate a BOM from spreadsheets
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: boxes file: expected UTF-8 text, found byte 0x{data[e.start]:02x} "
                         f"at offset {e.start}") from None
    entries = _boxes_from_csv(text, path, kind) if suffix == ".csv" else _boxes_from_json(text, path, kind)
    return BoxSidecar(path, entries)


def _boxes_from_csv(text: str, path: Path, kind: str) -> dict:
    rows = csv.reader(io.StringIO(text, newline=""))
    out = _Entries()
    try:
        header = next(rows, None)
        if header is None:
            raise InputError(f"{path}: empty boxes file, expected a header line {','.join(_CSV_REQUIRED)}[,score]")
        header = [h.strip().lower() for h in header]
        missing = [c for c in _CSV_REQUIRED if c not in header]
        unknown = [c for c in header if c not in _CSV_ALLOWED]
        if missing or unknown or len(set(header)) != len(header):
            raise InputError(f"{path} line 1: header: expected columns {','.join(_CSV_REQUIRED)}[,score], "
                             f"found {','.join(header)[:200]}")
        col = {c: i for i, c in enumerate(header)}
        fields = [f for f in _FIELDS if f in col]
        for row in rows:
            lineno = rows.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise InputError(f"{path} line {lineno}: expected {len(header)} fields, found {len(row)}")
            name = row[col["image"]].strip()
            if not name:
                raise InputError(f"{path} line {lineno}, field image: expected an image name, found an empty field")
            where = f"{path} line {lineno}"
            out.add(name, lambda: _make_box([_csv_number(row[col[f]], f"{where}, field {f}") for f in fields],
                                            kind, where))
    except csv.Error as e:  # e.g. a field over csv.field_size_limit(), a quote left open
        raise InputError(f"{path} line {rows.line_num}: not a valid CSV row: {e}") from None
    return out.d


class _OutOfRange(str):
    """A JSON number beyond the float range, kept as its text (for the message)."""


def _json_number(text: str):
    """parse_int and parse_float: every JSON number becomes a float, so an integer of any
    length never reaches Python's 4,300-digit int limit, and one beyond the float range
    stays text for its box's error."""
    v = float(text) + 0.0  # + 0.0: -0 is the coordinate 0 (and prints as 0)
    return v if math.isfinite(v) else _OutOfRange(text)


class _Pairs(list):
    """A JSON object as its list of (key, value) pairs (object_pairs_hook), so duplicate image
    names are seen (a dict would silently keep the last)."""


# Nesting a boxes JSON may have: a file nests 3 levels ({image: [[x0, y0, x1, y1], ...]}), 5 with
# landmarks ({image: [{"landmarks": [[x, y], ...]}]}); a little more, so that a box of the wrong
# shape is that image's own error, not the file's.
BOXES_MAX_DEPTH = 8


FILE_NESTING = "a boxes file nests 3 levels ({image: [[x0, y0, x1, y1], ...]}), 5 with landmarks"


def loads_boxes_json(text: str, where: str, *, max_bytes: int = MAX_SIDECAR_BYTES, nesting: str = FILE_NESTING):
    """Boxes JSON as `json_face_box` reads it, by the engine's one guarded JSON reader
    (engine.fileio.loads_json: size and nesting bounded before parsing): every number a float
    (an integer of any length never meets Python's 4,300-digit limit) or, beyond the float
    range, _OutOfRange (its text, for its box's error); an object the list of its (key,
    value) pairs (_Pairs). InputError naming `where` (and the line) for a text that is not
    such JSON: over `max_bytes` UTF-8 bytes, nested deeper than BOXES_MAX_DEPTH (`nesting`
    says how deep the caller's form nests), invalid."""
    from engine.fileio import JSONRefused, loads_json

    try:
        # NaN and Infinity (Python's extension) parse, to be refused by their box's rule with the
        # box's field: that image fails alone, as with any other bad value.
        return loads_json(text, max_bytes=max_bytes, max_depth=BOXES_MAX_DEPTH, parse_int=_json_number,
                          parse_float=_json_number, parse_constant=float, object_pairs_hook=_Pairs)
    except JSONRefused as e:
        if e.kind == "depth":
            raise InputError(f"{where}: JSON nested too deeply ({e.depth} levels, at most {BOXES_MAX_DEPTH}): "
                             f"{nesting}") from None
        if e.kind == "syntax":
            raise InputError(f"{where}" + (f" line {e.line}" if e.line is not None else "")
                             + f": invalid JSON: {e.detail}") from None
        raise InputError(f"{where}: {e}") from None


def _boxes_from_json(text: str, path: Path, kind: str) -> dict:
    data = loads_boxes_json(text, str(path))
    if not isinstance(data, _Pairs):
        raise InputError(f"{path}: expected a JSON object {{image name: [[x0, y0, x1, y1], ...]}}, "
                         f"found {json_type(data)}")
    out = _Entries()
    seen: set[str] = set()
    for name, boxes in data:
        where = f"{path}: entry {name[:200]!r}"
        if name in seen:
            out.fail(name, f"{where}: the image name appears twice in the file; give all its boxes in one entry")
            continue
        seen.add(name)
        if type(boxes) is not list:  # noqa: E721 (an object, _Pairs, is a list too)
            out.fail(name, f"{where}: expected a list of boxes [[x0, y0, x1, y1], ...], found {json_type(boxes)}")
            continue
        out.d.setdefault(name, [])
        for i, b in enumerate(boxes):
            out.add(name, lambda: json_face_box(b, kind, f"{where} box {i}"))
    return out.d


def json_type(v) -> str:
    return {list: "an array", _Pairs: "an object", str: "a string", float: "a number", bool: "a boolean",
            type(None): "null"}.get(type(v), type(v).__name__)


_BOX_KEYS = ("box", "landmarks", "score")


def _json_landmarks(v, where: str) -> list:
    """68 [x, y] pairs of JSON numbers (every JSON number is a float here, or _OutOfRange)."""
    if type(v) is not list or len(v) != NUM_LANDMARKS:  # noqa: E721
        what = f"{len(v)} points" if type(v) is list else json_type(v)  # noqa: E721
        raise InputError(f"{where}: expected 68 points [[x, y], ...], found {what}")
    for i, p in enumerate(v):
        if type(p) is not list or len(p) != 2:  # noqa: E721
            what = f"{len(p)} values" if type(p) is list else json_type(p)  # noqa: E721
            raise InputError(f"{where}, point {i}: expected [x, y], found {what}")
        for c, x in zip("xy", p):
            if isinstance(x, _OutOfRange):
                raise _beyond(f"{where}, point {i} {c}", x)
            if type(x) is not float:  # noqa: E721
                raise InputError(f"{where}, point {i} {c}: expected a number, found {json_type(x)}")
    return v


def _json_face(pairs, kind: str, where: str) -> FaceBox:
    """{"landmarks": [[x, y] x 68]} (the box is their tight box) or {"box": [x0, y0, x1, y1(, score)],
    "landmarks": ...} (that box, cropped by `kind`), and an optional "score"."""
    keys = [k for k, _ in pairs]
    unknown = [k for k in keys if k not in _BOX_KEYS]
    if unknown or len(set(keys)) != len(keys) or "landmarks" not in keys:
        why = (f"the unknown key {unknown[0][:40]!r}" if unknown else "a key twice" if len(set(keys)) != len(keys)
               else "no 'landmarks'")
        raise InputError(f"{where}: expected {{\"landmarks\": [[x, y] x 68]}} with an optional \"box\" "
                         f"[x0, y0, x1, y1] and \"score\", found {why}")
    d = dict(pairs)
    lm = _json_landmarks(d["landmarks"], f"{where}, field landmarks")
    score = 1.0
    if "score" in d:
        if isinstance(d["score"], _OutOfRange):
            raise _beyond(f"{where}, field score", d["score"])
        if type(d["score"]) is not float:  # noqa: E721
            raise InputError(f"{where}, field score: expected a number, found {json_type(d['score'])}")
        score = d["score"]
    if "box" not in d:
        return FaceBox.from_landmarks(lm, score=score, origin=where)
    box = json_face_box(d["box"], kind, f"{where}, field box")
    return FaceBox(box.x0, box.y0, box.x1, box.y1, score if "score" in d else box.score, kind, lm, where)


def json_face_box(b, kind: str, where: str) -> FaceBox:
    """One face of a boxes JSON read by `loads_boxes_json`: [x0, y0, x1, y1(, score)] or an object
    (see _json_face), a FaceBox of crop rule `kind` under the box rule; InputError naming `where`,
    the field and what was found (in JSON's words: "an array", "a string"...)."""
    if type(b) is _Pairs:
        return _json_face(b, kind, where)
    if type(b) is not list or len(b) not in (4, 5):  # noqa: E721 (an object, _Pairs, is a list too)
        what = f"{len(b)} values" if type(b) is list else json_type(b)  # noqa: E721
        raise InputError(f"{where}: expected [x0, y0, x1, y1] or [x0, y0, x1, y1, score], found {what}")
    for v, f in zip(b, _FIELDS):
        if isinstance(v, _OutOfRange):
            raise _beyond(f"{where}, field {f}", v)
        if type(v) is not float:  # noqa: E721 (_json_number: every JSON number is a float)
            raise InputError(f"{where}, field {f}: expected a number, found {json_type(v)}")
        if not math.isfinite(v):  # NaN, Infinity: Python's json accepts them
            raise InputError(f"{where}, field {f}: expected a finite number, found {v}")
    return _make_box(b, kind, where)


def lookup_boxes(boxes: Mapping, image_path: str | os.PathLike) -> list[FaceBox]:
    """Boxes for one image, by the matching rule of engine.box_match applied to a run of that
    image alone (the same path, relative to the working directory or to the sidecar's folder,
    or the end of its path). Returns [] when no entry matches it; an entry with a bad box, or
    several entries naming it, raise its InputError. A run of many inputs matches them all at
    once (`match_boxes`): only then can a key that names two of them be told apart."""
    hit = match_boxes(boxes, [os.fspath(image_path)], warn=False).for_input(image_path)
    return [] if hit is None else list(hit[1])
