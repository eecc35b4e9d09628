"""Atomic file writing: the one place that decides how outputs reach the disk.

Every output file is written to a temporary name in the same folder and renamed
into place only when complete, so an error (or Ctrl-C) never leaves a partial
file under the final name.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from engine.errors import InputError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; rename it to `path` on success.

    On any exception the temporary file is removed and the exception propagates.
    """
    if mode not in ("wb", "w"):
        raise InputError(f"atomic_write: mode: expected 'wb' or 'w', found {mode!r}")
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{path}: output folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=folder)
    except OSError as e:
        raise InputError(f"{path}: cannot write in folder {folder}: {e.strerror}") from e
    try:
        # mkstemp creates the file 0600; outputs get the usual umask-based mode instead.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": "\n"} if mode == "w" else {})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any
    # thread of ours could create files in the moment it is changed.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK
