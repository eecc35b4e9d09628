"""PNG files, written atomically (engine.fileio.atomic_write): never a partial file."""
from __future__ import annotations

import io
import os

import numpy as np

from engine.errors import InputError, describe_array
from engine.fileio import atomic_write


def write_png(path: str | os.PathLike, rgb, *, text: dict[str, str] | None = None) -> None:
    """Write uint8 [H, W, 3] (RGB) or [H, W] (grey) to `path` as a PNG.

    text: {keyword: value} stored as PNG text chunks (tEXt, or iTXt for text beyond Latin-1),
    e.g. {"Software": ..., "Description": ...}: what produced the picture, readable by any PNG
    tool. Keywords are 1-79 Latin-1 characters (the PNG rule).

    The image is encoded in memory by Pillow first, then written to a temporary name beside
    `path` and renamed, so an error or Ctrl-C leaves either the old file or the new one.
    Errors: InputError for another shape or dtype, or a folder that does not exist or cannot be
    written."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)) or 0 in a.shape:
        raise InputError(f"write_png: {os.fspath(path)}: expected a non-empty uint8 image [H, W, 3] or [H, W], "
                         f"found {describe_array(a)}")
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        if not (isinstance(key, str) and 1 <= len(key) <= 79 and key.isprintable() and _latin1(key)
                and isinstance(value, str)):
            raise InputError(f"write_png: {os.fspath(path)}: text: expected keywords of 1-79 Latin-1 characters "
                             f"with str values, found {key!r}: {type(value).__name__}")
        info.add_text(key, value)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a), "RGB" if a.ndim == 3 else "L").save(buf, format="PNG", pnginfo=info)
    with atomic_write(path, "wb") as f:
        f.write(buf.getbuffer())


def _latin1(s: str) -> bool:
    try:
        s.encode("latin-1")
        return True
    except UnicodeEncodeError:
        return False
