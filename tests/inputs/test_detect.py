"""engine.detect: dlib on real photos (scikit-image's samples), FaceBox, and box sidecars.

What dlib 20 (HOG, upsample=1) reports on the samples, RGB input:
  astronaut: the face (175, 76, 265, 166) score 1.16; a false box on the suit
             (126, 335, 215, 425) score 0.12; with adjust_threshold -0.5 also (273, 337, 325, 389) -0.15
  camera:    the cameraman's half-hidden face (216, 130, 268, 182) score about -0.1 only
  coffee, chelsea (a cat): nothing, even at threshold -0.5
The default rule (best face of an image from 0, further faces from 0.5) keeps the astronaut's
face and drops everything else; the camera's face, below 0, is dropped as the release dropped it.
A face whose only detection is weak (the astronaut's face blurred, scored in the test) is kept.
"""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from engine import detect as detect_mod
from engine.detect import (
    BEST_FACE_THRESHOLD,
    OTHER_FACES_THRESHOLD,
    FaceBox,
    FaceDetector,
    downscale,
    landmark_model_path,
    load_boxes,
    lookup_boxes,
)
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


def test_astronaut_default_rule_keeps_the_face_and_drops_the_suit(plain, astronaut):
    assert plain.threshold is None  # the default is the rule, not one threshold
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
    assert BEST_FACE_THRESHOLD <= faces[1].score < OTHER_FACES_THRESHOLD  # not the best face: that is why it goes


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


def _blurred_face(radius: float = 3) -> np.ndarray:
    """The astronaut's face cut out (256 x 256) and blurred: a real face that dlib scores weakly."""
    from PIL import Image, ImageFilter

    crop = Image.fromarray(skdata.astronaut()).crop((100, 0, 356, 256))
    return np.ascontiguousarray(np.asarray(crop.filter(ImageFilter.GaussianBlur(radius))))


BLURRED_FACE = (75, 76, 165, 166)  # FACE in the cut-out


def test_an_images_only_face_is_kept_down_to_the_releases_threshold(plain):
    img = _blurred_face()
    everything = FaceDetector(landmarks=False, threshold=-1.0).detect(img)
    above = [f for f in everything if f.score >= BEST_FACE_THRESHOLD]
    # What makes this photo the case (measured here, not assumed): one detection above 0, under 0.5.
    assert len(above) == 1 and BEST_FACE_THRESHOLD < above[0].score < OTHER_FACES_THRESHOLD, everything
    assert iou(above[0].as_tuple(), BLURRED_FACE) > 0.8
    assert plain.detect(img) == above  # the default rule keeps it, as the release did
    assert FaceDetector(landmarks=False, threshold=0.5).detect(img) == []  # a single 0.5 threshold loses it


def test_further_faces_of_an_image_need_the_higher_threshold(plain, astronaut):
    sharp = astronaut[:256, 100:356]
    two = np.ascontiguousarray(np.concatenate([sharp, _blurred_face()], axis=1))
    at_zero = FaceDetector(landmarks=False, threshold=0.0).detect(two)
    assert len(at_zero) == 2, at_zero
    best, weak = at_zero
    assert best.x1 < 256 <= weak.x0  # the sharp face scores best, the blurred one second
    assert best.score >= OTHER_FACES_THRESHOLD and BEST_FACE_THRESHOLD <= weak.score < OTHER_FACES_THRESHOLD
    assert plain.detect(two) == [best]
    # An explicit threshold is one threshold for every face (dlib's adjust_threshold).
    assert FaceDetector(landmarks=False, threshold=weak.score).detect(two) == at_zero
    assert FaceDetector(landmarks=False, threshold=weak.score + 1e-3).detect(two) == [best]


def _big_photo(astronaut, scale: int = 3, size=(3000, 2400), at=(700, 500)) -> np.ndarray:
    """The astronaut scaled up and pasted into the coffee photo scaled to `size` (w, h)."""
    from PIL import Image

    canvas = Image.fromarray(skdata.coffee()).resize(size, Image.BILINEAR)
    face = Image.fromarray(astronaut).resize((512 * scale, 512 * scale), Image.BILINEAR)
    canvas.paste(face, at)
    return np.asarray(canvas)


def test_max_side_detects_on_a_small_copy_and_maps_boxes_back(astronaut):
    big = _big_photo(astronaut)
    det = FaceDetector(landmarks=False, max_side=1024)
    faces = det.detect(big)
    expected = (FACE[0] * 3 + 700, FACE[1] * 3 + 500, FACE[2] * 3 + 700, FACE[3] * 3 + 500)
    assert len(faces) == 1 and iou(faces[0].as_tuple(), expected) > 0.8, faces


