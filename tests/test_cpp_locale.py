"""The C++ writers under a comma locale, end to end (issue 8, section 7).

examples/cpp/e3dmm_decode calls setlocale(LC_ALL, "") as an application embedding the library
would (every Qt program does). Run under LC_ALL=de_DE.UTF-8, its ASCII and binary PLYs must
still be byte-identical to engine.mesh_io's, and plyfile (an independent reader) must read
the ASCII one back to the decoded float32 values. The locale must exist: in CI (CI set) a
missing one fails; elsewhere the test is skipped with the command that generates it.
"""
from __future__ import annotations

import locale
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import engine
from engine import mesh_io
from engine.morphable import synthetic_model, write_cache

REPO = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("E3DMM_CPP_BUILD_DIR", REPO / "build" / "cpp"))
EXE = BUILD / "examples" / "cpp" / "e3dmm_decode"
LOCALE = "de_DE.UTF-8"

pytestmark = pytest.mark.skipif(not EXE.is_file(), reason=f"C++ example not built: {EXE} is missing")


@pytest.fixture(scope="module")
def comma_locale():
    try:
        old = locale.setlocale(locale.LC_ALL)
        locale.setlocale(locale.LC_ALL, LOCALE)
        locale.setlocale(locale.LC_ALL, old)
    except locale.Error:
        msg = f"locale {LOCALE} is not installed: localedef -i de_DE -f UTF-8 de_DE.UTF-8 (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return {**os.environ, "LC_ALL": LOCALE}


def test_example_plys_are_byte_identical_to_python_under_de_DE(comma_locale, tmp_path):
    model = synthetic_model(0)
    write_cache(model, tmp_path / "model.e3dmm")
    coeffs = np.random.default_rng(7).standard_normal((2, 198)).astype(np.float32)
    np.save(tmp_path / "c.npy", coeffs)
    records = engine.Decoder(model).decode(coeffs, outputs=("records",)).records
    comments = ["WARNING synthetic morphable model: not the Basel Face Model"]
    for ascii_ in (True, False):
        out = tmp_path / ("ascii" if ascii_ else "binary")
        out.mkdir()
        proc = subprocess.run([str(EXE), "--model", str(tmp_path / "model.e3dmm"), "--out", str(out),
                               str(tmp_path / "c.npy"), *(["--ascii"] if ascii_ else [])],
                              capture_output=True, text=True, timeout=120, env=comma_locale)
        assert proc.returncode == 0, proc.stderr
        # The program's own timings follow the locale: proof that de_DE was in effect.
        assert re.search(r"\d,\d\d ms", proc.stdout), proc.stdout
        for i in range(2):
            mesh_io.write_ply(tmp_path / "ref.ply", records[i], model.faces, binary=not ascii_, comments=comments)
            got = (out / f"c_{i:04d}.ply").read_bytes()
            assert got == (tmp_path / "ref.ply").read_bytes(), f"c_{i:04d}.ply ({'ASCII' if ascii_ else 'binary'})"
    from plyfile import PlyData

    ply = PlyData.read(str(tmp_path / "ascii" / "c_0001.ply"))
    v = ply["vertex"]
    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32),
                                  np.stack([records[1]["x"], records[1]["y"], records[1]["z"]], 1))
