"""Real photos for the distributed tests: scikit-image's astronaut, LFW faces from
`skimage.data.lfw_subset()` (25x25 greyscale crops, written as PNGs) and a file that is not an
image (its input must fail, and be recorded)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

LFW_FACES = 4
NOT_AN_IMAGE = "notes.jpg"


def write_photos(folder: Path, lfw_faces: int = LFW_FACES) -> Path:
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(skimage.data.astronaut()).save(folder / "astronaut.png")
    lfw = skimage.data.lfw_subset()
    for i in range(lfw_faces):
        write_lfw(folder / f"lfw{i}.png", lfw[i])
    (folder / NOT_AN_IMAGE).write_text("not an image\n")
    return folder


def write_lfw(path: Path, face: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.round(face * 255).astype(np.uint8)).save(path)
