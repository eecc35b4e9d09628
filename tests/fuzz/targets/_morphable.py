"""Shared by the morphable-model fuzz targets: a scratch folder, and the test writers of
tests/morphable/bfm_files.py (the seeds are built with them, like the tests' own files)."""
from __future__ import annotations

import atexit
import functools
import shutil
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]
SHARED = TESTS.parent.parent / "shared" / "cnn3dmm"
sys.path.insert(0, str(TESTS / "morphable"))

import bfm_files  # noqa: E402  (needs the path above)


@functools.lru_cache(maxsize=1)
def scratch() -> Path:
    """One temporary folder per process, removed at exit (the loaders take paths)."""
    path = Path(tempfile.mkdtemp(prefix="e3dmm-fuzz-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def file_bytes(name: str, write) -> bytes:
    """Bytes of a file made by `write(path)` in the scratch folder."""
    path = scratch() / name
    write(path)
    return path.read_bytes()
