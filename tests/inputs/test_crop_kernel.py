"""The compiled crop kernel (csrc/src/crop_body.h through engine._core.crop_batch_cpu) against
engine.crop on real photos and adversarial boxes.

Oracles: (a) engine.crop._sample_bilinear, the plain numpy reference of the same sampling: the
kernel mirrors its arithmetic step for step, so the two must agree BIT FOR BIT (measured: 0
differing values over every case here); (b) engine.crop.crop_face, the release's OpenCV path
(11-bit fixed-point weights): within 1 grey level, on at most 15% of the values (measured: at most
12.7% of one crop's values, about 5.5% on average: OpenCV rounds its weights to 11 bits).
Some cases also have a value computed by hand (a 1 px crop, a tap pair at weight 1/2).

The CPU path runs the very body the CUDA kernel runs per pixel; the `cuda` tests at the end check
what only a GPU can (the launch, strides of device tensors, float16 output, streams).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from engine import _core
from engine import crop as crop_mod
from engine.crop import check_box, crop_bounds, crop_face
from engine.errors import InputError, UnavailableError

skdata = pytest.importorskip("skimage.data")

BOUND_LIMIT = 2**33  # crop.h's kMaxCropBound


def _photos() -> dict[str, np.ndarray]:
    cam = skdata.camera()
    return {
        "astronaut": skdata.astronaut(),  # 512 x 512
        "chelsea": skdata.chelsea(),  # 300 x 451: rows != columns
        "coffee": skdata.coffee(),  # 400 x 600
        "camera": np.repeat(cam[:, :, None], 3, axis=2),  # grey photo as RGB
    }


PHOTOS = _photos()


def reference(image: np.ndarray, bounds, size: int = 224) -> np.ndarray:
    """Oracle (a): engine.crop's direct bilinear sampling as float32 [3, size, size] BGR."""
    rgb = crop_mod._sample_bilinear(image, *(int(v) for v in bounds), size)
    return rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)


def adversarial_boxes(h: int, w: int) -> dict[str, tuple[float, float, float, float]]:
    """Face boxes (x0, y0, x1, y1) the box rule admits for an h x w image: centred, at every border
    and corner (the crop leaves the image), larger than the image, far out (10 image sizes, the
    rule's limit), tiny (1-2 px)."""
    fw, fh = max(w / 4, 1.0), max(h / 4, 1.0)
    cx, cy = w / 2, h / 2
    L = max(h, w)
    boxes = {
        "centre": (cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2),
        "left": (-fw / 3, cy - fh / 2, 2 * fw / 3, cy + fh / 2),
        "right": (w - 2 * fw / 3, cy - fh / 2, w + fw / 3, cy + fh / 2),
        "top": (cx - fw / 2, -fh / 3, cx + fw / 2, 2 * fh / 3),
        "bottom": (cx - fw / 2, h - 2 * fh / 3, cx + fw / 2, h + fh / 3),
        "top-left": (-fw / 2, -fh / 2, fw / 2, fh / 2),
        "top-right": (w - fw / 2, -fh / 2, w + fw / 2, fh / 2),
        "bottom-left": (-fw / 2, h - fh / 2, fw / 2, h + fh / 2),
        "bottom-right": (w - fw / 2, h - fh / 2, w + fw / 2, h + fh / 2),
        "larger than the image": (-w / 2, -h / 2, 1.5 * w, 1.5 * h),
        "whole image": (0, 0, w, h),
        "far out (box rule limit)": (-10 * L, -10 * L, 10 * L, 10 * L),
        "tiny 1 px": (cx, cy, cx + 1, cy + 1),
        "tiny 2 px": (cx - 1, cy - 1, cx + 1, cy + 1),
        "tiny at the corner": (w - 1, h - 1, w, h),
        "thin": (cx - fw, cy, cx + fw, cy + 1),
        "fractional": (cx - 10.49, cy - 7.51, cx + 20.5, cy + 13.5),
    }
    for name, box in boxes.items():
        check_box(box, name, (h, w, 3))  # every case is one the engine would crop
    return boxes


CASES = [(photo, name, kind) for photo in PHOTOS for name in adversarial_boxes(*PHOTOS[photo].shape[:2])
         for kind in ("detector", "landmarks")]


