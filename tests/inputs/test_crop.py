"""engine.crop: the release's crop rule, checked against hand-computed boxes and an
independent bilinear computation."""
from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest

from engine import crop as crop_mod
from engine.crop import RATIOS, check_box, crop_bounds, crop_face, crop_faces, crop_region, crop_rule, prepare_cropped
from engine.detect import FaceBox
from engine.errors import InputError


def test_ratios_are_the_releases():
    assert RATIOS["detector"] == (1.785974, 1.951171, 1.835600, 1.670403)
    assert RATIOS["landmarks"] == (1.9255, 2.2591, 1.9423, 1.6087)


def test_detector_box_by_hand():
    # box 100..200 square: centre 150, t = 50
    x0, y0, x1, y1 = crop_region((100, 100, 200, 200), "detector")
    assert x0 == pytest.approx(150 - 1.785974 * 50)  # 60.7013
    assert y0 == pytest.approx(150 - 1.951171 * 50)  # 52.44145
    assert x1 == pytest.approx(150 + 1.835600 * 50)  # 241.78
    assert y1 == pytest.approx(150 + 1.670403 * 50)  # 233.52015
    assert crop_bounds((100, 100, 200, 200), "detector") == (61, 52, 242, 234)


def test_landmark_box_by_hand_uses_the_longer_side():
    # box x 10..50 (w 40), y 20..100 (h 80): centre (30, 60), t = max(40, 80) / 2 = 40
    r = crop_region((10, 20, 50, 100), "landmarks")
    assert r == pytest.approx((30 - 1.9255 * 40, 60 - 2.2591 * 40, 30 + 1.9423 * 40, 60 + 1.6087 * 40))
    assert crop_bounds((10, 20, 50, 100), "landmarks") == (-47, -30, 108, 124)  # -47.02, -30.364, 107.692, 124.348


def test_kind_comes_from_the_facebox():
    lm = FaceBox(10, 20, 50, 100, 1.0, "landmarks")
    assert crop_region(lm) == crop_region((10, 20, 50, 100), "landmarks")
    given = FaceBox(10, 20, 50, 100, 1.0, "given")  # caller's boxes crop like detector boxes
    assert crop_region(given) == crop_region((10, 20, 50, 100), "detector")
    assert crop_region((10, 20, 50, 100)) == crop_region((10, 20, 50, 100), "detector")


def test_rounding_is_half_away_from_zero_like_python2():
    f = crop_mod._round_half_away
    assert [f(2.5), f(-2.5), f(0.5), f(-0.5), f(1.4999), f(-1.5001)] == [3, -3, 1, -1, 1, -2]


def _reference_crop(image: np.ndarray, bounds, size: int = 224) -> np.ndarray:
    """Independent oracle: bilinear sampling with half-pixel centres written out per
    output pixel, reading the image through a zero-outside lookup (no padded copy)."""
    bl, bt, br, bb = bounds
    nw, nh = br - bl, bb - bt
    h, w = image.shape[:2]

    def px(r, c):
        rr, cc = bt + r, bl + c
        if 0 <= rr < h and 0 <= cc < w:
            return image[rr, cc].astype(np.float64)
        return np.zeros(3)

    out = np.zeros((size, size, 3))
    for i in range(size):
        sy = min(max((i + 0.5) * nh / size - 0.5, 0.0), nh - 1)
        ya = int(math.floor(sy))
        yb, fy = min(ya + 1, nh - 1), sy - ya
        for j in range(size):
            sx = min(max((j + 0.5) * nw / size - 0.5, 0.0), nw - 1)
            xa = int(math.floor(sx))
            xb, fx = min(xa + 1, nw - 1), sx - xa
            out[i, j] = (px(ya, xa) * (1 - fy) * (1 - fx) + px(ya, xb) * (1 - fy) * fx
                         + px(yb, xa) * fy * (1 - fx) + px(yb, xb) * fy * fx)
    return out[:, :, ::-1].transpose(2, 0, 1)  # planar BGR


def _smooth_image(h=120, w=160) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 1.5) % 256, (y * 2.0) % 256, (x + y) % 256], axis=2).astype(np.uint8)


@pytest.mark.parametrize("box,kind", [((40, 30, 100, 90), "detector"), ((2, 3, 40, 45), "landmarks")])
def test_crop_matches_independent_bilinear(box, kind):
    img = _smooth_image()
    out = crop_face(img, box, kind, size=48)
    ref = _reference_crop(img, crop_bounds(box, kind), size=48)
    assert out.dtype == np.float32 and out.shape == (3, 48, 48)
    # OpenCV interpolates uint8 with 11-bit fixed-point weights: within 1 grey level.
    assert np.abs(out - ref).max() <= 1.0


