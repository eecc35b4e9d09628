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


# ---- bad arguments: InputError naming the argument, the expected and the found ----

IMG = PHOTOS["astronaut"]
GOOD = np.array([[10, 10, 100, 100]], dtype=np.int64)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(images=IMG), r"images: expected a list of B uint8 RGB arrays, found ndarray"),
    (dict(images={"a": IMG}), r"images: expected a list .* found dict"),
    (dict(images=[IMG.tolist()]), r"images\[0\]: expected a numpy array uint8 \[H, W, 3\] RGB .* found list"),
    (dict(images=[IMG.astype(np.float32)]), r"images\[0\]: expected a non-empty uint8 \[H, W, 3\].*found float32\[512, 512, 3\]"),
    (dict(images=[IMG[:, :, 0]]), r"images\[0\]: expected .*found uint8\[512, 512\]"),
    (dict(images=[np.zeros((4, 4, 4), np.uint8)]), r"images\[0\]: expected .*\[H, W, 3\].*found uint8\[4, 4, 4\]"),
    (dict(images=[np.zeros((0, 4, 3), np.uint8)]), r"images\[0\]: expected a non-empty .*found uint8\[0, 4, 3\]"),
    (dict(images=[IMG], layout="chw"), r"images\[0\]: expected a non-empty uint8 \[3, H, W\].*found uint8\[512, 512, 3\]"),
    (dict(images=[IMG], layout="rgb"), r"layout: expected one of \['hwc', 'chw'\], found 'rgb'"),
    (dict(bounds=GOOD.astype(np.float64)), r"bounds: expected integers \[1, 4\].*found float64\[1, 4\]"),
    (dict(bounds=GOOD[:, :3]), r"bounds: expected integers \[1, 4\].*found int64\[1, 3\]"),
    (dict(bounds=np.repeat(GOOD, 2, 0)), r"bounds: expected integers \[1, 4\].*found int64\[2, 4\]"),
    (dict(bounds=[[10, 10, 100, 2**70]]), r"bounds: expected integers \[1, 4\].*found .*too large"),
    (dict(bounds=np.array([[10, 10, 100, 2**64 - 1]], dtype=np.uint64)), r"bounds: expected .* within int64"),
    (dict(bounds=[[10, 10, 100, 2**33 + 1]]), r"faces\[0\]\.bottom \(bb\): expected a crop bound in \[-8589934592, 8589934592\].*found 8589934593"),
    (dict(bounds=[[-2**33 - 1, 10, 100, 100]]), r"faces\[0\]\.left \(bl\): expected a crop bound .*found -8589934593"),
    (dict(bounds=[[100, 10, 100, 100]]), r"faces\[0\]\.right \(br\): expected > left \(bl\) = 100 .*found 100"),
    (dict(bounds=[[10, 100, 100, 99]]), r"faces\[0\]\.bottom \(bb\): expected > top \(bt\) = 100 .*found 99"),
    (dict(size=0), r"size: expected an integer >= 1, found 0"),
    (dict(size=4097), r"size: expected an integer in \[1, 4096\], found 4097"),
    (dict(size=2.5), r"size: expected an integer >= 1, found 2.5"),
    (dict(size=True), r"size: expected an integer >= 1, found True"),
    (dict(num_threads=-1), r"num_threads: expected an integer >= 0, found -1"),
    (dict(out=np.zeros((1, 3, 224, 224), np.float64)), r"out: expected float32\[1, 3, 224, 224\].*found float64\[1, 3, 224, 224\]"),
    (dict(out=np.zeros((2, 3, 224, 224), np.float32)), r"out: expected float32\[1, 3, 224, 224\].*found float32\[2, 3, 224, 224\]"),
    (dict(out=np.zeros((1, 224, 224, 3), np.float32).transpose(0, 3, 1, 2)), r"out: expected .*C-contiguous.*\(not C-contiguous\)"),
    (dict(out=[0.0]), r"out: expected a float32 numpy array \[1, 3, 224, 224\], found list"),
])
def test_bad_arguments_cpu(kwargs, pattern):
    args = dict(images=[IMG], bounds=GOOD)
    args.update(kwargs)
    with pytest.raises(InputError, match=r"crop_batch_cpu: |crop: ") as e:
        _core.crop_batch_cpu(**args)
    import re

    assert re.search(pattern, str(e.value)), str(e.value)


