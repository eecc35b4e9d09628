"""Images in: files, encoded bytes, numpy arrays, folders, globs, videos and cameras.

Everything that leaves this module is an RGB uint8 array of shape [H, W, 3],
C-contiguous and writable. Every failure raises `engine.errors.InputError` naming
the file (or argument) and what was wrong; no raw Pillow/OpenCV exception escapes.

Public API
----------
- ``load_image(source, *, max_pixels=DEFAULT) -> np.ndarray``  path, bytes or array
- ``decode_image(data, name="<bytes>", *, max_pixels=DEFAULT) -> np.ndarray``
- ``as_rgb(array, name="array") -> np.ndarray``           validate/convert an array
- ``expand_inputs(inputs, *, recursive=False) -> list[Path]``  folders/globs -> files
- ``is_image_path(path)``, ``is_video_path(path)``
- ``iter_video_frames(source, *, step=1, max_frames=None) -> Iterator[(int, ndarray)]``

Conventions
-----------
- Decoding uses Pillow. EXIF orientation is applied (``ImageOps.exif_transpose``) so
  the array is what a viewer shows.
- 16-bit data is scaled to 8 bits by round(v * 255 / 65535) where we see the 16-bit
  values (grey PNG/TIFF, uint16 arrays). For 16-bit RGB(A) files Pillow itself keeps
  the high byte (v >> 8), which differs from rounding by at most 1; we accept that
  rather than bypass Pillow's decoder.
- Alpha is dropped (not composited): the network never saw transparency.
- CMYK and other colour spaces go through Pillow's ``convert("RGB")``.
- Multi-frame files (multi-page TIFF, animated WebP) give their first frame.
"""
from __future__ import annotations

import glob
import io
import os
from pathlib import Path
from typing import Iterable, Iterator, Union

import numpy as np

from engine.errors import EngineError, InputError, UnavailableError, describe_array

# Extensions picked up when a folder or glob is expanded. A file named explicitly is
# always tried, whatever its extension (the decoder decides, and says why it failed).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})