@pytest.mark.parametrize("bounds", [(-10, -5, 120, 95), (3, 4, 80, 60), (-400, -300, 700, 900), (0, 0, 130, 90)])
def test_direct_sampling_agrees_with_opencv_on_the_padded_copy(bounds):
    # The path taken without OpenCV and for regions too large to copy, against OpenCV
    # on the zero-padded copy (what the release did): within 1 grey level.
    cv2 = pytest.importorskip("cv2")
    img = np.random.default_rng(1).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    for size in (224, 57):
        a = cv2.resize(crop_mod._padded_crop(img, *bounds), (size, size), interpolation=cv2.INTER_LINEAR)
        b = crop_mod._sample_bilinear(img, *bounds, size)
        assert b.shape == (size, size, 3) and b.dtype == np.uint8
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def _release_style(img, l, t, r, b, rescale):
    """The original demo's steps (utils.cropImg, then cv2.resize), restated: expanded
    bounds, a zero canvas, the in-image part pasted at its offset, resize to 224."""
    import cv2

    p2round = lambda v: int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))  # noqa: E731
    ww, hh = r - l, b - t
    cx, cy, ts = l + ww / 2.0, t + hh / 2.0, max(ww, hh) / 2.0
    bl, bt = p2round(cx - rescale[0] * ts), p2round(cy - rescale[1] * ts)
    br, bb = p2round(cx + rescale[2] * ts), p2round(cy + rescale[3] * ts)
    nw, nh = br - bl, bb - bt
    h, w = img.shape[:2]
    canvas = np.zeros((nh, nw, 3), np.uint8)
    ll, rr, tt, bbb = 0, nw, 0, nh
    if bl < 0:
        ll, bl = -bl, 0
    if br > w:
        rr, br = w + nw - br, w
    if bt < 0:
        tt, bt = -bt, 0
    if bb > h:
        bbb, bb = h + nh - bb, h
    canvas[tt:bbb, ll:rr] = img[bt:bb, bl:br]
    return cv2.resize(canvas, (224, 224))


def test_identical_to_the_release_pipeline():
    pytest.importorskip("cv2")
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    for k in range(40):
        x0, y0 = rng.uniform(-40, 380), rng.uniform(-40, 280)
        box = (x0, y0, x0 + rng.uniform(20, 160), y0 + rng.uniform(20, 160))
        kind = "landmarks" if k % 2 else "detector"
        ref = _release_style(img, *box, RATIOS[kind])
        got = crop_face(img, box, kind)
        np.testing.assert_array_equal(got, ref[:, :, ::-1].transpose(2, 0, 1))


def test_face_at_the_border_is_zero_filled():
    img = np.empty((100, 100, 3), np.uint8)
    img[...] = (10, 20, 30)  # R, G, B
    bounds = crop_bounds((0, 0, 40, 40), "detector")
    assert bounds == (-16, -19, 57, 53)  # -15.72, -19.02, 56.71, 53.41 rounded
    out = crop_face(img, (0, 0, 40, 40), "detector")
    # 16 of 73 columns and 19 of 72 rows lie outside: the top-left block is black ...
    col_edge = int(16 / 73 * 224)  # 49
    row_edge = int(19 / 72 * 224)  # 59
    assert np.all(out[:, : row_edge - 1, :] == 0)
    assert np.all(out[:, :, : col_edge - 1] == 0)
    # ... and the rest is the image colour, in planar BGR order.
    inside = out[:, row_edge + 2 :, col_edge + 2 :]
    assert np.all(inside[0] == 30) and np.all(inside[1] == 20) and np.all(inside[2] == 10)
    np.testing.assert_allclose(out, _reference_crop(img, bounds), atol=1.0)


# Boxes wholly outside a 50 x 50 image (the tester's (-5000, -5000, -4000, -4000) scaled to it):
# before, each gave a "face" of black padding.
OUTSIDE = [(400, 400, 440, 440), (-450, -450, -400, -400), (50, 0, 90, 40), (0, 50, 40, 90), (-40, 10, 0, 30),
           (10, -40, 30, 0)]


