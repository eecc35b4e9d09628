"""The output naming rule (engine.pipeline.naming): every face of every input of a run gets
files of its own, whatever the input names, on case-insensitive and Unicode-normalising file
systems too. A property test feeds adversarial name sets (hypothesis)."""
from __future__ import annotations

import unicodedata

import pytest

from engine.errors import InputError
from engine.pipeline.naming import (ENGINE_EXTENSIONS, RELEASE_EXTENSIONS, OutputNames, assign_stems,
                                    face_name)

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# How real file systems compare names, written independently of the module's FOLDS: exact
# (ext4), case-insensitive (NTFS, FAT, APFS default), normalisation-insensitive (APFS, HFS+).
FILESYSTEM_KEYS = {
    "exact": lambda s: s,
    "lower": lambda s: s.lower(),
    "casefold": lambda s: s.casefold(),
    "upper": lambda s: s.upper(),
    "nfc-casefold": lambda s: unicodedata.normalize("NFC", s).casefold(),
    "nfd-upper": lambda s: unicodedata.normalize("NFD", s).upper(),
}

# Pieces that make names collide: our own suffixes in any case, underscores, dots, letters
# whose case or normal form folds onto others (ß/ss, ſ/s, K/k, Σ/σ/ς, é/e+U+0301, ligatures),
# characters file systems refuse, and long runs.
PIECES = ["clip", "Clip", "CLIP", "img", "IMG", "a", "A", "_", "__", ".", "-", " ", "0", "7", "000000",
          "_f000000", "_F000000", "_f1", "_f0000001", "_face0", "_FACE1", "_face12", "_Face0", "f", "face",
          "ß", "ss", "SS", "ſ", "K", "k", "\u212a", "Σ", "σ", "ς", "é", "e\u0301", "É", "ﬀ", "ff", "İ", "i\u0307",
          "ı",
          "I", "\u00c5", "A\u030a", "Å", "日本", ":", "*", "?", "\\", "|", "\t", "x" * 40, "\udcff"]
EXTS = ["", ".jpg", ".jpg", ".JPG", ".png", ".avi", ".AVI", ".tar.gz", ".f000000", "._face0"]
FOLDERS = ["", "", "a/", "A/", "b/", "a/b/", "a_b/", "é/", "e\u0301/", "_f000001/"]

# Groups of bases that some file system takes for one name (case, case folding, normal forms):
# each example draws its bases from one group, so most examples hold near twins.
TWINS = [("clip", "Clip", "CLIP"), ("ß", "ss", "SS", "\u1e9e"), ("é", "e\u0301", "É", "E\u0301"),
         ("Σ", "σ", "ς"), ("ﬀ", "ff", "FF"), ("\u212a", "k", "K"), ("ı", "i", "I", "İ", "i\u0307"),
         ("ſ", "s", "S"), ("a_b", "a", "b", "a_B"), ("日本", "日本_")]
VARIANTS = ["", "", "_f000000", "_F000001", "_f000012", "_f1000000", "_face0", "_FACE1", "_face2", "_",
            "_f000000_face1", "_F000001_face0_"]


@st.composite
def run_inputs(draw):
    """1..12 inputs: paths built from a vocabulary of 1..2 folders, bases, suffixes and extensions
    drawn for this example (so most examples hold near twins), random pieces, camera indices."""
    def few(options):
        return st.sampled_from(draw(st.lists(st.sampled_from(options), min_size=1, max_size=2)))

    twins = draw(st.sampled_from(TWINS))
    near = st.builds(lambda d, b, v, e: d + b + v + e, few(FOLDERS), st.sampled_from(twins), few(VARIANTS),
                     few(EXTS))
    wild = st.builds(lambda d, s, e: d + s + e, st.sampled_from(FOLDERS),
                     st.lists(st.sampled_from(PIECES), max_size=6).map("".join), st.sampled_from(EXTS))
    source = st.one_of(near, near, near, wild, st.integers(0, 3))
    return draw(st.lists(st.tuples(source, frames, st.integers(1, 3)), min_size=1, max_size=12))


frames = st.one_of(st.none(), st.lists(st.sampled_from([0, 1, 12, 1000000]), min_size=1, max_size=4, unique=True))


def all_files(names: OutputNames, faces_of, exts) -> list[str]:
    files = []
    for src, (frame_list, n_faces) in faces_of.items():
        for frame in frame_list:
            for k in range(n_faces):
                files.extend(names.name(src, frame, k) + e for e in exts)
    return files


ENGINE, RELEASE = ("engine", ENGINE_EXTENSIONS), ("release", RELEASE_EXTENSIONS)


