"""Plain helpers of the CLI tests (fixtures live in conftest.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
# The astronaut's face as dlib's HOG detector boxes it (tests/inputs/test_detect.py).
ASTRONAUT_BOX = (179, 87, 272, 178)


def no_partial_files(folder: Path) -> list[str]:
    """Names in `folder` (recursively) that look like unfinished writes: atomic_write's
    '.NAME.XXXX.partial' temporaries and our '.engine3dmm-probe.' files."""
    return [str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.name.endswith(".partial") or p.name.startswith(".")]


def engine_process(*argv, **kw) -> subprocess.Popen:
    """`python -m engine ARGV` in a fresh interpreter (stderr piped, text)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ENGINE3DMM_MAX_PIXELS", None)
    return subprocess.Popen([sys.executable, "-m", "engine", *map(str, argv)], cwd=kw.pop("cwd", REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def interrupt_when(p: subprocess.Popen, ready, what: str, sig=None) -> str:
    """Ctrl-C (SIGINT, or the signal `sig`: SIGTERM) to process `p` once `ready()` is true (within
    180 s, while `p` still runs); returns its stderr. `what` names the awaited state in a failure."""
    import signal
    import time

    try:
        deadline = time.monotonic() + 180
        while not ready():
            assert p.poll() is None, p.communicate()[1]
            assert time.monotonic() < deadline, f"{what} within 180 s"
            time.sleep(0.02)
        p.send_signal(signal.SIGINT if sig is None else sig)
        return p.communicate(timeout=120)[1]
    finally:
        if p.poll() is None:
            p.kill()


def load_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def tiny_model(n: int = 10, seed: int = 0):
    """A valid morphable model of n vertices with the network's 99 + 99 components:
    small enough to write as a .e3dmm cache in a test (the synthetic one is ~110 MB)."""
    from engine.morphable import MorphableModel

    rng = np.random.default_rng(seed)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return MorphableModel(
        shape_mean=f32(3 * n), shape_basis=f32(99, 3 * n), shape_sigma=np.ones(99, np.float32),
        tex_mean=np.full(3 * n, 128, np.float32), tex_basis=f32(99, 3 * n), tex_sigma=np.ones(99, np.float32),
        faces=rng.integers(0, n, (7, 3)).astype(np.int32),
        metadata={"synthetic": False, "name": "tiny-test-model", "source": "tests/cli"})


def write_face_clip(path: Path, photos: Path, frames: int) -> Path:
    """An MJPG .avi of `frames` copies of the astronaut's face crop (skips the test where
    this OpenCV build cannot write MJPG)."""
    import pytest

    cv2 = pytest.importorskip("cv2")
    from PIL import Image

    x0, y0, x1, y1 = ASTRONAUT_BOX
    face = np.asarray(Image.open(photos / "astronaut.png").convert("RGB"))[y0 - 40:y1 + 40, x0 - 40:x1 + 40]
    face = np.ascontiguousarray(cv2.resize(face, (160, 160))[:, :, ::-1])
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 160))
    if not w.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for _ in range(frames):
        w.write(face)
    w.release()
    return path


def write_moving_clip(path: Path, photos: Path, frames: int, fourcc: str = "MJPG") -> Path:
    """A real video: the astronaut's face, the view moving 3 px per frame (every frame differs),
    `frames` frames of 160x160 written by OpenCV (skips the test where it cannot write `fourcc`)."""
    import pytest

    cv2 = pytest.importorskip("cv2")
    from PIL import Image

    x0, y0, x1, y1 = ASTRONAUT_BOX
    photo = np.asarray(Image.open(photos / "astronaut.png").convert("RGB"))[:, :, ::-1]
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 5, (160, 160))
    if not w.isOpened():
        pytest.skip(f"this OpenCV build cannot write {fourcc} video")
    for i in range(frames):
        d = 3 * i - 30
        face = photo[y0 - 40 + d // 2:y1 + 40 + d // 2, x0 - 40 + d:x1 + 40 + d]
        w.write(np.ascontiguousarray(cv2.resize(face, (160, 160))))
    w.release()
    return path


def cut_video(path: Path, out: Path, keep_frames: int) -> Path:
    """`path` cut short inside the data of frame `keep_frames` (0-based): frames before it whole.
    Found by trying cut points with OpenCV (no knowledge of the container needed)."""
    import cv2

    data = path.read_bytes()

    def readable(size: int) -> int:
        out.write_bytes(data[:size])
        cap = cv2.VideoCapture(str(out))
        n = 0
        while cap.read()[0]:
            n += 1
        cap.release()
        return n

    lo, hi = 0, len(data)  # the smallest size that decodes keep_frames + 1 frames (the last one partly)
    while lo < hi:
        mid = (lo + hi) // 2
        if readable(mid) >= keep_frames + 1:
            hi = mid
        else:
            lo = mid + 1
    size = lo + 200  # well inside frame keep_frames' data, short of its end
    assert readable(size) == keep_frames + 1
    return out
