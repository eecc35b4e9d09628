"""Images in: files, encoded bytes, numpy arrays, folders, globs, videos and cameras.

Everything that leaves this module is an RGB uint8 array of shape [H, W, 3],
C-contiguous and writable. Every failure raises `engine.errors.InputError` naming
the file (or argument) and what was wrong; no raw Pillow/OpenCV exception escapes.

Public API
----------
- ``load_image(source, *, max_pixels=DEFAULT) -> np.ndarray``  path, bytes or array
- ``decode_image(data, name="<bytes>", *, max_pixels=DEFAULT) -> np.ndarray``
- ``image_size(source) -> (width, height)``   from the header alone, as load_image would give
- ``as_rgb(array, name="array") -> np.ndarray``           validate/convert an array
- ``expand_inputs(inputs, *, recursive=False) -> list[Path]``  folders/globs -> files
- ``is_image_path(path)``, ``is_video_path(path)``
- ``iter_video_frames(source, *, step=1, max_frames=None) -> Iterator[(int, ndarray)]``;
  a video that ends early raises ``VideoFramesError`` (an InputError naming the frame)
- ``declared_bytes_missing(path) -> int``  a video container's own size check (AVI, MP4, MKV)

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


def image_size(source: Source, *, max_pixels=DEFAULT) -> tuple[int, int]:
    """(width, height) of the array `load_image(source)` gives, from the file's header alone (no
    pixel is decoded): EXIF orientations that rotate by 90 degrees (5..8) swap them. Raises
    InputError as load_image would for a missing, empty or unrecognised file, or one over the
    pixel limit."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, np.ndarray):
        a = as_rgb(source)
        return int(a.shape[1]), int(a.shape[0])
    if isinstance(source, (bytes, bytearray, memoryview)):
        fp, name = io.BytesIO(bytes(source)), "<bytes>"
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        try:
            fp = open(name, "rb")
        except OSError as e:
            raise InputError(f"{name}: cannot open: {e.strerror or e}") from None
    else:
        raise InputError(f"image source: expected a path, bytes or numpy array, found {type(source).__name__}")
    limit = _pixel_limit(max_pixels)
    with fp:
        try:
            with Image.open(fp) as im:
                w, h = im.size
                swap = im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
        except UnidentifiedImageError:
            raise InputError(f"{name}: not a recognised image format (is it really an image?)") from None
        except Exception as e:  # Pillow's header parsers raise many kinds; each is this input's problem
            raise InputError(f"{name}: cannot read the image header: {type(e).__name__}: {e}") from None
    if limit is not None and w * h > limit:
        raise InputError(f"{name}: image too large: {w}x{h} = {w * h} pixels, limit is {limit}")
    return (h, w) if swap else (w, h)


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
    return _rgb_array(im)


_STRIP_PIXELS = 1 << 22  # 4 megapixels: 12 MB of RGB per strip