def test_max_side_finds_landmarks_on_the_full_image(with_landmarks, astronaut):
    big = _big_photo(astronaut)
    det = FaceDetector(landmarks=True, max_side=1024)
    (face,) = det.detect(big)
    (small,) = with_landmarks.detect(astronaut)
    assert face.kind == "landmarks" and face.landmarks.shape == (68, 2)
    # The same 68 points as on the original astronaut, scaled: within 2% of the face's size.
    err = np.abs(face.landmarks - (small.landmarks * 3 + (700, 500))).max()
    assert err < 0.02 * face.width, err


@pytest.mark.parametrize("strip", [None, 1])
@pytest.mark.parametrize("shape,max_side", [((1500, 1900), 400), ((1333, 2011), 500), ((3001, 777), 100),
                                            ((2100, 2100), 2048)])
def test_downscale_in_strips_equals_pillows_resize(monkeypatch, astronaut, shape, max_side, strip):
    from PIL import Image

    img = np.ascontiguousarray(np.tile(astronaut, (6, 6, 1))[:shape[0], :shape[1]])
    if strip is not None:
        monkeypatch.setattr(detect_mod, "_STRIP_PIXELS", strip)  # one strip of the factor's rows at a time
    small = downscale(img, max_side)
    h, w = shape
    assert max(small.shape[:2]) == max_side and small.dtype == np.uint8
    assert small.shape[:2] == (round(h * max_side / max(h, w)), round(w * max_side / max(h, w)))
    # Pillow on the whole image (its own copy of it): the same pixels.
    ref = np.asarray(Image.fromarray(img).resize(small.shape[1::-1], Image.BILINEAR, reducing_gap=1.0))
    np.testing.assert_array_equal(small, ref)


def test_missing_dlib_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(UnavailableError, match="pip install dlib-bin"):
        FaceDetector()


def test_missing_landmark_model(tmp_path):
    with pytest.raises(UnavailableError, match="face-recognition-models"):
        FaceDetector(predictor_path=tmp_path / "none.dat")
    assert FaceDetector(landmarks=False).uses_landmarks is False


@pytest.mark.parametrize("kw,msg", [
    ({"threshold": float("nan")}, "threshold"), ({"threshold": "0.5"}, "threshold"), ({"upsample": -1}, "upsample"),
    ({"upsample": 5}, "upsample"), ({"upsample": True}, "upsample"), ({"landmarks": "yes"}, "landmarks"),
    ({"max_side": 8}, "max_side"), ({"max_side": 1500.0}, "max_side")])
def test_detector_arguments(kw, msg):
    with pytest.raises(InputError, match=msg):
        FaceDetector(**kw)


def test_the_clis_defaults_are_the_detectors():
    from engine.cli import parser

    assert parser.DET_MAX_SIDE == detect_mod.DEFAULT_MAX_SIDE
    assert parser.DET_MAX_UPSAMPLE == detect_mod.MAX_UPSAMPLE
    for cmd in (["reconstruct", "a.jpg"], ["embed", "a.jpg"], ["verify", "a.jpg", "b.jpg"], ["evaluate", "p.txt", "r"]):
        a = parser.build_parser().parse_args(cmd)
        assert (a.det_threshold, a.det_upsample, a.det_max_side) == (None, detect_mod.DEFAULT_UPSAMPLE,
                                                                     detect_mod.DEFAULT_MAX_SIDE), cmd


def test_facebox_validation():
    b = FaceBox(1, 2, 11, 22)
    assert (b.width, b.height, b.kind, b.score) == (10, 20, "given", 1.0)
    assert all(type(v) is float for v in b.as_tuple())
    for bad, msg in [((5, 0, 5, 10), "x1 > x0"), ((0, 5, 10, 5), "y1 > y0"), ((0, 0, float("inf"), 1), "field x1"),
                     ((0, 0, 0.5, 0.5), "at least 1 px"), ((10, 10, 1e308, 100), "field x1: .* found 1e\\+308"),
                     ((-1e308, 0, 1e308, 10), "field x0"), ((0, 0, 10**400, 10), "field x1: .* 401 digits"),
                     ((0, 0, "10", 10), "field x1: expected a number"), ((0, 0, 10, 10, math.nan), "field score")]:
        with pytest.raises(InputError, match=msg):
            FaceBox(*bad)
    with pytest.raises(InputError, match="kind"):
        FaceBox(0, 0, 1, 1, 1.0, "casia")
    with pytest.raises(InputError, match="^boxes.csv line 7, field x1"):
        FaceBox(0, 0, 1e10, 1, origin="boxes.csv line 7")


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
        ("image,x0,y0,x1,y1\na.jpg,1,2,3,4\nb.jpg,1,2,3\n", "line 3: expected 5 fields, found 4"),
        ("image,x0,y0,x1,y1\n,1,2,3,4\n", "line 2, field image"),
        ("image,x0,y0,x1,y1\na.jpg,1,2,3," + "9" * 200_000 + "\n", "line 2: not a valid CSV row"),
        ('image,x0,y0,x1,y1\n"a.jpg,1,2,3,4\n', "not a valid CSV row|expected 5 fields"),
    ],
)
def test_load_boxes_csv_file_errors_name_file_and_line(tmp_path, text, msg):
    # What makes the file unreadable as a whole (a row's image is not known for sure).
    p = tmp_path / "b.csv"
    p.write_text(text)
    with pytest.raises(InputError, match=msg) as e:
        load_boxes(p)
    assert "b.csv" in str(e.value)


BAD_CSV_ROWS = {
    # image: (row values, what the error says)
    "word.jpg": ("1,2,three,4", r"line 3, field x1: expected a number, found 'three'$"),
    "digits.jpg": ("1" * 400 + ",2,3,4", r"line 4, field x0: expected a finite number, found '1{24}'\.\.\. "
                   r"\(400 characters\) \(beyond the float range\)"),
    "e308.jpg": ("10,10,1e308,100", r"line 5, field x1: expected a finite number within \+-2147483648 px, "
                 r"found 1e\+308"),
    "span.jpg": ("-1e308,0,1e308,10", r"line 6, field x0: expected a finite number within"),
    "inf.jpg": ("1,2,inf,4", r"line 7, field x1: expected a finite number, found 'inf'"),
    "order.jpg": ("5,2,3,4", r"line 8: expected x1 > x0 and y1 > y0"),
    "normalised.jpg": ("0.1,0.1,0.6,0.7", r"line 9: expected x1 > x0 and y1 > y0, each side at least 1 px"),
    "score.jpg": ("1,2,30,40,nan", r"line 10, field score: expected a finite number, found 'nan'"),
    # Found by fuzzing: a failed match of 65,000 digits took 30 s (a regular expression that
    # could split a run of digits n ways); now linear.
    "long.jpg": ("1,2,3," + "9" * 65_000 + "x", r"line 11, field y1: expected a number, found '9{24}'\.\.\. "
                 r"\(65001 characters\)$"),
}


def test_a_bad_csv_row_fails_its_image_only(tmp_path):
    p = tmp_path / "b.csv"
    lines = ["image,x0,y0,x1,y1,score", "good.jpg,10,20,50,60,0.9"]
    lines += [f"{name},{vals}" + ("" if vals.count(",") == 4 else ",1") for name, (vals, _) in BAD_CSV_ROWS.items()]
    lines += ["good.jpg,1,2,30,40,1", "word.jpg,1,2,30,40,1"]  # a good row does not rescue an image with a bad one
    p.write_text("\n".join(lines) + "\n")
    boxes = load_boxes(p)
    assert list(boxes) == ["good.jpg", *BAD_CSV_ROWS]
    assert boxes["good.jpg"] == [FaceBox(10, 20, 50, 60, 0.9), FaceBox(1, 2, 30, 40, 1)]
    assert set(boxes.errors) == set(BAD_CSV_ROWS)
    for name, (_, msg) in BAD_CSV_ROWS.items():
        assert name in boxes  # the entry is there: looking it up fails that image
        with pytest.raises(InputError, match=msg) as e:
            boxes[name]
        assert str(e.value).startswith(f"{p} line "), name
        with pytest.raises(InputError, match=msg):
            lookup_boxes(boxes, f"/photos/{name}")


def test_load_boxes_json(tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"a.jpg": [[10, 20, 50, 60], [1, 2, 3, 4, 0.25]], "none.jpg": []}))
    boxes = load_boxes(p)
    assert boxes["a.jpg"] == [FaceBox(10, 20, 50, 60), FaceBox(1, 2, 3, 4, 0.25)]
    assert boxes["none.jpg"] == []
    assert boxes["a.jpg"][0].origin == f"{p}: entry 'a.jpg' box 0"


