"""The device input path (engine.pipeline.device_input): which inputs the device decodes, the
fallbacks to the CPU path, the order of results, per-input errors, EXIF orientation by strides,
and the crops, on real photos (scikit-image's astronaut, chelsea, coffee and camera, written as
baseline, progressive, 4:4:4, grey, EXIF-rotated, CMYK and RGB-coded JPEG, PNG, 16-bit PNG and
WebP, plus a truncated JPEG and one without quantisation tables).

What is real and what stands in, on a machine without a GPU:
- real: the screening of every file (Pillow's header + our marker scan), the crop bounds and box
  checks, the batching, the orchestration in DeviceInput.fill (chunks, runs of rows, retries, the
  CPU fallback, error entries), the network (the default CPU runner), the whole Reconstructor,
  and the crop arithmetic: engine._core.crop_batch_cpu runs the per-pixel body the CUDA kernel
  runs (csrc/src/crop_body.h);
- stand-in: HostBackend decodes with Pillow (libjpeg-turbo) where the GPU uses nvJPEG, without
  EXIF orientation and into CHW arrays as nvJPEG gives them; `refuse=` makes it refuse chosen
  inputs as nvJPEG refuses what it cannot read. The references are the CPU path
  (Reconstructor(device_input=False)) and engine.crop.crop_faces, which we hold within 1 grey
  level (the kernel follows engine.crop._sample_bilinear; crop_faces uses OpenCV's fixed point).
The `cuda` tests at the end run the real nvJPEG and CUDA kernel path on a GPU.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from engine.errors import InputError, UnavailableError
from engine.pipeline import Reconstructor
from engine.pipeline.device_input import (
    BLANK,
    DeviceInput,
    HostBackend,
    View,
    oriented,
    scan_jpeg,
    screen_jpeg,
)

skdata = pytest.importorskip("skimage.data")

ASTRONAUT_BOXES = [(170.0, 75.0, 280.0, 185.0),       # her face
                   (-30.0, 400.0, 90.0, 530.0),        # across the bottom-left corner
                   (-600.0, -600.0, 1100.0, 1100.0),   # larger than the image
                   (10.0, 10.0, 11.0, 11.0)]           # 1 px
ROTATED_BOX = (50.0, 100.0, 200.0, 250.0)  # inside chelsea whichever way she is turned
XMP_ROTATE_270 = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                  b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF>'
                  b'</x:xmpmeta>')


def _encode(a: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, fmt, **kw)
    return buf.getvalue()


def _without(jpeg: bytes, marker: int) -> bytes:
    """`jpeg` with every segment of `marker` before the first scan removed."""
    out, i = bytearray(jpeg[:2]), 2
    while jpeg[i + 1] != 0xDA:
        length = (jpeg[i + 2] << 8) | jpeg[i + 3]
        if jpeg[i + 1] != marker:
            out += jpeg[i:i + 2 + length]
        i += 2 + length
    return bytes(out + jpeg[i:])


def _exif_jpeg(a: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(a, "JPEG", quality=92, exif=exif)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """{name: (path, boxes)} of real photos in many encodings."""
    d = tmp_path_factory.mktemp("device_input")
    ast, cat, coffee, cam = skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.camera()
    jpeg = _encode(ast, "JPEG", quality=90)
    cmyk = io.BytesIO()
    Image.fromarray(coffee).convert("CMYK").save(cmyk, "JPEG", quality=90)
    files = {
        "astronaut.jpg": (jpeg, ASTRONAUT_BOXES),
        "progressive.jpg": (_encode(ast, "JPEG", quality=85, progressive=True), ASTRONAUT_BOXES[:2]),
        "chelsea444.jpg": (_encode(cat, "JPEG", quality=95, subsampling=0), [(140.0, 20.0, 300.0, 180.0)]),
        "coffee422.jpg": (_encode(coffee, "JPEG", quality=90, subsampling=1), [(200.0, 50.0, 400.0, 250.0)]),
        "camera_grey.jpg": (_encode(cam, "JPEG", quality=90), [(200.0, 50.0, 330.0, 180.0)]),
        "coffee.png": (_encode(coffee, "PNG"), [(200.0, 50.0, 400.0, 250.0)]),
        "chelsea.webp": (_encode(cat, "WEBP", quality=90), [(140.0, 20.0, 300.0, 180.0)]),
        "camera16.png": (_encode((cam.astype(np.uint16) * 257), "PNG"), [(200.0, 50.0, 330.0, 180.0)]),
        "coffee_cmyk.jpg": (cmyk.getvalue(), [(200.0, 50.0, 400.0, 250.0)]),
        "astronaut_rgb.jpg": (_encode(ast, "JPEG", quality=90, keep_rgb=True), ASTRONAUT_BOXES[:1]),
        "truncated.jpg": (jpeg[:len(jpeg) // 2], ASTRONAUT_BOXES[:1]),
        "no_tables.jpg": (_without(jpeg, 0xDB), ASTRONAUT_BOXES[:1]),  # the CPU path fails it
    }
    for o in range(1, 9):
        files[f"chelsea_exif{o}.jpg"] = (_exif_jpeg(cat, o), [ROTATED_BOX])
    # an orientation in XMP alone: Pillow's getexif() reads it, so the CPU path turns the photo too
    files["chelsea_xmp6.jpg"] = (_encode(cat, "JPEG", quality=92, xmp=XMP_ROTATE_270), [ROTATED_BOX])
    out = {}
    for name, (data, boxes) in files.items():
        p = d / name
        p.write_bytes(data)
        out[name] = (str(p), boxes)
    return out


EXPECTED_FALLBACKS = {  # why each file takes the CPU path (None: the device decodes it)
    "coffee.png": "a PNG image (nvJPEG reads JPEG only)",
    "chelsea.webp": "a WEBP image (nvJPEG reads JPEG only)",
    "camera16.png": "a PNG image (nvJPEG reads JPEG only)",
    "coffee_cmyk.jpg": "a CMYK JPEG",
    "astronaut_rgb.jpg": "an RGB-coded JPEG (not YCbCr)",
    "truncated.jpg": "no end-of-image marker (a truncated file?)",
    # nvJPEG's hardware path may decode it without a word, where libjpeg fails it
    "no_tables.jpg": "a quantisation table the frame uses is not defined (a damaged header)",
}


def _bogus_huffman(jpeg: bytes) -> bytes:
    """`jpeg` with its first Huffman table made impossible (3 codes of length 1; the segment's
    size unchanged): its header passes the screen, and libjpeg fails it at the first scan."""
    i = jpeg.index(b"\xff\xc4")
    out = bytearray(jpeg)
    k = next(x for x in range(1, 16) if out[i + 5 + x] >= 3)
    out[i + 5] += 3
    out[i + 5 + k] -= 3
    return bytes(out)


def _run(runner, model, inputs, boxes, device_input, batch_size=4, **kw):
    with Reconstructor(runner=runner, model=model, batch_size=batch_size, detector=None,
                       device_input=device_input, workers=2) as rec:
        return list(rec.embed(inputs, boxes=boxes, keep_crops=True, **kw))


def _summary(results):
    return [(r.source, r.face_index, r.error) for r in results]


def _assert_same(dev, cpu):
    assert _summary(dev) == _summary(cpu)
    for a, b in zip(dev, cpu):
        if a.error is None:
            assert np.abs(a.crop - b.crop).max() <= 1.0, (a.source, a.face_index)


# --------------------------------------------------------------------------- the screen


def test_the_screen_sends_plain_jpegs_to_the_device_and_everything_else_to_the_cpu(photos):
    for name, (path, _) in photos.items():
        with open(path, "rb") as f:
            got = screen_jpeg(f.read(), None)
        if name in EXPECTED_FALLBACKS:
            assert got == EXPECTED_FALLBACKS[name], name
        else:
            assert not isinstance(got, str), (name, got)
            with Image.open(path) as im:  # the size the CPU path sees: after the EXIF orientation
                want = ImageOps.exif_transpose(im).size
            assert (got.width, got.height) == want, name
    with open(photos["progressive.jpg"][0], "rb") as f:
        assert screen_jpeg(f.read(), None).scan.kind == "progressive"
    with open(photos["camera_grey.jpg"][0], "rb") as f:
        assert screen_jpeg(f.read(), None).scan.components == 1


def test_the_marker_scan_refuses_what_nvjpeg_would_read_differently():
    jpeg = _encode(skdata.astronaut(), "JPEG", quality=90)
    assert scan_jpeg(jpeg).kind == "baseline" and (scan_jpeg(jpeg).width, scan_jpeg(jpeg).height) == (512, 512)
    sof = jpeg.index(b"\xff\xc0")

    def with_byte(pos, value):
        return jpeg[:pos] + bytes([value]) + jpeg[pos + 1:]

    assert scan_jpeg(with_byte(sof + 1, 0xC3)) == "a lossless JPEG"
    assert scan_jpeg(with_byte(sof + 1, 0xC9)) == "a arithmetic-coded JPEG"
    assert scan_jpeg(with_byte(sof + 4, 12)) == "12-bit samples"
    assert scan_jpeg(with_byte(sof + 4 + 6 + 1, 0x13)).startswith("a chroma subsampling nvJPEG does not decode (1x3")
    assert scan_jpeg(b"\x89PNG\r\n\x1a\n" + jpeg) == "not a JPEG (no start-of-image marker)"
    assert scan_jpeg(jpeg[:sof + 5]) == "the header ends inside a segment"
    assert scan_jpeg(jpeg[:-2]) == "no end-of-image marker (a truncated file?)"
    assert scan_jpeg(jpeg[:2] + b"\x00" + jpeg[2:]) == "bytes between header segments (a damaged header)"
    # tables the decoders would have to guess: libjpeg fails a missing quantisation table and
    # supplies standard Huffman tables; nvJPEG may decode either without a word
    assert scan_jpeg(_without(jpeg, 0xDB)) == "a quantisation table the frame uses is not defined (a damaged header)"
    assert scan_jpeg(_without(jpeg, 0xC4)) == "a Huffman table the first scan uses is not defined before it"
    dqt = jpeg.index(b"\xff\xdb")
    assert scan_jpeg(with_byte(dqt + 4, 0x24)) == "a damaged quantisation table segment"  # precision 2
    dht = jpeg.index(b"\xff\xc4")
    assert scan_jpeg(with_byte(dht + 4, 0x25)) == "a damaged Huffman table segment"  # class 2
    sos = jpeg.index(b"\xff\xda")
    assert scan_jpeg(with_byte(sos + 5, 9)) == "a scan of a component the frame does not have (a damaged header)"
    assert not isinstance(scan_jpeg(_bogus_huffman(jpeg)), str)  # code lengths are the decoder's to check
    progressive = _encode(skdata.astronaut(), "JPEG", quality=85, progressive=True)
    assert scan_jpeg(progressive).kind == "progressive"  # its AC tables come after the first scan
    assert not isinstance(scan_jpeg(jpeg + b"trailing bytes"), str)  # Pillow decodes those too


def test_a_jpeg_over_the_pixel_limit_is_left_to_the_cpu_paths_check(photos):
    with open(photos["astronaut.jpg"][0], "rb") as f:
        data = f.read()
    assert screen_jpeg(data, 512 * 512 - 1) == "over the pixel limit or empty"
    assert not isinstance(screen_jpeg(data, 512 * 512), str)


# --------------------------------------------------------------------------- orientation by strides


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_by_strides_equals_pillows_exif_transpose(orientation):
    cat = skdata.chelsea()
    with Image.open(io.BytesIO(_exif_jpeg(cat, orientation))) as im:
        im.load()
        stored = np.asarray(im)
        want = np.asarray(ImageOps.exif_transpose(im))
    chw = np.ascontiguousarray(stored.transpose(2, 0, 1))
    v = oriented(HostBackend.view(chw), orientation)
    assert (v.height, v.width) == want.shape[:2]
    np.testing.assert_array_equal(HostBackend.array(v).transpose(1, 2, 0), want)


def test_orientation_views_keep_every_address_inside_the_image():
    h, w = 3, 5
    for o in range(1, 9):
        v = oriented(View(None, 0, h, w, w, 1, h * w), o)
        corners = [v.offset + y * v.stride_y + x * v.stride_x for y in (0, v.height - 1) for x in (0, v.width - 1)]
        assert sorted(corners) == [0, w - 1, (h - 1) * w, h * w - 1], o


def test_kernel_sources_read_non_contiguous_tensors_where_they_lie():
    """The addresses and strides the CUDA launch gets (CudaBackend.view + view_sources) from
    torch tensors that are not contiguous CHW (an HWC tensor permuted to CHW, a region of it with
    a storage offset), under every orientation: read back through those numbers alone, they give
    Pillow's turned photo. (CPU tensors: the arithmetic is the same as for CUDA ones.)"""
    torch = pytest.importorskip("torch")
    from engine.pipeline.device_input import CudaBackend, view_sources

    region = (slice(30, 250), slice(40, 400))
    for o in range(1, 9):
        with Image.open(io.BytesIO(_exif_jpeg(skdata.chelsea(), o))) as im:
            im.load()
            stored = np.asarray(im)
            turned = np.asarray(ImageOps.exif_transpose(im))
        hwc = torch.from_numpy(np.array(stored))  # a writable copy
        memory = hwc.numpy().reshape(-1)
        part = np.ascontiguousarray(stored[region].transpose(2, 0, 1))
        cases = ((hwc.permute(2, 0, 1), turned),
                 (hwc[region].permute(2, 0, 1), HostBackend.array(oriented(HostBackend.view(part), o)).transpose(1, 2, 0)))
        for img, want in cases:
            assert not img.is_contiguous()
            (ptr, h, w, sy, sx, sc), = view_sources([oriented(CudaBackend.view(img), o)])
            got = np.lib.stride_tricks.as_strided(memory[ptr - hwc.data_ptr():], shape=(3, h, w), strides=(sc, sy, sx))
            np.testing.assert_array_equal(got.transpose(1, 2, 0), want)


