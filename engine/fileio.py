"""Atomic file writing, and bounded JSON reading: the one place that decides how our own
records reach the disk and come back.

Every output file is written to a temporary name in the same folder and renamed
into place only when complete, so an error (or Ctrl-C) never leaves a partial
file under the final name. `read_json` reads back a JSON record the CLI wrote (a
progress record, a summary) with its size and nesting bounded first, so a damaged or
hostile file gives a typed error naming it, never a RecursionError or MemoryError.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
from pathlib import Path
from typing import IO, Iterator

from engine.errors import EngineError, InputError, ModelFileError


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
    # The temporary's name is drawn before the file is created (64 random bits: never another
    # file's), so a Ctrl-C landing anywhere, also right after the creation (tempfile.mkstemp runs
    # Python code there, and left its file behind), removes it by name.
    tmp = folder / f".{path.name}.{os.urandom(8).hex()}.partial"
    try:
        try:
            # O_EXCL: a new file of ours. Mode 0o666, less the umask (the kernel applies it): the
            # usual one for outputs, and the umask is never read (reading it means setting it).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except OSError as e:
            tmp = None  # not created (O_EXCL): nothing of ours to remove
            raise InputError(f"{path}: cannot write in folder {folder}: {e.strerror}") from e
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": "\n"} if mode == "w" else {})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


JSON_MAX_DEPTH = 64  # as the C++ cache reader; our records nest 4 deep
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _json_depth(data: bytes) -> int:
    """Deepest nesting of [ and { outside strings (the text need not be valid JSON)."""
    import numpy as np

    bare = _JSON_STRING.sub(b'""', data)
    step = np.zeros(256, np.int8)
    step[list(b"[{")] = 1
    step[list(b"]}")] = -1
    depth = np.cumsum(step[np.frombuffer(bare, np.uint8)], dtype=np.int64)
    return int(depth.max()) if depth.size else 0


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def read_json(path: str | os.PathLike, *, max_bytes: int, max_depth: int = JSON_MAX_DEPTH,
              error: type[EngineError] = ModelFileError):
    """Parse the JSON file at `path`, refusing (with `error`, naming the file) one larger than
    `max_bytes`, nested deeper than `max_depth`, not UTF-8, holding NaN/Infinity (not JSON), or
    not JSON at all. The depth is checked on the raw text before parsing, so Python's
    recursive parser never recurses deeper; the size bounds the memory the parse can use."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise error(f"{path}: {size} bytes, larger than the {max_bytes} a file of this kind can be; "
                        "not one this engine wrote")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > max_bytes:  # grew since the size check
        raise error(f"{path}: larger than the {max_bytes} bytes a file of this kind can be")
    depth = _json_depth(data)
    if depth > max_depth:
        raise error(f"{path}: JSON nested {depth} levels deep, at most {max_depth} expected; "
                    "not one this engine wrote")
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant,
                          parse_float=_finite_float)
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (ValueError, RecursionError) as e:  # RecursionError: unreachable after the depth check; kept typed
        raise error(f"{path}: not valid JSON: {e}") from None


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):  # 1e999 parses to inf
        raise ValueError(f"number {text[:40]} is out of range")
    return v
