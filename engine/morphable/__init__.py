"""Morphable face models: load every form users have, validate, cache, or synthesise.

Public surface (each function lives in its own module; `MorphableModel` is only the arrays and
their check, the bottom of this room, and imports none of the others):
- `MorphableModel`: the arrays (sigma folded into K-major bases), `replace(...)`, and
  `synthetic` (is this the built-in synthetic model?);
- `load_model(path=None, *, mod_struct_mat=None, seed=0)`: any form, chosen by content;
  no path gives the built-in synthetic model;
- `load_bfm2009(bfm_mat, mod_struct_mat)`: the Basel Face Model 2009 trimmed as the release does;
  `load_trimmed(path)`: the release's trimmed `BaselFaceModel_mod.mat` (v5 or v7.3) or `.h5`;
- `read_cache(path)`, `write_cache(model, path)`: the `.e3dmm` cache (memory-mapped; written
  atomically);
- `synthetic_model(seed=0)`: the built-in synthetic model (memoised, labelled synthetic).

Every file is treated as hostile: MATLAB v5 elements are checked before scipy parses them
(`mat5`), HDF5 shapes, links, types and storage before h5py reads them (`hdf5`), all sizes
against the bounds of a face model (`model.MAX_VERTICES`, ...), and non-finite values are
refused (`model.validate_arrays`). A bad file is a ModelFileError naming the file and field.
Importing this package loads neither scipy nor h5py: the readers import them when they read.
"""
from engine.morphable.bfm import load_bfm2009, load_trimmed
from engine.morphable.cache import read_cache, write_cache
from engine.morphable.loading import load_model
from engine.morphable.model import MorphableModel
from engine.morphable.synthetic import synthetic_model

__all__ = ["MorphableModel", "load_bfm2009", "load_model", "load_trimmed", "read_cache", "synthetic_model",
           "write_cache"]
