"""EXIF orientation applied by strides: a decoded image seen rotated or flipped, no pixel moved.

The device input (engine.pipeline.device_input) decodes the stored image (nvJPEG applies no
orientation) and hands the crop kernel a `View` of it as the photo's viewer shows it, the way
engine.images turns the photo on the CPU (Pillow's exif_transpose)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# EXIF orientation -> the operations that give the image a viewer shows: one table, the CPU
# path's (engine.images.orient applies it to arrays; the tests check every one against Pillow).
from engine.images import ORIENTATION_OPS


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




def oriented(v: View, orientation: int) -> View:
    """`v` as EXIF `orientation` (1..8) shows it, by strides alone (no pixel moves)."""
    for op in ORIENTATION_OPS[orientation]:
        if op == "transpose":
            v = dataclasses.replace(v, height=v.width, width=v.height, stride_y=v.stride_x, stride_x=v.stride_y)
        elif op == "flip_x":
            v = dataclasses.replace(v, offset=v.offset + (v.width - 1) * v.stride_x, stride_x=-v.stride_x)
        else:
            v = dataclasses.replace(v, offset=v.offset + (v.height - 1) * v.stride_y, stride_y=-v.stride_y)
    return v