def test_views_reaching_outside_their_image_are_refused_before_any_launch():
    """An address outside its image would be an illegal access on the GPU (the whole CUDA context
    lost, not an exception): view_sources, which both backends call first, refuses it."""
    from engine.pipeline.device_input import view_sources

    chw = np.zeros((3, 4, 5), np.uint8)
    v = HostBackend.view(chw)
    assert view_sources([v, oriented(v, 7)])[1][0] == chw.ctypes.data + 3 * 5 + 4  # last row, last column
    for bad in (dataclasses.replace(v, height=5), dataclasses.replace(v, offset=1),
                dataclasses.replace(v, stride_x=-1), dataclasses.replace(v, base=chw.astype(np.float32))):
        with pytest.raises(InputError, match=r"views\[1\]"):
            view_sources([v, bad])
    with pytest.raises(InputError, match=r"views\[0\]: .* reaches elements"):
        HostBackend().crop([dataclasses.replace(v, width=6)], np.array([[0, 0, 5, 4]], np.int64),
                           np.zeros((1, 3, 224, 224), np.float32), 0)
    # a non-contiguous base is read where it lies (HostBackend.array), not through a copy
    hwc = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    np.testing.assert_array_equal(HostBackend.array(HostBackend.view(hwc.transpose(2, 0, 1))), hwc.transpose(2, 0, 1))