@pytest.mark.parametrize("box", OUTSIDE)
def test_a_box_wholly_outside_the_image_is_refused(box):
    img = np.full((50, 50, 3), 200, np.uint8)
    x0, y0, x1, y1 = box
    want = (rf"^box: the box \(x0={x0} y0={y0} x1={x1} y1={y1}\) lies wholly outside this 50x50 image: expected "
            r"part of it inside \(x0 < 50, x1 > 0, y0 < 50, y1 > 0\)$")
    for call in (lambda: crop_face(img, box), lambda: crop_faces(img, [(10, 10, 40, 40), box]),
                 lambda: check_box(box, image_shape=img.shape)):
        with pytest.raises(InputError, match=want):
            call()
    check_box(box)  # without the image nothing says it is outside
    with pytest.raises(InputError, match=r"^boxes.json: entry 'a.jpg' box 0: the box .* lies wholly outside"):
        crop_face(img, FaceBox(*box, origin="boxes.json: entry 'a.jpg' box 0"))


def test_a_box_with_part_of_it_inside_is_cropped():
    # The rule's edge: a sliver of positive area inside is in, and its crop holds the image there.
    img = np.full((50, 50, 3), 200, np.uint8)
    for box in [(49, 49, 90, 90), (-40, -40, 1, 1), (-40, 10, 0.5, 30), (10, 49.5, 30, 80)]:
        out = crop_face(img, box)
        assert out.max() == 200, box  # some image pixels made it into the crop


def test_exact_224_crop_is_copied_unchanged():
    # Find a square box whose rounded crop is exactly 224 x 224 (t * 3.621574 ~ 224):
    # the resize is then the identity and the output is the pixels themselves.
    img = np.random.default_rng(2).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    for s in np.arange(123.0, 125.0, 0.05):
        box = (150.0, 140.0, 150.0 + s, 140.0 + s)
        bl, bt, br, bb = crop_bounds(box)
        if br - bl == 224 and bb - bt == 224:
            break
    else:
        pytest.fail("no box with a 224 x 224 crop found")
    out = crop_face(img, box)
    np.testing.assert_array_equal(out, img[bt:bb, bl:br, ::-1].transpose(2, 0, 1).astype(np.float32))


def test_prepare_cropped_resizes_whole_image():
    img = np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(prepare_cropped(img), img[:, :, ::-1].transpose(2, 0, 1))
    small = _smooth_image(60, 80)
    ref = _reference_crop(small, (0, 0, 80, 60), size=32)
    assert np.abs(prepare_cropped(small, size=32) - ref).max() <= 1.0


def test_crop_faces_fills_a_preallocated_batch():
    img = _smooth_image()
    boxes = [(40, 30, 100, 90), FaceBox(2, 3, 40, 45, 0.9, "landmarks"), (60, 50, 90, 80)]
    buf = np.full((5, 3, 224, 224), -1, np.float32)
    got = crop_faces(img, boxes, out=buf)
    assert got.shape == (3, 3, 224, 224) and np.shares_memory(got, buf)
    for i, b in enumerate(boxes):
        np.testing.assert_array_equal(buf[i], crop_face(img, b))
    assert np.all(buf[3:] == -1)  # rows past B untouched
    other = _smooth_image(80, 80)
    per = crop_faces([img, other], [boxes[0], boxes[2]])
    np.testing.assert_array_equal(per[1], crop_face(other, boxes[2]))
    with pytest.raises(InputError, match="one image per box"):
        crop_faces([img], boxes)
    with pytest.raises(InputError, match="out"):
        crop_faces(img, boxes, out=np.empty((2, 3, 224, 224), np.float32))


@pytest.mark.parametrize(
    "args,msg",
    [
        ((np.zeros((10, 10), np.uint8), (1, 1, 5, 5)), "RGB uint8"),
        ((np.zeros((10, 10, 3), np.float32), (1, 1, 5, 5)), "RGB uint8"),
        ((np.zeros((10, 10, 3), np.uint8), (5, 1, 5, 5)), "x1 > x0"),
        ((np.zeros((10, 10, 3), np.uint8), (1, 1, 5)), "4 numbers"),
        ((np.zeros((10, 10, 3), np.uint8), (1, 1, float("nan"), 5)), "finite"),
        ((np.zeros((10, 10, 3), np.uint8), itertools.count()), "found 5 or more"),  # an endless iterator: not read on
    ],
)
def test_bad_arguments(args, msg):
    with pytest.raises(InputError, match=msg):
        crop_face(*args)


def test_bad_kind_and_out():
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(InputError, match="kind"):
        crop_face(img, (1, 1, 5, 5), kind="casia")
    with pytest.raises(InputError, match=r"out: expected float32\[3, 224, 224\]"):
        crop_face(img, (1, 1, 5, 5), out=np.empty((3, 224, 224), np.float64))


