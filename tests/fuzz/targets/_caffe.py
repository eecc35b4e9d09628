"""Shared by the Caffe fuzz targets: a scratch folder and small valid files written with the
engine's own writers (engine.network.caffe_io)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from _scratch import file_bytes, scratch  # noqa: F401  (re-exported to the targets)

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "cnn3dmm"
written = file_bytes  # the Caffe targets' name for it


def small_blobs(seed: int = 0) -> dict[str, list[np.ndarray]]:
    """A few layers of the network's names with small blobs (the readers do not care about
    sizes; from_caffe_blobs then reports the rest as missing)."""
    rng = np.random.default_rng(seed)
    return {"conv1": [rng.standard_normal((2, 3, 1, 1)).astype(np.float32)],
            "bn_conv1": [np.zeros(2, np.float32), np.ones(2, np.float32), np.ones(1, np.float32)],
            "scale_conv1": [np.ones(2, np.float32), np.zeros(2, np.float32)],
            "fc_ftnew": [rng.standard_normal((3, 4)).astype(np.float32), np.zeros(3, np.float32)],
            "fc1000": [np.ones((2, 2), np.float32)]}