# --------------------------------------------------------------------------- the pipeline, CPU stand-in


def test_device_batches_equal_crop_faces_and_the_cpu_path_on_real_photos(runner, model, photos):
    from engine.crop import crop_faces
    from engine.images import load_image

    names = [n for n in photos if n not in EXPECTED_FALLBACKS and n != "no_tables.jpg"]
    inputs = [photos[n][0] for n in names]
    boxes = {photos[n][0]: photos[n][1] for n in names}
    di = DeviceInput(HostBackend())
    dev = _run(runner, model, inputs, boxes, di)
    cpu = _run(runner, model, inputs, boxes, False)
    _assert_same(dev, cpu)
    assert not di.fallbacks and di.decoded >= len(names)  # every one of them went to the device
    for name in names:
        path, bxs = photos[name]
        want = crop_faces(load_image(path), bxs)
        got = np.stack([r.crop for r in dev if r.source == path])
        assert got.shape == want.shape and np.abs(got - want).max() <= 1.0, name
    np.testing.assert_allclose(np.stack([r.coeffs for r in dev]), np.stack([r.coeffs for r in cpu]),
                               atol=0.5)  # the same faces, crops within a grey level


def test_fallbacks_and_errors_keep_the_order_and_say_what_the_cpu_path_says(runner, model, photos, tmp_path):
    names = list(photos)
    inputs = [photos[n][0] for n in names]
    boxes = {photos[n][0]: photos[n][1] for n in names}
    missing = str(tmp_path / "missing.jpg")
    no_box = photos["chelsea444.jpg"][0].replace("chelsea444", "chelsea_no_box")
    with open(photos["chelsea444.jpg"][0], "rb") as f, open(no_box, "wb") as g:
        g.write(f.read())
    inputs[3:3] = [missing, ("array", skdata.astronaut()), no_box]
    boxes.update({missing: ASTRONAUT_BOXES[:1], "array": ASTRONAUT_BOXES[:1]})
    di = DeviceInput(HostBackend())
    dev = _run(runner, model, inputs, boxes, di, batch_size=3)
    cpu = _run(runner, model, inputs, boxes, False, batch_size=3)
    _assert_same(dev, cpu)
    errors = {r.source.rsplit("/", 1)[-1]: r.error for r in dev if r.error}
    assert set(errors) == {"missing.jpg", "chelsea_no_box.jpg", "truncated.jpg", "no_tables.jpg"}
    assert "truncated" in errors["truncated.jpg"] and "broken data stream" in errors["no_tables.jpg"]
    want = {reason: list(EXPECTED_FALLBACKS.values()).count(reason) for reason in EXPECTED_FALLBACKS.values()}
    want.update({"not a file or encoded bytes (an array, or an input that already failed)": 2,  # array, missing
                 "no known boxes (detection runs on the CPU)": 1})
    assert dict(di.fallbacks) == want


