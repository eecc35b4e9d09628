"""engine.images: every supported input decodes to RGB uint8 [H, W, 3]; every bad input
raises InputError naming the file."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import InputError
from engine.images import as_rgb, decode_image, expand_inputs, iter_video_frames, load_image


def pattern(h=12, w=17) -> np.ndarray:
    """An RGB image whose every pixel and channel differ (catches flips and swaps)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 13 % 256, y * 19 % 256, (x * 7 + y * 11) % 256], axis=2).astype(np.uint8)


@pytest.mark.parametrize("ext,kw", [(".png", {}), (".bmp", {}), (".tiff", {}), (".webp", {"lossless": True})])
def test_lossless_formats_roundtrip_exactly(tmp_path, ext, kw):
    rgb = pattern()
    p = tmp_path / f"a{ext}"
    Image.fromarray(rgb).save(p, **kw)
    out = load_image(p)
    assert out.dtype == np.uint8 and out.shape == rgb.shape and out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_decodes_close_to_source(tmp_path):
    rgb = np.full((16, 16, 3), (200, 40, 90), np.uint8)
    p = tmp_path / "a.jpg"
    Image.fromarray(rgb).save(p, quality=95)
    out = load_image(p)
    assert out.shape == (16, 16, 3)
    assert np.abs(out.astype(int) - rgb).max() <= 4


def test_grey_and_palette_become_three_equal_channels(tmp_path):
    g = pattern()[:, :, 0]
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    np.testing.assert_array_equal(out, np.repeat(g[:, :, None], 3, axis=2))
    rgb = pattern()
    Image.fromarray(rgb).quantize(256).save(tmp_path / "p.png")
    pal = load_image(tmp_path / "p.png")
    assert pal.shape == rgb.shape and np.abs(pal.astype(int) - rgb).mean() < 8


def test_rgba_drops_alpha_without_compositing(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., :3] = pattern(4, 5)
    rgba[..., 3] = 0  # fully transparent: the colour must survive untouched
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), pattern(4, 5))


def test_cmyk_is_converted(tmp_path):
    cmyk = np.zeros((1, 3, 4), np.uint8)
    cmyk[0, 1] = (255, 0, 0, 0)  # pure cyan ink
    cmyk[0, 2] = (0, 0, 0, 255)  # pure black ink
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tif")
    out = load_image(tmp_path / "c.tif")
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [0, 255, 255], [0, 0, 0]])


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_grey_is_scaled_not_clipped(tmp_path, ext):
    g = np.array([[0, 1000, 257 * 128, 65535]], np.uint16)
    Image.fromarray(g).save(tmp_path / f"g{ext}")  # Pillow writes I;16
    out = load_image(tmp_path / f"g{ext}")
    # round(v * 255 / 65535): 1000 -> 3.89 -> 4 (convert("L") would clip it to 255)
    np.testing.assert_array_equal(out[0, :, 0], [0, 4, 128, 255])
    assert np.all(out[..., 0] == out[..., 2])


def test_16bit_rgb_keeps_channel_order_and_scale(tmp_path):
    cv2 = pytest.importorskip("cv2")
    bgr = np.zeros((2, 2, 3), np.uint16)
    bgr[0, 0] = (1000, 30000, 65535)  # OpenCV order: B, G, R
    cv2.imwrite(str(tmp_path / "c16.png"), bgr)
    out = load_image(tmp_path / "c16.png")
    # Pillow keeps the high byte of 16-bit RGB: within 1 of round(v * 255 / 65535).
    expected = np.array([65535, 30000, 1000]) * 255 / 65535
    assert np.abs(out[0, 0].astype(float) - expected).max() <= 1.0
    assert out[0, 0, 0] == 255 and out[0, 0, 2] <= 4


