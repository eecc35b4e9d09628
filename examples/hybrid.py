"""The hybrid pattern: Python prepares files, a C++ program does the per-frame work.

Python (the engine's public API) writes the decode-ready model cache (.e3dmm) and the
coefficient files (.npy float32 [B, 198]); the C++ program `e3dmm_decode` (examples/cpp,
linked against the e3dmm C++ library) loads the cache, decodes every row and writes one
PLY per row. This script then checks that every C++ PLY is byte-identical to the one the
Python writer produces from the same coefficients.

    cmake -S . -B build/cpp -G Ninja && cmake --build build/cpp -j2
    python examples/hybrid.py                 # or --binary PATH, --work DIR, --rows N, --ascii

Here the coefficients are random rows (in standard deviations, like the network's output);
in an application they come from `engine.Reconstructor` or a runner, saved with numpy.save.
The model is the built-in SYNTHETIC one (not a real face model) unless --model names a BFM file.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import engine  # noqa: E402
from engine import mesh_io  # noqa: E402
from engine.morphable import synthetic_model, write_cache  # noqa: E402


SYNTHETIC_COMMENT = "WARNING synthetic morphable model: not the Basel Face Model"


def find_binary(explicit: str | None) -> Path | None:
    """The C++ program: --binary, else $E3DMM_CPP_BUILD_DIR, else build/cpp under the repo."""
    if explicit:
        return Path(explicit)
    build = Path(os.environ.get("E3DMM_CPP_BUILD_DIR", REPO / "build" / "cpp"))
    exe = build / "examples" / "cpp" / "e3dmm_decode"
    return exe if exe.is_file() else None


def prepare(work: Path, rows: int, model_path: str | None, seed: int = 0):
    """Writes work/model.e3dmm, two coefficient files and a list of them; returns (model, files)."""
    model = engine.load_model(model_path) if model_path else synthetic_model(seed)
    write_cache(model, work / "model.e3dmm")
    rng = np.random.default_rng(seed)
    width = model.shape_components + model.tex_components
    coeffs = (0.8 * rng.standard_normal((rows, width))).astype(np.float32)
    half = max(1, rows // 2)
    files = [work / "batch_a.npy", work / "batch_b.npy"]
    np.save(files[0], coeffs[:half])
    np.save(files[1], coeffs[half:] if rows > half else coeffs[:1])
    (work / "coeffs.txt").write_text("".join(f"{f.name}\n" for f in files))
    return model, files


def run_cpp(exe: Path, work: Path, out: Path, ascii_ply: bool, comments: list[str]) -> subprocess.CompletedProcess:
    cmd = [str(exe), "--model", str(work / "model.e3dmm"), "--out", str(out), "--list", str(work / "coeffs.txt")]
    cmd += ["--ascii"] if ascii_ply else []
    for c in comments:
        cmd += ["--comment", c]
    return subprocess.run(cmd, capture_output=True, text=True)


def compare(model, files: list[Path], out: Path, ascii_ply: bool, comments: list[str]) -> list[str]:
    """Decodes the same rows in Python and returns the names of C++ PLYs that differ."""
    decoder = engine.Decoder(model)
    bad = []
    for f in files:
        records = decoder.decode(np.load(f), outputs=("records",)).records
        for i, rec in enumerate(records):
            name = f"{f.stem}_{i:04d}.ply"
            ref = out / f".python_{name}"
            mesh_io.write_ply(ref, rec, model.faces, binary=not ascii_ply, comments=comments)
            same = ref.read_bytes() == (out / name).read_bytes()
            ref.unlink()
            if not same:
                bad.append(name)
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", help="path of e3dmm_decode (default: build/cpp/examples/cpp/e3dmm_decode)")
    ap.add_argument("--work", help="folder for the cache, coefficients and PLY files (default: a temp folder)")
    ap.add_argument("--model", help="a BFM file or .e3dmm cache (default: the synthetic model)")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--ascii", action="store_true", help="ASCII PLY instead of binary")
    args = ap.parse_args()
    exe = find_binary(args.binary)
    if exe is None or not exe.is_file():
        print("e3dmm_decode not found: build it with\n  cmake -S . -B build/cpp -G Ninja && "
              "cmake --build build/cpp -j2\nor pass --binary PATH", file=sys.stderr)
        return 2
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="e3dmm_hybrid_"))
    out = work / "meshes"
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    model, files = prepare(work, args.rows, args.model)
    print(f"python: {model!r}; cache and {len(files)} coefficient files in {work} "
          f"({time.perf_counter() - t0:.2f} s)")
    comments = ["e3dmm hybrid example"]
    t0 = time.perf_counter()
    proc = run_cpp(exe, work, out, args.ascii, comments)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        print(f"e3dmm_decode failed ({proc.returncode}): {proc.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"c++: done in {time.perf_counter() - t0:.2f} s (process start, model mapping, decode, writes)")
    # The C++ program appends this warning for a synthetic model, as engine.pipeline does.
    expected_comments = comments + ([SYNTHETIC_COMMENT] if model.synthetic else [])
    bad = compare(model, files, out, args.ascii, expected_comments)
    n = len(list(out.glob("*.ply")))
    if bad:
        print(f"MISMATCH: {len(bad)} of {n} PLY files differ from Python's: {bad[:5]}", file=sys.stderr)
        return 1
    print(f"OK: all {n} PLY files written by C++ are byte-identical to Python's ({out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
