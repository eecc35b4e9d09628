"""Issue 4 §5 through the CLI: bad images, no face, unwritable output, broken model files,
Ctrl-C. Each gets a clear message naming the input, the rest of the run goes on, the exit
code says something failed, and no partial file is left."""
from __future__ import annotations

import contextlib
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from tests.cli.helpers import engine_process, interrupt_when, no_partial_files, tiny_model


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height with a few bytes of pixel data: what a
    decompression bomb looks like to a decoder that trusts the header (a few dozen bytes here)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# file name -> (bytes maker, what the message must say)
BAD = {
    "empty.jpg": (lambda good: b"", "empty file (0 bytes)"),
    "notes.jpg": (lambda good: b"shopping list: eggs, milk\n" * 20, "not a recognised image format"),
    "noise.png": (lambda good: np.random.default_rng(0).bytes(5000), "not a recognised image format"),
    "truncated.png": (lambda good: good[: len(good) // 2], "truncated"),
    "bomb.png": (lambda good: png_header_only(100_000, 100_000), "too large"),
}


@pytest.fixture(scope="module")
def bad_run(photos, tmp_path_factory):
    """One reconstruct run in detector mode over a folder of one good photo and every kind
    of bad file, plus a photo with no face, a missing path and a dangling symlink."""
    pytest.importorskip("dlib")
    d = tmp_path_factory.mktemp("bad")
    batch = d / "batch"
    batch.mkdir()
    good = (photos / "astronaut.png").read_bytes()
    (batch / "astronaut.png").write_bytes(good)
    for name, (make, _) in BAD.items():
        (batch / name).write_bytes(make(good))
    (d / "gone.jpg").symlink_to(d / "deleted.jpg")
    out = d / "out"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["reconstruct", str(batch), str(photos / "coffee.jpg"), str(d / "missing.jpg"),
                   str(d / "gone.jpg"), "-o", str(out)])
    return rc, err.getvalue(), out, batch


def test_bad_inputs_do_not_stop_the_run(bad_run):
    rc, err, out, _ = bad_run
    assert rc == 1  # some inputs failed
    assert (out / "astronaut_face0.ply").is_file() and (out / "astronaut_face0.npy").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["astronaut_face0.npy", "astronaut_face0.ply", "summary.json"]
    assert no_partial_files(out) == []
    assert "Traceback" not in err


@pytest.mark.parametrize("name", sorted(BAD) + ["coffee.jpg", "missing.jpg", "gone.jpg"])
def test_each_failure_is_named_with_its_reason(bad_run, name):
    rc, err, out, _ = bad_run
    reason = BAD[name][1] if name in BAD else ("no face found" if name == "coffee.jpg" else "no such file")
    lines = [ln for ln in err.splitlines() if name in ln and "failed:" in ln]
    assert len(lines) == 1, err  # one line per failed input, on stderr
    assert reason in lines[0]
    failures = json.loads((out / "summary.json").read_text())["failures"]
    mine = [f for f in failures if Path(f["source"]).name == name]
    assert len(mine) == 1 and reason in mine[0]["error"]


def test_pixel_limit_option_and_environment(cli, photos, tmp_path, monkeypatch):
    # astronaut.png is 512 x 512 = 262144 pixels
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "--max-pixels", "100000", "-o", tmp_path / "a")
    assert r.rc == 1 and "astronaut.png: image too large" in r.err and "262144 pixels" in r.err
    monkeypatch.setenv("ENGINE3DMM_MAX_PIXELS", "100000")
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "-o", tmp_path / "b", "-q")
    assert r.rc == 1 and "image too large" in r.err
    monkeypatch.setenv("ENGINE3DMM_MAX_PIXELS", "lots")
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "-o", tmp_path / "c")
    assert r.rc == 1 and "ENGINE3DMM_MAX_PIXELS: expected a positive integer, found 'lots'" in r.err
    from PIL import Image

    assert Image.MAX_IMAGE_PIXELS > 1_000_000  # main() put the process-wide limit back


def test_output_folder_that_cannot_be_created(cli, photos, tmp_path):
    # Tests run as root, which ignores permission bits: a parent that is a regular file
    # makes a folder impossible to create for anyone.
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "-o", blocker / "out")
    assert r.rc == 1
    assert r.err.strip().splitlines()[-1] == (
        f"engine3dmm: error: {blocker / 'out'}: cannot create the output folder: Not a directory")
    assert "SYNTHETIC" not in r.err  # failed before loading any model
    r = cli("embed", photos / "astronaut.png", "--cropped", "-o", blocker)
    assert r.rc == 1 and "output path exists and is not a folder" in r.err


def _card_with(tmp_path: Path, blob: bytes) -> Path:
    card = tmp_path / "card"
    card.mkdir()
    (card / "cnn3dmm.safetensors").write_bytes(blob)
    return card


