"""Inputs to work items, and one work item to its face crops.

`list_inputs` turns what the caller passed (paths, folders, globs, videos, arrays, encoded
bytes, (name, data) pairs, camera indices) into a lazy, ordered stream of `Input`s: folders
and patterns are expanded here (engine.images.expand_input: their images and videos), but
nothing is opened. `iter_items` turns those into `Item`s, opening videos as they come. Neither
raises for one bad input: a missing file, an empty folder or a video OpenCV cannot open
becomes an item whose `load` raises InputError, so the failure is reported in its place in the
output order and the run goes on.

`prepare` runs on a worker thread: load (decode) the image, find the boxes (caller's,
detector's, or none in already-cropped mode) and crop every face.
"""
from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from engine.box_match import MatchedBoxes, missing_box_message
from engine.detect import FaceBox
from engine.errors import InputError

log = logging.getLogger("engine.pipeline")


@dataclass
class Item:
    """One image to process, not yet decoded."""

    source: str
    load: Callable[[], np.ndarray]  # -> RGB uint8 [H, W, 3]; raises InputError
    frame: int | None = None
    path: str | None = None  # a file's path (None: in memory or a camera)
    root: str | None = None  # the folder argument the file was found in (box matching)
    encoded: Any = None  # an in-memory image's encoded bytes (engine.pipeline.device_input decodes them itself)


@dataclass
class Prepared:
    """An item after decoding and cropping: crops [F, 3, 224, 224] and their boxes, or an error."""

    item: Item
    boxes: list
    crops: np.ndarray | None
    error: str | None = None


@dataclass
class Input:
    """One input of a run, named but not opened. kind: "file" (an image or a video, by its
    extension), "memory" (an array or encoded bytes), "camera" or "failed" (`error` says why)."""

    name: str
    kind: str
    data: Any = None  # the path (file), array/bytes (memory), index (camera)
    root: str | None = None
    error: str | None = None


def _failing(source: str, message: str) -> Item:
    def load():
        raise InputError(message)

    return Item(source, load)


def _image_item(source: str, data, max_pixels, path: str | None = None, root: str | None = None) -> Item:
    """An image from a numpy array, encoded bytes or a file path."""
    from engine import images

    if isinstance(data, np.ndarray):
        return Item(source, lambda: images.as_rgb(data, source))
    if isinstance(data, (bytes, bytearray, memoryview)):
        return Item(source, lambda: images.decode_image(data, source, max_pixels=max_pixels), encoded=data)
    p = os.fspath(data)
    return Item(source, lambda: images.load_image(p, max_pixels=max_pixels), path=p, root=root)


@dataclass(frozen=True)
class VideoSpan:
    """Which frames of each video or camera stream to take: every `step`-th, at most `max_frames`."""

    step: int = 1
    max_frames: int | None = None

    def __post_init__(self):  # checked when the caller passes them, not when a video opens
        from engine.images import check_frame_span

        step, max_frames = check_frame_span(self.step, self.max_frames, step_name="frame_step")
        object.__setattr__(self, "step", step)
        object.__setattr__(self, "max_frames", max_frames)


def _video_items(source: str | int, span: VideoSpan, root: str | None = None) -> Iterator[Item]:
    """Frames of a video file or of a camera (an int index), decoded here, in order."""
    from engine import images

    name = f"camera {source}" if isinstance(source, int) else source
    path = None if isinstance(source, int) else source
    try:
        for index, rgb in images.iter_video_frames(source, step=span.step, max_frames=span.max_frames):
            yield Item(name, (lambda a=rgb: a), frame=index, path=path, root=root)
    except images.VideoFramesError as e:  # the frames before it came through; this names the first lost
        item = _failing(name, str(e))
        item.frame = e.frame
        yield item
    except InputError as e:
        yield _failing(name, str(e))


