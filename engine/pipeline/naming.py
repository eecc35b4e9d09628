"""Output file names: the one rule that gives every face of every input of a run its own files.

A face's name is built from its input's STEM, its video frame and its face index:

    layout "engine"   STEM_faceK            STEM_fFFFFFF_faceK       photo_face0, clip_f000012_face1
    layout "release"  STEM, STEM_faceK      STEM_fFFFFFF[_faceK]     face 0 of a photo is plain STEM, as
                                                                     the release's demo wrote <image>.ply

and its files are the name plus one extension of a fixed set (ENGINE_EXTENSIONS or
RELEASE_EXTENSIONS). FFFFFF is the frame number, zero-padded to at least 6 digits.

STEM is chosen once per input, for the run's whole list of inputs (`OutputNames`):
1. the file name without its last extension (a camera: cameraN); characters that some
   file system refuses (controls, / \\ : * ? " < > |, unpaired surrogates) become "_", a
   leading "." becomes "_" (no hidden files), and it is cut to STEM_BYTES bytes of UTF-8;
2. a stem that ends like one of our suffixes (_f or _face then digits, in any letter case)
   gets a trailing "_", so the suffixes can always be read back from the right;
3. stems that clash, i.e. are equal under any of FOLDS (case-insensitive and Unicode-
   normalising file systems: NTFS, APFS, HFS+, FAT), are replaced by the input's path
   below the common folder of the clashing inputs (a/img.jpg, b/img.jpg -> a_img, b_img),
   then by that plus the extension (img_jpg, img_png), then numbered -2, -3... in input
   order (steps 1 and 2 apply to every candidate).

Why no two faces of a run share a file, under every fold f in FOLDS: each fold maps one
character at a time (casefold, upper) after NFC/NFD normalisation, and our suffixes start
with "_" or ".", which compose with nothing, so f(STEM + suffix) = f(STEM) + f(suffix).
The extensions of a layout are suffix-free (none ends another), so equal folded file
names have the same extension and equal folded face names. A folded face name is read
back from the right: the trailing _faceK (if any), then _fFFFFFF (if any); step 2
guarantees that no folded stem ends like either, so both readings are unique, and step 3
that equal folded stems mean the same input. tests/test_naming.py checks this on
adversarial name sets (hypothesis).
"""
from __future__ import annotations

import os
import re
import unicodedata
from collections import defaultdict
from pathlib import PurePath
from typing import Callable, Iterable

from engine.errors import InputError

LAYOUTS = ("engine", "release")
ENGINE_EXTENSIONS = (".npy", ".ply", ".obj")
RELEASE_EXTENSIONS = (".ply", ".ply.alpha", ".ply.beta")
INPUT_EXTENSIONS = (".render.png",)  # files named by input_name: one per input (or frame), not per face
STEM_BYTES = 150  # leaves room in a 255-byte file name for the suffixes and a number

# How file systems compare names: exactly (ext4), case-insensitively (per-character mappings:
# NTFS's upcase table, APFS/HFS+ case folding) and after Unicode normalisation (APFS, HFS+;
# NFC forms are equal exactly when NFD forms are). Two case folds, because neither implies the
# other: "ı" and "i" are equal in upper only, the Kelvin sign "\u212a" and "k" in casefold only.
FOLDS: tuple[Callable[[str], str], ...] = (
    lambda s: s,
    lambda s: unicodedata.normalize("NFC", s).casefold(),
    lambda s: unicodedata.normalize("NFC", s).upper(),
)

_REFUSED = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|\ud800-\udfff]')
_OUR_SUFFIX = re.compile(r"_(?:f|face)[0-9]+$", re.IGNORECASE | re.ASCII)
_CAMERA = re.compile(r"camera ([0-9]+)")  # how engine.pipeline.inputs names a camera stream


def source_name(source) -> str:
    """The name results carry for an input: the path as given, or "camera N" for a camera index."""
    if isinstance(source, int) and not isinstance(source, bool):
        return f"camera {source}"
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    raise InputError(f"source: expected a path, a name or a camera index, found {type(source).__name__}")


def _cut(s: str, limit: int = STEM_BYTES) -> str:
    b = s.encode("utf-8", "surrogatepass")
    if len(b) <= limit:
        return s
    return b[:limit].decode("utf-8", "ignore")  # drops a character cut in half


def _clean(stem: str) -> str:
    """Steps 1 and 2 of the rule, for one candidate stem."""
    s = _REFUSED.sub("_", stem)
    if s.startswith("."):
        s = "_" + s[1:]
    s = _cut(s) or "input"
    if any(_OUR_SUFFIX.search(f(s)) for f in FOLDS):
        s += "_"
    return s