def _rgb_array(im) -> np.ndarray:
    """An RGB Pillow image as a writable, contiguous uint8 [H, W, 3] array.

    np.array(im) goes through im.tobytes(): for an 81-megapixel photo that is a 243 MB bytes
    object beside Pillow's own 324 MB (it keeps RGB as 4 bytes a pixel) and the 243 MB array.
    Copying strip by strip keeps the extra at one strip (benchmark row reconstruct_81mp)."""
    w, h = im.size
    out = np.empty((h, w, 3), np.uint8)
    rows = max(1, _STRIP_PIXELS // max(w, 1))
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        strip = im if (y0 == 0 and y1 == h) else im.crop((0, y0, w, y1))
        out[y0:y1] = np.frombuffer(strip.tobytes(), np.uint8).reshape(y1 - y0, w, 3)
    return out


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


class VideoFramesError(InputError):
    """A video stopped delivering frames before its declared end: `frame` is the first
    frame index that failed, `declared` the container's frame count. Frames before
    `frame` were delivered (and are good by the rule in `iter_video_frames`)."""

    def __init__(self, message: str, *, frame: int, declared: int):
        super().__init__(message)
        self.frame = frame
        self.declared = declared


def _declared_frames(cap, cv2) -> int | None:
    """The container's frame count, or None when it states none (cameras, streams, WebM
    from a browser) or states nonsense."""
    n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    if not (n == n) or n <= 0 or n >= 2 ** 62:  # NaN, unknown (-1 or 0), absurd
        return None
    return int(round(n))


def _vint(b: bytes, pos: int, keep_marker: bool) -> tuple[int | None, int]:
    """An EBML variable-length integer at b[pos:]: (value or None when unknown/invalid, its length)."""
    if pos >= len(b) or b[pos] == 0:
        return None, 1
    n = 8 - b[pos].bit_length() + 1  # length from the leading zero bits
    if pos + n > len(b):
        return None, n
    v = int.from_bytes(b[pos:pos + n], "big")
    if not keep_marker:
        v &= (1 << (7 * n)) - 1
        if v == (1 << (7 * n)) - 1:  # all ones: "unknown size" (live streams)
            return None, n
    return v, n


def declared_bytes_missing(path: str | os.PathLike) -> int:
    """How many bytes, at least, the container's own top-level sizes say are missing from the end
    of the file (0 when complete, or when its format or sizes cannot tell): RIFF (AVI, also
    OpenDML's chained RIFF chunks), ISO BMFF (MP4, MOV, M4V: top-level boxes) and EBML
    (MKV, WebM: EBML header and Segment; a live stream's unknown size tells nothing).
    Reads only the element headers (a few bytes per top-level element)."""
    size = os.path.getsize(path)
    end = 0
    with open(path, "rb") as f:
        head = f.read(16)
        if head[:4] == b"RIFF":
            pos = 0
            while pos + 8 <= size:
                f.seek(pos)
                h = f.read(8)
                if h[:4] != b"RIFF":
                    break
                n = int.from_bytes(h[4:8], "little")
                pos += 8 + n + (n & 1)
                end = pos - (n & 1)  # a pad byte at the very end is optional in practice
        elif head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
            pos = 0
            while pos + 8 <= size:
                f.seek(pos)
                h = f.read(16)
                n = int.from_bytes(h[:4], "big")
                if n == 1 and len(h) >= 16:  # 64-bit size
                    n = int.from_bytes(h[8:16], "big")
                elif n == 0:  # to the end of the file
                    return 0
                if n < 8:
                    return 0  # not a size we can follow
                pos += n
                end = pos
        elif head[:4] == b"\x1a\x45\xdf\xa3":
            pos = 0
            while pos < size:
                f.seek(pos)
                h = f.read(12)
                _, n_id = _vint(h, 0, True)
                length, n_len = _vint(h, n_id, False)
                if length is None:
                    return 0
                pos += n_id + n_len + length
                end = pos
    return max(end - size, 0)


def iter_video_frames(
    source: str | os.PathLike | int, *, step: int = 1, max_frames: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame_index, RGB uint8 [H, W, 3]) from a video file or a camera.

    `source` is a video path or an integer camera index (OpenCV's VideoCapture; a
    CLI should turn "0" into 0 itself).
    `frame_index` counts decoded frames from 0, so it is stable for naming outputs;
    with `step` > 1 only every step-th frame is yielded (the others are grabbed, not
    converted). `max_frames` bounds the number yielded. Camera streams end when the
    camera stops delivering frames or `max_frames` is reached.

    A video that ends early raises VideoFramesError (an InputError) after the good
    frames, naming the first failed frame and the declared count. The rule:
    - A file is complete when it delivers the D frames its container declares
      (CAP_PROP_FRAME_COUNT). When OpenCV stops after K < D frames (the file is cut
      short, or its data fails to decode midway: FFmpeg gives up after a run of
      undecodable packets), frames K-1 .. D-1 failed.
    - Frame K-1 is the frame at the break. FFmpeg decodes a packet cut by the end of
      the file without an error, concealing the missing part (MJPEG/MPEG-4 in AVI: a
      partly grey frame), and OpenCV exposes neither the packet's corrupt flag nor the
      bytes consumed. So a frame is handed out only once a later frame has decoded
      (or it is frame D-1): the last frame before a break is dropped, even where the
      demuxer had already dropped the cut packet itself (MKV), which costs one good
      frame of a broken file and never passes on a damaged one.
    - With `max_frames`, one more frame is grabbed after the last one wanted, to
      confirm it; a video cut after that point is not a failure of this call.
    Not detectable through OpenCV: a cut inside the very last frame's data (the count
    is complete), and damage inside a frame that still decodes. Containers without a
    stored count (D unknown: cameras, browser WebM) are taken as they come; for MKV/WebM
    OpenCV may estimate D from duration x fps, which a variable-frame-rate file can miss.
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
        declared, missing = None, 0
        if not isinstance(source, int):
            declared = _declared_frames(cap, cv2)
            try:
                missing = declared_bytes_missing(source)
            except OSError as e:
                raise InputError(f"{name}: cannot read: {e.strerror or e}") from None
        yield from _frames(cap, cv2, name, step, max_frames, declared, missing)
    finally:
        cap.release()


def _frames(cap, cv2, name: str, step: int, max_frames: int | None, declared: int | None, missing: int):
    def rgb(frame):
        # OpenCV gives BGR (or grey for some sources); hand out RGB like every other input.
        if frame.ndim == 2:
            return as_rgb(np.repeat(frame[:, :, None], 3, axis=2), name)
        code = cv2.COLOR_BGRA2RGB if frame.shape[2] == 4 else cv2.COLOR_BGR2RGB
        return as_rgb(cv2.cvtColor(frame, code), name)

    index = 0  # frames consumed so far (read or grabbed)
    yielded = 0
    held = None  # (index, BGR frame): decoded, handed out once a later frame decodes too
    while max_frames is None or yielded < max_frames:
        want = index % step == 0 and (max_frames is None or yielded + (held is not None) < max_frames)
        if want:
            ok, frame = cap.read()
        else:  # a frame between wanted ones, or the one that confirms the last wanted frame
            ok = cap.grab()
        if not ok:
            break
        if held is not None:  # a later frame decoded: the held one was whole
            yield held[0], rgb(held[1])
            yielded += 1
            held = None
        if want:
            held = (index, frame)
        index += 1
        if held is not None and not missing and (declared is None or held[0] >= declared - 1):
            # Nothing to confirm against (a camera, no stored count), or the declared last frame
            # of a file that holds every byte its container declares.
            yield held[0], rgb(held[1])
            yielded += 1
            held = None
    else:
        return
    # The stream ended after `index` frames.
    if index == 0:
        raise InputError(f"{name}: opened but no frame could be decoded")
    short = declared is not None and index < declared
    if short or missing:
        first = index - 1  # the frame at the break: possibly incomplete, never handed out
        total = max(declared or 0, index)
        dropped = held is not None and held[0] == first
        why = (f"the video ends early, after {index} of its {declared} declared frames (cut short, or part of its "
               "data does not decode)" if short else
               f"the file is cut short: its container declares {missing} more bytes than it holds")
        raise VideoFramesError(
            f"{name}: frame {first} of {total}: {why}; frames {first}..{total - 1} count as failed"
            + (f"; frame {first}, the last one read, was dropped: it may hold cut-off data that the decoder "
               "concealed" if dropped else ""), frame=first, declared=total)
    if held is not None:  # ended where declared, or no count to check: nothing is missing
        yield held[0], rgb(held[1])