def test_an_input_the_device_decoder_refuses_is_decoded_by_the_cpu_path(runner, model, photos, caplog):
    names = ["astronaut.jpg", "chelsea444.jpg", "coffee422.jpg", "chelsea_exif6.jpg"]
    inputs = [photos[n][0] for n in names]
    boxes = {photos[n][0]: photos[n][1] for n in names}
    refused = Path(photos["chelsea444.jpg"][0]).read_bytes()
    di = DeviceInput(HostBackend(refuse=lambda data: data == refused))
    with caplog.at_level(logging.INFO, logger="engine.pipeline"):
        dev = _run(runner, model, inputs, boxes, di, batch_size=8)
    _assert_same(dev, _run(runner, model, inputs, boxes, False, batch_size=8))
    assert all(r.error is None for r in dev)
    assert di.fallbacks == {"refused by the device decoder": 1} and di.decoded == 3  # the others stayed
    assert "chelsea444.jpg: the device decoder refused it" in caplog.text


def test_a_failing_input_whose_faces_span_two_batches_fails_once(runner, model, photos, tmp_path):
    good, good_boxes = photos["astronaut.jpg"]
    path = str(tmp_path / "bogus_huffman.jpg")  # passes the screen; the decoder, then the CPU path, fail it
    Path(path).write_bytes(_bogus_huffman(Path(good).read_bytes()))
    inputs = [good, path, good]
    boxes = {good: good_boxes[:1], path: ASTRONAUT_BOXES[:3]}
    di = DeviceInput(HostBackend())
    dev = _run(runner, model, inputs, boxes, di, batch_size=2)
    cpu = _run(runner, model, inputs, boxes, False, batch_size=2)
    _assert_same(dev, cpu)
    assert [r.face_index for r in dev] == [0, -1, 0]
    assert "broken data stream" in dev[1].error
    # refused once: the CPU path's failure is kept for its faces in the next batch
    assert di.fallbacks["refused by the device decoder"] == 1


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_an_input_whose_faces_span_batches_is_decoded_once(runner, model, photos):
    """batch_size 2: the astronaut's 4 faces run over three batches (rows 1 | 0, 1 | 0), the
    progressive photo's 2 over two; each input is decoded once (the backend counts its decodes)
    and its image kept until its last face is cropped. The results are the CPU path's."""
    names = ["chelsea444.jpg", "astronaut.jpg", "progressive.jpg", "coffee422.jpg"]
    inputs = [photos[n][0] for n in names]
    boxes = {photos[n][0]: photos[n][1] for n in names}
    backend = HostBackend()
    di = DeviceInput(backend)
    dev = _run(runner, model, inputs, boxes, di, batch_size=2)
    _assert_same(dev, _run(runner, model, inputs, boxes, False, batch_size=2))
    assert [r.face_index for r in dev] == [0, 0, 1, 2, 3, 0, 1, 0]
    assert {_sha(p): 1 for p in inputs} == dict(backend.decodes) and di.decoded == 4
    # an input the device refuses takes the CPU path once, whatever batches its faces span
    refused = Path(photos["astronaut.jpg"][0]).read_bytes()
    di = DeviceInput(HostBackend(refuse=lambda data: data == refused))
    dev = _run(runner, model, inputs, boxes, di, batch_size=2)
    _assert_same(dev, _run(runner, model, inputs, boxes, False, batch_size=2))
    assert di.fallbacks == {"refused by the device decoder": 1} and di.decoded == 3


