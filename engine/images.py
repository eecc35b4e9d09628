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
- ``expand_inputs(inputs, *, recursive=False) -> list[Path]``  folders/globs -> image and video files
- ``expand_input(item, *, recursive=False) -> Expanded``  one argument: its files, the folder they were
  found in, the sub-folders not searched
- ``is_image_path(path)``, ``is_video_path(path)``, ``is_media_path(path)``
- ``pixel_limit(max_pixels) -> int | None``  what a max_pixels argument stands for (checked)
- ``too_large(name, width, height, limit) -> InputError``  the one pixel-limit message;
  ``set_limit_hint(text)`` says how to raise the limit (the CLI: its option and variable)
- ``iter_video_frames(source, *, step=1, max_frames=None) -> Iterator[(int, ndarray)]``;
  a video that ends early raises ``VideoFramesError`` (an InputError naming the frame)
- ``declared_bytes_missing(path) -> int``  a video container's own size check (AVI, MP4, MKV)

Conventions
-----------
- Decoding uses Pillow. EXIF orientation is applied (as ``ImageOps.exif_transpose`` does, on the
  array: ``orient``) so the array is what a viewer shows.
- The white level comes from what the file declares, not from Pillow's mode alone: 16-bit
  data is scaled to 8 bits by round(v * 255 / 65535) where we see the 16-bit values (grey
  PNG/TIFF with 16 bits per sample, PGM with maxval > 255, uint16 arrays). For 16-bit RGB(A)
  files Pillow itself keeps the high byte (v >> 8), which differs from rounding by at most 1;
  we accept that rather than bypass Pillow's decoder. 32-bit and signed integer grey (TIFF)
  declares no white level: values within 0..255 are read as 8-bit (as Pillow's convert("L")
  shows them), anything else is refused naming the mode, bit depth and value range; float (F)
  is refused. A TIFF Pillow would decode wrongly without saying so (16-bit MinIsWhite: not
  inverted; uncompressed planar > 8 bits: bytes as pixels) is inverted or refused.
- Alpha is dropped (not composited): the network never saw transparency.
- CMYK and other colour spaces go through Pillow's ``convert("RGB")``.
- Multi-frame files (multi-page TIFF, animated WebP) give their first frame.
- The pixel limit (decompression-bomb guard) is ours alone: an image over it is refused with
  "WxH = P pixels, limit is L (raise ...)", whatever Pillow's own guard says. Pillow refuses
  images over twice its Image.MAX_IMAGE_PIXELS inside Image.open, before we see the size; such
  a file's header is then read without Pillow's guard and our limit decides (see `_open`).
"""
from __future__ import annotations

import glob
import io
import logging
import os
import re
import struct
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Union

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
EXIF_ORIENTATION = 0x0112
log = logging.getLogger("engine.images")
# How a user raises the pixel limit, for the "image too large" message: the API's parameter by
# default; the command line sets its option and environment variable (set_limit_hint).
API_LIMIT_HINT = "max_pixels="
_limit_hint = API_LIMIT_HINT


def set_limit_hint(text: str) -> str:
    """Say how the pixel limit is raised where this process runs (e.g. the CLI: "--max-pixels /
    $ENGINE3DMM_MAX_PIXELS"); returns the previous hint, to put back."""
    global _limit_hint
    previous, _limit_hint = _limit_hint, str(text)
    return previous


def too_large(name: str, width: int, height: int, limit: int) -> InputError:
    """The one message for an image over the pixel limit (every reader of this module uses it)."""
    return InputError(f"{name}: image too large: {width}x{height} = {width * height} pixels, limit is {limit} "
                      f"(raise {_limit_hint})")
Source = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]


def pixel_limit(max_pixels) -> int | None:
    """The pixel limit `max_pixels` stands for: DEFAULT -> Pillow's Image.MAX_IMAGE_PIXELS now (None
    when the user lifted it), None -> None (no limit), a positive integer -> itself; InputError
    naming max_pixels otherwise."""
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
    None disables the check. This limit alone decides: Pillow's own guard (2x its
    MAX_IMAGE_PIXELS) never refuses an image this limit admits, and an image over it is an
    InputError "WxH = P pixels, limit is L (raise max_pixels=)".
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


def _open(fp):
    """Image.open, except that Pillow's decompression-bomb error (above 2x its MAX_IMAGE_PIXELS,
    raised before the caller sees the size) does not decide: the header is read again without
    that check, so the caller's limit, checked on the size, is the only one (one message)."""
    from PIL import Image

    try:
        return Image.open(fp)
    except Image.DecompressionBombError:
        return _open_unguarded(fp)