@pytest.mark.parametrize(
    "text,msg",
    [
        ("[1, 2]", "expected a JSON object .* found an array"),
        ("[]", "expected a JSON object .* found an array"),
        ('"a.jpg"', "expected a JSON object .* found a string"),
        ('{\n"a.jpg": [[1, 2, 3, 4]],\n}', "line 3: invalid JSON"),
        ("[" * 1000 + "]" * 1000, "JSON nested too deeply"),
        ('{"a.jpg": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested too deeply"),
        (b"\xff\xfe{}", "expected UTF-8 text, found byte 0xff at offset 0"),
    ],
)
def test_load_boxes_json_file_errors(tmp_path, text, msg):
    p = tmp_path / "b.json"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InputError, match=msg) as e:
        load_boxes(p)
    assert str(e.value).startswith(str(p))


BAD_JSON_ENTRIES = {
    "flat.jpg": ("[1, 2, 3, 4]", r"entry 'flat.jpg' box 0: expected \[x0, y0, x1, y1\] .* found a number"),
    "dict.jpg": ('{"x0": 1}', r"entry 'dict.jpg': expected a list of boxes .* found an object"),
    "three.jpg": ("[[1, 2, 3]]", r"box 0: expected \[x0, y0, x1, y1\] or .* found 3 values"),
    "text.jpg": ('[[1, 2, 30, 40], [1, "2", 30, 40]]', r"box 1, field y0: expected a number, found a string"),
    "order.jpg": ("[[9, 2, 3, 4]]", r"box 0: expected x1 > x0"),
    "digits400.jpg": ("[[1, 2, " + "3" * 400 + ", 4]]", r"box 0, field x1: expected a finite number, found "
                      r"'3{24}'\.\.\. \(400 characters\) \(beyond the float range\)"),
    "digits5000.jpg": ("[[1, 2, " + "3" * 5000 + ", 4]]", r"\(5000 characters\) \(beyond the float range\)"),
    "e308.jpg": ("[[10, 10, 1e308, 100]]", r"box 0, field x1: expected a finite number within \+-2147483648 px"),
    "e999.jpg": ("[[10, 10, 1e999, 100]]", r"found '1e999' \(beyond the float range\)"),
    "nan.jpg": ("[[NaN, 1, 2, 3]]", r"field x0: expected a finite number, found nan"),
    "bool.jpg": ("[[true, 1, 2, 3]]", r"field x0: expected a number, found a boolean"),
    "twice.jpg": ("[[1, 2, 30, 40]], \"twice.jpg\": [[1, 2, 30, 40]]", r"the image name appears twice"),
}


def test_a_bad_json_entry_fails_its_image_only(tmp_path):
    p = tmp_path / "b.json"
    p.write_text('{"good.jpg": [[10, 20, 50, 60, 0.5]], '
                 + ", ".join(f'"{k}": {v}' for k, (v, _) in BAD_JSON_ENTRIES.items()) + "}")
    boxes = load_boxes(p)
    assert boxes["good.jpg"] == [FaceBox(10, 20, 50, 60, 0.5)]
    assert list(boxes) == ["good.jpg", *BAD_JSON_ENTRIES] and set(boxes.errors) == set(BAD_JSON_ENTRIES)
    for name, (_, msg) in BAD_JSON_ENTRIES.items():
        with pytest.raises(InputError, match=msg) as e:
            boxes[name]
        assert str(e.value).startswith(f"{p}: entry {name!r}"), name


def test_load_boxes_file_problems(tmp_path):
    with pytest.raises(InputError, match="no such boxes file"):
        load_boxes(tmp_path / "none.csv")
    (tmp_path / "b.txt").write_text("x")
    with pytest.raises(InputError, match=r"\.csv or \.json"):
        load_boxes(tmp_path / "b.txt")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InputError, match="dir.csv: cannot read boxes file"):
        load_boxes(tmp_path / "dir.csv")


def test_a_sidecar_over_the_size_limit_is_refused_without_reading_it_whole(tmp_path):
    p = tmp_path / "big.csv"
    row = "a.jpg,1,2,30,40\n"
    with open(p, "w") as f:
        f.write("image,x0,y0,x1,y1\n")
        f.write(row * (detect_mod.MAX_SIDECAR_BYTES // len(row) + 1))
    with pytest.raises(InputError, match="larger than 8 MiB"):
        load_boxes(p)


def test_lookup_boxes():
    boxes = {"sub/a.jpg": [FaceBox(0, 0, 1, 1)], "b.jpg": [FaceBox(0, 0, 2, 2)]}
    assert lookup_boxes(boxes, "sub/a.jpg") == [FaceBox(0, 0, 1, 1)]
    assert lookup_boxes(boxes, "/data/photos/b.jpg") == [FaceBox(0, 0, 2, 2)]
    assert lookup_boxes(boxes, "c.jpg") == []
