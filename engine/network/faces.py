"""Real face crops the engine measures its networks on: built in, and the user's own.

Built in (scikit-image, offline): the astronaut photo (Eileen Collins, colour; her face
cropped by the release's rule from dlib's landmark box) and the 100 faces of
`skimage.data.lfw_subset()` (LFW, greyscale 25x25, upsampled as "already cropped" faces).
They are split once, here, into disjoint roles:

- "calibration": LFW faces 0, 3, 6, ... 99 (34 faces): int8 activation ranges;
- "validation": the astronaut and LFW faces 1, 4, 7, ... 97 (34 faces): every variant is
  compared with float32 on these, never on a calibration face;
- "model": LFW faces 2, 5, ... 98 (33 faces): the BatchNorm statistics of the independently
  built benchmark model (bench/bench_network.py --second-model), so it is calibrated on
  faces neither of the others uses;
- the float16 range check (engine.network.fp16) keeps its own small set: the astronaut and
  LFW faces 0, 13, 27, 41, 55, 69, 83 (fp16_faces).

The built-in calibration faces are greyscale: the astronaut, the one colour face, is held out
for validation, so a variant's validated error includes how it does on colour. A user's own
photos (`--calibration DIR`) go through dlib detection and the release's crop, as a run does;
their faces, in file order, alternate between calibration (faces 0, 2, 4, ...) and validation
(faces 1, 3, 5, ...).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import EngineError, InputError, describe_path, said_once

log = logging.getLogger("engine.network")

ASTRONAUT_BOX = (179, 87, 272, 178)  # dlib's landmark box of her face (tests/inputs/test_detect.py)
LFW_FACE_COUNT = 100  # lfw_subset(): 100 faces, then 100 non-faces
ROLES = ("calibration", "validation", "model")
_ROLE_OFFSET = {"calibration": 0, "validation": 1, "model": 2}
FP16_LFW_FACES = (0, 13, 27, 41, 55, 69, 83)
# At most this many of a user's faces per role: calibration holds every activation's range
# in memory per face only as min/max, but validation runs each variant on each face.
MAX_USER_FACES = 64


def lfw_indices(role: str) -> list[int]:
    """The LFW-subset faces of `role` (module docstring)."""
    if role not in ROLES:
        raise InputError(f"role: expected one of {ROLES}, found {role!r}")
    return list(range(_ROLE_OFFSET[role], LFW_FACE_COUNT, 3))


def _skimage_data():
    try:
        import skimage.data as data
    except ImportError:
        return None
    return data


def _astronaut(data) -> np.ndarray:
    from engine.crop import crop_face

    return crop_face(np.ascontiguousarray(data.astronaut()[:, :, :3]), ASTRONAUT_BOX)


def _lfw(data, indices) -> list[np.ndarray]:
    from engine.crop import prepare_cropped

    lfw = data.lfw_subset()
    out = []
    for i in indices:
        grey = np.clip(np.rint(lfw[i] * 255), 0, 255).astype(np.uint8)
        out.append(prepare_cropped(np.repeat(grey[:, :, None], 3, axis=2)))
    return out


def builtin_faces(role: str, limit: int | None = None) -> tuple[np.ndarray, str]:
    """Real face crops of `role` float32 [N, 3, 224, 224] (BGR, 0..255) and what they are.
    `limit`: at most this many (the first ones; the astronaut first in "validation").
    Errors: UnavailableError without scikit-image (the caller decides what to do instead)."""
    from engine.errors import UnavailableError

    data = _skimage_data()
    if data is None:
        raise UnavailableError("the built-in real faces come from scikit-image: pip install scikit-image")
    idx = lfw_indices(role)
    astronaut = role == "validation"
    n_lfw = len(idx) if limit is None else max(0, limit - int(astronaut))
    crops = ([_astronaut(data)] if astronaut else []) + _lfw(data, idx[:n_lfw])
    crops = crops[:limit] if limit is not None else crops
    parts = (["the scikit-image astronaut"] if astronaut else []) + (
        [f"{n_lfw} LFW-subset faces (every 3rd from face {idx[0]})"] if n_lfw else [])
    return np.stack(crops).astype(np.float32), f"{len(crops)} built-in real faces: {' and '.join(parts)}"


def fp16_faces() -> tuple[np.ndarray, str]:
    """The float16 range check's faces: the astronaut and 7 LFW faces (engine.network.fp16)."""
    data = _skimage_data()
    if data is None:
        from engine.errors import UnavailableError

        raise UnavailableError("the built-in real faces come from scikit-image: pip install scikit-image")
    crops = [_astronaut(data)] + _lfw(data, FP16_LFW_FACES)
    return (np.stack(crops).astype(np.float32),
            f"{len(crops)} real faces (scikit-image astronaut, LFW subset faces {list(FP16_LFW_FACES)})")


