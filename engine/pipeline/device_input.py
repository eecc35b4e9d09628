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
decoded on the CPU by the CPU path (in the network thread: rare), and so is one nvJPEG returns
entirely zero (its batched hardware decoder can report success for an image it skipped); an
input that fails there too gets the CPU path's error result, in its place. An input whose faces
span two batches is decoded once (its image is kept for the next batch).

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

The parts: engine.pipeline.jpeg_screen (which files go to the device: `screen_jpeg`,
`scan_jpeg`), engine.pipeline.orientation (`View`, `oriented`: EXIF orientation by strides),
engine.pipeline.device_backends (`CudaBackend`, `HostBackend`, the availability reasons) and
this module (the plans on the prep workers, the filling of a batch on the network thread). The
names of all four are importable from here.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import EngineError, InputError, UnavailableError
from engine.images import DEFAULT
from engine.pipeline.device_backends import (
    CudaBackend,
    HostBackend,
    machine_reason,
    unavailable_reason,
    view_sources,
)
from engine.pipeline.inputs import Item, Prepared, given_boxes, prepare
from engine.pipeline.jpeg_screen import JpegScan, Screened, scan_jpeg, screen_jpeg
from engine.pipeline.orientation import View, oriented

__all__ = [
    "BLANK",
    "DECODE_CHUNK_PIXELS",
    "DEVICE_INPUT_CHOICES",
    "MAX_FILE_BYTES",
    "CudaBackend",
    "DeviceInput",
    "DeviceInputUnavailable",
    "DevicePlan",
    "DevicePrepared",
    "HostBackend",
    "JpegScan",
    "Screened",
    "View",
    "check_choice",
    "from_words",
    "machine_reason",
    "oriented",
    "scan_jpeg",
    "screen_jpeg",
    "unavailable_reason",
    "view_sources",
]

log = logging.getLogger("engine.pipeline")
DEVICE_INPUT_CHOICES = ("auto", True, False)
# Pixels decoded by one nvJPEG call: bounds the device memory of a batch of large photos
# (3 bytes a pixel: 768 MiB), whatever the batch size; a batch is decoded in chunks.
DECODE_CHUNK_PIXELS = 1 << 28
# A file larger than this is not read whole into memory for the device: the CPU path reads only
# what its decoder needs (an 89-megapixel JPEG at quality 95 is about 40 MB).
MAX_FILE_BYTES = 64 << 20
# The fallback reason of an image the device decoder returned entirely zero (DeviceInput._decode).
BLANK = "decoded as all zero by the device decoder"


