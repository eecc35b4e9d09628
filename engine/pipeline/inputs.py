"""Inputs to work items, and one work item to its face crops.

`iter_items` turns what the caller passed (paths, folders, globs, videos, arrays,
encoded bytes, (name, data) pairs) into a lazy, ordered stream of `Item`s. It never
raises for one bad input: a missing file, an empty folder or a video OpenCV cannot
open becomes an item whose `load` raises InputError, so the failure is reported in
its place in the output order and the run goes on.

`prepare` runs on a worker thread: load (decode) the image, find the boxes (caller's,
detector's, or none in already-cropped mode) and crop every face.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from engine.detect import FaceBox, lookup_boxes
from engine.errors import InputError

_GLOB_CHARS = set("*?[")


@dataclass
class Item:
    """One image to process, not yet decoded."""

    source: str
    load: Callable[[], np.ndarray]  # -> RGB uint8 [H, W, 3]; raises InputError
    frame: int | None = None
    path: str | None = None  # for box lookup by path / file name


@dataclass
class Prepared:
    """An item after decoding and cropping: crops [F, 3, 224, 224] and their boxes, or an error."""

    item: Item
    boxes: list
    crops: np.ndarray | None
    error: str | None = None


def _failing(source: str, message: str) -> Item:
    def load():
        raise InputError(message)

    return Item(source, load)


def _image_item(source: str, data, path: str | None = None) -> Item:
    """An image from a numpy array, encoded bytes or a file path."""
    from engine import images

    if isinstance(data, np.ndarray):
        return Item(source, lambda: images.as_rgb(data, source), path=path)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return Item(source, lambda: images.decode_image(data, source), path=path)
    p = os.fspath(data)
    return Item(source, lambda: images.load_image(p), path=p)


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


def _video_items(source: str | int, span: VideoSpan) -> Iterator[Item]:
    """Frames of a video file or of a camera (an int index), decoded here, in order."""
    from engine import images

    name = f"camera {source}" if isinstance(source, int) else source
    path = None if isinstance(source, int) else source
    try:
        for index, rgb in images.iter_video_frames(source, step=span.step, max_frames=span.max_frames):
            yield Item(name, (lambda a=rgb: a), frame=index, path=path)
    except images.VideoFramesError as e:  # the frames before it came through; this names the first lost
        item = _failing(name, str(e))
        item.frame = e.frame
        yield item
    except InputError as e:
        yield _failing(name, str(e))


def _path_items(s: str, span: VideoSpan) -> Iterator[Item]:
    from engine import images

    p = Path(s)
    if p.is_file():
        if images.is_video_path(p):
            yield from _video_items(s, span)
        else:
            yield _image_item(s, s)
        return
    if p.is_dir() or _GLOB_CHARS & set(s):
        try:
            files = images.expand_inputs(s)
        except InputError as e:
            yield _failing(s, str(e))
            return
        for f in files:
            yield _image_item(str(f), str(f))
        return
    yield _failing(s, f"{s}: no such file or folder")


def _is_pair(x) -> bool:
    # (name, array or bytes) only: a tuple of two paths is two inputs, not a renamed file
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) \
        and isinstance(x[1], (np.ndarray, bytes, bytearray, memoryview))


def iter_items(inputs, span: VideoSpan = VideoSpan()) -> Iterator[Item]:
    """Lazy, ordered work items of `inputs` (one input or an iterable of inputs; an int is a
    camera index; `span` picks the frames of videos and cameras). Checks the argument itself
    now (InputError), the inputs lazily."""
    if isinstance(inputs, (str, os.PathLike, np.ndarray, bytes, bytearray, memoryview, int)) or _is_pair(inputs):
        inputs = [inputs]
    elif not isinstance(inputs, Iterable):
        raise InputError(f"inputs: expected paths, arrays, bytes or (name, data) pairs, "
                         f"found {type(inputs).__name__}")
    return _items(inputs, span)


def _items(inputs, span: VideoSpan) -> Iterator[Item]:
    n_arrays = 0  # numbers unnamed in-memory inputs: "<array 0>", "<bytes 1>", ...
    for x in inputs:
        if _is_pair(x):
            yield _image_item(x[0], x[1])
        elif isinstance(x, (str, os.PathLike)):
            yield from _path_items(os.fspath(x), span)
        elif isinstance(x, (int, np.integer)) and not isinstance(x, bool):
            yield from _video_items(int(x), span)  # a camera index
        elif isinstance(x, (np.ndarray, bytes, bytearray, memoryview)):
            kind = "array" if isinstance(x, np.ndarray) else "bytes"
            yield _image_item(f"<{kind} {n_arrays}>", x)
            n_arrays += 1
        else:
            yield _failing(repr(x)[:60], f"input {repr(x)[:60]}: expected a path, a numpy array, encoded bytes "
                                         f"or a (name, data) pair, found {type(x).__name__}")


def as_face_box(b, where: str) -> FaceBox:
    """A FaceBox from a FaceBox or an (x0, y0, x1, y1[, score]) sequence (a caller's box)."""
    if isinstance(b, FaceBox):
        return b
    try:
        vals = list(itertools.islice(b, 6))  # a box has 4 or 5 values: never read on
    except TypeError:
        raise InputError(f"{where}: expected a FaceBox or (x0, y0, x1, y1), found {type(b).__name__}") from None
    if len(vals) not in (4, 5):
        more = " or more" if len(vals) > 5 else ""
        raise InputError(f"{where}: expected a FaceBox or (x0, y0, x1, y1), found {len(vals)}{more} values")
    # FaceBox checks every value by the box rule (engine.crop.check_box), naming `where` and the field.
    return FaceBox(*vals[:4], score=vals[4] if len(vals) == 5 else 1.0, kind="given", origin=where)


def given_boxes(boxes: Mapping | None, item: Item) -> list[FaceBox] | None:
    """The caller's boxes for `item`, or None when the mapping has no entry for it.

    Looked up by the name as given, then (for files) by path and file name."""
    if boxes is None:
        return None
    for key in (item.source, item.path):
        if key is not None and key in boxes:
            return [as_face_box(b, f"boxes[{key!r}]") for b in boxes[key]]
    if item.path is not None:
        found = lookup_boxes(boxes, item.path)
        if found:
            return [as_face_box(b, f"boxes for {item.path}") for b in found]
    return None


def prepare(item: Item, *, boxes: Mapping | None, cropped: bool, detect: Callable | None,
            detector_name: str) -> Prepared:
    """Decode `item`, find its faces and crop them. Per-input problems (InputError) come
    back as `Prepared.error`; anything else (a missing detector, a bug) propagates."""
    from engine.crop import crop_faces, prepare_cropped

    try:
        image = item.load()
        if cropped:
            return Prepared(item, [None], prepare_cropped(image)[None])
        found = given_boxes(boxes, item)
        if found is None:
            if detect is None:
                raise InputError(f"{item.source}: no face box given for this input and detection is off "
                                 f"(detector=None): pass boxes for it, or cropped=True")
            found = detect(image)
            if not found:
                raise InputError(f"{item.source}: no face found ({detector_name})")
        elif not found:
            raise InputError(f"{item.source}: the boxes given for this input are empty: no face to process")
        return Prepared(item, found, crop_faces(image, found))
    except InputError as e:
        return Prepared(item, [], None, error=str(e))
