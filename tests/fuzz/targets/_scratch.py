"""Shared by the fuzz targets whose parsers take paths: one scratch folder per process, and the
bytes of a small valid file written into it by the project's own writer."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=1)
def scratch() -> Path:
    """One temporary folder per process, removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="e3dmm-fuzz-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def file_bytes(name: str, write) -> bytes:
    """Bytes of a file made by `write(path)` in the scratch folder."""
    path = scratch() / name
    write(path)
    return path.read_bytes()
