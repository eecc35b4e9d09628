"""`engine3dmm embed --ray` end to end, in its own process: it starts a local Ray, embeds on its
actors, writes the same files as `embed` without Ray, and shuts Ray down (the process exits).

This module starts no Ray of its own (test_distributed_embed's starts after it), so the
command's `ray.init` makes a fresh local instance."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.data")  # Ray Data also needs pandas and pyarrow
pytest.importorskip("skimage.data")
pytest.importorskip("dlib")

from tests.distributed.photos import NOT_AN_IMAGE


def _engine(*argv, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "ENGINE3DMM_MAX_PIXELS")}
    return subprocess.run([sys.executable, "-m", "engine", *map(str, argv)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_cli_embed_ray_end_to_end_equals_single_process(tmp_path):
    """The detector finds the astronaut's face on an actor; the non-image fails and is listed
    (also with -q, which silences Ray's own lines); descriptors, metadata and progress record
    equal those of `embed` without --ray."""
    import skimage.data
    from PIL import Image

    photos = tmp_path / "in"
    photos.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(photos / "astronaut.png")
    (photos / NOT_AN_IMAGE).write_text("not an image\n")
    ray_run = _engine("-q", "embed", "in", "-o", "ray-out", "--ray", cwd=tmp_path)
    single = _engine("embed", "in", "-o", "single-out", cwd=tmp_path)
    assert (ray_run.returncode, single.returncode) == (1, 1), ray_run.stderr[-3000:]
    assert f"in/{NOT_AN_IMAGE}: not a recognised image format" in ray_run.stderr
    # -q: errors only, none of Ray's own INFO lines or warnings
    assert " INFO " not in ray_run.stderr and "Token authentication" not in ray_run.stderr, ray_run.stderr[-3000:]
    assert "1 descriptor(s) in single-out/descriptors.npy" in single.stderr
    a, b = np.load(tmp_path / "ray-out/descriptors.npy"), np.load(tmp_path / "single-out/descriptors.npy")
    assert a.shape == b.shape == (1, 198)
    assert np.abs(a - b).max() <= 1e-5
    rows = [list(csv.reader((tmp_path / d / "metadata.csv").read_text().splitlines())) for d in ("ray-out", "single-out")]
    assert rows[0] == rows[1]
    assert rows[0][1][1] == "in/astronaut.png" and float(rows[0][1][8]) > 0  # a detector box and its score
