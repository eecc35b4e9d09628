"""`load_model`: one entry point for every model form, chosen by content first.

Content decides because users rename files (a `.mat` re-saved by MATLAB v7.3 is HDF5); the
extension only matters to give a `.e3dmm` with a bad header the cache's own error message.
"""
from __future__ import annotations

import os
from pathlib import Path

from engine.errors import ModelFileError
from engine.morphable.cache import MAGIC, read_cache
from engine.morphable.model import MorphableModel


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
    if not p.is_file():
        raise ModelFileError(f"{p}: expected a model file (.e3dmm, .mat or .h5), found "
                             f"{'a folder' if p.is_dir() else 'nothing at this path'}")
    with open(p, "rb") as f:
        head = f.read(len(MAGIC))
    if head == MAGIC or p.suffix.lower() == ".e3dmm":
        return read_cache(p)
    from engine.morphable.bfm import load_bfm2009, load_trimmed

    if mod_struct_mat is not None:
        return load_bfm2009(p, mod_struct_mat)
    return load_trimmed(p)  # says so when the file is the untrimmed BFM 2009
