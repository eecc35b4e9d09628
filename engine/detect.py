"""Face boxes: dlib's HOG frontal detector, its 68-point landmark box, and caller-given boxes.

Public API
----------
- ``FaceBox(x0, y0, x1, y1, score=1.0, kind="given", landmarks=None)`` (frozen dataclass)
- ``FaceDetector(threshold=0.5, upsample=1, landmarks="auto", max_side=None, predictor_path=None)``
  with ``.detect(image) -> list[FaceBox]`` (also callable)
- ``detect_faces(image, **kwargs) -> list[FaceBox]``  (one-off convenience)
- ``landmark_model_path() -> Path | None``   where face-recognition-models keeps the 68-point model
- ``load_boxes(path, kind="given") -> dict[str, list[FaceBox]]``  CSV or JSON sidecar
- ``lookup_boxes(boxes, image_path) -> list[FaceBox]``

What the release did and what we do
------------------------------------
The original demo ran ``dlib.get_frontal_face_detector()(img, 1)`` (one upsampling),
kept only the first face, then took the tight box around the 68 landmarks and cropped
it with the "landmarks" ratios (see engine.crop). We do the same for *every* face,
and add a score threshold: dlib's default (0) keeps weak false positives. On
``skimage.data.astronaut()`` with upsample=1 dlib scores the real face 1.16 and a
false box on the suit 0.12; the default threshold 0.5 keeps the first and drops the
second (tests/inputs/test_detect.py checks exactly this).

Note: the release passed OpenCV's BGR image to the detector (a slip); we pass RGB,
which is what dlib expects. Scores can therefore differ slightly from the release's.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from engine.errors import InputError, UnavailableError
from engine.images import as_rgb

KINDS = ("detector", "landmarks", "given")
DEFAULT_THRESHOLD = 0.5
DEFAULT_UPSAMPLE = 1
LANDMARK_MODEL_NAME = "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True)
class FaceBox:
    """A face rectangle in image pixel indices (dlib convention; see engine.crop).

    kind: "detector" (dlib HOG box), "landmarks" (tight box of the 68 landmarks; crop
    with the landmark ratios) or "given" (a caller's box; cropped like a detector box).
    score: detector score (higher is more confident); 1.0 for a given box without one.
    landmarks: float32 [68, 2] (x, y) when kind == "landmarks", else None.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    kind: str = "given"
    landmarks: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        coords = (self.x0, self.y0, self.x1, self.y1, self.score)
        if not all(isinstance(c, (int, float, np.integer, np.floating)) and math.isfinite(c) for c in coords):
            raise InputError(f"FaceBox: expected finite numbers, found {coords}")
        if not (self.x1 > self.x0 and self.y1 > self.y0):
            raise InputError(f"FaceBox: expected x1 > x0 and y1 > y0, found {coords[:4]}")
        if self.kind not in KINDS:
            raise InputError(f"FaceBox.kind: expected one of {KINDS}, found {self.kind!r}")

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)


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


class FaceDetector:
    """dlib HOG frontal face detector, optionally refined to the 68-landmark box.

    threshold: minimum dlib score kept (passed to dlib as adjust_threshold).
    upsample: times dlib upsamples the image (1 as the release; finds faces down to
        about 40 px, costs about 4x the time of 0).
    landmarks: "auto" (use the 68-point model when found), True (require it:
        UnavailableError otherwise) or False (detector boxes only).
    max_side: when set, images whose longer side exceeds it are downscaled for the
        detector only (boxes are mapped back; landmarks run on the full image). Bounds
        the detector's time on large photos.
    predictor_path: an explicit shape_predictor_68_face_landmarks.dat.

    Not thread-safe (dlib objects are not): use one detector per thread.
    """

    def __init__(
        self,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        upsample: int = DEFAULT_UPSAMPLE,
        landmarks: bool | str = "auto",
        max_side: int | None = None,
        predictor_path: str | os.PathLike | None = None,
    ) -> None:
        if not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise InputError(f"threshold: expected a finite number, found {threshold!r}")
        if isinstance(upsample, bool) or not isinstance(upsample, int) or not 0 <= upsample <= 4:
            raise InputError(f"upsample: expected an integer in 0..4, found {upsample!r}")
        if landmarks not in ("auto", True, False):
            raise InputError(f"landmarks: expected 'auto', True or False, found {landmarks!r}")
        if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 32):
            raise InputError(f"max_side: expected None or an integer >= 32, found {max_side!r}")
        dlib = _dlib()
        self.threshold = float(threshold)
        self.upsample = upsample
        self.max_side = max_side
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
        """All faces in an RGB image (any array `engine.images.as_rgb` accepts), sorted by
        descending score then position. Empty list when there is none."""
        img = as_rgb(image, "image")
        small, scale = self._detector_input(img)
        rects, scores, _ = self._detector.run(small, self.upsample, self.threshold)
        dlib = _dlib()
        out = []
        for rect, score in zip(rects, scores):
            if score < self.threshold:  # dlib's own test is not documented as >= vs >
                continue
            x0, y0, x1, y1 = (rect.left() / scale, rect.top() / scale, rect.right() / scale, rect.bottom() / scale)
            if self._predictor is not None:
                r = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
                shape = self._predictor(img, r)
                pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
                lx0, ly0 = pts.min(axis=0)
                lx1, ly1 = pts.max(axis=0)
                if lx1 > lx0 and ly1 > ly0:
                    out.append(FaceBox(float(lx0), float(ly0), float(lx1), float(ly1), float(score), "landmarks", pts))
                    continue
            if x1 > x0 and y1 > y0:
                out.append(FaceBox(float(x0), float(y0), float(x1), float(y1), float(score), "detector"))
        out.sort(key=_sort_key)
        return out

    __call__ = detect

    def _detector_input(self, img: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = img.shape[:2]
        if self.max_side is None or max(h, w) <= self.max_side:
            return img, 1.0
        scale = self.max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        from PIL import Image

        small = np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR))
        return np.ascontiguousarray(small), size[0] / w