def test_an_image_the_device_decoder_returns_all_zero_takes_the_cpu_path(runner, model, photos, tmp_path, caplog):
    """nvJPEG's batched hardware decoder can report success for an image it skipped (all zero):
    the stand-in does that to one photo; that photo alone is decoded by the CPU path, in its
    place, and one line says how many. A JPEG that really is black takes the CPU path too, and
    comes out as the CPU path makes it."""
    black = str(tmp_path / "black.jpg")
    Path(black).write_bytes(_encode(np.zeros((300, 400, 3), np.uint8), "JPEG", quality=90))
    names = ["astronaut.jpg", "chelsea444.jpg", "coffee422.jpg", "chelsea_exif6.jpg"]
    inputs = [photos[n][0] for n in names]
    inputs.insert(2, black)
    boxes = {photos[n][0]: photos[n][1] for n in names}
    boxes[black] = [(100.0, 50.0, 250.0, 200.0)]
    skipped = Path(photos["chelsea444.jpg"][0]).read_bytes()
    backend = HostBackend(blank=lambda data: data == skipped)
    di = DeviceInput(backend)
    with caplog.at_level(logging.INFO, logger="engine.pipeline"):
        dev = _run(runner, model, inputs, boxes, di, batch_size=16)
    cpu = _run(runner, model, inputs, boxes, False, batch_size=16)
    _assert_same(dev, cpu)  # the skipped photo's crops are its own, not zeros
    assert [r.source for r in dev] == [s for s in inputs for _ in boxes[s]]
    assert all(r.error is None for r in dev)
    assert next(r for r in dev if r.source == photos["chelsea444.jpg"][0]).crop.any()
    assert di.fallbacks == {BLANK: 2} and di.decoded == 3
    assert sum(backend.decodes.values()) == 5  # one batch decode; the CPU path decoded the two again
    lines = [r.getMessage() for r in caplog.records if "entirely zero" in r.getMessage()]
    want = (f"2 of 5 images the device decoder returned entirely zero (black); decoding them on the "
            f"CPU (first: {photos['chelsea444.jpg'][0]})")
    assert lines == [want]
    assert not next(r for r in dev if r.source == black).crop.any()  # black, as the CPU path makes it


