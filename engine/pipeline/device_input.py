"""The device input path: JPEG bytes -> nvJPEG -> the release's crop on the GPU -> the network's input.

On a GPU the network runs thousands of faces per second, and decoding and cropping each photo on
the CPU (1-2 ms per image per core) would need tens of cores to keep up. With a CUDA runner the
pipeline therefore sends JPEG photos with known boxes to the device:

    prep workers (CPU)                          network thread (runner's stream)
    ------------------                          --------------------------------
    read the file, read its header (Pillow,     nvJPEG decodes the batch's JPEGs (torchvision's
    lazily), screen it (`screen_jpeg`), the     decode_jpeg(device="cuda"), batched, on a stream
    crop bounds of its boxes (engine.crop)  ->  of its own) -> the crop kernel (engine._core.
                                                crop_batch_cuda) writes each face straight into
                                                the network's input buffer -> the network

Which items go to the device (`DeviceInput.plan`): an image file or encoded bytes (not an array,
not a video frame), whose boxes are known (the caller's, a sidecar's, or already-cropped mode),
and which `screen_jpeg` finds to be a JPEG nvJPEG decodes the way Pillow does: 8-bit baseline,
extended or progressive Huffman, grey or YCbCr with a standard chroma subsampling, an end-of-image
marker, within the pixel limit. Everything else takes the CPU path (engine.pipeline.inputs.prepare:
engine.images + engine.crop) in the prep workers, unchanged: PNG, WebP, 16-bit, CMYK/YCCK and
RGB-coded JPEGs, lossless or arithmetic-coded JPEGs, truncated files, images over the pixel limit
(so the CPU path's decompression-bomb check and message apply, before anything is decoded),
and inputs without boxes: detection needs the decoded photo on the CPU anyway, so the device
path needs known boxes (a design choice: detecting on a small CPU copy would decode every photo
twice). A JPEG that passes the screen but that nvJPEG still refuses is retried alone, then
decoded on the CPU by the CPU path (in the network thread: rare); an input that fails there too
gets the CPU path's error result, in its place.

Results match the CPU path: the same faces in the same order, the same error messages, EXIF
orientation applied (as engine.images does, via Pillow's tag: the decoded image is viewed
rotated or flipped through its strides, no copy), and the same crop rule: the kernel computes
engine.crop._sample_bilinear's arithmetic exactly, within 1 grey level of engine.crop.crop_face
(OpenCV). The decoders differ: nvJPEG is not libjpeg-turbo (torchvision's own tests accept a
mean difference below 2 grey levels between the two on the decoded image); `python -m
engine.bench` measures the difference of the crops on the GPU (the device_input row's note).

Testing without a GPU: `DeviceInput` takes a backend. `CudaBackend` is the real one (nvJPEG and
the CUDA kernel on the runner's stream). `HostBackend` decodes with Pillow without EXIF
orientation (what nvJPEG gives) into CHW arrays (nvJPEG's layout) and crops with
engine._core.crop_batch_cpu (the kernel's per-pixel body on the CPU), so the whole orchestration
runs on the CPU in the tests (tests/test_device_input.py).
"""
from __future__ import annotations

import dataclasses
import io
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import EngineError, InputError, UnavailableError
from engine.images import DEFAULT
from engine.network import architecture as arch
from engine.pipeline.inputs import Item, Prepared, given_boxes, prepare

log = logging.getLogger("engine.pipeline")
DEVICE_INPUT_CHOICES = ("auto", True, False)
# Pixels decoded by one nvJPEG call: bounds the device memory of a batch of large photos
# (3 bytes a pixel: 768 MiB), whatever the batch size; a batch is decoded in chunks.
DECODE_CHUNK_PIXELS = 1 << 28
# A file larger than this is not read whole into memory for the device: the CPU path reads only
# what its decoder needs (an 89-megapixel JPEG at quality 95 is about 40 MB).
MAX_FILE_BYTES = 64 << 20