@settings(max_examples=600, deadline=None)
@given(run_inputs(), st.sampled_from([ENGINE, RELEASE]))
# Each file-system fold at least once, whatever the random search finds: equal in upper only
# (dotless i), in casefold only (capital sharp s), in NFC only (Kelvin sign, e + combining acute).
@example([("ı.jpg", None, 1), ("i.jpg", None, 1)], ENGINE)
@example([("\u1e9e.jpg", None, 1), ("ß.png", None, 1)], ENGINE)
@example([("\u212a.jpg", None, 1), ("K.png", None, 1), ("e\u0301.png", None, 1), ("é.png", None, 1)], RELEASE)
@example([("clip.avi", [0], 1), ("clip_f000000.jpg", None, 1)], ENGINE)  # the issue's case
@example([("photo.png", None, 2), ("photo_face1.png", None, 1)], RELEASE)
@example([("a/img.jpg", None, 1), ("b/img.jpg", None, 1), ("a_img.jpg", None, 1), ("A/IMG.jpg", None, 1)], ENGINE)
def test_every_face_of_every_input_gets_files_of_its_own(inputs, layout):
    layout, exts = layout
    faces_of = {}
    for src, frame_list, n_faces in inputs:
        # a camera is a stream: it always has frames; a file is a photo (no frame) or a video
        fl = frame_list if frame_list is not None else ([0, 1] if isinstance(src, int) else [None])
        faces_of.setdefault(src if isinstance(src, int) else str(src), (fl, n_faces))
    names = OutputNames(list(faces_of), layout=layout)
    files = all_files(names, faces_of, exts)
    for fs, key in FILESYSTEM_KEYS.items():
        keys = [key(f) for f in files]
        assert len(set(keys)) == len(keys), (fs, sorted(f for f in files if keys.count(key(f)) > 1))
    for f in files:
        assert "/" not in f and "\\" not in f and "\x00" not in f and not f.startswith("."), f
        assert len(f.encode("utf-8")) <= 255, f


@settings(max_examples=200, deadline=None)
@given(run_inputs())
def test_stems_are_deterministic_and_never_empty(inputs):
    paths = list(dict.fromkeys(str(src) for src, _, _ in inputs))
    a, b = assign_stems(paths), assign_stems(paths)
    assert a == b and all(a)


def test_the_issue_cases():
    # A video clip.avi and an image clip_f000000.jpg both wrote clip_f000000_face0.*.
    n = OutputNames(["clip.avi", "clip_f000000.jpg"])
    assert n.name("clip.avi", 0, 0) == "clip_f000000_face0"
    assert n.name("clip_f000000.jpg", None, 0) != "clip_f000000_face0"
    # Same file name in two folders, and a case-only difference.
    n = OutputNames(["x/a/img.jpg", "x/b/img.jpg", "x/c/IMG.png"])
    assert [n.stem(p) for p in ("x/a/img.jpg", "x/b/img.jpg", "x/c/IMG.png")] == ["a_img", "b_img", "c_IMG"]
    # Names that need no help keep their plain stem; a camera is cameraN.
    n = OutputNames(["photos/astronaut.png", 0])
    assert n.name("photos/astronaut.png", None, 0) == "astronaut_face0"
    assert n.name("camera 0", 5, 1) == n.name(0, 5, 1) == "camera0_f000005_face1"


def test_release_layout_names():
    n = OutputNames(["lfw/Aaron_Peirsol_0001.jpg", "lfw/photo.png", "v.avi"], layout="release")
    assert n.name("lfw/Aaron_Peirsol_0001.jpg", None, 0) == "Aaron_Peirsol_0001"  # as the demo wrote
    assert n.name("lfw/photo.png", None, 1) == "photo_face1"
    assert n.name("v.avi", 3, 0) == "v_f000003" and n.name("v.avi", 3, 2) == "v_f000003_face2"
    # An input named like another's second face is told apart.
    n = OutputNames(["photo.png", "photo_face1.png"], layout="release")
    assert n.name("photo.png", None, 1) != n.name("photo_face1.png", None, 0)


def test_unknown_source_and_layout_are_named_errors():
    with pytest.raises(InputError, match="other.jpg: not one of the inputs"):
        OutputNames(["a.jpg"]).stem("other.jpg")
    with pytest.raises(InputError, match="layout"):
        OutputNames(["a.jpg"], layout="caffe")
    assert face_name("s", None, -1) == "s_face0"  # an error result's face index


def test_face_result_name_follows_the_same_rule():
    from engine.pipeline.results import FaceResult

    assert FaceResult("dir/clip.avi", 1, frame=12).name == "clip_f000012_face1"
    assert FaceResult("clip_f000000.jpg", 0).name == "clip_f000000__face0"
    assert FaceResult("<array 3>", 0).name == "_array 3__face0"
