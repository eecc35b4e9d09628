"""engine.fileio.atomic_write: complete files or none, with the usual permissions."""
from __future__ import annotations

import os
import stat

import pytest

from engine.errors import InputError
from engine.fileio import atomic_write


def test_writes_whole_file_with_umask_mode(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_write(target) as f:
        f.write(b"abc")
    assert target.read_bytes() == b"abc"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert os.listdir(tmp_path) == ["out.bin"]


def test_error_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write("partial")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_missing_folder_and_bad_mode(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        with atomic_write(tmp_path / "nope" / "x.bin"):
            pass
    with pytest.raises(InputError, match="mode"):
        with atomic_write(tmp_path / "x.bin", "a"):
            pass
