"""`load_model`: one entry point for every model form, chosen by content first.

Content decides because users rename files (a `.mat` re-saved by MATLAB v7.3 is HDF5); the
extension only matters to give a `.e3dmm` with a bad header the cache's own error message.
A file that is none of the three forms (`model_file_kind`) is refused as "not a model file",
saying what it holds (text, an image, an archive...), before any parser sees it.
"""
from __future__ import annotations

import os
from pathlib import Path

from engine.errors import ModelFileError
from engine.morphable.cache import MAGIC, read_cache
from engine.morphable.matfiles import HDF5_SIGNATURE, is_hdf5
from engine.morphable.model import MorphableModel

EXPECTED = "expected an .e3dmm model cache, a MATLAB .mat or an HDF5 .h5 file"
# What other files people pick by mistake, by their first bytes.
_OTHER_SIGNATURES = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"PK\x03\x04", "a ZIP archive"),
                     (b"\x1f\x8b", "a gzip archive"), (b"%PDF", "a PDF document"), (b"\x7fELF", "a program (ELF)"),
                     (b"GIF8", "a GIF image"), (b"BZh", "a bzip2 archive"),
                     (b"\xfd7zXZ", "an xz archive"), (b"7z\xbc\xaf", "a 7-Zip archive"))


def _is_mat5(head: bytes, suffix: str) -> bool:
    """MATLAB v5 by its 128-byte header: the descriptive text ("MATLAB 5.0 MAT-file", as MATLAB
    and scipy write it) or the endian mark "IM"/"MI" at bytes 126-127. A .mat file with neither
    counts too, unless it is plainly something else (text, a known signature): engine.morphable.mat5
    then says which part of the header is wrong."""
    if head.startswith(b"MATLAB") or (len(head) >= 128 and head[126:128] in (b"IM", b"MI")):
        return True
    return suffix == ".mat" and not _plainly_other(head)


def _plainly_other(head: bytes) -> bool:
    return any(head.startswith(sig) for sig, _ in _OTHER_SIGNATURES) or _as_text(head) is not None


def _as_text(head: bytes) -> str | None:
    """The first bytes as text when they are printable UTF-8 (None: binary)."""
    sample = head[:512]
    if not sample:
        return None
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as e:  # a multi-byte character cut at the end of the sample is still text
        if e.start < len(sample) - 3:
            return None
        text = sample[:e.start].decode("utf-8")
    return text if all(ord(c) >= 32 or c in "\t\r\n" for c in text) else None


def _what(head: bytes, size: int) -> str:
    if size == 0:
        return "an empty file (0 bytes)"
    for sig, what in _OTHER_SIGNATURES:
        if head.startswith(sig):
            return what
    text = _as_text(head)
    if text is not None:
        first = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"text ({first!r} ...)" if first else "text (blank lines)"
    return f"binary data of another kind (first bytes {head[:8].hex(' ')})"


def model_file_kind(path: str | os.PathLike) -> str:
    """'e3dmm', 'mat5' or 'hdf5': the form of a model file, by its content (a file named .e3dmm
    is taken as a cache, so that a damaged one gets the cache's own message). Reads at most the
    first 2 KB. ModelFileError naming the file when it is missing, a folder, or none of them:
    "not a model file (expected ...; found text ('...'))". Used before any parser runs, and by
    the CLI to check --model before it creates an output folder."""
    p = Path(path)
    if p.suffix.lower() == ".e3dmm" and os.path.lexists(p) and not p.is_dir():
        return "e3dmm"  # engine.morphable.cache names every way such a file can be wrong
    if not p.is_file():
        found = "a folder" if p.is_dir() else "a special file" if p.exists() else "nothing at this path"
        raise ModelFileError(f"{p}: {EXPECTED}, found {found}")
    try:
        with open(p, "rb") as f:
            head = f.read(2048 + len(HDF5_SIGNATURE))
        size = p.stat().st_size
    except OSError as e:
        raise ModelFileError(f"{p}: cannot read: {e.strerror or e}") from None
    if head.startswith(MAGIC):
        return "e3dmm"
    if is_hdf5(p):
        return "hdf5"
    if _is_mat5(head, p.suffix.lower()):
        return "mat5"
    raise ModelFileError(f"{p}: not a model file ({EXPECTED}; found {_what(head, size)})")


def load_model(path: str | os.PathLike | None = None, *, mod_struct_mat: str | os.PathLike | None = None,
               seed: int = 0) -> MorphableModel:
    """Load a morphable model.

    - `path=None`: the built-in synthetic model for `seed` (labelled synthetic).
    - a `.e3dmm` cache: memory-mapped.
    - BFM 2009 `01_MorphableModel.mat` together with `mod_struct_mat=` (the release's
      `mod_struct_expr.mat`): trimmed by the release's rule.
    - the release's trimmed `BaselFaceModel_mod.mat` (MATLAB v5 or v7.3) or `.h5`.

    Raises ModelFileError (naming the file and field) for any missing, damaged, hostile or
    inconsistent file, including NaN/Inf values and sizes beyond those of a face model.
    """
    if path is None:
        from engine.morphable.synthetic import synthetic_model

        return synthetic_model(seed)
    p = Path(path)
    if model_file_kind(p) == "e3dmm":
        return read_cache(p)
    from engine.morphable.bfm import load_bfm2009, load_trimmed

    if mod_struct_mat is not None:
        return load_bfm2009(p, mod_struct_mat)
    return load_trimmed(p)  # says so when the file is the untrimmed BFM 2009
