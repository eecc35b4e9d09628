"""Atomic file writing, and bounded JSON reading: the one place that decides how our own
records reach the disk and come back.

Every output file is written to a temporary name in the same folder and renamed
into place only when complete, so an error (or Ctrl-C) never leaves a partial
file under the final name. `read_json` reads back a JSON record the CLI wrote (a
progress record, a summary) with its size and nesting bounded first, so a damaged or
hostile file gives a typed error naming it, never a RecursionError or MemoryError;
`loads_json` is that guarded reader for any JSON text (the --boxes files, the face service's
boxes field), `json_depth` its linear-time nesting count.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
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


def json_depth(data: bytes | str) -> int:
    """Deepest nesting of [ and { outside strings in `data` (which need not be valid JSON),
    found without recursion and in linear time: json.loads recurses once per level and would
    raise RecursionError on a hostile text before any limit of ours applied. For any text
    json.loads reaches a depth in, this finds at least that depth (string boundaries agree on
    every valid prefix)."""
    import numpy as np

    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    b = np.frombuffer(raw, np.uint8)
    if b.size == 0:
        return 0
    idx = np.arange(b.size)
    backslash = b == 0x5C
    last_other = np.maximum.accumulate(np.where(backslash, -1, idx))
    run_before = np.zeros(b.size, np.int64)  # backslashes right before each byte
    run_before[1:] = idx[:-1] - last_other[:-1]
    quote = (b == 0x22) & (run_before % 2 == 0)  # an unescaped '"' opens or closes a string
    inside = (np.cumsum(quote) - quote) % 2 == 1
    step = np.zeros(256, np.int64)
    step[[0x5B, 0x7B]] = 1
    step[[0x5D, 0x7D]] = -1
    return int(np.cumsum(np.where(inside | quote, 0, step[b])).max(initial=0))


class JSONRefused(ValueError):
    """Why `loads_json` refused a text, in words to put after the caller's name for it.

    kind: "size", "depth", "utf-8" or "syntax"; line: the 1-based line the parser stopped at
    (syntax errors it located), else None; depth: the text's nesting (kind "depth"); detail:
    the parser's own words (syntax), without the line and column."""

    def __init__(self, kind: str, reason: str, line: int | None = None, depth: int | None = None,
                 detail: str | None = None):
        super().__init__(reason)
        self.kind, self.line, self.depth = kind, line, depth
        self.detail = detail or reason  # the parser's own words, without where it stopped


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def loads_json(data: bytes | str, *, max_bytes: int, max_depth: int = JSON_MAX_DEPTH, **hooks):
    """Parse the JSON text `data` (bytes: UTF-8) with its size and
    nesting bounded first: the one guarded JSON reader of the engine (`read_json`, the --boxes
    files of engine.detect, the face service's boxes field).

    Refuses, always with JSONRefused (a ValueError, never RecursionError or MemoryError): text
    over `max_bytes` (UTF-8 bytes), nested deeper than `max_depth`, not UTF-8, not JSON, or
    holding NaN/Infinity (Python's json extension, not JSON). `hooks` go to json.loads
    (parse_float, parse_int, object_pairs_hook...); a ValueError a hook raises is a syntax refusal.
    """
    # A str of more characters than max_bytes is over it in UTF-8 too: refused without a copy.
    size = len(data) if isinstance(data, bytes) or len(data) > max_bytes else \
        len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise JSONRefused("size", f"{size} bytes, larger than the {max_bytes} expected")
    depth = json_depth(data)
    if depth > max_depth:
        raise JSONRefused("depth", f"JSON nested {depth} levels deep, at most {max_depth} expected", depth=depth)
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JSONRefused("utf-8", f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    hooks.setdefault("parse_constant", _no_constant)
    try:
        return json.loads(data, **hooks)
    except json.JSONDecodeError as e:
        raise JSONRefused("syntax", f"not valid JSON: {e}", line=e.lineno, detail=e.msg) from None
    except (ValueError, RecursionError) as e:  # a hook's refusal; RecursionError: unreachable after the depth check
        raise JSONRefused("syntax", f"not valid JSON: {e}", detail=str(e)) from None


def read_json(path: str | os.PathLike, *, max_bytes: int, max_depth: int = JSON_MAX_DEPTH,
              error: type[EngineError] = ModelFileError):
    """Parse the JSON file at `path`, refusing (with `error`, naming the file) one larger than
    `max_bytes`, nested deeper than `max_depth`, not UTF-8, holding NaN/Infinity (not JSON), or
    not JSON at all (`loads_json`, the bounds checked before parsing)."""
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
    try:
        return loads_json(data, max_bytes=max_bytes, max_depth=max_depth, parse_float=_finite_float)
    except JSONRefused as e:
        raise error(f"{path}: {e}" + ("; not one this engine wrote" if e.kind == "depth" else "")) from None


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):  # 1e999 parses to inf
        raise ValueError(f"number {text[:40]} is out of range")
    return v