@pytest.fixture(scope="module")
def photo_batches():
    """Per photo: the kernel's output for all of its adversarial boxes in one batch, and the bounds."""
    out = {}
    for photo, img in PHOTOS.items():
        boxes = adversarial_boxes(*img.shape[:2])
        keys = [(name, kind) for name in boxes for kind in ("detector", "landmarks")]
        bounds = np.array([crop_bounds(boxes[n], k) for n, k in keys], dtype=np.int64)
        out[photo] = (keys, bounds, _core.crop_batch_cpu([img] * len(keys), bounds))
    return out


@pytest.mark.parametrize("photo,name,kind", CASES)
def test_bit_identical_to_the_numpy_reference(photo_batches, photo, name, kind):
    keys, bounds, got = photo_batches[photo]
    i = keys.index((name, kind))
    want = reference(PHOTOS[photo], bounds[i])
    assert got.dtype == np.float32 and got.shape == (len(keys), 3, 224, 224)
    assert np.array_equal(got[i], want), f"{int((got[i] != want).sum())} values differ, max {np.abs(got[i] - want).max()}"


@pytest.mark.parametrize("photo", list(PHOTOS))
def test_within_one_grey_level_of_the_opencv_crop(photo_batches, photo):
    img = PHOTOS[photo]
    keys, _, got = photo_batches[photo]
    boxes = adversarial_boxes(*img.shape[:2])
    fractions = []
    for i, (name, kind) in enumerate(keys):
        want = crop_face(img, boxes[name], kind=kind)
        diff = np.abs(got[i] - want)
        assert diff.max() <= 1.0, (name, kind, diff.max())
        fractions.append(float((diff > 0).mean()))
    # Measured on these photos: at most 12.7% of the values of one crop, 5.1-5.7% on average.
    assert max(fractions) <= 0.15 and np.mean(fractions) <= 0.07, (max(fractions), np.mean(fractions))


def test_values_by_hand_on_a_real_photo():
    img = PHOTOS["chelsea"]
    # A 1 x 1 crop: every output pixel is that source pixel, BGR.
    y, x = 123, 321
    got = _core.crop_batch_cpu([img], [[x, y, x + 1, y + 1]], size=5)[0]
    assert np.array_equal(got, np.broadcast_to(img[y, x, ::-1].astype(np.float32)[:, None, None], (3, 5, 5)))
    # A crop of exactly the output size is copied unchanged (integer source positions, weight 1).
    got = _core.crop_batch_cpu([img], [[100, 50, 324, 274]])[0]
    assert np.array_equal(got, img[50:274, 100:324, ::-1].transpose(2, 0, 1).astype(np.float32))
    # A 2x downscale samples halfway between two pixels: the mean of the 2 x 2 block, halves to even.
    got = _core.crop_batch_cpu([img], [[10, 20, 18, 28]], size=4)[0]
    block = img[20:28, 10:18].astype(np.float64).reshape(4, 2, 4, 2, 3).mean(axis=(1, 3))
    assert np.array_equal(got, np.rint(block)[:, :, ::-1].transpose(2, 0, 1).astype(np.float32))


def test_huge_bounds_are_exact():
    """Bounds near the kernel's limit (2^33, beyond anything the box rule makes) sample the right
    pixels: a crop 224 * 2^24 px long puts output pixel 100 exactly between columns 200 and 201."""
    img = PHOTOS["coffee"]
    n = 224 * 2**24
    src100 = 201 * 2**23 - 1  # floor((100 + 0.5) * 2^24 - 0.5); the fraction is exactly 1/2
    bl, bt = 200 - src100, 150 - src100
    bounds = np.array([[bl, bt, bl + n, bt + n], [-BOUND_LIMIT, -BOUND_LIMIT, BOUND_LIMIT, BOUND_LIMIT],
                       [BOUND_LIMIT - 1, -BOUND_LIMIT, BOUND_LIMIT, 1 - BOUND_LIMIT]], dtype=np.int64)
    got = _core.crop_batch_cpu([img] * 3, bounds)
    quad = img[150:152, 200:202].astype(np.float64).mean(axis=(0, 1))
    assert np.array_equal(got[0][:, 100, 100], np.rint(quad)[::-1].astype(np.float32))
    rest = got[0].copy()
    rest[:, 100, 100] = 0
    assert not rest.any()  # every other output pixel samples 2^24 px or more away: outside the image
    for i in range(3):
        assert np.array_equal(got[i], reference(img, bounds[i]))
    # The far box of the box rule itself (coordinates at +-2^31, no image check) crops to zeros.
    far = crop_bounds((-(2.0**31), -(2.0**31), 2.0**31, 2.0**31), "landmarks")
    assert max(abs(v) for v in far) < BOUND_LIMIT
    assert np.array_equal(_core.crop_batch_cpu([img], [far])[0], reference(img, far))


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (2, 3), (37, 5)])
@pytest.mark.parametrize("size", [1, 2, 7, 224])
def test_tiny_and_thin_images(shape, size):
    rng = np.random.default_rng(sum(shape) * size)
    img = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    h, w = shape
    bounds = np.array([crop_bounds(b, k) for b in [(0, 0, w, h), (-1, -1, 1, 1), (w - 1, h - 1, w + 1, h + 1)]
                       for k in ("detector", "landmarks")] + [[0, 0, w, h], [-3, -2, w + 4, h + 1], [0, 0, 1, 1]],
                      dtype=np.int64)
    got = _core.crop_batch_cpu([img] * len(bounds), bounds, size=size)
    for i, b in enumerate(bounds):
        assert np.array_equal(got[i], reference(img, b, size)), b
    # The whole 1 x 1 image: its pixel everywhere.
    if shape == (1, 1):
        assert np.array_equal(got[6], np.broadcast_to(img[0, 0, ::-1].astype(np.float32)[:, None, None], got[6].shape))