def test_bytes_inputs_cropped_mode_and_small_decode_chunks(runner, model, photos):
    names = ["astronaut.jpg", "coffee.png", "chelsea_exif8.jpg", "camera_grey.jpg"]
    inputs = [(n, Path(photos[n][0]).read_bytes()) for n in names]
    for cropped in (False, True):
        boxes = None if cropped else {n: photos[n][1] for n in names}
        # at most one photo per decode call: every batch is decoded in several chunks
        di = DeviceInput(HostBackend(), decode_chunk_pixels=1)
        dev = _run(runner, model, inputs, boxes, di, batch_size=8, cropped=cropped)
        _assert_same(dev, _run(runner, model, inputs, boxes, False, batch_size=8, cropped=cropped))
        assert dict(di.fallbacks) == {"a PNG image (nvJPEG reads JPEG only)": 1} and di.decoded == 3


def test_the_pixel_limit_gives_the_cpu_paths_error(runner, model, photos):
    names = ["astronaut.jpg", "coffee422.jpg"]
    inputs = [photos[n][0] for n in names]
    boxes = {photos[n][0]: photos[n][1] for n in names}
    with Reconstructor(runner=runner, model=model, detector=None, max_pixels=400 * 600,
                       device_input=DeviceInput(HostBackend(), max_pixels=400 * 600)) as rec:
        res = list(rec.embed(inputs, boxes=boxes))
    assert res[0].error == f"{inputs[0]}: image too large: 512x512 = 262144 pixels, limit is 240000 (raise max_pixels=)"
    assert res[1].error is None