def _path_inputs(s: str, recursive: bool) -> Iterator[Input]:
    from engine import images

    try:
        found = images.expand_input(s, recursive=recursive)
    except InputError as e:
        yield Input(s, "failed", error=str(e))
        return
    warning = images.unsearched_warning([found])
    if warning:
        log.warning(f"{s}: {warning}")
    root = None if found.root is None else str(found.root)
    for q, why in found.skipped:  # a dangling link, an unreadable sub-folder: reported in its place
        yield Input(str(q), "failed", error=why)
    for f in found.files:
        name = s if found.root is None else str(f)  # a file named directly keeps its name as given
        yield Input(name, "file", name, root)


def _is_pair(x) -> bool:
    # (name, array or bytes) only: a tuple of two paths is two inputs, not a renamed file
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) \
        and isinstance(x[1], (np.ndarray, bytes, bytearray, memoryview))


def check_inputs(inputs) -> Iterable:
    """`inputs` as an iterable of inputs (one input becomes a list of one); InputError when it
    is neither an input nor an iterable of them."""
    if isinstance(inputs, (str, os.PathLike, np.ndarray, bytes, bytearray, memoryview, int)) or _is_pair(inputs):
        return [inputs]
    if not isinstance(inputs, Iterable):
        raise InputError(f"inputs: expected paths, arrays, bytes or (name, data) pairs, "
                         f"found {type(inputs).__name__}")
    return inputs


def list_inputs(inputs: Iterable, *, recursive: bool = False) -> Iterator[Input]:
    """The run's inputs, in order, named (files as given or found, "<array N>", "<bytes N>",
    "camera N"), with folders and patterns expanded to their images and videos; lazy."""
    n_arrays = 0  # numbers unnamed in-memory inputs: "<array 0>", "<bytes 1>", ...
    for x in inputs:
        if _is_pair(x):
            yield Input(x[0], "memory", x[1])
        elif isinstance(x, (str, os.PathLike)):
            yield from _path_inputs(os.fspath(x), recursive)
        elif isinstance(x, (int, np.integer)) and not isinstance(x, bool):
            yield Input(f"camera {int(x)}", "camera", int(x))
        elif isinstance(x, (np.ndarray, bytes, bytearray, memoryview)):
            kind = "array" if isinstance(x, np.ndarray) else "bytes"
            yield Input(f"<{kind} {n_arrays}>", "memory", x)
            n_arrays += 1
        else:
            what = repr(x)[:60]
            yield Input(what, "failed", error=f"input {what}: expected a path, a numpy array, encoded bytes "
                                              f"or a (name, data) pair, found {type(x).__name__}")


def iter_items(inputs: Iterable[Input], span: VideoSpan = VideoSpan(), *, max_pixels=None) -> Iterator[Item]:
    """Work items of listed inputs (`list_inputs`), in order: an image is one item, a video or a
    camera one item per frame taken (`span`), opened as it is reached."""
    from engine import images

    if max_pixels is None:
        max_pixels = images.DEFAULT
    for inp in inputs:
        if inp.kind == "failed":
            yield _failing(inp.name, inp.error)
        elif inp.kind == "camera":
            yield from _video_items(inp.data, span)
        elif inp.kind == "file" and images.is_video_path(inp.data):
            yield from _video_items(inp.data, span, inp.root)
        elif inp.kind == "file":
            yield _image_item(inp.name, inp.data, max_pixels, root=inp.root)
        else:
            yield _image_item(inp.name, inp.data, max_pixels)


def as_face_box(b, where: str) -> FaceBox:
    """A FaceBox from a caller's face: a FaceBox, an (x0, y0, x1, y1[, score]) sequence, 68
    landmarks (an array [68, 2]: the box is their tight box, cropped as dlib's landmark box), or a
    mapping {"landmarks": [[x, y] x 68], "box": (x0, y0, x1, y1) (optional), "score": s (optional)}."""
    forms = "a FaceBox or (x0, y0, x1, y1)"
    if isinstance(b, FaceBox):
        return b
    if isinstance(b, Mapping):
        return _face_from_mapping(b, where)
    if isinstance(b, np.ndarray) and b.ndim == 2:
        return FaceBox.from_landmarks(b, origin=where)
    try:
        vals = list(itertools.islice(b, 6))  # a box has 4 or 5 values: never read on
    except TypeError:
        raise InputError(f"{where}: expected {forms}, found {type(b).__name__}") from None
    if len(vals) not in (4, 5):
        more = " or more" if len(vals) > 5 else ""
        raise InputError(f"{where}: expected {forms}, found {len(vals)}{more} values")
    # FaceBox checks every value by the box rule (engine.crop.check_box), naming `where` and the field.
    return FaceBox(*vals[:4], score=vals[4] if len(vals) == 5 else 1.0, kind="given", origin=where)