def detect_faces(image: np.ndarray, **kwargs) -> list[FaceBox]:
    """One-off detection (builds a FaceDetector each call; keep one for many images)."""
    return FaceDetector(**kwargs).detect(image)


# --------------------------------------------------------------------------- sidecars

_CSV_REQUIRED = ("image", "x0", "y0", "x1", "y1")
_CSV_ALLOWED = set(_CSV_REQUIRED) | {"score"}


def _number(text, where: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected a number, found {text!r}") from None
    if not math.isfinite(v):
        raise InputError(f"{where}: expected a finite number, found {text!r}")
    return v


def _make_box(vals: list[float], kind: str, where: str) -> FaceBox:
    x0, y0, x1, y1 = vals[:4]
    if not (x1 > x0 and y1 > y0):
        raise InputError(f"{where}: expected x1 > x0 and y1 > y0, found x0={x0:g} y0={y0:g} x1={x1:g} y1={y1:g}")
    score = vals[4] if len(vals) > 4 else 1.0
    return FaceBox(x0, y0, x1, y1, score, kind)


def load_boxes(path: str | os.PathLike, *, kind: str = "given") -> dict[str, list[FaceBox]]:
    """Read caller-given face boxes from a CSV or JSON sidecar.

    CSV (``.csv``): a header naming the columns image,x0,y0,x1,y1 and optionally score
    (any order), then one row per face. JSON (``.json``): {"image name": [[x0, y0, x1,
    y1], [x0, y0, x1, y1, score], ...], ...}. Returns {image name: [FaceBox, ...]} with
    boxes in file order. `kind` is "given" (cropped like detector boxes) or "landmarks"
    when the boxes are tight landmark boxes. Errors name the file, line/entry and field.
    """
    if kind not in KINDS:
        raise InputError(f"kind: expected one of {KINDS}, found {kind!r}")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM from spreadsheets
    except FileNotFoundError:
        raise InputError(f"{path}: no such boxes file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read boxes file: {e}") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _boxes_from_csv(text, path, kind)
    if suffix == ".json":
        return _boxes_from_json(text, path, kind)
    raise InputError(f"{path}: boxes file: expected a .csv or .json extension, found {path.suffix or 'none'}")


def _boxes_from_csv(text: str, path: Path, kind: str) -> dict[str, list[FaceBox]]:
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None:
        raise InputError(f"{path}: empty boxes file, expected a header line {','.join(_CSV_REQUIRED)}[,score]")
    header = [h.strip().lower() for h in header]
    missing = [c for c in _CSV_REQUIRED if c not in header]
    unknown = [c for c in header if c not in _CSV_ALLOWED]
    if missing or unknown or len(set(header)) != len(header):
        raise InputError(
            f"{path} line 1: header: expected columns {','.join(_CSV_REQUIRED)}[,score], found {','.join(header)}"
        )
    col = {c: i for i, c in enumerate(header)}
    fields = ["x0", "y0", "x1", "y1"] + (["score"] if "score" in col else [])
    out: dict[str, list[FaceBox]] = {}
    for lineno, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise InputError(f"{path} line {lineno}: expected {len(header)} fields, found {len(row)}")
        name = row[col["image"]].strip()
        if not name:
            raise InputError(f"{path} line {lineno}, field image: expected an image name, found an empty field")
        vals = [_number(row[col[f]].strip(), f"{path} line {lineno}, field {f}") for f in fields]
        out.setdefault(name, []).append(_make_box(vals, kind, f"{path} line {lineno}"))
    return out


def _boxes_from_json(text: str, path: Path, kind: str) -> dict[str, list[FaceBox]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path} line {e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object {{image name: [[x0, y0, x1, y1], ...]}}, found {type(data).__name__}")
    out: dict[str, list[FaceBox]] = {}
    for name, boxes in data.items():
        where = f"{path}: entry {name!r}"
        if not isinstance(boxes, list):
            raise InputError(f"{where}: expected a list of boxes, found {type(boxes).__name__}")
        lst = []
        for i, b in enumerate(boxes):
            w = f"{where} box {i}"
            if not isinstance(b, list) or len(b) not in (4, 5):
                raise InputError(f"{w}: expected [x0, y0, x1, y1] or [x0, y0, x1, y1, score], found {b!r}")
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in b):
                raise InputError(f"{w}: expected numbers, found {b!r}")
            names = ("x0", "y0", "x1", "y1", "score")
            vals = [_number(v, f"{w}, field {names[j]}") for j, v in enumerate(b)]
            lst.append(_make_box(vals, kind, w))
        out[name] = lst
    return out


def lookup_boxes(boxes: Mapping[str, list[FaceBox]], image_path: str | os.PathLike) -> list[FaceBox]:
    """Boxes for one image: matched by the path as given, then its POSIX form, then its
    file name. Returns [] when the sidecar has no entry for it."""
    p = Path(image_path)
    for key in (os.fspath(image_path), p.as_posix(), p.name):
        if key in boxes:
            return list(boxes[key])
    return []
