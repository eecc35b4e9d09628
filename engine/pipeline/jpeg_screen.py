"""Which encoded images the device input sends to nvJPEG: a JPEG's header read from its markers
(`scan_jpeg`) and Pillow's lazy open (`screen_jpeg`), no pixel decoded.

The screen admits only JPEGs nvJPEG decodes the way libjpeg-turbo (Pillow, the CPU path) does,
and only headers complete enough that neither decoder has to guess: a decoder given a header
with a table missing may fail (libjpeg: "broken data stream") or, on nvJPEG's hardware path,
return an image without saying anything. Everything else takes the CPU path, whose checks and
messages then apply (engine.pipeline.device_input)."""
from __future__ import annotations

import io
from dataclasses import dataclass

from engine.images import EXIF_ORIENTATION, ORIENTATION_OPS

# Frame headers (SOFn) nvJPEG decodes as libjpeg-turbo does; the other kinds go to the CPU path.
_SOF_DEVICE = {0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive"}
_SOF_NAMES = {0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical progressive",
              0xC7: "hierarchical lossless", 0xC9: "arithmetic-coded", 0xCA: "arithmetic-coded progressive",
              0xCB: "arithmetic-coded lossless", 0xCD: "hierarchical arithmetic-coded",
              0xCE: "hierarchical arithmetic-coded progressive", 0xCF: "hierarchical arithmetic-coded lossless"}
# Luma sampling factors (h, v) with both chroma components at (1, 1): nvJPEG's subsamplings
# 4:4:4, 4:2:2, 4:4:0, 4:2:0, 4:1:1 and 4:1:0 (nvjpegChromaSubsampling_t).
_LUMA_SAMPLING = {(1, 1), (2, 1), (1, 2), (2, 2), (4, 1), (4, 2)}


@dataclass(frozen=True)
class JpegScan:
    """What the markers before the first scan say (see `scan_jpeg`)."""

    kind: str  # "baseline", "extended sequential" or "progressive"
    width: int
    height: int
    components: int  # 1 (grey) or 3 (YCbCr)


def _quant_tables(seg) -> set[int] | None:
    """The table ids a DQT segment defines; None when its entries do not fill it exactly."""
    ids, j = set(), 0
    while j < len(seg):
        pq, tq = seg[j] >> 4, seg[j] & 15
        if pq > 1 or tq > 3:
            return None
        j += 1 + (128 if pq else 64)
        ids.add(tq)
    return ids if j == len(seg) else None


def _huffman_tables(seg) -> set[tuple[int, int]] | None:
    """The (class 0 DC / 1 AC, id) tables a DHT segment defines; None when it is malformed."""
    ids, j = set(), 0
    while j < len(seg):
        if j + 17 > len(seg):
            return None
        tc, th = seg[j] >> 4, seg[j] & 15
        if tc > 1 or th > 3:
            return None
        j += 17 + sum(seg[j + 1:j + 17])
        ids.add((tc, th))
    return ids if j == len(seg) else None


def _first_scan_tables(seg, kind: str, frame_ids) -> set[tuple[int, int]] | str:
    """The Huffman tables the first scan (SOS segment `seg`) decodes with, or why it is damaged."""
    if len(seg) < 1 or len(seg) < 1 + 2 * seg[0] + 3 or seg[0] < 1:
        return "a scan header cut short"
    ns = seg[0]
    ss, ah = seg[1 + 2 * ns], seg[3 + 2 * ns] >> 4
    need = set()
    for k in range(ns):
        cs, td, ta = seg[1 + 2 * k], seg[2 + 2 * k] >> 4, seg[2 + 2 * k] & 15
        if cs not in frame_ids:
            return "a scan of a component the frame does not have (a damaged header)"
        if kind != "progressive":
            need |= {(0, td), (1, ta)}
        elif ss == 0:
            if ah == 0:  # a DC first scan; DC refinement reads raw bits
                need.add((0, td))
        else:
            need.add((1, ta))
    return need


def scan_jpeg(data) -> JpegScan | str:
    """The frame header of a JPEG held in `data` (bytes-like), read from its markers up to the
    first scan; or a string saying why nvJPEG should not decode it the way libjpeg-turbo (Pillow)
    does. Reads no pixel; stops at the first scan, so its cost is the header's size.

    Refused: no SOI marker, a header cut short or with bytes between segments, a frame kind other
    than baseline/extended/progressive Huffman (lossless, hierarchical, arithmetic-coded), samples
    other than 8-bit, other than 1 or 3 components (CMYK, YCCK), RGB-coded 3-component JPEGs
    (Adobe transform 0 or component ids 'R','G','B': libjpeg reads them as RGB, nvJPEG as YCbCr),
    chroma subsamplings nvJPEG does not name, a quantisation table the frame uses or a Huffman
    table the first scan uses that no segment before the scan defines (libjpeg fails on the first,
    supplies the standard tables for the second; nvJPEG may do either silently), a first scan of a
    component the frame lacks, and no end-of-image marker after the first scan (a truncated file:
    the CPU path reports it)."""
    mv = memoryview(data).cast("B")
    n = len(mv)
    if n < 4 or mv[0] != 0xFF or mv[1] != 0xD8:
        return "not a JPEG (no start-of-image marker)"
    i, sof, adobe, sos_end = 2, None, None, None
    quant: set[int] = set()
    huff: set[tuple[int, int]] = set()
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
            # (component id, h, v, quantisation table id)
            comps = [(seg[6 + 3 * k], seg[7 + 3 * k] >> 4, seg[7 + 3 * k] & 15, seg[8 + 3 * k])
                     for k in range(seg[5])]
            sof = (_SOF_DEVICE[marker], seg[0], (seg[1] << 8) | seg[2], (seg[3] << 8) | seg[4], comps)
        elif marker == 0xDB:
            ids = _quant_tables(seg)
            if ids is None:
                return "a damaged quantisation table segment"
            quant |= ids
        elif marker == 0xC4:
            ids = _huffman_tables(seg)
            if ids is None:
                return "a damaged Huffman table segment"
            huff |= ids
        elif marker == 0xEE and bytes(seg[:5]) == b"Adobe" and len(seg) >= 12:
            adobe = seg[11]
        elif marker == 0xDA:
            if sof is None:
                return "a scan before the frame header"
            need = _first_scan_tables(seg, sof[0], {c[0] for c in sof[4]})
            if isinstance(need, str):
                return need
            if need - huff:
                return "a Huffman table the first scan uses is not defined before it"
            sos_end = i + length
        i += length
    kind, precision, height, width, comps = sof
    if precision != 8:
        return f"{precision}-bit samples"
    if len(comps) not in (1, 3):
        return f"{len(comps)} colour components (CMYK or YCCK)"
    if any(c[3] not in quant for c in comps):
        return "a quantisation table the frame uses is not defined (a damaged header)"
    if len(comps) == 3:
        if adobe == 0 or tuple(c[0] for c in comps) == (82, 71, 66):
            return "an RGB-coded JPEG (not YCbCr)"
        if comps[1][1:3] != (1, 1) or comps[2][1:3] != (1, 1) or comps[0][1:3] not in _LUMA_SAMPLING:
            return "a chroma subsampling nvJPEG does not decode (" + \
                   ", ".join(f"{h}x{v}" for _, h, v, _ in comps) + ")"
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
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
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
    try:
        orientation = orientation if orientation in ORIENTATION_OPS else 1
    except TypeError:  # an unhashable value in a damaged EXIF block: exif_transpose ignores it too
        orientation = 1
    swap = orientation >= 5
    return Screened(scan, orientation, w if swap else h, h if swap else w)