def test_exif_orientation_is_applied(tmp_path):
    rgb = pattern(2, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(tmp_path / "e.png", exif=exif)
    out = load_image(tmp_path / "e.png")
    np.testing.assert_array_equal(out, np.rot90(rgb, k=-1))


def test_decode_bytes_and_arrays():
    rgb = pattern()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    np.testing.assert_array_equal(decode_image(buf.getvalue()), rgb)
    np.testing.assert_array_equal(load_image(buf.getvalue()), rgb)
    np.testing.assert_array_equal(load_image(rgb), rgb)


def test_as_rgb_conversions():
    g = np.array([[0, 255]], np.uint8)
    np.testing.assert_array_equal(as_rgb(g), [[[0, 0, 0], [255, 255, 255]]])
    np.testing.assert_array_equal(as_rgb(g[:, :, None])[..., 1], g)
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[..., 0] = 9
    np.testing.assert_array_equal(as_rgb(rgba)[..., 0], [[9, 9]])
    np.testing.assert_array_equal(as_rgb(np.array([[[0, 1000, 65535]]], np.uint16)), [[[0, 4, 255]]])
    np.testing.assert_array_equal(as_rgb(np.array([[0.0, 0.5, 1.0]]))[0, :, 0], [0, 128, 255])
    np.testing.assert_array_equal(as_rgb(np.array([[True, False]]))[0, :, 0], [255, 0])


@pytest.mark.parametrize(
    "arr,msg",
    [
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros((4,), np.uint8), "shape"),
        (np.zeros((0, 4, 3), np.uint8), "non-empty"),
        (np.zeros((4, 4, 3), np.int32), "dtype"),
        (np.full((2, 2), 255.0), r"\[0, 1\]"),
        (np.full((2, 2), np.nan), r"\[0, 1\]"),
    ],
)
def test_as_rgb_rejects_bad_arrays(arr, msg):
    with pytest.raises(InputError, match=msg):
        as_rgb(arr, "myarray")


def _good_jpeg(tmp_path) -> Path:
    p = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(p, quality=90)
    return p