def _face_from_mapping(d: Mapping, where: str) -> FaceBox:
    unknown = [k for k in d if k not in ("box", "landmarks", "score")]
    if unknown or "landmarks" not in d:
        raise InputError(f"{where}: expected {{'landmarks': [[x, y] x 68]}} with an optional 'box' (x0, y0, x1, y1) "
                         f"and 'score', found " + (f"the key {unknown[0]!r}" if unknown else "no 'landmarks'"))
    score = d.get("score", 1.0)
    if "box" not in d:
        return FaceBox.from_landmarks(d["landmarks"], score=score, origin=where)
    box = as_face_box(d["box"], f"{where}, field box")
    return FaceBox(box.x0, box.y0, box.x1, box.y1, score if "score" in d else box.score, box.kind,
                   d["landmarks"], where)


def given_boxes(boxes: MatchedBoxes | None, item: Item) -> list[FaceBox] | None:
    """The caller's boxes for `item` (engine.box_match's rule), or None when no entry matches it."""
    if boxes is None:
        return None
    hit = boxes.for_input(item.path if item.path is not None else item.source, item.root)
    if hit is None:
        return None
    key, found = hit
    where = f"{boxes.label}[{key!r}]" if boxes.option is None else f"{boxes.label}: entry {key!r}"
    return [as_face_box(b, where) for b in found]


def prepare(item: Item, *, boxes: MatchedBoxes | None, cropped: bool, detect: Callable | None,
            detector_name: str) -> Prepared:
    """Decode `item`, find its faces and crop them. Per-input problems (InputError) come
    back as `Prepared.error`; anything else (a missing detector, a bug) propagates."""
    try:
        image = item.load()
    except InputError as e:
        return Prepared(item, [], None, error=str(e))
    pixels = image.shape[0] * image.shape[1]
    try:
        return _prepare_image(item, image, boxes, cropped, detect, detector_name)
    except InputError as e:
        return Prepared(item, [], None, error=str(e))
    finally:
        del image
        if pixels >= TRIM_AFTER_PIXELS:
            from engine.runners.heap import release_free_heap

            release_free_heap()


# A photo this large leaves its decoder's buffers (Pillow's image, 4 bytes a pixel, in blocks of
# 16 MB) freed but resident in the C heap of the worker thread that decoded it; a later photo
# does not reuse them (another thread, other sizes), so they only add to the process's peak:
# 360 MB after an 81-megapixel photo, measured (bench/results/engine_bench_cpu.md,
# reconstruct_81mp). Giving them back costs about a millisecond, nothing beside such a decode.
TRIM_AFTER_PIXELS = 1 << 23


def _prepare_image(item: Item, image: np.ndarray, boxes: MatchedBoxes | None, cropped: bool,
                   detect: Callable | None, detector_name: str) -> Prepared:
    from engine.crop import crop_faces, prepare_cropped

    if cropped:
        return Prepared(item, [None], prepare_cropped(image)[None])
    found = given_boxes(boxes, item)
    if found is None:
        if detect is None:
            raise InputError(boxes.missing(item.source) if boxes is not None
                             else missing_box_message(item.source))
        found = detect(image)
        if not found:
            raise InputError(f"{item.source}: no face found ({detector_name})")
    elif not found:
        raise InputError(f"{item.source}: the boxes given for this input are empty: no face to process")
    return Prepared(item, found, crop_faces(image, found))
