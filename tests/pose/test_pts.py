"""The release's .pts landmark files: written as its demo writes them ("%f %f" per line, 68
lines), read back by numpy.loadtxt (the release's Python reader, a library we did not write),
and read by ours in the release's layout and iBUG's; bad files are refused by name."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.pose import read_pts, write_pts


def _lm(seed=0):
    return np.random.default_rng(seed).uniform(0, 640, (68, 2)).astype(np.float32)


def test_written_as_the_release_writes_and_read_back_by_numpy(tmp_path):
    lm = _lm()
    path = tmp_path / "photo.pts"
    write_pts(path, lm)
    text = path.read_text()
    lines = text.splitlines()
    assert len(lines) == 68 and text.endswith("\n")
    assert lines[0] == "%f %f" % (lm[0, 0], lm[0, 1])  # testModel_PoseExpr.py's format, 6 decimals
    np.testing.assert_allclose(np.loadtxt(path), lm, atol=5e-7)
    np.testing.assert_allclose(read_pts(path), lm, atol=5e-7)


def test_ibug_layout_and_comments_read_as_loadlm_reads_them(tmp_path):
    lm = _lm(1)
    path = tmp_path / "ibug.pts"
    path.write_text("version: 1\nn_points: 68\n{\n# a comment\n" + "".join(f"{x} {y}\n" for x, y in lm) + "}\n")
    np.testing.assert_allclose(read_pts(path), lm, rtol=1e-6)


@pytest.mark.parametrize("text, words", [
    ("1 2\n" * 67, ["expected 68 landmark points", "found 67"]),
    ("1 2\n" * 69, ["found more than 68"]),
    ("1 2\n" * 67 + "nan 3\n", ["point 67", "finite"]),
    ("1 2\n" * 67 + "1e300 3\n", ["point 67", "within +-2^31 px"]),  # finite, but inf as float32
    ("", ["found 0"]),
])
def test_bad_pts_files(tmp_path, text, words):
    path = tmp_path / "bad.pts"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        read_pts(path)
    for w in [str(path), *words]:
        assert w in str(e.value)


def test_unreadable_files_and_bad_landmarks(tmp_path):
    with pytest.raises(InputError, match="cannot read the landmark file"):
        read_pts(tmp_path / "missing.pts")
    big = tmp_path / "big.pts"
    big.write_bytes(b"1 2\n" * 300_000)
    with pytest.raises(InputError, match="more than 1048576 bytes"):
        read_pts(big)
    (tmp_path / "bin.pts").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="expected UTF-8"):
        read_pts(tmp_path / "bin.pts")
    lm = _lm()
    lm[3, 1] = np.inf
    with pytest.raises(InputError, match="non-finite"):
        write_pts(tmp_path / "x.pts", lm)
    with pytest.raises(InputError, match=r"\[68, 2\]"):
        write_pts(tmp_path / "x.pts", lm[:10])
    assert not (tmp_path / "x.pts").exists()