def test_missing_empty_folder_and_non_image_files(tmp_path):
    with pytest.raises(InputError, match=r"nope\.jpg: no such file"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.png: empty file \(0 bytes\)"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(InputError, match="is a folder"):
        load_image(tmp_path)
    (tmp_path / "text.jpg").write_text("hello, I am not a JPEG\n")
    with pytest.raises(InputError, match=r"text\.jpg: not a recognised image format"):
        load_image(tmp_path / "text.jpg")
    with pytest.raises(InputError, match="empty image data"):
        decode_image(b"")


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_truncated_files(tmp_path, fmt):
    src = _good_jpeg(tmp_path)
    if fmt == "png":
        Image.open(src).save(tmp_path / "good.png")
        src = tmp_path / "good.png"
    data = src.read_bytes()
    bad = tmp_path / f"cut.{fmt}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=rf"cut\.{fmt}: (truncated|cannot decode)"):
        load_image(bad)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, with a few bytes of pixel data (a
    decompression bomb as a decoder trusting the header sees it)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_limit(tmp_path, monkeypatch):
    from engine.images import image_size

    Image.fromarray(pattern(20, 20)).save(tmp_path / "a.png")
    a = tmp_path / "a.png"
    def msg(limit):
        return rf"a\.png: image too large: 20x20 = 400 pixels, limit is {limit} \(raise max_pixels=\)$"
    with pytest.raises(InputError, match=msg(399)):
        load_image(a, max_pixels=399)
    assert load_image(a, max_pixels=400).shape == (20, 20, 3)
    # DEFAULT follows Pillow's MAX_IMAGE_PIXELS: below it (Pillow warns) and below half of it
    # (Pillow's own bomb error, at 2x its limit, raised before the size is seen), one message,
    # with the limit the caller set, never Pillow's doubled value.
    for limit in (300, 199, 100, 1):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        for read in (load_image, image_size, lambda p: decode_image(p.read_bytes(), str(p))):
            with pytest.raises(InputError, match=msg(limit)):
                read(a)
    # An explicit limit decides alone: Pillow's guard (here 2 x 100 pixels) does not refuse
    # an image the caller admits.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    np.testing.assert_array_equal(load_image(a, max_pixels=400), pattern(20, 20))
    assert image_size(a, max_pixels=None) == (20, 20)
    with pytest.raises(InputError, match="max_pixels"):
        load_image(a, max_pixels=0)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_declared_sizes_far_over_the_limit_get_the_same_message(tmp_path):
    # The tester's cases: a PNG declaring 100000 x 100000 (far beyond Pillow's 2x guard) and
    # one of 144 megapixels (between the limit and 2x): the same sentence, the same limit.
    from PIL import Image as PILImage

    from engine.images import image_size, set_limit_hint

    limit = PILImage.MAX_IMAGE_PIXELS
    for w, h in ((100_000, 100_000), (12_000, 12_000)):
        p = tmp_path / f"{w}.png"
        p.write_bytes(png_header_only(w, h))
        want = rf"{w}\.png: image too large: {w}x{h} = {w * h} pixels, limit is {limit} \(raise max_pixels=\)$"
        with pytest.raises(InputError, match=want):
            load_image(p)
        with pytest.raises(InputError, match=want):
            image_size(p)
    previous = set_limit_hint("--max-pixels / $ENGINE3DMM_MAX_PIXELS")  # what the CLI says
    try:
        with pytest.raises(InputError, match=r"limit is \d+ \(raise --max-pixels / \$ENGINE3DMM_MAX_PIXELS\)$"):
            load_image(tmp_path / "100000.png")
    finally:
        set_limit_hint(previous)


def _clip(path, frames=2):
    """A real video written by OpenCV (skips where this build cannot write MJPG)."""
    cv2 = pytest.importorskip("cv2")
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
    if not w.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for _ in range(frames):
        w.write(np.ascontiguousarray(pattern(24, 32)[:, :, ::-1]))
    w.release()
    return path


def test_expand_inputs(tmp_path, caplog):
    import logging

    for name in ["b.png", "a.JPG", "c.webp", "notes.txt", "sub/d.png", "sub/e.tif", "empty/notes.txt"]:
        p = tmp_path / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
    _clip(tmp_path / "clip.avi")
    with caplog.at_level(logging.WARNING, logger="engine"):
        assert [p.name for p in expand_inputs(tmp_path)] == ["a.JPG", "b.png", "c.webp", "clip.avi"]
    # Sub-folders left out are said once: how many (only those with images or videos), and how.
    (said,) = [r.getMessage() for r in caplog.records]
    assert said == f"1 sub-folder(s) holding images or videos were not searched ({tmp_path / 'sub'}/): " \
                   "recursive=True searches them"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine"):
        assert [p.name for p in expand_inputs(tmp_path, recursive=True)] == ["a.JPG", "b.png", "c.webp",
                                                                              "clip.avi", "d.png", "e.tif"]
    assert caplog.records == []
    assert [p.name for p in expand_inputs(str(tmp_path / "sub" / "*"))] == ["d.png", "e.tif"]
    assert [p.name for p in expand_inputs(str(tmp_path / "**" / "*.png"))] == ["b.png", "d.png"]
    assert [p.name for p in expand_inputs(str(tmp_path / "*.avi"))] == ["clip.avi"]  # patterns take videos too
    # explicit files are kept whatever the extension; duplicates are dropped, order kept
    got = expand_inputs([tmp_path / "notes.txt", tmp_path / "b.png", tmp_path])
    assert [p.name for p in got] == ["notes.txt", "b.png", "a.JPG", "c.webp", "clip.avi"]
    with pytest.raises(InputError, match="no such file or folder"):
        expand_inputs([tmp_path / "missing.png"])
    with pytest.raises(InputError, match="matched no image or video files"):
        expand_inputs(str(tmp_path / "*.gif"))
    (tmp_path / "void").mkdir()
    with pytest.raises(InputError, match=r"void: folder holds no image or video files \(extensions [^)]*\)$"):
        expand_inputs(tmp_path / "void")


def test_a_folder_whose_images_are_all_in_sub_folders_says_how_to_search_them(tmp_path):
    # LFW's layout: lfw/Name/Name_0001.jpg, nothing at the top.
    from engine.images import expand_input

    for name in ("Aaron_Eckhart", "Zico"):
        (tmp_path / "lfw" / name).mkdir(parents=True)
        Image.fromarray(pattern()).save(tmp_path / "lfw" / name / f"{name}_0001.jpg")
    (tmp_path / "lfw" / "notes").mkdir()
    with pytest.raises(InputError, match=r"lfw: folder holds no image or video files \(.*\); 2 of its sub-folders "
                                         r"hold some \(e\.g\. Aaron_Eckhart/\): recursive=True searches them"):
        expand_inputs(tmp_path / "lfw")
    found = expand_input(tmp_path / "lfw", recursive=True)
    assert [p.relative_to(tmp_path).as_posix() for p in found.files] == ["lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
                                                                       "lfw/Zico/Zico_0001.jpg"]
    assert found.root == tmp_path / "lfw" and found.unsearched == []
    # A pattern's root is its leading folder; a file named directly has none.
    assert expand_input(str(tmp_path / "lfw" / "*" / "*.jpg")).root == tmp_path / "lfw"
    assert expand_input(found.files[0]).root is None


def test_video_frames(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "v.avi"
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]  # RGB
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    assert w.isOpened()
    for c in colours:
        w.write(np.full((24, 32, 3), c[::-1], np.uint8))  # OpenCV writes BGR
    w.release()
    frames = list(iter_video_frames(path))
    assert [i for i, _ in frames] == [0, 1, 2, 3, 4]
    for (_, f), c in zip(frames, colours):
        assert f.shape == (24, 32, 3) and f.dtype == np.uint8
        assert np.abs(f.reshape(-1, 3).mean(0) - c).max() < 12  # RGB order, JPEG-coded
    assert [i for i, _ in iter_video_frames(path, step=2)] == [0, 2, 4]
    assert [i for i, _ in iter_video_frames(path, step=2, max_frames=2)] == [0, 2]
    (tmp_path / "fake.mp4").write_text("not a video")
    with pytest.raises(InputError, match=r"fake\.mp4"):
        list(iter_video_frames(tmp_path / "fake.mp4"))
    with pytest.raises(InputError, match="no such video"):
        list(iter_video_frames(tmp_path / "none.mp4"))
    with pytest.raises(InputError, match="step"):
        list(iter_video_frames(path, step=0))
    with pytest.raises(InputError, match="camera 97: OpenCV cannot open"):
        list(iter_video_frames(97))  # no such camera on any test machine


# --------------------------------------------------------------------------- videos that end early


def moving_clip(path: Path, n: int, fourcc: str) -> Path:
    """A real video: skimage's astronaut, the view moving a few pixels per frame (so every frame
    differs), n frames of 96x80, written by OpenCV with `fourcc`."""
    cv2 = pytest.importorskip("cv2")
    skimage_data = pytest.importorskip("skimage.data")
    photo = skimage_data.astronaut()[:, :, ::-1]  # OpenCV writes BGR
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (96, 80))
    if not w.isOpened():
        pytest.skip(f"this OpenCV build cannot write {fourcc} into {path.suffix}")
    for i in range(n):
        w.write(np.ascontiguousarray(cv2.resize(photo[40 + 4 * i:340 + 4 * i, 100 + 6 * i:460 + 6 * i], (96, 80))))
    w.release()
    return path