def test_a_read_only_out_is_refused():
    out = np.zeros((1, 3, 224, 224), np.float32)
    out.flags.writeable = False
    with pytest.raises(InputError, match="out: expected a writable array"):
        _core.crop_batch_cpu([IMG], GOOD, out=out)


# ---- the CUDA entry point: argument errors on every machine, then UnavailableError without a GPU ----

SRC = (1 << 20, 512, 512, 1536, 3, 1)  # a plausible device address and an HWC 512 x 512 image


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(sources=SRC), r"sources\[0\]: expected a tuple \(device_ptr, .*found 1048576"),
    (dict(sources="x"), r"sources: expected a list of B tuples .*found str"),
    (dict(sources=[SRC[:5]]), r"sources\[0\]: expected a tuple \(device_ptr, height, width, stride_y, stride_x, stride_c\)"),
    (dict(sources=[(0,) + SRC[1:]]), r"sources\[0\]\.device_ptr: expected an integer in \[1, 9223372036854775807\], found 0"),
    (dict(sources=[(1.5,) + SRC[1:]]), r"sources\[0\]\.device_ptr: expected an integer .*found 1.5"),
    (dict(sources=[SRC[:1] + (0,) + SRC[2:]]), r"faces\[0\]\.height: expected in \[1, 2147483647\], found 0"),
    (dict(sources=[SRC[:2] + (-4,) + SRC[3:]]), r"faces\[0\]\.width: expected in \[1, 2147483647\], found -4"),
    (dict(sources=[SRC[:3] + (2**62,) + SRC[4:]]), r"faces\[0\]\.stride_y/stride_x/stride_c: expected strides whose extent"),
    (dict(sources=[SRC[:3] + (2**63 - 1,) + SRC[4:]]), r"faces\[0\]\.stride_y: expected elements in"),
    (dict(bounds=[[10, 10, 5, 100]]), r"faces\[0\]\.right \(br\): expected > left \(bl\) = 10"),
    (dict(bounds=[[10, 10, 100]]), r"bounds: expected integers \[1, 4\]"),
    (dict(out_ptr=-1), r"out_ptr: expected the device address \(an integer\) of a contiguous float32\[1, 3, 224, 224\]"),
    (dict(out_ptr=1.0), r"out_ptr: expected the device address"),
    (dict(out_ptr=0), r"crop: out: expected a pointer to the \[B, 3, size, size\] buffer, found null"),
    (dict(out_dtype="bfloat16"), r"out_dtype: expected one of \['float32', 'float16'\], found 'bfloat16'"),
    (dict(size=0), r"size: expected an integer >= 1, found 0"),
    (dict(size=5000), r"size: expected an integer in \[1, 4096\], found 5000"),
    (dict(stream=-3), r"stream: expected a cudaStream_t as an integer"),
    (dict(stream="default"), r"stream: expected a cudaStream_t"),
])
def test_bad_arguments_cuda(kwargs, pattern):
    args = dict(sources=[SRC], bounds=GOOD, out_ptr=1 << 21)
    args.update(kwargs)
    with pytest.raises(InputError) as e:
        _core.crop_batch_cuda(**args)
    import re

    assert re.search(pattern, str(e.value)), str(e.value)
    assert "crop_batch_cuda: " in str(e.value) or "crop: " in str(e.value)


def test_a_cpu_tensor_as_the_cuda_output_is_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(InputError, match=r"out_ptr: expected a contiguous CUDA tensor float16\[1, 3, 224, 224\], "
                                         r"found torch.float32\[1, 3, 224, 224\] on cpu"):
        _core.crop_batch_cuda([SRC], GOOD, torch.zeros(1, 3, 224, 224), out_dtype="float16")


@pytest.mark.skipif(_core.has_cuda(), reason="this machine has a GPU: the cuda tests below run instead")
def test_cuda_crop_is_unavailable_without_a_gpu():
    assert not _core.has_cuda_crop()
    with pytest.raises(UnavailableError, match="crop_cuda: (no CUDA device|this build has no CUDA kernel)"):
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
    with pytest.raises(InputError, match=r"faces\[0\]\.image: expected a CUDA device pointer, found host memory"):
        _core.crop_batch_cuda([host], GOOD, out.data_ptr())
    t = torch.from_numpy(img).cuda()
    host_out = np.zeros((1, 3, 224, 224), np.float32)
    with pytest.raises(InputError, match=r"out: expected a CUDA device pointer"):
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