def _base(name: str) -> str:
    m = _CAMERA.fullmatch(name)
    if m:
        return f"camera{m.group(1)}"
    leaf = PurePath(name.rstrip("/\\")).name or name
    return os.path.splitext(leaf)[0] or leaf


def _qualified(name: str, root: str, with_ext: bool) -> str:
    rel = os.path.relpath(name, root) if root else name
    parts = [p for p in PurePath(rel).parts if p not in ("..", ".", os.sep)]
    stem, ext = os.path.splitext("_".join(parts) or name)
    return f"{stem}_{ext.lstrip('.')}" if with_ext and ext else stem


def _clashing(stems: list[str]) -> set[int]:
    """Indices of stems equal to another one under some fold."""
    out: set[int] = set()
    for f in FOLDS:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(stems):
            groups[f(s)].append(i)
        for members in groups.values():
            if len(members) > 1:
                out.update(members)
    return out


def _common_folder(names: list[str]) -> str:
    folders = [os.path.dirname(os.path.abspath(n)) for n in names]
    try:
        return os.path.commonpath(folders) if folders else ""
    except ValueError:  # different drives (Windows)
        return ""


def assign_stems(names: list[str]) -> list[str]:
    """One stem per input name (distinct names; see the module docstring for the rule)."""
    stems = [_clean(_base(n)) for n in names]
    for with_ext in (False, True):
        clash = sorted(_clashing(stems))
        if not clash:
            return stems
        paths = [i for i in clash if not _CAMERA.fullmatch(names[i])]
        root = _common_folder([names[i] for i in paths])
        for i in paths:
            stems[i] = _clean(_qualified(os.path.abspath(names[i]), root, with_ext))
    clash = _clashing(stems)
    if not clash:
        return stems
    taken = {f(stems[i]) for i in range(len(stems)) if i not in clash for f in FOLDS}
    for i in sorted(clash):
        base, n = stems[i], 1
        cand = base
        while any(f(cand) in taken for f in FOLDS):
            n += 1
            cand = _clean(f"{_cut(base, STEM_BYTES - 12)}-{n}")
        stems[i] = cand
        taken.update(f(cand) for f in FOLDS)
    return stems


def face_name(stem: str, frame: int | None, face_index: int, layout: str = "engine") -> str:
    """The name of one face's files (without extension) from its input's stem."""
    k = max(int(face_index), 0)
    face_part = "" if layout == "release" and k == 0 else f"_face{k}"
    return f"{input_name(stem, frame)}{face_part}"


def input_name(stem: str, frame: int | None) -> str:
    """The name (without extension) of a file about one input or video frame as a whole, all its
    faces together (reconstruct --render's picture): STEM, or STEM_fFFFFFF. Such files take an
    extension that no face file takes (INPUT_EXTENSIONS), so they never meet a face's files."""
    return stem if frame is None else f"{stem}_f{int(frame):06d}"


class OutputNames:
    """Names of the files of every face of a run's inputs, none shared (see the module docstring).

    sources: every input of the run, as given to Reconstructor.reconstruct (paths as strings
        or PathLike, camera indices as ints) or as results name them ("camera N").
    layout: "engine" (STEM_faceK) or "release" (the release's demo: plain STEM for face 0).
    """

    def __init__(self, sources: Iterable, *, layout: str = "engine"):
        if layout not in LAYOUTS:
            raise InputError(f"layout: expected one of {LAYOUTS}, found {layout!r}")
        self.layout = layout
        names = list(dict.fromkeys(source_name(s) for s in sources))
        self._stems = dict(zip(names, assign_stems(names)))

    def stem(self, source) -> str:
        """The stem chosen for one input; InputError for a source that was not declared."""
        name = source_name(source)
        try:
            return self._stems[name]
        except KeyError:
            raise InputError(f"{name}: not one of the inputs these output names were made for") from None

    def name(self, source, frame: int | None, face_index: int) -> str:
        """The file name (without extension) of face `face_index` of `source` (frame `frame`)."""
        return face_name(self.stem(source), frame, face_index, self.layout)

    def input_name(self, source, frame: int | None) -> str:
        """The name (without extension) of a file about input `source` (frame `frame`) as a whole."""
        return input_name(self.stem(source), frame)

    def for_result(self, face) -> str:
        """The file name (without extension) of a FaceResult of one of the inputs:
        `name(face.source, face.frame, face.face_index)`."""
        return self.name(face.source, face.frame, face.face_index)

    @property
    def stems(self) -> dict[str, str]:
        """{source name: stem} of every input."""
        return dict(self._stems)