def _open_unguarded(fp):
    """What Image.open does (the first registered format that accepts the file's prefix and
    parses its header), without the bomb check: reads the header only, decodes nothing.
    Image.open has just found this file's format, so its plugin is loaded and comes first in
    the same order."""
    from PIL import Image, UnidentifiedImageError

    fp.seek(0)
    prefix = fp.read(16)
    for fmt in list(Image.ID):
        factory, accept = Image.OPEN[fmt]
        ok = not accept or accept(prefix)
        if not ok or isinstance(ok, str):  # a str: "not this format", with a warning text
            continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):  # what Image.open skips too
            continue
    raise UnidentifiedImageError("cannot identify image file")


def _decode(fp, name: str, max_pixels) -> np.ndarray:
    from PIL import UnidentifiedImageError

    limit = pixel_limit(max_pixels)
    try:
        try:
            im = _open(fp)
        except UnidentifiedImageError:
            raise InputError(f"{name}: not a recognised image format (is it really an image?)") from None
        with im:
            w, h = im.size
            if limit is not None and w * h > limit:
                raise too_large(name, w, h, limit)
            if w == 0 or h == 0:
                raise InputError(f"{name}: image has zero size ({w}x{h})")
            samples = _samples(im, name)  # from the header, before load() empties im.tile
            im.load()  # decode now: truncation errors surface here, inside our handler
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            rgb = _rgb_array(im, name, samples)
            im.close()  # frees Pillow's copy (4 bytes a pixel) now, before the orientation's copy
        return orient(rgb, orientation)
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
    from PIL import UnidentifiedImageError

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
    limit = pixel_limit(max_pixels)
    with fp:
        try:
            with _open(fp) as im:
                w, h = im.size
                if limit is not None and w * h > limit:  # before EXIF, which may read past the header
                    raise too_large(name, w, h, limit)
                swap = im.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
        except EngineError:
            raise
        except UnidentifiedImageError:
            raise InputError(f"{name}: not a recognised image format (is it really an image?)") from None
        except Exception as e:  # Pillow's header parsers raise many kinds; each is this input's problem
            raise InputError(f"{name}: cannot read the image header: {type(e).__name__}: {e}") from None
    return (h, w) if swap else (w, h)


# EXIF orientation -> the numpy steps that show the stored image as a viewer does, exactly
# Pillow's ImageOps.exif_transpose: 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM,
# 5 TRANSPOSE, 6 ROTATE_270, 7 TRANSVERSE, 8 ROTATE_90 (tests/test_huge_memory.py checks each
# against Pillow). engine.pipeline.orientation applies the same table by strides.
ORIENTATION_OPS = {1: (), 2: ("flip_x",), 3: ("flip_x", "flip_y"), 4: ("flip_y",), 5: ("transpose",),
                   6: ("transpose", "flip_x"), 7: ("transpose", "flip_x", "flip_y"), 8: ("transpose", "flip_y")}