def test_huge_boxes_are_sampled_without_building_the_padded_copy(monkeypatch):
    # The largest boxes the box rule admits on a 100 x 100 image (+-10 x its side): a padded
    # crop of ~6,700^2 pixels, over _MAX_PADDED_PIXELS, is sampled straight from the image
    # instead, and agrees with the independent oracle (which never copies either).
    img = _smooth_image(100, 100)
    for box in [(-1000, -1000, 1000, 1000), (-900, 20, 950, 990), (40, 30, 60, 50)]:
        out = crop_face(img, box, size=40)
        assert np.abs(out - _reference_crop(img, crop_bounds(box), size=40)).max() <= 1.0, box
    out = crop_faces(img, [(10, 10, 50, 50), FaceBox(-1000, -1000, 1000, 1000, 1.0, "detector")])
    assert out.shape == (2, 3, 224, 224) and np.all(np.isfinite(out))
    # The copy is never made above the limit: forbid it, and the crop still comes out.
    monkeypatch.setattr(crop_mod, "_MAX_PADDED_PIXELS", 100)
    monkeypatch.setattr(crop_mod, "_padded_crop", lambda *a: pytest.fail("padded copy built"))
    out = crop_face(img, (-900, 20, 950, 990), size=40)
    assert np.abs(out - _reference_crop(img, crop_bounds((-900, 20, 950, 990)), size=40)).max() <= 1.0


# Boxes that used to overflow (OverflowError from int/float conversion) or ask for absurd work:
# each is now an InputError naming the field and the value, from every entry point.
ABSURD = [
    ((10, 10, 1e308, 100), r"field x1: expected a finite number within \+-2147483648 px, found 1e\+308"),
    ((-1e308, 0, 1e308, 10), r"field x0: expected a finite number within"),  # a span reaching infinity
    ((0, 0, 1e300, 1e300), r"field x1: expected a finite number within"),
    ((0, 0, 10**400, 10), r"field x1: .* an integer of about 401 digits"),
    ((0, 0, float("inf"), 10), r"field x1: expected a finite number"),
    ((0, 0, 0.5, 0.5), r"each side at least 1 px"),
    ((0, 0, "50", 50), r"field x1: expected a number, found '50'"),
    ((0, 0, True, 50), r"field x1: expected a number"),
]


@pytest.mark.parametrize("box,msg", ABSURD)
def test_absurd_boxes_are_typed_errors_everywhere(box, msg):
    img = _smooth_image(100, 100)
    for call in (lambda: crop_region(box), lambda: crop_bounds(box), lambda: crop_face(img, box),
                 lambda: crop_faces(img, [(10, 10, 50, 50), box]), lambda: crop_face(img, np.array(box, object)),
                 lambda: check_box(box)):
        with pytest.raises(InputError, match=msg):
            call()
    with pytest.raises(InputError, match=msg):
        FaceBox(*box)


@pytest.mark.parametrize("box,field", [((0, 0, 1001, 50), "x1"), ((-1001, 0, 50, 50), "x0"),
                                       ((0, 1e6, 50, 2e6), "y0"), ((0, 0, 50, 1e9), "y1")])
def test_boxes_beyond_ten_image_sizes_are_refused_at_crop_time(box, field):
    img = _smooth_image(100, 80)  # 80 wide, 100 high: coordinates within +-1000
    crop_region(box)  # without the image the box is fine
    with pytest.raises(InputError, match=rf"^box, field {field}: expected a coordinate within \+-1000 px "
                                         rf"\(10 x the longer side of this 80x100 image\)"):
        crop_face(img, box)
    fb = FaceBox(*box, origin="boxes.csv line 4")
    found = re.escape(f"{fb.as_tuple()[_FIELDS.index(field)]:g}")
    with pytest.raises(InputError, match=rf"^boxes.csv line 4, field {field}: .* found {found}$"):
        crop_face(img, fb)
    crop_face(img, (-1000, -1000, 1000, 1000))  # the rule's edge is in


_FIELDS = ("x0", "y0", "x1", "y1")


def test_crop_rule_names_the_ratios_used():
    assert crop_rule(FaceBox(0, 0, 10, 10, 1.0, "landmarks")) == "landmarks"
    assert crop_rule(FaceBox(0, 0, 10, 10, 1.0, "detector")) == "detector"
    assert crop_rule(FaceBox(0, 0, 10, 10, 1.0, "given")) == "detector"
    assert crop_rule((0, 0, 10, 10)) == "detector"
    assert crop_rule(None) == "whole image"
