"""Fuzz target: image decoding (engine.images.decode_image, the path of every photo, and
image_size, which reads only the header). Issue 13 found images clean; this keeps them so.

A bad image must raise InputError; a decoded one must be RGB uint8 [H, W, 3], C-contiguous,
and image_size of the same bytes must give its (W, H): `evaluate --face center` relies on it.
The pixel limit is lowered to 4 megapixels so that each input decodes in milliseconds (the
decompression-bomb check is the same code at any limit)."""
from __future__ import annotations

import io

import numpy as np

from engine.errors import InputError
from engine.images import decode_image, image_size

EXPECTED = (InputError,)
CI_RUNS = 3000
MAX_PIXELS = 4 * 2 ** 20


def seeds() -> list[bytes]:
    """Small images of every format and mode Pillow writes: PNG (RGB, RGBA, palette, grey,
    16-bit grey), JPEG (RGB, grey, CMYK, EXIF-rotated), WebP (lossy, lossless), BMP, TIFF
    (16-bit RGB, multi-page), GIF."""
    from PIL import Image

    y, x = np.mgrid[0:12, 0:17]
    rgb = np.stack([x * 13 % 256, y * 19 % 256, (x * 7 + y * 11) % 256], axis=2).astype(np.uint8)
    base = Image.fromarray(rgb)
    out = []

    def save(im, fmt, **kw):
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        out.append(buf.getvalue())

    save(base, "PNG")
    save(base.convert("RGBA"), "PNG")
    save(base.convert("P"), "PNG", transparency=3)
    save(base.convert("L"), "PNG")
    save(Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257)), "PNG")
    save(base, "JPEG", quality=80)
    save(base.convert("L"), "JPEG")
    save(base.convert("CMYK"), "JPEG")
    exif = base.getexif()
    exif[0x0112] = 6  # rotated: image_size must swap W and H
    save(base, "JPEG", exif=exif)
    save(base, "WEBP", quality=60)
    save(base, "WEBP", lossless=True)
    save(base, "BMP")
    save(Image.fromarray(np.repeat(rgb[:, :, :1].astype(np.uint16) * 200, 1, axis=2)[:, :, 0]), "TIFF")
    save(base, "TIFF", save_all=True, append_images=[base.convert("L")])
    save(base.convert("P"), "GIF")
    return out


def one_input(data: bytes) -> None:
    try:
        a = decode_image(data, "fuzz", max_pixels=MAX_PIXELS)
    except InputError:
        try:
            image_size(data, max_pixels=MAX_PIXELS)  # may succeed (a valid header), or refuse: typed
        except InputError:
            pass
        return
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and a.flags.c_contiguous, a.shape
    assert image_size(data, max_pixels=MAX_PIXELS) == (a.shape[1], a.shape[0]), (image_size(data), a.shape)