def test_the_device_input_option(runner, model):
    with pytest.raises(InputError, match="device_input: expected 'auto', 'on', 'off', True, False or a DeviceInput, found 'yes'"):
        Reconstructor(runner=runner, model=model, device_input="yes")
    with pytest.raises(UnavailableError, match="device_input=True: the onnxruntime runner runs on the cpu: the device input needs a CUDA runner"):
        Reconstructor(runner=runner, model=model, device_input=True)
    with Reconstructor(runner=runner, model=model) as rec:  # auto, on a CPU runner
        assert rec.device_input is None
    di = DeviceInput(HostBackend())
    with Reconstructor(runner=runner, model=model, device_input=di) as rec:
        assert rec.device_input is di


# --------------------------------------------------------------------------- the real nvJPEG path (GPU)


def _cuda_ready():
    from engine import _core

    return _core.has_cuda_crop()


@pytest.mark.cuda
def test_cuda_kernel_on_strided_views_equals_the_cpu_body(photos):
    """The crop kernel on the runner's stream, from CHW device images seen through orientation
    views (negative strides), equals crop_batch_cpu on the same pixels bit for bit."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    if not _cuda_ready():
        pytest.skip("needs the CUDA build of engine._C")
    from engine.pipeline.device_input import CudaBackend
    from engine.runners import create_runner

    with create_runner("torch-cuda", max_batch=8) as r:
        dev, host = CudaBackend(r), HostBackend()
        datas = [Path(photos[f"chelsea_exif{o}.jpg"][0]).read_bytes() for o in range(1, 9)]
        cpu_images = host.decode(datas)
        gpu_images = [torch.from_numpy(a).cuda() for a in cpu_images]
        torch.cuda.synchronize()  # the uploads ran on the default stream, the crop runs on the runner's
        bounds = np.array([[40, 60, 260, 280], [-50, -20, 120, 140], [200, 300, 700, 800], [5, 5, 6, 6]] * 2, np.int64)
        out = dev.output(np.zeros((8, 3, 224, 224), np.float32), 8)
        dev.crop([oriented(dev.view(g), o) for g, o in zip(gpu_images, range(1, 9))], bounds, out, 0)
        want = np.zeros((8, 3, 224, 224), np.float32)
        host.crop([oriented(host.view(a), o) for a, o in zip(cpu_images, range(1, 9))], bounds, want, 0)
        r.stream.synchronize()
        np.testing.assert_array_equal(out.cpu().numpy(), want)


@pytest.mark.cuda
def test_cuda_all_zero_finds_the_images_that_are_all_zero(photos):
    """CudaBackend.all_zero, the device side of the check for images nvJPEG left black: on
    nvJPEG's own output, with one image zeroed on the decode stream."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    if not _cuda_ready():
        pytest.skip("needs the CUDA build of engine._C")
    from engine.pipeline.device_input import CudaBackend
    from engine.runners import create_runner

    with create_runner("torch-cuda", max_batch=8) as r:
        dev = CudaBackend(r)
        names = ["astronaut.jpg", "chelsea444.jpg", "camera_grey.jpg", "progressive.jpg"]
        images = dev.decode([bytearray(Path(photos[n][0]).read_bytes()) for n in names])
        assert dev.all_zero(images).tolist() == [False] * 4
        with torch.cuda.stream(dev.decode_stream):
            images[2].zero_()
        assert dev.all_zero(images).tolist() == [False, False, True, False]
        assert dev.all_zero([]).shape == (0,)


