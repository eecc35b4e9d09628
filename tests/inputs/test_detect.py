"""engine.detect: dlib on real photos (scikit-image's samples), FaceBox, and box sidecars.

What dlib 20 (HOG, upsample=1) reports on the samples, RGB input:
  astronaut: the face (175, 76, 265, 166) score 1.16; a false box on the suit
             (126, 335, 215, 425) score 0.12; with adjust_threshold -0.5 also (273, 337, 325, 389) -0.15
  camera:    the cameraman's half-hidden face (216, 130, 268, 182) score about -0.1 only
  coffee, chelsea (a cat): nothing, even at threshold -0.5
The default threshold 0.5 keeps the astronaut's face and drops everything else.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from engine.detect import FaceBox, FaceDetector, landmark_model_path, load_boxes, lookup_boxes
from engine.errors import InputError, UnavailableError

dlib = pytest.importorskip("dlib", reason="dlib-bin not installed")
skdata = pytest.importorskip("skimage.data", reason="scikit-image not installed")

FACE = (175, 76, 265, 166)  # dlib's box of the astronaut's face
SUIT = (126, 335, 215, 425)  # dlib's false box on the suit


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module")
def plain():
    return FaceDetector(landmarks=False)


@pytest.fixture(scope="module")
def with_landmarks():
    if landmark_model_path() is None:
        pytest.skip("face-recognition-models not installed (no 68-point model)")
    return FaceDetector(landmarks=True)


@pytest.fixture(scope="module")
def astronaut():
    return skdata.astronaut()


def test_astronaut_default_threshold_keeps_the_face_and_drops_the_suit(plain, astronaut):
    faces = plain.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    assert f.kind == "detector" and f.score > 1.0
    assert iou(f.as_tuple(), FACE) > 0.9


def test_astronaut_at_dlibs_own_threshold_shows_the_false_box(astronaut):
    faces = FaceDetector(landmarks=False, threshold=0.0).detect(astronaut)
    assert len(faces) == 2
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    assert iou(faces[0].as_tuple(), FACE) > 0.9
    assert iou(faces[1].as_tuple(), SUIT) > 0.9
    assert 0.0 <= faces[1].score < 0.5  # below our default threshold: that is why it goes


def test_astronaut_landmark_box(with_landmarks, astronaut):
    faces = with_landmarks.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    assert f.kind == "landmarks" and f.landmarks.shape == (68, 2)
    assert (f.x0, f.y0, f.x1, f.y1) == tuple(float(v) for v in (*f.landmarks.min(0), *f.landmarks.max(0)))
    assert iou(f.as_tuple(), FACE) > 0.6  # the landmark box is tighter and lower than dlib's box
    assert f.score > 1.0


def test_camera_coffee_chelsea(plain):
    for name in ("camera", "coffee", "chelsea"):
        assert plain.detect(getattr(skdata, name)()) == [], name
    weak = FaceDetector(landmarks=False, threshold=-0.5)
    cam = weak.detect(skdata.camera())  # grey [H, W] input is accepted
    assert len(cam) == 1 and cam[0].score < 0.0
    assert iou(cam[0].as_tuple(), (216, 130, 268, 182)) > 0.8
    assert weak.detect(skdata.coffee()) == [] and weak.detect(skdata.chelsea()) == []


def test_every_face_is_returned_in_a_deterministic_order(plain, astronaut):
    # Two astronauts side by side: two faces, most confident first, ties by position.
    two = np.ascontiguousarray(np.concatenate([astronaut, astronaut[:, ::-1]], axis=1))
    faces = plain.detect(two)
    assert len(faces) == 2
    assert faces == plain.detect(two)
    keys = [(-f.score, f.y0, f.x0) for f in faces]
    assert keys == sorted(keys)
    assert {round(f.x0) < 512 for f in faces} == {True, False}


def test_max_side_maps_boxes_back(astronaut):
    faces = FaceDetector(landmarks=False, max_side=256).detect(astronaut)
    assert len(faces) == 1 and iou(faces[0].as_tuple(), FACE) > 0.75


def test_missing_dlib_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(UnavailableError, match="pip install dlib-bin"):
        FaceDetector()


def test_missing_landmark_model(tmp_path):
    with pytest.raises(UnavailableError, match="face-recognition-models"):
        FaceDetector(predictor_path=tmp_path / "none.dat")
    assert FaceDetector(landmarks=False).uses_landmarks is False


@pytest.mark.parametrize("kw", [{"threshold": float("nan")}, {"upsample": -1}, {"landmarks": "yes"}, {"max_side": 8}])
def test_detector_arguments(kw):
    with pytest.raises(InputError):
        FaceDetector(**kw)


def test_facebox_validation():
    b = FaceBox(1, 2, 11, 22)
    assert (b.width, b.height, b.kind, b.score) == (10, 20, "given", 1.0)
    for bad in [(5, 0, 5, 10), (0, 5, 10, 5), (0, 0, float("inf"), 1)]:
        with pytest.raises(InputError):
            FaceBox(*bad)
    with pytest.raises(InputError, match="kind"):
        FaceBox(0, 0, 1, 1, 1.0, "casia")


# --------------------------------------------------------------------------- sidecars


def test_load_boxes_csv(tmp_path):
    p = tmp_path / "boxes.csv"
    p.write_text("\ufeffimage,y0,x0,x1,y1,score\na.jpg,20,10,50,60,0.9\n\nsub/b.png,0,0,5,5,1\na.jpg,1,2,3,4,0.5\n")
    boxes = load_boxes(p)
    assert list(boxes) == ["a.jpg", "sub/b.png"]
    assert boxes["a.jpg"][0] == FaceBox(10, 20, 50, 60, 0.9, "given")
    assert boxes["a.jpg"][1] == FaceBox(2, 1, 3, 4, 0.5, "given")
    p2 = tmp_path / "noscore.csv"
    p2.write_text("image,x0,y0,x1,y1\nc.jpg,1,1,9,9\n")
    assert load_boxes(p2, kind="landmarks")["c.jpg"] == [FaceBox(1, 1, 9, 9, 1.0, "landmarks")]


@pytest.mark.parametrize(
    "text,msg",
    [
        ("", "empty boxes file"),
        ("image,x0,y0,x1\na,1,2,3\n", "line 1: header"),
        ("image,x0,y0,x1,y1,colour\n", "line 1: header"),
        ("image,x0,y0,x1,y1\na.jpg,1,2,three,4\n", r"line 2, field x1: expected a number, found 'three'"),
        ("image,x0,y0,x1,y1\na.jpg,1,2,3,4\nb.jpg,1,2,3\n", "line 3: expected 5 fields, found 4"),
        ("image,x0,y0,x1,y1\na.jpg,5,2,3,4\n", "line 2: expected x1 > x0"),
        ("image,x0,y0,x1,y1\n,1,2,3,4\n", "line 2, field image"),
        ("image,x0,y0,x1,y1\na.jpg,1,2,inf,4\n", "field x1: expected a finite number"),
    ],
)
def test_load_boxes_csv_errors_name_file_line_and_field(tmp_path, text, msg):
    p = tmp_path / "b.csv"
    p.write_text(text)
    with pytest.raises(InputError, match=msg) as e:
        load_boxes(p)
    assert "b.csv" in str(e.value)


def test_load_boxes_json(tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"a.jpg": [[10, 20, 50, 60], [1, 2, 3, 4, 0.25]], "none.jpg": []}))
    boxes = load_boxes(p)
    assert boxes["a.jpg"] == [FaceBox(10, 20, 50, 60), FaceBox(1, 2, 3, 4, 0.25)]
    assert boxes["none.jpg"] == []


@pytest.mark.parametrize(
    "text,msg",
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"a.jpg": [1, 2, 3, 4]}', r"entry 'a.jpg' box 0: expected \[x0, y0, x1, y1\]"),
        ('{"a.jpg": {"x0": 1}}', "entry 'a.jpg': expected a list of boxes"),
        ('{"a.jpg": [[1, 2, 3]]}', "box 0: expected"),
        ('{"a.jpg": [[1, 2, 3, 4], [1, "2", 3, 4]]}', "box 1: expected numbers"),
        ('{"a.jpg": [[9, 2, 3, 4]]}', "box 0: expected x1 > x0"),
        ('{\n"a.jpg": [[1, 2, 3, 4]],\n}', "line 3: invalid JSON"),
    ],
)
def test_load_boxes_json_errors(tmp_path, text, msg):
    p = tmp_path / "b.json"
    p.write_text(text)
    with pytest.raises(InputError, match=msg):
        load_boxes(p)


def test_load_boxes_file_problems(tmp_path):
    with pytest.raises(InputError, match="no such boxes file"):
        load_boxes(tmp_path / "none.csv")
    (tmp_path / "b.txt").write_text("x")
    with pytest.raises(InputError, match=r"\.csv or \.json"):
        load_boxes(tmp_path / "b.txt")


def test_lookup_boxes():
    boxes = {"sub/a.jpg": [FaceBox(0, 0, 1, 1)], "b.jpg": [FaceBox(0, 0, 2, 2)]}
    assert lookup_boxes(boxes, "sub/a.jpg") == [FaceBox(0, 0, 1, 1)]
    assert lookup_boxes(boxes, "/data/photos/b.jpg") == [FaceBox(0, 0, 2, 2)]
    assert lookup_boxes(boxes, "c.jpg") == []
