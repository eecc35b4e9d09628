"""Fuzz target: the --boxes sidecar reader (engine.detect.load_boxes, CSV and JSON) and the box
rule at crop time (issue 13, finding 6: a 400-digit integer or one of over 4,300 digits in JSON
was untyped; a box 10,10,1e308,100 raised OverflowError in engine.crop; finding 4: 1,000-deep
JSON raised RecursionError).

The first byte picks the format: b"J" JSON, anything else CSV; the rest is the file. Every
image the file names is looked up (a bad box raises that image's InputError) and each of its
boxes is cropped from a small image, so the image-dependent part of the box rule runs too.
"""
from __future__ import annotations

import atexit
import csv
import functools
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from engine.crop import crop_face
from engine.detect import load_boxes
from engine.errors import InputError

EXPECTED = (InputError,)
CI_RUNS = 10000  # about 10 s
IMAGE = np.full((24, 32, 3), 128, np.uint8)


@functools.lru_cache(maxsize=1)
def _scratch() -> Path:
    path = Path(tempfile.mkdtemp(prefix="e3dmm-fuzz-boxes-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def seeds() -> list[bytes]:
    """Small valid sidecars written with the formats' own writers (csv, json)."""
    rows = [("a.jpg", 3, 4, 20, 22, 0.9), ("sub/b.png", 0.5, 1.5, 30.25, 23, 1), ("a.jpg", -5, -6, 40, 30, -0.1)]
    out = []
    for header in (["image", "x0", "y0", "x1", "y1", "score"], ["y1", "image", "x1", "x0", "y0", "score"]):
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow(header)
        order = [["image", "x0", "y0", "x1", "y1", "score"].index(h) for h in header]
        for r in rows:
            w.writerow([r[i] for i in order])
        out.append(b"C" + buf.getvalue().encode())
    out.append(b"C" + "\ufeffimage,x0,y0,x1,y1\n\"c,d.jpg\",1,2,10,12\n\n".encode())
    # Valid at load, refused at crop time (far beyond the image): a digit or an exponent away
    # from the limits the rule checks at load.
    out.append(b"C" + b"image,x0,y0,x1,y1\nfar.jpg,-2000000000,0,2.1e9,12\n")
    boxes = {"a.jpg": [[3, 4, 20, 22], [1.5, 2.5, 30, 23, 0.25]], "b.png": [], "c.jpg": [[0, 0, 31, 23, 1e-3]],
             "far.jpg": [[-2000000000, 1e2, 2.1e9, 3e2]]}
    out.append(b"J" + json.dumps(boxes).encode())
    out.append(b"J" + json.dumps(boxes, indent=2).encode())
    # Faces given by their 68 landmarks (issue 9): alone, and beside a box with a score.
    lm = [[4 + (i % 17), 3 + i // 4] for i in range(68)]
    out.append(b"J" + json.dumps({"a.jpg": [{"landmarks": lm}, {"box": [1, 2, 20, 22], "landmarks": lm,
                                                                 "score": 0.5}]}).encode())
    return out


def one_input(data: bytes) -> None:
    path = _scratch() / ("boxes.json" if data[:1] == b"J" else "boxes.csv")
    path.write_bytes(data[1:])
    boxes = load_boxes(path)
    for name in boxes:
        try:
            found = boxes[name]
        except InputError:
            continue  # a bad box fails its image only: the others are still read
        for b in found:
            try:
                crop_face(IMAGE, b, size=8)
            except InputError:
                pass  # beyond the image-dependent bound: that image's failure