@pytest.mark.cuda
def test_cuda_device_input_matches_the_cpu_path(model, photos):
    """nvJPEG + the CUDA kernel through the Reconstructor (torch-cuda): the same results in the
    same order as the CPU path, the same fallbacks as the CPU stand-in, and crops that differ
    only by nvJPEG's decoding (not libjpeg-turbo's: torchvision accepts a mean difference below
    2 grey levels on the decoded images; on the crops we require a mean below 1)."""
    pytest.importorskip("torchvision")
    if not _cuda_ready():
        pytest.skip("needs the CUDA build of engine._C")
    from engine.runners import create_runner

    names = list(photos)
    inputs = [photos[n][0] for n in names]
    boxes = {photos[n][0]: photos[n][1] for n in names}
    with create_runner("torch-cuda", max_batch=8) as r:
        with Reconstructor(runner=r, model=model, batch_size=4, detector=None, device_input=True) as rec:
            di = rec.device_input
            dev = list(rec.reconstruct(inputs, boxes=boxes, keep_crops=True))
        with Reconstructor(runner=r, model=model, batch_size=4, detector=None, device_input=False) as rec:
            cpu = list(rec.reconstruct(inputs, boxes=boxes, keep_crops=True))
    assert _summary(dev) == _summary(cpu)
    want = {reason: list(EXPECTED_FALLBACKS.values()).count(reason) for reason in EXPECTED_FALLBACKS.values()}
    # nvJPEG refuses nothing the screen let through: a kind it refused would be decoded on the
    # network thread (and belongs in the screen)
    assert dict(di.fallbacks) == want
    diffs = np.concatenate([np.abs(a.crop - b.crop).ravel() for a, b in zip(dev, cpu) if a.error is None])
    assert diffs.mean() < 1.0, f"crops: mean {diffs.mean():.3f}, max {diffs.max():.0f} grey levels"
    for a in dev:
        assert a.error is not None or np.isfinite(a.vertices).all()
