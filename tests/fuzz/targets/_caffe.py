"""Shared by the Caffe fuzz targets: a scratch folder and small valid files written with the
engine's own writers (engine.network.caffe_io)."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "cnn3dmm"


@functools.lru_cache(maxsize=1)
def scratch() -> Path:
    """One temporary folder per process, removed at exit (the readers take paths)."""
    path = Path(tempfile.mkdtemp(prefix="e3dmm-fuzz-caffe-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def written(name: str, write) -> bytes:
    """Bytes of a file made by `write(path)` in the scratch folder."""
    path = scratch() / name
    write(path)
    return path.read_bytes()


def small_blobs(seed: int = 0) -> dict[str, list[np.ndarray]]:
    """A few layers of the network's names with small blobs (the readers do not care about
    sizes; from_caffe_blobs then reports the rest as missing)."""
    rng = np.random.default_rng(seed)
    return {"conv1": [rng.standard_normal((2, 3, 1, 1)).astype(np.float32)],
            "bn_conv1": [np.zeros(2, np.float32), np.ones(2, np.float32), np.ones(1, np.float32)],
            "scale_conv1": [np.ones(2, np.float32), np.zeros(2, np.float32)],
            "fc_ftnew": [rng.standard_normal((3, 4)).astype(np.float32), np.zeros(3, np.float32)],
            "fc1000": [np.ones((2, 2), np.float32)]}
