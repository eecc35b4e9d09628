"""examples/cpp/e3dmm_decode on inputs that used to stretch it (issue 13): a coefficient file
of many rows is decoded in bounded chunks (64 rows at a time: the record buffer no longer
grows with the file), every row still byte-identical to engine.mesh_io; and --threads takes
only a whole number in range (no atoi: "abc" was 0, "-5" went to OpenMP)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import engine
from engine import mesh_io
from engine.morphable import write_cache

sys.path.insert(0, str(Path(__file__).resolve().parent / "morphable"))
import cache_bytes  # noqa: E402

from test_cpp_example import EXE  # noqa: E402  (the same build lookup)

pytestmark = pytest.mark.skipif(not EXE.is_file(), reason=f"C++ example not built: {EXE} is missing")


def test_many_rows_are_decoded_in_chunks_and_match_python(tmp_path):
    arrays = cache_bytes.tiny_arrays(n=50, ks=3, kt=2, f=40, landmarks=None, seed=9)
    model = engine.MorphableModel(**arrays, metadata={"name": "small", "source": "test"})
    write_cache(model, tmp_path / "m.e3dmm")
    coeffs = np.random.default_rng(2).standard_normal((130, 5)).astype(np.float32)  # 3 chunks: 64, 64, 2
    np.save(tmp_path / "c.npy", coeffs)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([str(EXE), "--model", str(tmp_path / "m.e3dmm"), "--out", str(out), "--threads", "2",
                           str(tmp_path / "c.npy")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "130 rows decoded" in proc.stdout
    records = engine.Decoder(model).decode(coeffs, outputs=("records",)).records
    for i in (0, 63, 64, 127, 128, 129):
        mesh_io.write_ply(tmp_path / "ref.ply", records[i], model.faces)
        assert (out / f"c_{i:04d}.ply").read_bytes() == (tmp_path / "ref.ply").read_bytes(), i
    assert len(list(out.iterdir())) == 130


@pytest.mark.parametrize("value", ["abc", "-5", "2x", "99999999999999999999", ""])
def test_threads_must_be_a_whole_number_in_range(tmp_path, value):
    proc = subprocess.run([str(EXE), "--model", "m.e3dmm", "--out", str(tmp_path), "--threads", value, "c.npy"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"--threads: expected an integer in [0, 4096], found {value}" in proc.stderr
