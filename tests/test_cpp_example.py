"""The C++ example (examples/cpp/e3dmm_decode) end to end, driven from Python.

Python writes the model cache and coefficient files; the C++ program decodes and writes
PLYs; they must be byte-identical to engine.mesh_io's for the same coefficients. Needs the
CMake build (`cmake -S . -B build/cpp -G Ninja && cmake --build build/cpp`): the binary is
looked up in $E3DMM_CPP_BUILD_DIR (default build/cpp under the repo); skipped when absent.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import engine
from engine import mesh_io
from engine.morphable import synthetic_model, write_cache

REPO = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("E3DMM_CPP_BUILD_DIR", REPO / "build" / "cpp"))
EXE = BUILD / "examples" / "cpp" / "e3dmm_decode"

pytestmark = pytest.mark.skipif(
    not EXE.is_file(),
    reason=f"C++ example not built: {EXE} is missing (cmake -S . -B build/cpp -G Ninja && "
           "cmake --build build/cpp, or set E3DMM_CPP_BUILD_DIR)")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The synthetic model's cache and two coefficient files, as a user would write them."""
    work = tmp_path_factory.mktemp("cpp_example")
    model = synthetic_model(0)
    write_cache(model, work / "model.e3dmm")
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 198)).astype(np.float32)
    a[0] *= 4.0  # large coefficients: colours hit both clamps
    b = rng.standard_normal((1, 198)).astype(np.float32)
    np.save(work / "a.npy", a)
    np.save(work / "b.npy", b)
    return model, work, {"a": a, "b": b}


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=120)


def python_ply(model, coeffs: np.ndarray, binary: bool, comments, folder: Path) -> list[bytes]:
    """The bytes engine.mesh_io.write_ply writes for each row (decoded by engine.Decoder)."""
    records = engine.Decoder(model).decode(coeffs, outputs=("records",)).records
    out = []
    for rec in records:
        mesh_io.write_ply(folder / "ref.ply", rec, model.faces, binary=binary, comments=comments)
        out.append((folder / "ref.ply").read_bytes())
    return out


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "ascii"])
def test_cpp_ply_is_byte_identical_to_python(prepared, tmp_path, binary):
    model, work, coeffs = prepared
    comments = ["from the C++ example", "second comment"]
    (work / "list.txt").write_text("# one path per line\nb.npy\n")
    args = ["--model", work / "model.e3dmm", "--out", tmp_path, work / "a.npy", "--list", work / "list.txt"]
    args += [] if binary else ["--ascii"]
    for c in comments:
        args += ["--comment", c]
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    assert "SYNTHETIC" in proc.stdout  # the program says the model is synthetic
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["a_0000.ply", "a_0001.ply", "a_0002.ply", "b_0000.ply"]
    ref = tmp_path / "python"
    ref.mkdir()
    # The program adds the pipeline's warning to files made from a synthetic model.
    comments.append("WARNING synthetic morphable model: not the Basel Face Model")
    for stem, rows in coeffs.items():
        for i, want in enumerate(python_ply(model, rows, binary, comments, ref)):
            got = (tmp_path / f"{stem}_{i:04d}.ply").read_bytes()
            assert got == want, f"{stem}_{i:04d}.ply differs from engine.mesh_io's bytes"


def test_cpp_reports_a_bad_cache_and_writes_nothing(prepared, tmp_path):
    _, work, _ = prepared
    data = (work / "model.e3dmm").read_bytes()
    cut = tmp_path / "cut.e3dmm"
    cut.write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    out.mkdir()
    proc = run("--model", cut, "--out", out, work / "a.npy")
    assert proc.returncode == 1
    assert str(cut) in proc.stderr and "file_nbytes" in proc.stderr, proc.stderr
    foreign = tmp_path / "foreign.e3dmm"
    foreign.write_bytes(b"\x93NUMPY" + bytes(100))
    proc = run("--model", foreign, "--out", out, work / "a.npy")
    assert proc.returncode == 1 and "magic" in proc.stderr, proc.stderr
    assert list(out.iterdir()) == []


def test_cpp_reports_bad_coefficients_and_unwritable_output(prepared, tmp_path):
    _, work, _ = prepared
    np.save(tmp_path / "f64.npy", np.zeros((1, 198)))  # float64: not what the program reads
    proc = run("--model", work / "model.e3dmm", "--out", tmp_path, tmp_path / "f64.npy")
    assert proc.returncode == 1 and "descr" in proc.stderr and "<f4" in proc.stderr, proc.stderr
    np.save(tmp_path / "narrow.npy", np.zeros((2, 100), np.float32))
    proc = run("--model", work / "model.e3dmm", "--out", tmp_path, tmp_path / "narrow.npy")
    assert proc.returncode == 1 and "198" in proc.stderr, proc.stderr
    np.save(tmp_path / "rank3.npy", np.zeros((1, 2, 198), np.float32))
    proc = run("--model", work / "model.e3dmm", "--out", tmp_path, tmp_path / "rank3.npy")
    assert proc.returncode == 1 and "expected float32 [B >= 1, C] or [C] with 198 <= C" in proc.stderr
    assert "found rank 3 [1, 2, 198]" in proc.stderr, proc.stderr
    a_file = tmp_path / "a_file"
    a_file.write_bytes(b"")
    proc = run("--model", work / "model.e3dmm", "--out", a_file, work / "b.npy")
    assert proc.returncode == 1 and f"--out {a_file}: expected a folder, found a file" in proc.stderr, proc.stderr


def test_cpp_creates_the_out_folder_as_the_cli_does_and_only_when_it_writes(prepared, tmp_path):
    _, work, _ = prepared
    missing = tmp_path / "no" / "such" / "folder"
    proc = run("--model", work / "model.e3dmm", "--out", missing, work / "b.npy")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in missing.iterdir()) == ["b_0000.ply"]
    never = tmp_path / "never"
    proc = run("--model", work / "model.e3dmm", "--out", never, tmp_path / "absent.npy")
    assert proc.returncode == 1 and not never.exists()  # failed before writing: nothing created


def test_cpp_takes_the_engines_per_face_files_of_rank_one(prepared, tmp_path):
    """The engine writes one face's coefficients as NAME_face0.npy, float32 [198]: a batch of one."""
    model, work, coeffs = prepared
    np.save(tmp_path / "photo_face0.npy", coeffs["b"][0])
    out = tmp_path / "out"
    proc = run("--model", work / "model.e3dmm", "--out", out, tmp_path / "photo_face0.npy")
    assert proc.returncode == 0, proc.stderr
    want = python_ply(model, coeffs["b"], True, ["WARNING synthetic morphable model: not the Basel Face Model"], tmp_path)
    assert [p.name for p in out.iterdir()] == ["photo_face0_0000.ply"]
    assert (out / "photo_face0_0000.ply").read_bytes() == want[0]


def test_hybrid_script_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "hybrid.py"), "--binary", str(EXE),
                           "--work", str(tmp_path), "--rows", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "byte-identical" in proc.stdout
    assert len(list((tmp_path / "meshes").glob("*.ply"))) == 2