class DeviceInputUnavailable(UnavailableError):
    """device_input=True where the device path cannot run; `reason` says which part is missing
    (the command line words it as --device-input on)."""

    def __init__(self, reason: str):
        super().__init__(f"Reconstructor: device_input=True: {reason}")
        self.reason = reason


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
    # What the network thread got for it (a decoded image, or the CPU path's Prepared), kept while
    # faces of it wait for the next batch, so that it is decoded once (see DeviceInput.fill).
    carried: Any = field(default=None, repr=False)

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
        self.decoded = 0  # images decoded on the device (each input once, whatever batches its faces span)
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
        so is an image the device decoder returned entirely zero (`_decode`). An input that fails
        there too becomes its error entry in batch.entries (its rows stay in the buffer, unfilled,
        and no result reads them). host_copy: also leave every row's crop in batch.crops.

        An input whose faces run on into the next batch (the last input of a batch; one with more
        faces than a batch spans several) is decoded once: what this call got for it, its decoded
        image or the CPU path's result, stays on its plan (`DevicePlan.carried`) until the call
        that crops its last face. At most one input per pipeline is carried at a time, so the
        memory of a batch is at most `decode_chunk_pixels` plus that one image; a run that stops
        early drops it with its plans."""
        n = batch.n
        out = self.backend.output(batch.crops, n)
        by_plan: dict[DevicePlan, list] = {}  # plan -> its DeviceRows in this batch
        for r in batch.device:
            by_plan.setdefault(r.plan, []).append(r)
        device_rows = {r.row for r in batch.device}
        host_rows = [e.row for e in batch.entries if e.row >= 0 and e.row not in device_rows]
        failed: dict[DevicePlan, str] = {}
        carried = [p for p in by_plan if p.carried is not None]
        chunks = ([carried] if carried else []) + self._chunks([p for p in by_plan if p.carried is None])
        for chunk in chunks:
            got = [p.carried for p in chunk] if chunk is carried else self._decode(chunk)
            views, bounds, rows = [], [], []
            for plan, img in zip(chunk, got):
                rs = by_plan[plan]
                if img is None:  # the device decoder could not: the CPU path decodes and crops it
                    img = _cpu_prepare(plan)
                if isinstance(img, Prepared):
                    if img.error is not None:
                        failed[plan] = img.error
                    else:
                        for r in rs:
                            batch.crops[r.row] = img.crops[r.face]
                            host_rows.append(r.row)
                else:
                    v = oriented(self.backend.view(img), plan.screened.orientation)
                    for r in rs:
                        views.append(v)
                        bounds.append(plan.bounds[r.face])
                        rows.append(r.row)
                # faces are batched in order: a plan continues iff its last face is not here
                plan.carried = img if max(r.face for r in rs) < len(plan.bounds) - 1 else None
            self._crop_runs(views, bounds, rows, out)
            del got, views, img  # the chunk's decoded images go before the next chunk's
        if host_rows:
            self.backend.put_rows(out, batch.crops, sorted(host_rows))
        if failed:
            self._fail(batch, failed, by_plan)
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
        """Decoded images in order; None for one the CPU path must decode instead: one the device
        decoder refuses (even alone), or one it returned entirely zero.

        Why the zero check: nvJPEG's batched hardware decoder has been seen to report success for
        an image the hardware skipped, whose output then stays black (MrNeRF/LichtFeld-Studio#1924,
        which checks every image for the same reason; the same decoder's stream defects:
        pytorch/vision#9606). The check is one reduction per image on the device and one small
        copy back per decode call (backend.all_zero). An image that really is black is decoded
        by the CPU path, which gives the same crops: nothing is lost but a little time."""
        images = self._decode_call(plans)
        decoded = [i for i, img in enumerate(images) if img is not None]
        zero = np.asarray(self.backend.all_zero([images[i] for i in decoded]), bool) if decoded else []
        blank = [i for i, z in zip(decoded, zero) if z]
        for i in blank:
            images[i] = None
        with self._lock:
            self.decoded += len(decoded) - len(blank)
            if blank:
                self.fallbacks[BLANK] += len(blank)
        if blank:
            log.info("%d of %d images the device decoder returned entirely zero (black); decoding them on "
                     "the CPU (first: %s)", len(blank), len(plans), plans[blank[0]].item.source)
        return images

    def _decode_call(self, plans: list) -> list:
        """The backend's decode of `plans` in order; None for one it refuses even alone."""
        try:
            return list(self.backend.decode([p.data for p in plans]))
        except Exception as e:  # nvJPEG raises one RuntimeError for the whole batch
            if len(plans) == 1:
                log.info("%s: the device decoder refused it (%s: %s); decoding it on the CPU",
                         plans[0].item.source, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                with self._lock:
                    self.fallbacks["refused by the device decoder"] += 1
                return [None]
        return [self._decode_call([p])[0] for p in plans]

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


CHOICE_WORDS = {"on": True, "off": False}  # the CLI's --device-input words; "auto" is itself


def from_words(value):
    """"on"/"off" (the CLI's words) as True/False; any other value as it is."""
    return CHOICE_WORDS.get(value, value) if isinstance(value, str) else value


def check_choice(value):
    """`value` as Reconstructor(device_input=) takes it: "on"/"off" (the CLI's words) are True/False."""
    value = from_words(value)
    if not (value is True or value is False or value == "auto" or isinstance(value, DeviceInput)):
        raise InputError(f"Reconstructor: device_input: expected 'auto', 'on', 'off', True, False or a DeviceInput, "
                         f"found {value!r}")
    return value