class _Default:
    """Sentinel: 'use Pillow's current Image.MAX_IMAGE_PIXELS' (read at call time)."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()
_EXIF_ORIENTATION = 0x0112
Source = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]


def _pixel_limit(max_pixels) -> int | None:
    if max_pixels is DEFAULT:
        from PIL import Image

        return Image.MAX_IMAGE_PIXELS  # may be None if the user disabled it globally
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels <= 0:
        raise InputError(f"max_pixels: expected a positive integer, None or DEFAULT, found {max_pixels!r}")
    return int(max_pixels)


def load_image(source: Source, *, max_pixels=DEFAULT) -> np.ndarray:
    """Load one image as RGB uint8 [H, W, 3].

    `source` is a file path, encoded bytes (JPEG/PNG/... in memory) or a numpy array
    (validated by `as_rgb`). `max_pixels` bounds width*height before decoding
    (decompression-bomb guard): DEFAULT uses Pillow's ``Image.MAX_IMAGE_PIXELS``,
    None disables our check. Pillow's own guard (2x MAX_IMAGE_PIXELS, raised inside
    ``Image.open``) still applies; set ``PIL.Image.MAX_IMAGE_PIXELS = None`` to lift it.
    """
    if isinstance(source, np.ndarray):
        return as_rgb(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(source, max_pixels=max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return _load_file(Path(source), max_pixels)
    raise InputError(f"image source: expected a path, bytes or numpy array, found {type(source).__name__}")


def decode_image(data: bytes | bytearray | memoryview, name: str = "<bytes>", *, max_pixels=DEFAULT) -> np.ndarray:
    """Decode an encoded image held in memory; `name` is used in error messages."""
    if len(data) == 0:
        raise InputError(f"{name}: empty image data (0 bytes)")
    return _decode(io.BytesIO(bytes(data)), name, max_pixels)


def _load_file(path: Path, max_pixels) -> np.ndarray:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected an image file (use expand_inputs for folders)")
    if st.st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        f = open(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: cannot open: {e.strerror or e}") from None
    with f:
        return _decode(f, str(path), max_pixels)


def _decode(fp, name: str, max_pixels) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    limit = _pixel_limit(max_pixels)
    try:
        try:
            im = Image.open(fp)
        except UnidentifiedImageError:
            raise InputError(f"{name}: not a recognised image format (is it really an image?)") from None
        except Image.DecompressionBombError as e:
            raise InputError(f"{name}: image too large (decompression-bomb guard): {e}") from None
        with im:
            w, h = im.size
            if limit is not None and w * h > limit:
                raise InputError(
                    f"{name}: image too large: {w}x{h} = {w * h} pixels, limit is {limit} "
                    f"(raise max_pixels to accept it)"
                )
            if w == 0 or h == 0:
                raise InputError(f"{name}: image has zero size ({w}x{h})")
            im.load()  # decode now: truncation errors surface here, inside our handler
            # Orientation 1 (or none) needs no transpose; skipping it saves a full-image copy.
            if im.getexif().get(_EXIF_ORIENTATION, 1) not in (0, 1):
                im = ImageOps.exif_transpose(im)
            return _to_rgb(im, name)
    except EngineError:
        raise
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, struct.error...
        what = str(e) or type(e).__name__
        if "truncated" in what.lower():
            raise InputError(f"{name}: truncated or corrupt image data: {what}") from None
        raise InputError(f"{name}: cannot decode image: {type(e).__name__}: {what}") from None


def _to_rgb(im, name: str) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey (PNG/TIFF). convert("L") would clip at 255 instead of scaling.
        a = np.asarray(im)
        if mode == "I" and (a.min() < 0 or a.max() > 65535):
            raise InputError(f"{name}: 32-bit integer image with values outside 0..65535, cannot map to 8 bits")
        a = _scale16(a.astype(np.uint32))
        return np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
    if mode == "F":
        raise InputError(f"{name}: 32-bit float image: expected 8- or 16-bit integer pixels")
    if mode != "RGB":
        im = im.convert("RGB")  # L, 1, P, RGBA, LA, PA, CMYK, YCbCr, LAB, HSV ...
    return np.array(im, dtype=np.uint8)  # np.array copies: writable, contiguous


def _scale16(a: np.ndarray) -> np.ndarray:
    """uint16 values (in any unsigned/int container) -> uint8 by round(v*255/65535)."""
    return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def as_rgb(array: np.ndarray, name: str = "array") -> np.ndarray:
    """Validate a caller's array and return RGB uint8 [H, W, 3] (a copy only when needed).

    Accepted: [H, W], [H, W, 1], [H, W, 3] (taken as RGB), [H, W, 4] (RGBA, alpha
    dropped); dtype uint8, uint16 (scaled to 8 bits), bool, or float in [0, 1]
    (scaled by 255 and rounded). Anything else raises InputError.
    """
    if not isinstance(array, np.ndarray):
        raise InputError(f"{name}: expected a numpy array, found {type(array).__name__}")
    a = array
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise InputError(f"{name}: expected shape [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], found {describe_array(array)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name}: expected a non-empty image, found {describe_array(array)}")
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = _scale16(a)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name}: float image must hold values in [0, 1], found NaN or infinity")
        if a.min() < 0.0 or a.max() > 1.0:
            raise InputError(
                f"{name}: float image must hold values in [0, 1], found range "
                f"[{a.min():g}, {a.max():g}] (pass uint8 for 0..255 data)"
            )
        a = np.rint(a * 255.0).astype(np.uint8)
    else:
        raise InputError(f"{name}: expected dtype uint8, uint16, bool or float in [0, 1], found {describe_array(array)}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a)


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


_GLOB_CHARS = set("*?[")


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike], *, recursive: bool = False) -> list[Path]:
    """Expand files, folders and glob patterns into a deterministic list of files.

    - an existing file is kept as given (whatever its extension);
    - a folder contributes its image files (IMAGE_EXTENSIONS, case-insensitive),
      sorted by path; with `recursive` its sub-folders too;
    - a pattern with * ? [ is globbed (``**`` allowed); image files among the matches
      are kept, sorted.
    Order follows the inputs; duplicates are dropped (first occurrence wins).
    Raises InputError for a path that does not exist, or a folder/pattern with no images.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[Path] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = os.path.normpath(str(p))
        if key not in seen:
            seen.add(key)
            out.append(p)

    for item in inputs:
        s = os.fspath(item)
        p = Path(s)
        if p.is_file():
            add(p)
        elif p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            found = sorted((q for q in it if q.is_file() and is_image_path(q)), key=lambda q: q.as_posix())
            if not found:
                raise InputError(f"{p}: folder holds no image files (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})")
            for q in found:
                add(q)
        elif _GLOB_CHARS & set(s):
            found = sorted((Path(m) for m in glob.glob(s, recursive=True)), key=lambda q: q.as_posix())
            found = [q for q in found if q.is_file() and is_image_path(q)]
            if not found:
                raise InputError(f"{s}: pattern matched no image files")
            for q in found:
                add(q)
        else:
            raise InputError(f"{s}: no such file or folder")
    return out


def _cv2():
    try:
        import cv2
    except ImportError:
        raise UnavailableError(
            "video input needs OpenCV: pip install opencv-python-headless (or the 'video' extra)"
        ) from None
    try:  # OpenCV's own warnings ("can't open camera by index") would repeat our InputError
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # builds without the logging utilities
        pass
    return cv2


def _int_at_least(value, lo: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value >= lo


def check_frame_span(step, max_frames, *, step_name: str = "step") -> tuple[int, int | None]:
    """(step, max_frames) as ints after checking them: every step-th frame (>= 1), at most
    max_frames of them (None: all; else >= 1). InputError names the argument."""
    if not _int_at_least(step, 1):
        raise InputError(f"{step_name}: expected an integer >= 1, found {step!r}")
    if max_frames is not None and not _int_at_least(max_frames, 1):
        raise InputError(f"max_frames: expected None or an integer >= 1, found {max_frames!r}")
    return int(step), None if max_frames is None else int(max_frames)


def iter_video_frames(
    source: str | os.PathLike | int, *, step: int = 1, max_frames: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame_index, RGB uint8 [H, W, 3]) from a video file or a camera.

    `source` is a video path or an integer camera index (OpenCV's VideoCapture; a
    CLI should turn "0" into 0 itself).
    `frame_index` counts decoded frames from 0, so it is stable for naming outputs;
    with `step` > 1 only every step-th frame is yielded (the others are grabbed, not
    decoded). `max_frames` bounds the number yielded. Camera streams end when the
    camera stops delivering frames or `max_frames` is reached.
    """
    step, max_frames = check_frame_span(step, max_frames)
    cv2 = _cv2()
    if isinstance(source, bool) or not isinstance(source, (int, str, os.PathLike)):
        raise InputError(f"video source: expected a path or a camera index, found {type(source).__name__}")
    name = f"camera {source}" if isinstance(source, int) else str(source)
    if not isinstance(source, int):
        p = Path(source)
        if not p.is_file():
            raise InputError(f"{p}: no such video file")
        if p.stat().st_size == 0:
            raise InputError(f"{p}: empty file (0 bytes)")
        source = str(p)
    cap = cv2.VideoCapture(source)
    try:
        if not cap.isOpened():
            raise InputError(f"{name}: OpenCV cannot open it as a video or camera stream")
        index = 0
        yielded = 0
        while max_frames is None or yielded < max_frames:
            if index % step == 0:
                ok, frame = cap.read()
                if not ok:
                    break
                yielded += 1
                # OpenCV gives BGR (or grey for some sources); hand out RGB like every other input.
                if frame.ndim == 2:
                    rgb = np.repeat(frame[:, :, None], 3, axis=2)
                else:
                    rgb = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB if frame.shape[2] == 4 else cv2.COLOR_BGR2RGB)
                yield index, as_rgb(rgb, name)
            elif not cap.grab():
                break
            index += 1
        if index == 0 and yielded == 0:
            raise InputError(f"{name}: opened but no frame could be decoded")
    finally:
        cap.release()
