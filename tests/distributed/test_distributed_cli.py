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


def _env() -> dict:
    """The command's environment: no cluster address or pixel limit of the caller's, and this
    checkout first on the path (the command runs in a temporary folder, wherever the package
    was installed from)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "ENGINE3DMM_MAX_PIXELS")}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _engine(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, argv)], cwd=cwd, env=_env(), capture_output=True,
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


def _ray_processes_of(driver_pid: int) -> list[str]:
    """Command lines of the Ray processes of the local Ray that process `driver_pid` started (its
    session folder's name ends with the driver's pid)."""
    import glob

    mine = f"_{driver_pid}/"
    found = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as f:
                args = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "/tmp/ray/session_" in args and mine in args:
            found.append(args[:200])
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table in /proc")
def test_an_actor_that_cannot_start_is_one_line_and_leaves_no_ray(tmp_path):
    """A corrupt weights file in --network-dir: the driver does not read it, every actor's
    constructor does and fails. The command ends with exit 1 and ONE line in the actor's own
    words (the weights file's error, as without --ray); none of Ray's tracebacks or worker log
    lines reach the terminal (before: ~360 lines); the local Ray it started is shut down."""
    import skimage.data
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "in" / "astronaut.png")
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "cnn3dmm.safetensors").write_bytes(b"not a safetensors file at all")
    proc = subprocess.Popen([sys.executable, "-m", "engine", "embed", "in", "-o", "out", "--ray", "--network-dir",
                             "net", "--runner", "onnxruntime"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 1, err[-3000:]
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert errors == ["engine3dmm: error: distributed embed: a Ray actor failed: net/cnn3dmm.safetensors: not a "
                      "readable safetensors weight file (Error while deserializing header: header too large)"], err
    for noise in ("Traceback", "(raylet)", "pid=", "File \"", "\x1b["):
        assert noise not in err, err[-3000:]
    assert _ray_processes_of(proc.pid) == []
