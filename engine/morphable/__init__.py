"""Morphable face models: load every form users have, validate, cache, or synthesise.

Public surface:
- `MorphableModel`: the arrays (sigma folded into K-major bases) and its constructors
  `from_bfm2009`, `from_mod_mat`, `from_mod_h5`, `load_cache`, `synthetic(seed)`, plus
  `save_cache(path)`;
- `load_model(path=None, *, mod_struct_mat=None, seed=0)`: any form, chosen by content;
  no path gives the built-in synthetic model.

Every file is treated as hostile: MATLAB v5 elements are checked before scipy parses them
(`mat5`), HDF5 shapes, links, types and storage before h5py reads them (`hdf5`), all sizes
against the bounds of a face model (`model.MAX_VERTICES`, ...), and non-finite values are
refused (`model.validate_arrays`). A bad file is a ModelFileError naming the file and field.
"""
from engine.morphable.loading import load_model
from engine.morphable.model import MorphableModel

__all__ = ["MorphableModel", "load_model"]