def orient(rgb: np.ndarray, orientation) -> np.ndarray:
    """RGB [H, W, 3] as stored -> as EXIF `orientation` shows it (values other than 2..8: as
    stored, like Pillow). A contiguous copy when it moves pixels: done on the 3-byte array
    after Pillow's 4-byte image is freed, an 81-megapixel photo's rotation costs 243 MB where
    exif_transpose on Pillow's image cost 324 MB more at the peak."""
    ops = ORIENTATION_OPS.get(orientation, ()) if isinstance(orientation, int) else ()
    if not ops:
        return rgb
    v = rgb
    for op in ops:
        v = v.transpose(1, 0, 2) if op == "transpose" else v[:, ::-1] if op == "flip_x" else v[::-1]
    out = np.empty(v.shape, np.uint8)
    rows = max(1, _STRIP_PIXELS // max(v.shape[1], 1))
    for y0 in range(0, v.shape[0], rows):  # in strips: numpy's strided copy stays in cache
        out[y0:y0 + rows] = v[y0:y0 + rows]
    return out


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")  # Pillow's unsigned 16-bit grey modes


class _Samples(NamedTuple):
    """What a file declares about its samples, where Pillow's mode alone does not say how to
    read them: mode I holds 16-bit PNG/PPM data (white 65535) as well as 32-bit and signed 16-bit
    TIFF data (white level not declared anywhere)."""

    bits: int  # bits per sample as stored (e.g. 16, 32); 8 when nothing says otherwise
    signed: bool  # stored as signed integers (TIFF SampleFormat 2)
    white: int | None  # the value that is white for an integer grey mode; None: not declared
    invert: bool  # TIFF PhotometricInterpretation 0 (MinIsWhite) that Pillow left as stored


def _samples(im, name: str) -> _Samples:
    """The declared sample format of an opened (not yet loaded) Pillow image; InputError for a
    file Pillow would decode wrongly without saying so."""
    rawmode = ""
    if im.tile:
        args = im.tile[0].args
        rawmode = args[0] if isinstance(args, tuple) and args and isinstance(args[0], str) else str(args or "")
    tags = getattr(im, "tag_v2", None) if im.format == "TIFF" else None
    bits = signed = None
    if tags is not None:
        per = tags.get(258, (1,))  # BitsPerSample
        bits = max(per) if isinstance(per, tuple) and per else int(per)
        fmt = tags.get(339, 1)  # SampleFormat: 1 unsigned, 2 signed, 3 float
        signed = 2 in (fmt if isinstance(fmt, tuple) else (fmt,))
        if tags.get(284, 1) == 2 and bits > 8 and im.tile and im.tile[0].codec_name == "raw":
            # Pillow reads each plane of an uncompressed planar TIFF with one byte a sample (its
            # tile rawmode is one letter of e.g. "RGB;16L"): bytes as pixels, a wrong image.
            raise InputError(f"{name}: uncompressed TIFF with {bits}-bit samples in separate planes "
                             "(PlanarConfiguration 2): Pillow decodes it wrongly; save it with "
                             "contiguous samples (PlanarConfiguration 1) or with compression")
    m = re.match(r"[IF];(\d+)(B?)(S?)", rawmode)
    if bits is None and m:
        bits, signed = int(m.group(1)), bool(m.group(3))
    if bits is None:
        bits = 32 if im.mode in ("I", "F") else 16 if im.mode in _SIXTEEN_BIT else 8
    signed = bool(signed)
    if im.mode in _SIXTEEN_BIT or (im.format == "PPM" and im.mode == "I"):
        white = 65535  # 16 bits per sample (PNG, TIFF), or a PGM whose maxval Pillow scaled to 65535
    elif im.mode == "I" and bits == 16 and not signed:
        white = 65535  # 16-bit grey that a Pillow version hands out as I (e.g. PNG)
    else:
        white = None
    invert = tags is not None and tags.get(262) == 0 and im.mode in _SIXTEEN_BIT + ("I",)
    return _Samples(bits, signed, white, invert)


_STRIP_PIXELS = 1 << 22  # 4 megapixels: 12 MB of RGB per strip


def _rgb_array(im, name: str, samples: _Samples | None = None) -> np.ndarray:
    """A decoded Pillow image as a writable, contiguous uint8 RGB [H, W, 3] array.

    Converted strip by strip, so the only full-size buffers are Pillow's decoded image and the
    array: np.array(im) goes through im.tobytes() (a 243 MB bytes object at 81 megapixels), and
    im.convert("RGB") of a CMYK, palette or grey image is a second full image in Pillow's 4 bytes
    a pixel (324 MB). Every conversion to RGB is per pixel (no dithering), so strips give the
    same pixels as the whole (benchmark row reconstruct_81mp, tests/test_huge_memory.py).

    Integer grey (modes I;16*, I) goes by what the file declares (`samples`, from `_samples`):
    16-bit unsigned data is scaled by round(v * 255 / 65535) (convert("L") would clip at 255);
    data whose white level nothing declares (32-bit or signed integer TIFF) is taken as 8-bit
    values, as Pillow's convert("L") shows it, when every value is within 0..255, and refused
    otherwise (convert("L") would clip it to a white or black image). Float (F) is refused:
    its white level (1.0? 255?) is not declared either."""
    if samples is None:
        samples = _Samples(32 if im.mode == "I" else 16, False,
                           65535 if im.mode in _SIXTEEN_BIT else None, False)
    if im.mode == "F":
        raise InputError(f"{name}: {samples.bits}-bit float image (Pillow mode F): its white level (1.0 or 255) "
                         "is not declared; save it with 8- or 16-bit integer samples")
    w, h = im.size
    grey = im.mode in _SIXTEEN_BIT or im.mode == "I"
    out = np.empty((h, w, 3), np.uint8)
    rows = max(1, _STRIP_PIXELS // max(w, 1))
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        strip = im if (y0 == 0 and y1 == h) else im.crop((0, y0, w, y1))
        if grey:
            out[y0:y1] = _grey_to_8bit(np.asarray(strip), samples, im.mode, name)[:, :, None]
            continue
        if strip.mode != "RGB":
            strip = strip.convert("RGB")  # L, 1, P, RGBA, LA, PA, CMYK, YCbCr, LAB, HSV ...
        out[y0:y1] = np.frombuffer(strip.tobytes(), np.uint8).reshape(y1 - y0, w, 3)
    return out


def _grey_to_8bit(a: np.ndarray, samples: _Samples, mode: str, name: str) -> np.ndarray:
    """One strip of integer grey (I;16*, I) -> uint8, by the declared white level (see _rgb_array)."""
    if samples.white == 65535:
        a = a.astype(np.uint32)
        if samples.invert:
            a = 65535 - a
        return _scale16(a)
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 255:
        kind = f"{samples.bits}-bit {'signed' if samples.signed else 'unsigned'} integer"
        raise InputError(f"{name}: {kind} image (Pillow mode {mode}) with values {lo}..{hi}: its white level is "
                         "not declared (only values within 0..255 are read, as 8-bit); save it with 8- or "
                         "16-bit unsigned samples")
    a = a.astype(np.uint8)
    return 255 - a if samples.invert else a


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


def is_media_path(path: str | os.PathLike) -> bool:
    """An image or a video by its extension: what a folder or a pattern contributes."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


_GLOB_CHARS = set("*?[")
# Directory entries looked at, per expansion, to count the sub-folders a non-recursive
# expansion leaves out (each is searched until its first image or video): bounds the cost of
# a folder argument above a huge tree. Past it the count is a lower bound ("at least").
_UNSEARCHED_SCAN_LIMIT = 100_000


class Expanded(NamedTuple):
    """What one input argument expands to (`expand_input`).

    files: the files, each the argument joined with its path below it, sorted by path.
    root: the folder the files were found in (the folder argument, or a pattern's leading
        folder); None for a file named directly. Box sidecars match keys below it.
    unsearched: sub-folders of a folder argument that hold images or videos and were not
        searched (recursive=False); `unsearched_exact` is False when counting them stopped at
        _UNSEARCHED_SCAN_LIMIT entries (then there are at least that many).
    skipped: (path, why) of each entry below a folder argument that should have been searched
        but could not be: an image or video name that is a dangling (or looping) symbolic link,
        a sub-folder that cannot be read. Callers report each as that entry's failure."""

    files: list
    root: Path | None
    unsearched: list
    unsearched_exact: bool = True
    skipped: tuple = ()


def _entries(folder: Path, recursive: bool, skipped: list) -> Iterator[Path]:
    """The entries of `folder` (with `recursive`, of its sub-folders too, symbolic links to folders
    not followed, as Path.rglob does); a sub-folder that cannot be read goes into `skipped`. The
    folder itself unreadable is an InputError."""
    if not recursive:
        try:
            yield from list(folder.iterdir())
        except OSError as e:
            raise InputError(f"{folder}: cannot read the folder: {e.strerror or e}") from None
        return

    def unreadable(e: OSError) -> None:
        if Path(e.filename) == folder:
            raise InputError(f"{folder}: cannot read the folder: {e.strerror or e}")
        why = f"{e.filename}: cannot read this sub-folder ({e.strerror or e}); its images and videos were skipped"
        skipped.append((Path(e.filename), why))

    for top, dirs, files in os.walk(folder, onerror=unreadable):
        base = Path(top)
        yield from (base / n for n in dirs + files)


def _broken_link(q: Path) -> str | None:
    """Why the image or video name `q` cannot be read, when it is a symbolic link that leads
    nowhere (a missing target, a loop), else None."""
    if not (is_media_path(q) and q.is_symlink()) or q.exists():
        return None
    try:
        target = os.readlink(q)
    except OSError:
        target = "?"
    return f"{q}: a symbolic link to {target}, which " + (
        "does not exist" if not os.path.lexists(os.path.join(q.parent, target)) or target == "?"
        else "cannot be followed (a loop of links?)") + "; skipped"


def _sort_paths(paths) -> list[Path]:
    return sorted(paths, key=lambda q: q.as_posix())


def _holds_media(folder: str, budget: list[int]) -> bool | None:
    """Whether `folder` holds an image or a video at any depth (None: the budget ran out first)."""
    stack = [folder]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for e in it:
                budget[0] -= 1
                if budget[0] < 0:
                    return None
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif is_media_path(e.name) and e.is_file():
                        return True
                except OSError:
                    continue
    return False


def _pattern_root(pattern: str) -> Path:
    """The leading folder of a glob pattern: its components before the first with * ? [."""
    parts = Path(pattern).parts
    head = []
    for part in parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        head.append(part)
    return Path(*head) if head else Path(".")


def expand_input(item: str | os.PathLike, *, recursive: bool = False) -> Expanded:
    """One input argument as files (see `expand_inputs` for the rules). Raises InputError for a
    path that does not exist, or a folder or pattern that yields no image or video."""
    s = os.fspath(item)
    p = Path(s)
    if p.is_file():
        return Expanded([p], None, [])
    if p.is_dir():
        found, subdirs, skipped = [], [], []
        for q in _entries(p, recursive, skipped):
            try:
                if q.is_file() and is_media_path(q):
                    found.append(q)
                elif not recursive and q.is_dir() and not q.is_symlink():
                    subdirs.append(q)
                elif _broken_link(q):  # named as an input: it must not vanish without a word
                    skipped.append((q, _broken_link(q)))
            except OSError as e:  # an entry that vanished or cannot be looked at
                if is_media_path(q):
                    skipped.append((q, f"{q}: cannot be looked at ({e.strerror or e}); skipped"))
                continue
        budget = [_UNSEARCHED_SCAN_LIMIT]
        unsearched, exact = [], True
        for d in _sort_paths(subdirs):
            held = _holds_media(str(d), budget)
            if held is None:
                exact = False
                break
            if held:
                unsearched.append(d)
        skipped.sort(key=lambda e: e[0].as_posix())
        if not found and not skipped:
            more = ""
            if unsearched:
                more = (f"; {len(unsearched)}{'' if exact else ' or more'} of its sub-folders hold some "
                        f"(e.g. {unsearched[0].name}/): {_recursive_hint} searches them")
            raise InputError(f"{s}: folder holds no image or video files (extensions "
                             f"{', '.join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))}){more}")
        return Expanded(_sort_paths(found), p, unsearched, exact, tuple(skipped))
    if _GLOB_CHARS & set(s):
        found = [q for q in _sort_paths(Path(m) for m in glob.glob(s, recursive=True))
                 if q.is_file() and is_media_path(q)]
        if not found:
            raise InputError(f"{s}: pattern matched no image or video files")
        return Expanded(found, _pattern_root(s), [])
    raise InputError(f"{s}: no such file or folder")


# How a user asks for sub-folders, in the messages of this module (the CLI sets its option).
_recursive_hint = "recursive=True"


def set_recursive_hint(text: str) -> str:
    """Say how sub-folders are searched where this process runs (the CLI: "--recursive");
    returns the previous hint."""
    global _recursive_hint
    previous, _recursive_hint = _recursive_hint, str(text)
    return previous


def unsearched_warning(expansions: Iterable[Expanded]) -> str | None:
    """The one warning for sub-folders that a run's folder arguments did not search (None:
    there are none): how many, a few of them, and how to search them."""
    folders, exact = [], True
    for e in expansions:
        folders.extend(e.unsearched)
        exact = exact and e.unsearched_exact
    if not folders:
        return None
    shown = ", ".join(f"{d}/" for d in folders[:3]) + (" ..." if len(folders) > 3 else "")
    return (f"{len(folders)}{'' if exact else ' or more'} sub-folder(s) holding images or videos were not "
            f"searched ({shown}): {_recursive_hint} searches them")


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike], *, recursive: bool = False) -> list[Path]:
    """Expand files, folders and glob patterns into a deterministic list of files.

    - an existing file is kept as given (whatever its extension);
    - a folder contributes its image and video files (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS,
      case-insensitive), sorted by path; with `recursive` those of its sub-folders too.
      Without it, sub-folders that hold images or videos are counted, and one warning
      (logger engine.images) says how many were not searched;
    - a pattern with * ? [ is globbed (``**`` allowed); image and video files among the
      matches are kept, sorted.
    Order follows the inputs; duplicates are dropped (first occurrence wins).
    Raises InputError for a path that does not exist, or a folder/pattern with no image or
    video (a folder whose media are all in sub-folders says so, and how to search them).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[Path] = []
    seen: set[str] = set()
    expansions = [expand_input(item, recursive=recursive) for item in inputs]
    for e in expansions:
        for p in e.files:
            key = os.path.normpath(str(p))
            if key not in seen:
                seen.add(key)
                out.append(p)
    warning = unsearched_warning(expansions)
    if warning:
        log.warning(warning)
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