def frames_of(path, **kw) -> tuple[list, BaseException | None]:
    got = []
    try:
        for index, rgb in iter_video_frames(path, **kw):
            got.append((index, rgb))
    except InputError as e:
        return got, e
    return got, None


# MJPG and MPEG-4 in AVI: FFmpeg decodes the frame cut by the end of the file into a partly grey
# frame without an error. FFV1 in Matroska: the demuxer drops the cut packet itself.
@pytest.mark.parametrize("name,fourcc", [("v.avi", "MJPG"), ("v.avi", "XVID"), ("v.mkv", "FFV1")])
def test_a_cut_video_hands_out_only_whole_frames_and_names_the_first_lost(tmp_path, name, fourcc):
    from engine.images import VideoFramesError

    path = moving_clip(tmp_path / name, 12, fourcc)
    whole, err = frames_of(path)
    assert err is None and [i for i, _ in whole] == list(range(12))
    data = path.read_bytes()
    cut = tmp_path / ("cut" + path.suffix)
    seen_errors = 0
    # Every cut point from the first frame's data on, the last ones inside the last frame.
    for size in sorted(set(np.linspace(len(data) * 0.15, len(data) - 1, 23).astype(int)) | {len(data) - 300}):
        cut.write_bytes(data[:size])
        got, err = frames_of(cut)
        where = f"cut at {size} of {len(data)} bytes"
        if err is not None and not isinstance(err, VideoFramesError):  # the container's header is gone
            assert got == [] and "cut" in str(err) or "cannot open" in str(err) or "no frame" in str(err), where
            continue
        assert isinstance(err, VideoFramesError), f"{where}: a cut video must be a failure, found {len(got)} frames"
        seen_errors += 1
        # Frames handed out are bit for bit those of the whole file (never a partly decoded one),
        # in order from 0, and the error names the first one not handed out, of the declared 12.
        assert [i for i, _ in got] == list(range(len(got))), where
        for i, rgb in got:
            np.testing.assert_array_equal(rgb, whole[i][1], err_msg=where)
        assert err.frame == len(got) and err.declared == 12, where
        assert f"frame {err.frame} of 12" in str(err) and str(cut) in str(err), where
    assert seen_errors >= 15