def test_corrupt_network_weights(cli, photos, tmp_path):
    card = _card_with(tmp_path, b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}garbage")
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "--network-dir", card, "-o", out)
    assert r.rc == 1
    lines = r.err.strip().splitlines()
    assert lines[-1].startswith(f"engine3dmm: error: {card / 'cnn3dmm.safetensors'}: not a readable safetensors")
    assert "Traceback" not in r.err
    assert list(out.iterdir()) == []  # nothing written, not even a summary of a run that never started
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "--network-dir", card, "-o", out, "-v")
    assert r.rc == 1 and "Traceback" in r.err  # --verbose shows where it came from
    info = cli("info", "--network-dir", card, "--json")
    report = json.loads(info.out)
    assert info.rc == 1 and report["network"]["status"] == "BROKEN"
    assert any("not a readable safetensors" in p for p in report["problems"])


def test_model_card_without_weights(cli, photos, tmp_path):
    # An explicit --network-dir without converted weights is an error, not a silent
    # fallback to the synthetic weights (a typo in the path would otherwise go unnoticed).
    r = cli("embed", photos / "astronaut.png", "--cropped", "--network-dir", tmp_path / "typo", "-o", tmp_path / "o")
    assert r.rc == 1
    assert f"{tmp_path / 'typo' / 'cnn3dmm.safetensors'}: --network-dir has no converted weights" in r.err
    assert "SYNTHETIC" not in r.err


def test_weights_of_another_network(cli, photos, tmp_path):
    # A readable file in our format whose tensors do not match the ResNet-101.
    from safetensors.numpy import save

    from engine.network.weights import WEIGHTS_FORMAT

    blob = save({"mean": np.zeros((1, 3, 224, 224), np.float32), "conv1.weight": np.zeros((8, 3, 3, 3), np.float32)},
                metadata={"format": WEIGHTS_FORMAT, "version": "1", "synthetic": "false", "source": "null"})
    card = _card_with(tmp_path, blob)
    r = cli("embed", photos / "astronaut.png", "--cropped", "--network-dir", card, "-o", tmp_path / "out")
    assert r.rc == 1
    assert "weights do not match the 3DMM-CNN ResNet-101" in r.err and "missing (" in r.err


def test_corrupt_morphable_model_cache(cli, photos, tmp_path):
    path = tmp_path / "model.e3dmm"
    tiny_model().save_cache(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # truncated, e.g. an interrupted copy
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "--model", path, "-o", out)
    assert r.rc == 1
    assert r.err.strip().splitlines()[-1].startswith(f"engine3dmm: error: {path}")
    assert "Traceback" not in r.err and list(out.iterdir()) == []
    r = cli("info", "--model", path)
    assert r.rc == 1 and "morphable model: BROKEN" in r.out


def test_ctrl_c_in_the_middle_of_a_run(photos, tmp_path):
    """SIGINT once the first mesh is on disk: exit code 130, a clear message, only whole
    files in the output folder, and a summary that says the run was interrupted."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(20):
        (src / f"img{i:02d}.png").write_bytes((photos / "astronaut.png").read_bytes())
    out = tmp_path / "out"
    p = engine_process("reconstruct", src, "--cropped", "--batch-size", "1", "--workers", "1", "-o", out)
    err = interrupt_when(p, lambda: out.is_dir() and any(out.glob("*.ply")), "no mesh was written")
    assert p.returncode == 130, err
    assert "interrupted (Ctrl-C)" in err and "Traceback" not in err
    assert no_partial_files(out) == []
    meshes = sorted(out.glob("*.ply"))
    assert 1 <= len(meshes) < 20
    for m in meshes:  # every mesh on disk is whole and has its coefficients
        assert m.stat().st_size > 1_000_000 and m.with_suffix(".npy").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["faces_written"] == len(meshes)


def test_a_fatal_error_mid_run_is_in_the_summary(cli, photos, tmp_path, monkeypatch):
    """A run stopped by an error that no input can avoid (here the network's device failing on
    the second batch) keeps what it finished, and its summary.json says why it stopped instead
    of reading as a clean run with no failures (issue 13)."""
    from engine.errors import BackendError
    from engine.pipeline.reconstructor import Reconstructor

    real, calls = Reconstructor._run_batch, []

    def failing(self, batch, decode):
        calls.append(1)
        if len(calls) == 2:
            raise BackendError("network: the device stopped answering")
        return real(self, batch, decode)

    monkeypatch.setattr(Reconstructor, "_run_batch", failing)
    copies = []
    for i in range(3):
        copies.append(tmp_path / f"face{i}.png")
        copies[-1].write_bytes((photos / "astronaut.png").read_bytes())
    r = cli("reconstruct", *copies, "--cropped", "--batch-size", "1", "-o", tmp_path / "out")
    assert r.rc == 1 and "the device stopped answering" in r.err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stopped_by"] == "network: the device stopped answering"
    assert summary["faces_written"] == 1