@pytest.mark.parametrize("size", [1, 3, 96, 227, 512])
def test_other_output_sizes(size):
    img = PHOTOS["astronaut"]
    bounds = np.array([crop_bounds(b, "detector") for b in [(180, 60, 300, 200), (-50, 400, 80, 560)]])
    got = _core.crop_batch_cpu([img, img], bounds, size=size)
    assert got.shape == (2, 3, size, size)
    for i in range(2):
        assert np.array_equal(got[i], reference(img, bounds[i], size))


def test_layouts_and_strides_give_identical_crops():
    """HWC, CHW (contiguous and as a transposed view), flipped and strided views: the kernel honours
    strides, so each equals the crop of a contiguous copy of the same pixels."""
    img = PHOTOS["chelsea"]
    bounds = np.array([crop_bounds(b, "landmarks") for b in [(200, 80, 300, 200), (-30, -20, 60, 70)]])
    hwc = _core.crop_batch_cpu([img, img], bounds)
    chw = _core.crop_batch_cpu([np.ascontiguousarray(img.transpose(2, 0, 1))] * 2, bounds, layout="chw")
    chw_view = _core.crop_batch_cpu([img.transpose(2, 0, 1)] * 2, bounds, layout="chw")
    assert np.array_equal(hwc, chw) and np.array_equal(hwc, chw_view)
    for view in (img[::-1], img[:, ::-1], img[::2, 1::3], img[10:200, 30:400]):
        assert np.array_equal(_core.crop_batch_cpu([view, view], bounds),
                              _core.crop_batch_cpu([np.ascontiguousarray(view)] * 2, bounds))
    # A stacked batch [B, H, W, 3] is a list of its rows.
    stack = np.stack([img, img[::-1].copy()])
    assert np.array_equal(_core.crop_batch_cpu(stack, bounds),
                          np.stack([hwc[0], _core.crop_batch_cpu([img[::-1]], bounds[1:])[0]]))


def test_images_of_different_sizes_in_one_batch_and_the_out_buffer():
    imgs = list(PHOTOS.values())
    bounds = np.array([crop_bounds((50, 40, 180, 200), "detector")] * len(imgs))
    out = np.full((len(imgs), 3, 224, 224), np.nan, dtype=np.float32)
    got = _core.crop_batch_cpu(imgs, bounds.tolist(), out=out)  # bounds as a list of lists too
    assert got is out or np.shares_memory(got, out)
    assert np.isfinite(out).all()
    for i, img in enumerate(imgs):
        assert np.array_equal(out[i], reference(img, bounds[i]))
    for threads in (1, 2, 3):
        assert np.array_equal(_core.crop_batch_cpu(imgs, bounds, num_threads=threads), out)


def test_an_empty_batch():
    got = _core.crop_batch_cpu([], np.zeros((0, 4), dtype=np.int64), size=8)
    assert got.shape == (0, 3, 8, 8) and got.dtype == np.float32


# ---- bad arguments: InputError naming the function, the argument, the expected and the found ----

IMG = PHOTOS["astronaut"]
GOOD = np.array([[10, 10, 100, 100]], dtype=np.int64)
TWO = np.array([[10, 10, 100, 100], [20, 30, 40, 50]], dtype=np.int64)
# "<function>: <argument>: expected <what>, found <what>": one line, short, no array's elements
MESSAGE = re.compile(r"(?P<fn>crop_batch_c(?:pu|uda)): (?P<arg>[^:]+): expected (?P<expected>.+), found (?P<found>.+)")