def test_frame_step_and_max_frames_on_a_cut_video(tmp_path):
    from engine.images import VideoFramesError

    path = moving_clip(tmp_path / "v.avi", 12, "MJPG")
    whole, _ = frames_of(path)
    data = path.read_bytes()
    # Cut inside frame 7's data: frames 0..6 whole; 7 decodes partly and is dropped. The cut
    # point: the shortest file from which OpenCV decodes 8 frames, plus 100 bytes.
    cv2 = pytest.importorskip("cv2")
    cut = tmp_path / "cut.avi"

    def decodable(size: int) -> int:
        cut.write_bytes(data[:size])
        cap, n = cv2.VideoCapture(str(cut)), 0
        while cap.read()[0]:
            n += 1
        cap.release()
        return n

    lo, hi = 0, len(data)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decodable(mid) >= 8 else (mid + 1, hi)
    assert decodable(lo + 100) == 8
    got, err = frames_of(cut)
    assert [i for i, _ in got] == list(range(7)) and err.frame == 7
    # Taking frames only before the break is no failure, and the frames are the whole file's.
    # (Frame 6 is confirmed whole by frame 7 decoding after it, whatever frame 7 holds.)
    for kw, frames in (({"max_frames": 6}, [0, 1, 2, 3, 4, 5]), ({"step": 3, "max_frames": 2}, [0, 3]),
                       ({"step": 2, "max_frames": 4}, [0, 2, 4, 6]), ({"step": 6, "max_frames": 2}, [0, 6]),
                       ({"max_frames": 7}, list(range(7)))):
        got, err = frames_of(cut, **kw)
        assert err is None and [i for i, _ in got] == frames, kw
        for i, rgb in got:
            np.testing.assert_array_equal(rgb, whole[i][1])
    # Wanting a frame at or after the break is: the frame at the break is never handed out.
    for kw, frames in (({"max_frames": 8}, list(range(7))), ({"step": 7}, [0]),
                       ({"step": 2, "max_frames": 5}, [0, 2, 4, 6]),
                       ({"step": 3}, [0, 3, 6])):
        got, err = frames_of(cut, **kw)
        assert [i for i, _ in got] == frames and isinstance(err, VideoFramesError) and err.frame == 7, kw
    # The whole file with every option: no failure.
    for kw in ({}, {"step": 5}, {"max_frames": 12}, {"step": 11, "max_frames": 5}):
        assert frames_of(path, **kw)[1] is None, kw


