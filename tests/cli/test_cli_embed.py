"""`embed`: descriptors + metadata, Parquet, and resuming (also after Ctrl-C)."""
from __future__ import annotations

import csv
import json
import signal
import time

import numpy as np
import pytest

from tests.cli.helpers import engine_process, load_npy, no_partial_files


@pytest.fixture
def three(photos, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for name in ("astronaut.png", "chelsea.jpg", "camera.png"):
        (d / name).write_bytes((photos / name).read_bytes())
    return d


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_descriptors_match_reconstruct_and_rerun_skips_done_inputs(cli, three, tmp_path):
    out = tmp_path / "desc"
    r = cli("embed", three / "astronaut.png", three / "chelsea.jpg", "--cropped", "-o", out)
    assert r.rc == 0, r.err
    d = load_npy(out / "descriptors.npy")
    rows = read_csv(out / "metadata.csv")
    assert d.shape == (2, 198) and d.dtype == np.float32
    assert [(row["row"], row["source"], row["face_index"]) for row in rows] == [
        ("0", str(three / "astronaut.png"), "0"), ("1", str(three / "chelsea.jpg"), "0")]
    # The descriptor is the coefficient vector that reconstruct writes.
    rec = tmp_path / "rec"
    assert cli("reconstruct", three / "astronaut.png", "--cropped", "--no-mesh", "-o", rec, "-q").rc == 0
    assert np.allclose(d[0], load_npy(rec / "astronaut_face0.npy"), atol=1e-6)

    first_chunk = out / "chunks" / "chunk-00000.npy"
    stamp = first_chunk.stat().st_mtime_ns
    r = cli("embed", three, "--cropped", "-o", out)  # the folder: one new input, two done
    assert r.rc == 0, r.err
    assert "2 input(s) already done" in r.err
    progress = json.loads((out / "progress.json").read_text())
    assert progress["chunks"] == ["chunk-00000", "chunk-00001"]
    assert first_chunk.stat().st_mtime_ns == stamp  # the done inputs were not recomputed
    assert np.load(out / "chunks" / "chunk-00001.npy").shape == (1, 198)
    d2 = load_npy(out / "descriptors.npy")
    assert d2.shape == (3, 198) and np.array_equal(d2[:2], d)
    assert [row["source"] for row in read_csv(out / "metadata.csv")][2] == str(three / "camera.png")
    assert no_partial_files(out) == []


def test_failures_are_recorded_and_retried_on_request(cli, three, photos, tmp_path):
    out = tmp_path / "desc"
    (three / "broken.jpg").write_bytes(b"not a jpeg")
    r = cli("embed", three / "astronaut.png", three / "broken.jpg", "--cropped", "--part", "alpha", "-o", out)
    assert r.rc == 1 and "broken.jpg: not a recognised image format" in r.err
    assert load_npy(out / "descriptors.npy").shape == (1, 99)  # --part alpha: 99 shape coefficients
    r = cli("embed", three / "astronaut.png", three / "broken.jpg", "--cropped", "--part", "alpha", "-o", out)
    assert r.rc == 1 and "recorded by an earlier run" in r.err  # still reported, not recomputed
    (three / "broken.jpg").write_bytes((photos / "chelsea.jpg").read_bytes())  # the user fixes it
    r = cli("embed", three / "astronaut.png", three / "broken.jpg", "--cropped", "--part", "alpha",
            "--retry-failed", "-o", out)
    assert r.rc == 0, r.err
    assert load_npy(out / "descriptors.npy").shape == (2, 99)
    # The folder holds alpha descriptors: asking for another part there is refused.
    r = cli("embed", three / "astronaut.png", "--cropped", "-o", out)
    assert r.rc == 1 and "holds descriptors made with part 'alpha'" in r.err


def test_parquet(cli, three, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "desc"
    r = cli("embed", three, "--cropped", "--parquet", "-o", out, "-q")
    assert r.rc == 0, r.err
    t = pq.read_table(out / "descriptors.parquet")
    assert t.num_rows == 3
    assert t.column_names == ["source", "face_index", "frame", "x0", "y0", "x1", "y1", "score", "descriptor"]
    d = np.stack(t.column("descriptor").to_numpy(zero_copy_only=False))
    assert d.shape == (3, 198)
    assert not (out / "descriptors.npy").exists()


def test_resume_after_ctrl_c(cli, photos, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(16):
        (src / f"img{i:02d}.png").write_bytes((photos / "astronaut.png").read_bytes())
    out = tmp_path / "desc"
    p = engine_process("embed", src, "--cropped", "--batch-size", "1", "--workers", "1", "--flush-every", "1",
                       "-o", out)
    try:
        deadline = time.monotonic() + 180
        while not (out / "progress.json").is_file():
            assert p.poll() is None, p.communicate()[1]
            assert time.monotonic() < deadline, "no progress record within 180 s"
            time.sleep(0.02)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert no_partial_files(out) == []
    done = json.loads((out / "progress.json").read_text())["inputs"]
    assert 1 <= len(done) < 16
    r = cli("embed", src, "--cropped", "-o", out)
    assert r.rc == 0, r.err
    assert f"{len(done)} input(s) already done" in r.err
    rows = read_csv(out / "metadata.csv")
    assert sorted(row["source"] for row in rows) == sorted(str(p) for p in src.iterdir())  # each once
    assert load_npy(out / "descriptors.npy").shape == (16, 198)