def refusal(call, **args) -> re.Match:
    """The InputError message of call(**args), checked for the common form."""
    with pytest.raises(InputError) as e:
        call(**args)
    msg = str(e.value)
    m = MESSAGE.fullmatch(msg)
    assert m and m["fn"] == call.__name__, msg
    assert len(msg) <= 300 and "array(" not in msg and "tensor(" not in msg and "[[" not in msg, msg
    return m


def tall(h: int, layout: str = "hwc") -> np.ndarray:
    """A uint8 image h pixels high that takes no memory (zero strides)."""
    shape = (h, 1, 3) if layout == "hwc" else (3, h, 1)
    return np.broadcast_to(np.zeros((1, 1, 1), np.uint8), shape)


def strided(strides) -> np.ndarray:
    """A 3 x 3 x 3 uint8 view with any strides (refused before anything reads it)."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=(3, 3, 3), strides=strides)


@pytest.mark.parametrize("kwargs,arg,pattern", [
    # images: the list, each array's type, dtype, shape and layout, its size and strides
    (dict(images=None), "images", r"a list of B uint8 RGB arrays, found None"),
    (dict(images=IMG), "images", r"a list .*, found ndarray uint8\[512, 512, 3\]"),
    (dict(images={"a": IMG}), "images", r"a list .*, found dict"),
    (dict(images=[IMG.tolist()]), "images[0]", r"a numpy array uint8 \[H, W, 3\] RGB .*, found list"),
    (dict(images=[None]), "images[0]", r"a numpy array uint8 \[H, W, 3\] RGB .*, found NoneType"),
    (dict(images=[IMG.astype(np.float32)]), "images[0]", r"a non-empty uint8 \[H, W, 3\].*, found float32\[512, 512, 3\]"),
    (dict(images=[IMG[:, :, 0]]), "images[0]", r".*, found uint8\[512, 512\]"),
    (dict(images=[np.zeros((4, 4, 4), np.uint8)]), "images[0]", r".*\[H, W, 3\].*, found uint8\[4, 4, 4\]"),
    (dict(images=[np.zeros((0, 4, 3), np.uint8)]), "images[0]", r"a non-empty .*, found uint8\[0, 4, 3\]"),
    (dict(images=[IMG], layout="chw"), "images[0]", r"a non-empty uint8 \[3, H, W\].*, found uint8\[512, 512, 3\]"),
    (dict(images=[tall(2**31)]), "images[0].shape[0] (height)", r"in \[1, 2147483647\], found 2147483648"),
    (dict(images=[tall(2**31, "chw")], layout="chw"), "images[0].shape[1] (height)", r"in \[1, 2147483647\], found 2147483648"),
    (dict(images=[strided((2**62 + 1, 1, 1))]), "images[0].strides[0] (stride_y)", r"elements in \[-4611686018427387904, 4611686018427387904\], found 4611686018427387905"),
    (dict(images=[strided((3, 1, -(2**62) - 1))]), "images[0].strides[2] (stride_c)", r"elements in .*, found -4611686018427387905"),
    (dict(images=[strided((2**61, 2**61, 1))]), "images[0].strides", r"strides whose extent over the 3 x 3 x 3 image is at most 2\^62 elements, found stride_y=2305843009213693952 stride_x=2305843009213693952 stride_c=1"),
    (dict(images=[IMG] * 65536, bounds=np.repeat(GOOD, 65536, 0)), "images (B)", r"a number of faces in \[0, 65535\], found 65536"),
    # layout
    (dict(images=[IMG], layout="rgb"), "layout", r"one of \['hwc', 'chw'\], found 'rgb'"),
    (dict(images=[IMG], layout=np.array(["hwc"])), "layout", r"one of .*, found ndarray <U3\[1\]"),
    (dict(images=[IMG], layout=None), "layout", r"one of .*, found None"),
    # bounds: type, dtype, shape, length against images, range of each bound, empty crops
    (dict(bounds=None), "bounds", r"integers \[1, 4\].*, found None"),
    (dict(bounds=GOOD.astype(np.float64)), "bounds", r"integers \[1, 4\].*, found float64\[1, 4\]"),
    (dict(bounds=GOOD[:, :3]), "bounds", r"integers \[1, 4\].*, found int64\[1, 3\]"),
    (dict(bounds=TWO), "bounds", r"integers \[1, 4\].*, found int64\[2, 4\]"),
    (dict(images=[IMG, IMG], bounds=GOOD), "bounds", r"integers \[2, 4\].*, found int64\[1, 4\]"),
    (dict(images=[IMG, IMG], bounds=[[10, 10, 100, 100], [10, 10]]), "bounds", r"integers \[2, 4\].*, found a list of 2 items that is not a table \(rows of different lengths\?\)"),
    (dict(bounds=[[10, 10, 100, 2**70]]), "bounds", r"integers \[1, 4\].*, found numbers too large for int64 or not numbers"),
    (dict(bounds=np.array([[10, 10, 100, 2**64 - 1]], dtype=np.uint64)), "bounds", r".* within int64, found 18446744073709551615"),
    (dict(bounds=[[10, 10, 100, 2**33 + 1]]), "bounds[0][3] (bb)", r"a crop bound in \[-8589934592, 8589934592\] \(engine.crop's box rule\), found 8589934593"),
    (dict(bounds=[[-2**33 - 1, 10, 100, 100]]), "bounds[0][0] (bl)", r"a crop bound .*, found -8589934593"),
    (dict(images=[IMG, IMG], bounds=[[10, 10, 100, 100], [10, -2**40, 100, 100]]), "bounds[1][1] (bt)", r"a crop bound .*, found -1099511627776"),
    (dict(images=[IMG, IMG], bounds=[[10, 10, 100, 100], [10, 10, 2**34, 100]]), "bounds[1][2] (br)", r"a crop bound .*, found 17179869184"),
    (dict(bounds=[[100, 10, 100, 100]]), "bounds[0][2] (br)", r"> bounds\[0\]\[0\] \(bl\) = 100 \(a crop at least 1 px wide\), found 100"),
    (dict(images=[IMG, IMG], bounds=[[10, 10, 100, 100], [10, 100, 100, 99]]), "bounds[1][3] (bb)", r"> bounds\[1\]\[1\] \(bt\) = 100 \(a crop at least 1 px high\), found 99"),
    # size, num_threads: integers in range
    (dict(size=0), "size", r"an integer >= 1, found 0"),
    (dict(size=-5), "size", r"an integer >= 1, found -5"),
    (dict(size=4097), "size", r"an integer in \[1, 4096\], found 4097"),
    (dict(size=2**70), "size", r"an integer in \[1, 9223372036854775807\], found 1180591620717411303424"),
    (dict(size=2.5), "size", r"an integer >= 1, found 2.5"),
    (dict(size=True), "size", r"an integer >= 1, found True"),
    (dict(size=np.array([224])), "size", r"an integer >= 1, found ndarray int64\[1\]"),
    (dict(num_threads=-1), "num_threads", r"an integer >= 0, found -1"),
    (dict(num_threads=2**20), "num_threads", r"an integer in \[0, 65536\], found 1048576"),
    # out: type, dtype, shape, layout, writability
    (dict(out=np.zeros((1, 3, 224, 224), np.float64)), "out", r"float32\[1, 3, 224, 224\].*, found float64\[1, 3, 224, 224\]"),
    (dict(out=np.zeros((2, 3, 224, 224), np.float32)), "out", r"float32\[1, 3, 224, 224\].*, found float32\[2, 3, 224, 224\]"),
    (dict(out=np.zeros((1, 224, 224, 3), np.float32).transpose(0, 3, 1, 2)), "out", r".*C-contiguous, found .*\(not C-contiguous\)"),
    (dict(out=[0.0]), "out", r"a float32 numpy array \[1, 3, 224, 224\], found a list of 1 items"),
])
def test_bad_arguments_cpu(kwargs, arg, pattern):
    args = dict(images=[IMG], bounds=GOOD)
    args.update(kwargs)
    m = refusal(_core.crop_batch_cpu, **args)
    assert m["arg"] == arg, m.string
    assert re.fullmatch(pattern, m.string.split(": expected ", 1)[1]), m.string


def test_a_read_only_out_is_refused():
    out = np.zeros((1, 3, 224, 224), np.float32)
    out.flags.writeable = False
    m = refusal(_core.crop_batch_cpu, images=[IMG], bounds=GOOD, out=out)
    assert m["arg"] == "out" and m["expected"] == "a writable array" and m["found"] == "a read-only one"


# ---- the CUDA entry point: argument errors on every machine, then UnavailableError without a GPU ----

SRC = (1 << 20, 512, 512, 1536, 3, 1)  # a plausible device address and an HWC 512 x 512 image
SOURCES = "a tuple \\(device_ptr, height, width, stride_y, stride_x, stride_c\\)"


@pytest.mark.parametrize("kwargs,arg,pattern", [
    # sources: the list, each tuple, each field's type and range, the size and strides they give
    (dict(sources=SRC), "sources[0]", SOURCES + r", found 1048576"),
    (dict(sources="x"), "sources", r"a list of B tuples .*, found 'x'"),
    (dict(sources=None), "sources", r"a list of B tuples .*, found None"),
    (dict(sources=np.array([SRC])), "sources", r"a list of B tuples .*, found ndarray int64\[1, 6\]"),
    (dict(sources=[np.array(SRC)]), "sources[0]", SOURCES + r", found ndarray int64\[6\]"),
    (dict(sources=[SRC[:5]]), "sources[0]", SOURCES + r", found a tuple of 5 items"),
    (dict(sources=[SRC + (1,)]), "sources[0]", SOURCES + r", found a tuple of 7 items"),
    (dict(sources=[(0,) + SRC[1:]]), "sources[0].device_ptr", r"an integer >= 1, found 0"),
    (dict(sources=[(-8,) + SRC[1:]]), "sources[0].device_ptr", r"an integer >= 1, found -8"),
    (dict(sources=[(2**63,) + SRC[1:]]), "sources[0].device_ptr", r"an integer in \[1, 9223372036854775807\], found 9223372036854775808"),
    (dict(sources=[(1.5,) + SRC[1:]]), "sources[0].device_ptr", r"an integer .*, found 1.5"),
    (dict(sources=[(np.float64(2.0),) + SRC[1:]]), "sources[0].device_ptr", r"an integer .*, found 2.0"),
    (dict(sources=[(None,) + SRC[1:]]), "sources[0].device_ptr", r"an integer .*, found None"),
    (dict(sources=[SRC[:1] + (0,) + SRC[2:]]), "sources[0].height", r"in \[1, 2147483647\], found 0"),
    (dict(sources=[SRC[:2] + (-4,) + SRC[3:]]), "sources[0].width", r"in \[1, 2147483647\], found -4"),
    (dict(sources=[SRC, SRC[:2] + (2**31,) + SRC[3:]], bounds=TWO), "sources[1].width", r"in \[1, 2147483647\], found 2147483648"),
    (dict(sources=[SRC[:2] + (True,) + SRC[3:]]), "sources[0].width", r"an integer .*, found True"),
    (dict(sources=[SRC[:3] + (2**62,) + SRC[4:]]), "sources[0] strides (stride_y, stride_x, stride_c)", r"strides whose extent over the 512 x 512 x 3 image is at most 2\^62 elements, found stride_y=4611686018427387904 stride_x=3 stride_c=1"),
    (dict(sources=[SRC[:3] + (2**63 - 1,) + SRC[4:]]), "sources[0].stride_y", r"elements in \[-4611686018427387904, 4611686018427387904\], found 9223372036854775807"),
    (dict(sources=[SRC[:4] + (-(2**62) - 1,) + SRC[5:]]), "sources[0].stride_x", r"elements in .*, found -4611686018427387905"),
    (dict(sources=[SRC[:5] + (2**63,)]), "sources[0].stride_c", r"an integer in \[-9223372036854775808, 9223372036854775807\], found 9223372036854775808"),
    (dict(sources=[SRC] * 65536, bounds=np.repeat(GOOD, 65536, 0)), "sources (B)", r"a number of faces in \[0, 65535\], found 65536"),
    # bounds: as for crop_batch_cpu, named by face
    (dict(bounds=[[10, 10, 5, 100]]), "bounds[0][2] (br)", r"> bounds\[0\]\[0\] \(bl\) = 10 \(a crop at least 1 px wide\), found 5"),
    (dict(sources=[SRC, SRC], bounds=[[10, 10, 100, 100], [2**33 + 1, 10, 100, 100]]), "bounds[1][0] (bl)", r"a crop bound .*, found 8589934593"),
    (dict(bounds=[[10, 10, 100]]), "bounds", r"integers \[1, 4\].*, found int64\[1, 3\]"),
    (dict(bounds=None), "bounds", r"integers \[1, 4\].*, found None"),
    (dict(sources=[SRC, SRC]), "bounds", r"integers \[2, 4\].*, found int64\[1, 4\]"),
    # out_ptr: an address in [1, 2^64) (or a tensor: test_a_cpu_tensor_as_the_cuda_output_is_refused)
    (dict(out_ptr=-1), "out_ptr", r"the device address \(an integer in \[0, 2\^64\)\) of a contiguous float32\[1, 3, 224, 224\] buffer, found -1"),
    (dict(out_ptr=2**64), "out_ptr", r"the device address .*, found 18446744073709551616"),
    (dict(out_ptr=1.0), "out_ptr", r"the device address .*, found 1.0"),
    (dict(out_ptr=np.zeros((1, 3, 224, 224), np.float32)), "out_ptr", r"the device address .*, found ndarray float32\[1, 3, 224, 224\]"),
    (dict(out_ptr=0), "out_ptr", r"a pointer to the \[B, 3, size, size\] buffer, found null"),
    # out_dtype, size, stream
    (dict(out_dtype="bfloat16"), "out_dtype", r"one of \['float32', 'float16'\], found 'bfloat16'"),
    (dict(out_dtype=np.float32), "out_dtype", r"one of .*, found the type float32"),
    (dict(out_dtype=["float32"]), "out_dtype", r"one of .*, found a list of 1 items"),
    (dict(size=0), "size", r"an integer >= 1, found 0"),
    (dict(size=5000), "size", r"an integer in \[1, 4096\], found 5000"),
    (dict(size=2**64), "size", r"an integer in \[1, 9223372036854775807\], found 18446744073709551616"),
    (dict(stream=-3), "stream", r"a cudaStream_t as an integer in \[0, 2\^64\) .*, found -3"),
    (dict(stream=2**64), "stream", r"a cudaStream_t .*, found 18446744073709551616"),
    (dict(stream="default"), "stream", r"a cudaStream_t .*, found 'default'"),
    (dict(stream=True), "stream", r"a cudaStream_t .*, found True"),
    (dict(stream=np.array([0, 1])), "stream", r"a cudaStream_t .*, found ndarray int64\[2\]"),
])
def test_bad_arguments_cuda(kwargs, arg, pattern):
    """Every refusal that needs no GPU, on every machine: the arguments are checked before the
    device is looked for."""
    args = dict(sources=[SRC], bounds=GOOD, out_ptr=1 << 21)
    args.update(kwargs)
    m = refusal(_core.crop_batch_cuda, **args)
    assert m["arg"] == arg, m.string
    assert re.fullmatch(pattern, m.string.split(": expected ", 1)[1]), m.string


def test_a_cpu_tensor_as_the_cuda_output_is_refused():
    torch = pytest.importorskip("torch")
    m = refusal(_core.crop_batch_cuda, sources=[SRC], bounds=GOOD, out_ptr=torch.zeros(1, 3, 224, 224),
                out_dtype="float16")
    assert m["arg"] == "out_ptr"
    assert m["expected"] == "a contiguous CUDA tensor float16[1, 3, 224, 224]"
    assert m["found"] == "torch.float32[1, 3, 224, 224] on cpu"


@pytest.mark.skipif(_core.has_cuda(), reason="this machine has a GPU: the cuda tests below run instead")
def test_cuda_crop_is_unavailable_without_a_gpu():
    assert not _core.has_cuda_crop()
    with pytest.raises(UnavailableError, match="^crop_batch_cuda: (no CUDA device|this build has no CUDA kernel)"):
        _core.crop_batch_cuda([SRC], GOOD, 1 << 21)


# ---- on a GPU (marker `cuda`): what the CPU cannot check ----

def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not (_core.has_cuda_crop() and torch.cuda.is_available()):
        pytest.skip("needs an NVIDIA GPU and the CUDA build of engine._C")
    return torch


def _source(t, layout: str):
    """The (device_ptr, H, W, stride_y, stride_x, stride_c) tuple of a uint8 CUDA tensor."""
    if layout == "hwc":
        return (t.data_ptr(), t.shape[0], t.shape[1], t.stride(0), t.stride(1), t.stride(2))
    return (t.data_ptr(), t.shape[1], t.shape[2], t.stride(1), t.stride(2), t.stride(0))


@pytest.mark.cuda
@pytest.mark.parametrize("layout", ["hwc", "chw", "chw-view"])
@pytest.mark.parametrize("out_dtype", ["float32", "float16"])
def test_cuda_matches_the_cpu_kernel(layout, out_dtype):
    torch = _torch_cuda()
    imgs, bounds = [], []
    for photo, img in PHOTOS.items():  # images of different sizes, every adversarial box, one launch
        for name, box in adversarial_boxes(*img.shape[:2]).items():
            imgs.append(photo)
            bounds.append(crop_bounds(box, "landmarks" if len(bounds) % 2 else "detector"))
    bounds.append([-BOUND_LIMIT, -BOUND_LIMIT, BOUND_LIMIT, BOUND_LIMIT])  # the kernel's limit
    imgs.append("coffee")
    bounds = np.array(bounds, dtype=np.int64)
    on_gpu = {}
    for photo, img in PHOTOS.items():
        t = torch.from_numpy(img).cuda()
        on_gpu[photo] = {"hwc": t, "chw": t.permute(2, 0, 1).contiguous(), "chw-view": t.permute(2, 0, 1)}[layout]
    sources = [_source(on_gpu[p], "hwc" if layout == "hwc" else "chw") for p in imgs]
    dtype = getattr(torch, out_dtype)
    out = torch.full((len(imgs), 3, 224, 224), float("nan"), dtype=dtype, device="cuda")  # poisoned
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())  # the uploads above ran on the default stream
    _core.crop_batch_cuda(sources, bounds, out.data_ptr(), size=224, out_dtype=out_dtype, stream=stream)
    stream.synchronize()
    want = _core.crop_batch_cpu([PHOTOS[p] for p in imgs], bounds)
    got = out.float().cpu().numpy()
    assert np.isfinite(got).all()  # every element written
    assert np.array_equal(got, want)  # 0..255 integers: exact in float16 too


@pytest.mark.cuda
def test_cuda_other_sizes_tensor_out_and_default_stream():
    torch = _torch_cuda()
    img = PHOTOS["chelsea"]
    t = torch.from_numpy(img).cuda()
    bounds = np.array([crop_bounds((200, 80, 300, 200), "detector"), [0, 0, 1, 1], [-5, -5, 3, 2]])
    for size in (1, 7, 227):
        out = torch.empty((3, 3, size, size), dtype=torch.float32, device="cuda")
        _core.crop_batch_cuda([_source(t, "hwc")] * 3, bounds, out, size=size)  # the tensor itself as out_ptr
        torch.cuda.synchronize()
        assert np.array_equal(out.cpu().numpy(), _core.crop_batch_cpu([img] * 3, bounds, size=size))
    with pytest.raises(InputError, match=r"out_ptr: expected a contiguous CUDA tensor float16\[3, 3, 227, 227\]"):
        _core.crop_batch_cuda([_source(t, "hwc")] * 3, bounds, out, size=227, out_dtype="float16")


@pytest.mark.cuda
def test_cuda_refuses_host_memory_with_a_clear_error():
    torch = _torch_cuda()
    img = np.ascontiguousarray(PHOTOS["camera"])
    out = torch.empty((1, 3, 224, 224), dtype=torch.float32, device="cuda")
    host = (img.ctypes.data, img.shape[0], img.shape[1], img.strides[0], img.strides[1], img.strides[2])
    with pytest.raises(InputError, match=r"^crop_batch_cuda: sources\[0\]\.device_ptr: expected a CUDA device pointer, "
                                         r"found host memory 0x"):
        _core.crop_batch_cuda([host], GOOD, out.data_ptr())
    t = torch.from_numpy(img).cuda()
    host_out = np.zeros((1, 3, 224, 224), np.float32)
    with pytest.raises(InputError, match=r"^crop_batch_cuda: out_ptr: expected a CUDA device pointer"):
        _core.crop_batch_cuda([_source(t, "hwc")], GOOD, host_out.ctypes.data)
    # The context is still usable afterwards.
    _core.crop_batch_cuda([_source(t, "hwc")], GOOD, out.data_ptr())
    torch.cuda.synchronize()
    assert np.array_equal(out.cpu().numpy(), _core.crop_batch_cpu([img], GOOD))


def test_no_faces_is_an_empty_batch_and_none_is_named():
    """[] bounds for [] images (the natural call with no faces) give [0, 3, size, size]; bounds
    of None are refused saying None, not 'numbers too large'."""
    assert _core.crop_batch_cpu([], []).shape == (0, 3, 224, 224)
    assert _core.crop_batch_cpu([], np.zeros((0, 4), np.int64), size=32).shape == (0, 3, 32, 32)
    with pytest.raises(InputError, match=r"bounds: expected integers \[1, 4\].*found None"):
        _core.crop_batch_cpu([np.zeros((4, 4, 3), np.uint8)], None)