def test_declared_bytes_missing_reads_each_container(tmp_path):
    from engine.images import declared_bytes_missing

    for name, fourcc in (("v.avi", "MJPG"), ("v.mkv", "FFV1"), ("v.mp4", "mp4v")):
        path = moving_clip(tmp_path / name, 4, fourcc)
        data = path.read_bytes()
        assert declared_bytes_missing(path) == 0, name
        path.write_bytes(data[:-100])
        assert declared_bytes_missing(path) == 100, name
        path.write_bytes(data[:len(data) // 2])  # lower bound: sizes of elements cut off are lost too
        assert 0 < declared_bytes_missing(path) <= len(data) - len(data) // 2, name
    other = tmp_path / "notes.txt"
    other.write_bytes(b"not a video at all")
    assert declared_bytes_missing(other) == 0  # a format we cannot read tells nothing


# --- Integer, float and colour-space modes: the white level comes from what the file declares ---

try:
    import tifffile  # optional: the files Pillow cannot save (its cases skip without it)
except ImportError:
    tifffile = None
_GREY = np.array([[0, 1, 100, 128, 200, 254, 255]])  # 0..255 values, as 8-bit data holds them


def _tiff(arr, **kw) -> bytes | None:
    if tifffile is None:
        return None
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)  # tifffile: a writer we did not write, for files Pillow cannot save
    return buf.getvalue()


def _pillow(arr, fmt, mode=None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, fmt) if mode else Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def _scaled16(v) -> np.ndarray:
    return ((np.asarray(v, np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


_V16 = np.array([[0, 1000, 257 * 128, 40000, 65535]])
_WHITE_LEVEL_CASES = {
    # 32-bit and signed integer TIFFs declare no white level: 0..255 values are 8-bit data, as
    # Pillow's convert("L") shows them (the tester's int32.tif decoded to 0..1 before).
    "int32 tiff (I;32S)": (_tiff(_GREY.astype("<i4")), "I", _GREY),
    "int32 big-endian tiff": (_tiff(_GREY.astype(">i4")), "I", _GREY),
    "uint32 tiff (I;32N)": (_tiff(_GREY.astype("<u4")), "I", _GREY),
    "int32 tiff from Pillow": (_pillow(_GREY.astype(np.int32), "TIFF", "I"), "I", _GREY),
    "int32 zlib tiff (libtiff)": (_tiff(_GREY.astype("<i4"), compression="zlib"), "I", _GREY),
    "int16 tiff (I;16S)": (_tiff(_GREY.astype("<i2")), "I", _GREY),
    "int16 big-endian tiff": (_tiff(_GREY.astype(">i2")), "I", _GREY),
    # 16 bits per sample, unsigned: white is 65535.
    "uint16 png (I;16)": (_pillow(_V16.astype(np.uint16), "PNG"), "I;16", _scaled16(_V16)),
    "uint16 tiff (I;16)": (_tiff(_V16.astype("<u2")), "I;16", _scaled16(_V16)),
    "uint16 big-endian tiff (I;16B)": (_tiff(_V16.astype(">u2")), "I;16B", _scaled16(_V16)),
    "uint16 zlib tiff (libtiff)": (_tiff(_V16.astype("<u2"), compression="zlib"), "I;16", _scaled16(_V16)),
    "16-bit pgm (I)": (b"P5 5 1 65535\n" + _V16.astype(">u2").tobytes(), "I", _scaled16(_V16)),
    # MinIsWhite: Pillow leaves 16-bit samples as stored; 0 is white.
    "uint16 MinIsWhite tiff": (_tiff(_V16.astype("<u2"), photometric="miniswhite"), "I;16",
                               _scaled16(65535 - _V16)),
    "uint8 MinIsWhite tiff": (_tiff(_GREY.astype(np.uint8), photometric="miniswhite"), "L", 255 - _GREY),
}


@pytest.mark.parametrize("case", list(_WHITE_LEVEL_CASES))
def test_integer_grey_white_level_follows_what_the_file_declares(case):
    data, mode, want = _WHITE_LEVEL_CASES[case]
    if data is None:
        pytest.skip("tifffile is not installed")
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == mode  # the Pillow mode this case stands for
    out = decode_image(data, case)
    np.testing.assert_array_equal(out, np.repeat(np.asarray(want, np.uint8)[:, :, None], 3, axis=2))


def test_a_32_bit_photo_holding_8_bit_values_decodes_like_the_8_bit_photo(tmp_path):
    g = pattern(24, 31)[:, :, 1]
    (tmp_path / "int32.tif").write_bytes(_pillow(g.astype(np.int32), "TIFF", "I"))
    Image.fromarray(g).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(load_image(tmp_path / "int32.tif"), load_image(tmp_path / "grey.png"))
    with Image.open(tmp_path / "int32.tif") as im:  # what Pillow's own conversion shows
        np.testing.assert_array_equal(load_image(tmp_path / "int32.tif"), np.asarray(im.convert("RGB")))


_A16 = np.zeros((3, 2, 4), np.uint16)
_A16[0], _A16[1], _A16[2] = 1000, 30000, 65535
_REFUSED_CASES = {
    "int32 tiff holding 16-bit values": (_tiff(_V16.astype("<i4")),
                                         r"32-bit signed integer image \(Pillow mode I\) with values 0..65535: its "
                                         r"white level is not declared"),
    "uint32 tiff holding large values": (_tiff(np.array([[0, 70000]], "<u4")),
                                         r"32-bit unsigned integer image \(Pillow mode I\) with values 0..70000"),
    "int16 tiff with negative values": (_tiff(np.array([[-5, 100]], "<i2")),
                                        r"16-bit signed integer image \(Pillow mode I\) with values -5..100"),
    "float32 tiff in 0..1": (_tiff(np.array([[0.0, 0.5, 1.0]], np.float32)),
                             r"32-bit float image \(Pillow mode F\): its white level \(1.0 or 255\) is not declared"),
    "float32 pfm": (_pillow(np.array([[0.0, 0.5, 1.0]], np.float32), "PPM"), r"32-bit float image \(Pillow mode F\)"),
    # Pillow reads each plane of this file one byte a sample: bytes as pixels.
    "uncompressed planar 16-bit tiff": (_tiff(_A16, photometric="rgb", planarconfig="separate"),
                                        r"uncompressed TIFF with 16-bit samples in separate planes"),
}


@pytest.mark.parametrize("case", list(_REFUSED_CASES))
def test_integer_and_float_data_without_a_white_level_is_refused_by_name(case):
    data, msg = _REFUSED_CASES[case]
    if data is None:
        pytest.skip("tifffile is not installed")
    with pytest.raises(InputError, match=f"^{case}: {msg}"):
        decode_image(data, case)


def test_planar_16_bit_tiff_that_pillow_reads_right_is_taken():
    if tifffile is None:
        pytest.skip("tifffile is not installed")
    out = decode_image(_tiff(_A16, photometric="rgb", planarconfig="separate", compression="zlib"))
    # Pillow keeps the high byte of 16-bit RGB (see the module's conventions); tifffile's values.
    np.testing.assert_array_equal(out, np.broadcast_to((_A16 >> 8).transpose(1, 2, 0), (2, 4, 3)))


def _colour_files():
    rgb = Image.fromarray(pattern(9, 11))
    rgba = Image.fromarray(np.dstack([pattern(9, 11), pattern(9, 11)[:, :, 2]]), "RGBA")
    return {
        "1": (rgb.convert("1"), "PNG"), "L": (rgb.convert("L"), "PNG"), "LA": (rgba.convert("LA"), "PNG"),
        "P": (rgb.quantize(40), "PNG"), "PA": (rgba.convert("PA"), "TIFF"), "RGB": (rgb, "TIFF"),
        "RGBA": (rgba, "TIFF"), "CMYK": (rgb.convert("CMYK"), "TIFF"), "YCbCr": (rgb.convert("YCbCr"), "TIFF"),
        "LAB": (rgb.convert("LAB"), "TIFF"),
    }


@pytest.mark.parametrize("mode", list(_colour_files()))
def test_eight_bit_modes_from_files_equal_pillows_convert(mode):
    pil, fmt = _colour_files()[mode]
    buf = io.BytesIO()
    pil.save(buf, fmt)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        assert im.mode == mode
        want = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(decode_image(buf.getvalue()), want)


def test_lab_and_hsv_are_converted_as_colours_not_copied_as_channels():
    from PIL import ImageCms

    from engine.images import _rgb_array

    lab = Image.new("LAB", (1, 1), (100, 200, 50))
    # ImageCms (LittleCMS): the independent LAB -> sRGB reference.
    srgb = ImageCms.applyTransform(lab, ImageCms.buildTransform(ImageCms.createProfile("LAB"),
                                                                ImageCms.createProfile("sRGB"), "LAB", "RGB"))
    np.testing.assert_array_equal(_rgb_array(lab, "lab")[0, 0], srgb.getpixel((0, 0)))
    # HSV has no file format; in memory: hue 85/255 of the circle at full saturation is pure green.
    np.testing.assert_array_equal(_rgb_array(Image.new("HSV", (1, 1), (85, 255, 255)), "hsv")[0, 0], (0, 255, 0))


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_in_memory_sixteen_bit_modes_are_scaled(mode):
    from engine.images import _rgb_array

    im = Image.new(mode, (len(_V16[0]), 1))
    im.putdata([int(v) for v in _V16[0]])
    np.testing.assert_array_equal(_rgb_array(im, mode)[:, :, 0], _scaled16(_V16))