_EXIF_ORIENTATION = 0x0112
# Frame headers (SOFn) nvJPEG decodes as libjpeg-turbo does; the other kinds go to the CPU path.
_SOF_DEVICE = {0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive"}
_SOF_NAMES = {0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical progressive",
              0xC7: "hierarchical lossless", 0xC9: "arithmetic-coded", 0xCA: "arithmetic-coded progressive",
              0xCB: "arithmetic-coded lossless", 0xCD: "hierarchical arithmetic-coded",
              0xCE: "hierarchical arithmetic-coded progressive", 0xCF: "hierarchical arithmetic-coded lossless"}
# Luma sampling factors (h, v) with both chroma components at (1, 1): nvJPEG's subsamplings
# 4:4:4, 4:2:2, 4:4:0, 4:2:0, 4:1:1 and 4:1:0 (nvjpegChromaSubsampling_t).
_LUMA_SAMPLING = {(1, 1), (2, 1), (1, 2), (2, 2), (4, 1), (4, 2)}


# --------------------------------------------------------------------------- the screen


class DeviceInputUnavailable(UnavailableError):
    """device_input=True where the device path cannot run; `reason` says which part is missing
    (the command line words it as --device-input on)."""

    def __init__(self, reason: str):
        super().__init__(f"Reconstructor: device_input=True: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class JpegScan:
    """What the markers before the first scan say (see `scan_jpeg`)."""

    kind: str  # "baseline", "extended sequential" or "progressive"
    width: int
    height: int
    components: int  # 1 (grey) or 3 (YCbCr)


def scan_jpeg(data) -> JpegScan | str:
    """The frame header of a JPEG held in `data` (bytes-like), read from its markers up to the
    first scan; or a string saying why nvJPEG should not decode it the way libjpeg-turbo (Pillow)
    does. Reads no pixel; stops at the first scan, so its cost is the header's size.

    Refused: no SOI marker, a header cut short or with bytes between segments, a frame kind other
    than baseline/extended/progressive Huffman (lossless, hierarchical, arithmetic-coded), samples
    other than 8-bit, other than 1 or 3 components (CMYK, YCCK), RGB-coded 3-component JPEGs
    (Adobe transform 0 or component ids 'R','G','B': libjpeg reads them as RGB, nvJPEG as YCbCr),
    chroma subsamplings nvJPEG does not name, and no end-of-image marker after the first scan
    (a truncated file: the CPU path reports it)."""
    mv = memoryview(data).cast("B")
    n = len(mv)
    if n < 4 or mv[0] != 0xFF or mv[1] != 0xD8:
        return "not a JPEG (no start-of-image marker)"
    i, sof, adobe, sos_end = 2, None, None, None
    while sos_end is None:
        if i >= n:
            return "the header ends before the first scan"
        if mv[i] != 0xFF:
            return "bytes between header segments (a damaged header)"
        while i < n and mv[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return "the header ends before the first scan"
        marker = mv[i]
        i += 1
        if 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xD8):
            return f"an unexpected marker 0xFF{marker:02X} in the header"
        if marker == 0xD9:
            return "an end-of-image marker before the first scan"
        if i + 2 > n:
            return "the header ends inside a segment"
        length = (mv[i] << 8) | mv[i + 1]
        if length < 2 or i + length > n:
            return "the header ends inside a segment"
        seg = mv[i + 2:i + length]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if sof is not None:
                return "more than one frame header"
            if marker not in _SOF_DEVICE:
                return f"a {_SOF_NAMES.get(marker, f'SOF{marker - 0xC0}')} JPEG"
            if len(seg) < 6 or len(seg) < 6 + 3 * seg[5]:
                return "a frame header cut short"
            comps = [(seg[6 + 3 * k], seg[7 + 3 * k] >> 4, seg[7 + 3 * k] & 15) for k in range(seg[5])]
            sof = (_SOF_DEVICE[marker], seg[0], (seg[1] << 8) | seg[2], (seg[3] << 8) | seg[4], comps)
        elif marker == 0xEE and bytes(seg[:5]) == b"Adobe" and len(seg) >= 12:
            adobe = seg[11]
        elif marker == 0xDA:
            if sof is None:
                return "a scan before the frame header"
            sos_end = i + length
        i += length
    kind, precision, height, width, comps = sof
    if precision != 8:
        return f"{precision}-bit samples"
    if len(comps) not in (1, 3):
        return f"{len(comps)} colour components (CMYK or YCCK)"
    if len(comps) == 3:
        if adobe == 0 or tuple(c[0] for c in comps) == (82, 71, 66):
            return "an RGB-coded JPEG (not YCbCr)"
        if comps[1][1:] != (1, 1) or comps[2][1:] != (1, 1) or comps[0][1:] not in _LUMA_SAMPLING:
            return "a chroma subsampling nvJPEG does not decode (" + \
                   ", ".join(f"{h}x{v}" for _, h, v in comps) + ")"
    raw = data if isinstance(data, (bytes, bytearray)) else bytes(mv)
    if raw.rfind(b"\xff\xd9", sos_end) < 0:  # after the first scan 0xFF 0xD9 is only ever the end marker
        return "no end-of-image marker (a truncated file?)"
    return JpegScan(kind, width, height, len(comps))


@dataclass(frozen=True)
class Screened:
    """A JPEG the device decodes: its stored size, EXIF orientation (1..8, as engine.images
    applies it) and the size of the image the pipeline sees (after the orientation)."""

    scan: JpegScan
    orientation: int
    height: int  # after the orientation
    width: int


def screen_jpeg(data, max_pixels) -> Screened | str:
    """Whether the encoded image `data` (bytes-like) goes to the device, from its header alone
    (Pillow's lazy open and `scan_jpeg`); a string says why not (then the CPU path, which applies
    engine.images' checks and messages). Over the pixel limit (`max_pixels`, as engine.images
    takes it) is a reason too: the CPU path refuses it before decoding, with its message."""
    from PIL import Image

    from engine.images import pixel_limit

    try:
        with Image.open(io.BytesIO(data)) as im:  # header only; Pillow's own bomb check raises here
            if im.format != "JPEG":
                return f"a {im.format} image (nvJPEG reads JPEG only)"
            if im.mode not in ("RGB", "L"):
                return f"a {im.mode} JPEG"
            w, h = im.size
            # The CPU path (engine.images._decode) transposes when the tag is not 0 or 1, and
            # Pillow's exif_transpose acts on 2..8 only.
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception as e:  # unreadable here: the CPU path says why, in its words
        return f"a header Pillow cannot read ({type(e).__name__})"
    limit = pixel_limit(max_pixels)
    if w <= 0 or h <= 0 or (limit is not None and w * h > limit):
        return "over the pixel limit or empty"
    scan = scan_jpeg(data)
    if isinstance(scan, str):
        return scan
    if (scan.width, scan.height) != (w, h):
        return "a frame size that differs from Pillow's"
    orientation = orientation if orientation in _ORIENTATION_OPS else 1
    swap = orientation >= 5
    return Screened(scan, orientation, w if swap else h, h if swap else w)


# --------------------------------------------------------------------------- orientation by strides


@dataclass(frozen=True)
class View:
    """An RGB image seen through strides (in elements, uint8): pixel (channel c, row y, column x)
    is at base + offset + c*stride_c + y*stride_y + x*stride_x. Strides may be negative."""

    base: Any  # the decoded image (a CHW array or CUDA tensor) the offset is relative to
    offset: int
    height: int
    width: int
    stride_y: int
    stride_x: int
    stride_c: int


# EXIF orientation -> the operations, in order, that give the image a viewer shows (Pillow's
# exif_transpose: 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE, 6 ROTATE_270,
# 7 TRANSVERSE, 8 ROTATE_90). The tests check every one against Pillow.
_ORIENTATION_OPS = {1: (), 2: ("flip_x",), 3: ("flip_x", "flip_y"), 4: ("flip_y",), 5: ("transpose",),
                    6: ("transpose", "flip_x"), 7: ("transpose", "flip_x", "flip_y"), 8: ("transpose", "flip_y")}


def oriented(v: View, orientation: int) -> View:
    """`v` as EXIF `orientation` (1..8) shows it, by strides alone (no pixel moves)."""
    for op in _ORIENTATION_OPS[orientation]:
        if op == "transpose":
            v = dataclasses.replace(v, height=v.width, width=v.height, stride_y=v.stride_x, stride_x=v.stride_y)
        elif op == "flip_x":
            v = dataclasses.replace(v, offset=v.offset + (v.width - 1) * v.stride_x, stride_x=-v.stride_x)
        else:
            v = dataclasses.replace(v, offset=v.offset + (v.height - 1) * v.stride_y, stride_y=-v.stride_y)
    return v


# --------------------------------------------------------------------------- planning (prep workers)


@dataclass(eq=False)
class DevicePlan:
    """One input the device decodes: its bytes, orientation, faces and their crop bounds."""

    item: Item
    data: bytearray  # the JPEG (writable: torch.frombuffer takes it without a copy)
    screened: Screened
    boxes: list  # FaceBox per face ([None] in already-cropped mode)
    bounds: np.ndarray  # int64 [F, 4] (bl, bt, br, bb), engine.crop.crop_bounds
    cpu_prepare: Callable[[], Prepared]  # this input by the CPU path (a decode that fails on the device)
    reported: bool = False  # its failure was reported (an input whose faces span two batches)

    @property
    def pixels(self) -> int:
        return self.screened.height * self.screened.width


@dataclass
class DevicePrepared(Prepared):
    """A prepared input whose crops the device makes: `crops` is None, `plan` says how."""

    plan: DevicePlan | None = None


def _face_bounds(box, shape) -> tuple[int, int, int, int]:
    """crop_face's box checks and bounds, for an image of `shape` (H, W) not decoded yet."""
    from engine.crop import check_box, crop_bounds

    check_box((box.x0, box.y0, box.x1, box.y1), getattr(box, "origin", None) or "box", shape)
    return crop_bounds(box)


class DeviceInput:
    """Decides which inputs the device decodes and crops (`prepare`, on the prep workers) and fills
    a batch's network input (`fill`, on the network thread). See the module docstring.

    backend: CudaBackend (nvJPEG + the CUDA crop kernel on the runner's stream) or HostBackend
        (Pillow + the kernel's CPU body: the stand-in the CPU tests run).
    max_pixels: the pixel limit, as engine.images takes it (the Reconstructor's).
    decode_chunk_pixels: at most this many pixels per decode call (device memory per batch).
    `fallbacks` counts, by reason, the inputs that took the CPU path instead (thread-safe)."""

    def __init__(self, backend, *, max_pixels=DEFAULT, decode_chunk_pixels: int = DECODE_CHUNK_PIXELS):
        self.backend = backend
        self.max_pixels = max_pixels
        self.decode_chunk_pixels = int(decode_chunk_pixels)
        self.fallbacks: Counter = Counter()
        self.decoded = 0  # decodes on the device (an input whose faces span two batches counts twice)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<DeviceInput {self.backend.name}>"

    # -- prep workers ---------------------------------------------------------------------
    def prepare(self, item: Item, *, boxes, cropped: bool, detect, detector_name: str) -> Prepared:
        """Like engine.pipeline.inputs.prepare, but an input the device can take comes back as a
        DevicePrepared (no crops yet); any other goes through the CPU path here."""
        def cpu():
            return prepare(item, boxes=boxes, cropped=cropped, detect=detect, detector_name=detector_name)

        plan = self.plan(item, boxes=boxes, cropped=cropped, cpu_prepare=cpu)
        if isinstance(plan, str):
            with self._lock:
                self.fallbacks[plan] += 1
            return cpu()
        return DevicePrepared(item, plan.boxes, None, plan=plan)

    def plan(self, item: Item, *, boxes, cropped: bool, cpu_prepare: Callable[[], Prepared]) -> DevicePlan | str:
        """The device plan of `item`, or why it takes the CPU path (a string)."""
        if item.frame is not None:
            return "a video frame (decoded on the CPU)"
        if item.encoded is None and item.path is None:
            return "not a file or encoded bytes (an array, or an input that already failed)"
        if not cropped:
            try:
                found = given_boxes(boxes, item)
            except InputError:
                return "a box the CPU path refuses"
            if not found:  # None: the detector's job (it needs the photo on the CPU); []: an error
                return "no known boxes (detection runs on the CPU)"
        try:
            data, screened = self._read(item)
        except OSError:
            return "a file that cannot be read (the CPU path says why)"
        if isinstance(screened, str):
            return screened
        shape = (screened.height, screened.width)
        if cropped:
            found, bounds = [None], [(0, 0, screened.width, screened.height)]
        else:
            try:
                bounds = [_face_bounds(b, shape) for b in found]
            except InputError:
                return "a box the CPU path refuses"
        return DevicePlan(item, data, screened, list(found), np.asarray(bounds, np.int64).reshape(-1, 4), cpu_prepare)

    def _read(self, item: Item) -> tuple[bytearray | None, Screened | str]:
        if item.encoded is not None:
            data = bytearray(item.encoded)
        else:
            with open(item.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > MAX_FILE_BYTES:
                    return None, f"a file over {MAX_FILE_BYTES >> 20} MiB"
                data = bytearray(size)
                if f.readinto(data) != size:
                    return None, "a file that changed while it was read"
        return data, screen_jpeg(data, self.max_pixels)

    # -- network thread -------------------------------------------------------------------
    def fill(self, batch, host_copy: bool = False):
        """The network input of `batch` ([n, 3, 224, 224] float32 in the backend's memory): the rows
        in batch.device decoded and cropped by the backend, the other rows (the CPU path's crops in
        batch.crops) copied in. A device decode that fails is retried alone, then by the CPU path;
        an input that fails there too becomes its error entry in batch.entries (its rows stay in
        the buffer, unfilled, and no result reads them). host_copy: also leave every row's crop
        in batch.crops."""
        n = batch.n
        out = self.backend.output(batch.crops, n)
        by_plan: dict[DevicePlan, list] = {}  # plan -> its DeviceRows in this batch
        for r in batch.device:
            by_plan.setdefault(r.plan, []).append(r)
        device_rows = {r.row for r in batch.device}
        host_rows = [e.row for e in batch.entries if e.row >= 0 and e.row not in device_rows]
        failed: dict[DevicePlan, str] = {}
        on_device = 0
        for chunk in self._chunks(list(by_plan)):
            images = self._decode(chunk)
            on_device += sum(img is not None for img in images)
            views, bounds, rows = [], [], []
            for plan, img in zip(chunk, images):
                if img is None:  # nvJPEG refused it: the CPU path decodes and crops it
                    p = _cpu_prepare(plan)
                    if p.error is not None:
                        failed[plan] = p.error
                        continue
                    for r in by_plan[plan]:
                        batch.crops[r.row] = p.crops[r.face]
                        host_rows.append(r.row)
                    continue
                v = oriented(self.backend.view(img), plan.screened.orientation)
                for r in by_plan[plan]:
                    views.append(v)
                    bounds.append(plan.bounds[r.face])
                    rows.append(r.row)
            self._crop_runs(views, bounds, rows, out)
            del images, views  # the chunk's decoded images go before the next chunk's
        if host_rows:
            self.backend.put_rows(out, batch.crops, sorted(host_rows))
        if failed:
            self._fail(batch, failed, by_plan)
        with self._lock:
            self.decoded += on_device
        if host_copy:
            self.backend.to_host(out, batch.crops, n)
        return out

    def _chunks(self, plans: list) -> list[list]:
        chunks, cur, px = [], [], 0
        for p in plans:
            if cur and px + p.pixels > self.decode_chunk_pixels:
                chunks.append(cur)
                cur, px = [], 0
            cur.append(p)
            px += p.pixels
        return chunks + ([cur] if cur else [])

    def _decode(self, plans: list) -> list:
        """Decoded images in order; None for one the backend cannot decode (even alone)."""
        try:
            return list(self.backend.decode([p.data for p in plans]))
        except Exception as e:  # nvJPEG raises one RuntimeError for the whole batch
            if len(plans) == 1:
                log.info("%s: the device decoder refused it (%s: %s); decoding it on the CPU",
                         plans[0].item.source, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                with self._lock:
                    self.fallbacks["refused by the device decoder"] += 1
                return [None]
        return [self._decode([p])[0] for p in plans]

    def _crop_runs(self, views, bounds, rows, out) -> None:
        """One crop call per run of consecutive rows (the kernel writes contiguous rows)."""
        start = 0
        for k in range(1, len(rows) + 1):
            if k == len(rows) or rows[k] != rows[k - 1] + 1:
                self.backend.crop(views[start:k], np.asarray(bounds[start:k], np.int64), out, rows[start])
                start = k

    @staticmethod
    def _fail(batch, failed: dict, by_plan: dict) -> None:
        """Each failed input's face entries become one error entry, where its first face was (an
        input reported already, in an earlier batch, only loses its entries)."""
        from engine.pipeline.stages import Entry

        dead = {r.row: plan for plan in failed for r in by_plan[plan]}
        entries = []
        for e in batch.entries:
            plan = dead.get(e.row) if e.row >= 0 else None
            if plan is None:
                entries.append(e)
            elif not plan.reported:
                plan.reported = True
                entries.append(Entry(e.source, e.frame, -1, None, -1, failed[plan]))
        batch.entries = entries
        batch.device = [r for r in batch.device if r.row not in dead]


def _cpu_prepare(plan: DevicePlan) -> Prepared:
    """The CPU path for a planned input, with the Reconstructor's rule for the unexpected: an
    EngineError (a missing feature) stops the run, anything else is this input's error."""
    try:
        return plan.cpu_prepare()
    except EngineError:
        raise
    except Exception as e:
        log.debug("%s: preparing this input failed", plan.item.source, exc_info=True)
        return Prepared(plan.item, [], None, error=f"{plan.item.source}: unexpected error while reading, detecting "
                                                  f"or cropping this input: {type(e).__name__}: {e}")


# --------------------------------------------------------------------------- backends


def _crop_module():
    from engine import _core

    if not hasattr(_core.core(), "crop_cpu"):
        raise UnavailableError("the device input needs the crop kernel of engine._C; this build has none: "
                               "rebuild it with `pip install -e .`")
    return _core


class HostBackend:
    """The CPU stand-in for nvJPEG and the CUDA kernel (tests, and machines without a GPU):
    Pillow decodes without applying the EXIF orientation, into CHW uint8 arrays, as nvJPEG does;
    engine._core.crop_batch_cpu (the CUDA kernel's per-pixel body) crops into the batch's own
    host buffer. `refuse(data) -> bool`, when given, makes the decoder refuse those inputs (a
    test's stand-in for what nvJPEG cannot read)."""

    name = "host (Pillow + the crop kernel's CPU body)"

    def __init__(self, refuse: Callable[[bytes], bool] | None = None):
        self._core = _crop_module()
        self.refuse = refuse

    def output(self, crops: np.ndarray, n: int) -> np.ndarray:
        return crops[:n]

    def decode(self, datas: list) -> list:
        from PIL import Image

        out = []
        for d in datas:
            if self.refuse is not None and self.refuse(bytes(d)):
                raise RuntimeError("Error while decoding JPEG images: refused (HostBackend.refuse)")
            with Image.open(io.BytesIO(bytes(d))) as im:
                im.load()
                a = np.asarray(im.convert("RGB") if im.mode != "RGB" else im)
            out.append(np.ascontiguousarray(a.transpose(2, 0, 1)))
        return out

    @staticmethod
    def view(img: np.ndarray) -> View:
        _, h, w = img.shape
        return View(img, 0, h, w, img.strides[1], img.strides[2], img.strides[0])

    @staticmethod
    def array(v: View) -> np.ndarray:
        """The [3, H, W] array a View stands for (numpy strides, no copy)."""
        flat = v.base.reshape(-1)
        return np.lib.stride_tricks.as_strided(flat[v.offset:], shape=(3, v.height, v.width),
                                               strides=(v.stride_c, v.stride_y, v.stride_x), writeable=False)

    def crop(self, views: list, bounds: np.ndarray, out: np.ndarray, row0: int) -> None:
        self._core.crop_batch_cpu([self.array(v) for v in views], bounds, size=arch.INPUT_SIZE, layout="chw",
                                  out=out[row0:row0 + len(views)])

    @staticmethod
    def put_rows(out, crops: np.ndarray, rows: list) -> None:
        if not np.shares_memory(out, crops):
            out[rows] = crops[rows]

    @staticmethod
    def to_host(out, crops: np.ndarray, n: int) -> None:
        if not np.shares_memory(out, crops):
            crops[:n] = out


class CudaBackend:
    """nvJPEG (torchvision.io.decode_jpeg(device="cuda"), batched) and the CUDA crop kernel
    (engine._core.crop_batch_cuda), writing into a float32 input buffer on the runner's stream.

    Streams: torchvision decodes on a stream of its own, synchronises it before returning, and
    makes the caller's current stream wait for it; it allocates the output on that current
    stream. Decoding under a stream of ours (`decode_stream`), never the runner's, keeps the
    caching allocator from handing nvJPEG a block the runner's queued work still reads; the
    runner's stream then waits for the decode stream, and each image is marked as used by the
    runner's stream (record_stream) so that its memory is not reused before the crop ran. The
    crop kernel, the copy of the CPU path's rows and the network all run on the runner's stream,
    in that order."""

    name = "nvJPEG + the CUDA crop kernel"

    def __init__(self, runner):
        import torch
        import torchvision.io  # noqa: F401  (lazily: only a CUDA pipeline needs it)

        self._core = _crop_module()
        self.stream = runner.stream
        self.device = self.stream.device
        self.decode_stream = torch.cuda.Stream(self.device)

    def output(self, crops: np.ndarray, n: int):
        import torch

        with torch.cuda.stream(self.stream):
            return torch.empty((n, *crops.shape[1:]), dtype=torch.float32, device=self.device)

    def decode(self, datas: list) -> list:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        encoded = [torch.frombuffer(d, dtype=torch.uint8) for d in datas]
        with torch.cuda.stream(self.decode_stream):
            images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        self.stream.wait_stream(self.decode_stream)
        for im in images:
            im.record_stream(self.stream)
        return images

    @staticmethod
    def view(img) -> View:
        _, h, w = img.shape
        return View(img, 0, int(h), int(w), img.stride(1), img.stride(2), img.stride(0))

    def crop(self, views: list, bounds: np.ndarray, out, row0: int) -> None:
        sources = [(v.base.data_ptr() + v.offset, v.height, v.width, v.stride_y, v.stride_x, v.stride_c)
                   for v in views]
        self._core.crop_batch_cuda(sources, bounds, out[row0:row0 + len(views)], size=arch.INPUT_SIZE,
                                   out_dtype="float32", stream=self.stream)

    def put_rows(self, out, crops: np.ndarray, rows: list) -> None:
        import torch

        with torch.cuda.stream(self.stream):
            src = torch.from_numpy(crops[rows]).pin_memory().to(self.device, non_blocking=True)
            out[torch.as_tensor(rows, device=self.device)] = src

    def to_host(self, out, crops: np.ndarray, n: int) -> None:
        import torch

        with torch.cuda.stream(self.stream):
            host = out.to("cpu")  # synchronous: the caller asked for the crops on the host
        crops[:n] = host.numpy()


def machine_reason() -> str | None:
    """Why this machine cannot run the device input with any runner (None: it can, given a CUDA
    runner); what `engine3dmm info` shows."""
    import importlib.util

    from engine import _core

    if not _core.cuda_compiled():
        return "engine._C was built without CUDA (no crop kernel; rebuild with nvcc present: pip install -e .)"
    if not _core.has_cuda_crop():
        return "no usable CUDA device"
    if importlib.util.find_spec("torchvision") is None:
        return "nvJPEG is reached through torchvision, which is not installed (pip install torchvision)"
    return None


def unavailable_reason(runner, on_gpu: bool) -> str | None:
    """Why the device input cannot run with this runner (None: it can)."""
    import importlib.util

    if not on_gpu:
        where = f"the {runner.name} runner runs on the {runner.device}" if runner.device != "cuda" else \
            "this build of engine._C has no CUDA (rebuild on a machine with nvcc: pip install -e .)"
        return f"{where}: the device input needs a CUDA runner (torch-cuda, tensorrt) and a GPU"
    if not (hasattr(runner, "stream") and hasattr(runner, "run_device")):
        return f"the {runner.name} runner takes no device buffer"
    if importlib.util.find_spec("torchvision") is None:
        return "nvJPEG is reached through torchvision, which is not installed (pip install torchvision)"
    from engine import _core

    if not _core.has_cuda_crop():
        return "this build of engine._C has no CUDA crop kernel (rebuild: pip install -e .)"
    return None


def check_choice(value) -> None:
    if not (value is True or value is False or value == "auto" or isinstance(value, DeviceInput)):
        raise InputError(f"Reconstructor: device_input: expected 'auto', True, False or a DeviceInput, "
                         f"found {value!r}")