@dataclass
class FolderFaces:
    """A user's calibration folder, read: its face crops and what happened to each image."""

    folder: Path
    crops: np.ndarray  # float32 [N, 3, 224, 224]
    sources: list[str] = field(default_factory=list)  # "file#face" per crop
    images: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)  # file -> why
    without_face: list[str] = field(default_factory=list)
    left_out: int = 0  # images not read: 2 * MAX_USER_FACES faces were found before them

    def summary(self, *, folder: bool = True) -> str:
        """What was found: faces, images, and what was left out and why (each file named once).
        `folder=False` leaves the folder out, for a message that names it already."""
        where = f" in {self.folder}" if folder else ""
        if not self.images:
            return f"no image files in {self.folder if folder else 'it'} or its sub-folders"
        parts = [f"{len(self.crops)} face(s) from {self.images} image(s){where}"]
        if self.without_face:
            parts.append(f"{len(self.without_face)} image(s) without a detected face")
        if self.unreadable:
            path, why = next(iter(self.unreadable.items()))
            parts.append(f"{len(self.unreadable)} unreadable (e.g. {path}: {said_once(path, why)})")
        if self.left_out:
            parts.append(f"{self.left_out} more image(s) not read (at most {2 * MAX_USER_FACES} faces are used)")
        return "; ".join(parts)

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """(calibration, validation): faces 0, 2, 4, ... and 1, 3, 5, ... in file order."""
        return self.crops[0::2], self.crops[1::2]


def check_folder(folder, argument: str = "calibration folder") -> None:
    """InputError unless `folder` is a folder, naming `argument` (e.g. "--calibration"), what
    was expected and what was found (a file, nothing...)."""
    kind = describe_path(folder)
    if kind != "a folder":
        raise InputError(f"{argument} {folder}: expected a folder of face photos, found {kind}")


def folder_faces(folder, *, detector=None) -> FolderFaces:
    """Every face of every image in `folder` (and its sub-folders), detected with dlib and
    cropped by the release's rule, as a run crops them. Unreadable images and images without
    a face are counted, never fatal. `detector`: an engine.detect.FaceDetector (default: one
    with the engine's defaults). Errors: InputError when `folder` is not a folder;
    UnavailableError without dlib (only when there are images to look at). A folder without a
    usable face (no images, none readable, no face found) gives an empty `crops`: the caller
    says so (FolderFaces.summary) and builds no variant from it."""
    from engine.crop import crop_face
    from engine.images import expand_input, is_image_path, load_image

    folder = Path(folder)
    check_folder(folder)
    try:
        files = [p for p in expand_input(folder, recursive=True).files if is_image_path(p)]
    except InputError:  # no image or video at all: no usable face, said by the caller
        files = []
    out = FolderFaces(folder, np.empty((0, 3, 224, 224), np.float32), images=len(files))
    if not files:
        return out
    if detector is None:
        from engine.detect import FaceDetector

        detector = FaceDetector()
    crops = []
    for i, path in enumerate(files):
        if len(crops) >= 2 * MAX_USER_FACES:  # enough: the rest is not even read
            out.left_out = len(files) - i
            break
        try:
            img = load_image(path)
            boxes = detector.detect(img)
            if not boxes:
                out.without_face.append(str(path))
            for k, box in enumerate(boxes[:2 * MAX_USER_FACES - len(crops)]):
                crops.append(crop_face(img, box))
                out.sources.append(f"{path}#face{k}")
        except EngineError as e:  # an unreadable or hostile image is skipped, and counted
            out.unreadable[str(path)] = str(e)
    if crops:
        out.crops = np.stack(crops).astype(np.float32)
    log.info("calibration folder: %s", out.summary())
    return out
