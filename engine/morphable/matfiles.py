"""Named arrays from MATLAB and HDF5 files, with every read failure made a ModelFileError.

Users hold the same model in three containers:
- MATLAB v5 `.mat` (scipy.io.loadmat): fields at the top level (BFM 2009's
  `01_MorphableModel.mat`) or inside one struct (the release's `BaselFaceModel_mod.mat`
  keeps everything in a struct called `BFM`);
- HDF5 written by h5py (the release's `BaselFaceModel_mod.h5`): datasets at the root, in
  numpy's row-major shapes ([3N, K], [F, 3]);
- MATLAB v7.3 `.mat`, which is HDF5 too, but column-major: every matrix appears transposed
  ([K, 3N], [3, F]) and a struct becomes a group.
`FieldSource` hides the container; `matrix()` and `vector()` undo the transposition by
comparing shapes with what the caller knows must be there.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError, describe_array

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path: Path) -> bool:
    """HDF5 puts its signature at byte 0, 512, 1024, ...; MATLAB v7.3 uses 512 (after a text header)."""
    with open(path, "rb") as f:
        for offset in (0, 512, 1024, 2048):
            f.seek(offset)
            if f.read(8) == HDF5_SIGNATURE:
                return True
    return False


class FieldSource:
    """The arrays of one model file, by field name, loaded on demand."""

    def __init__(self, path: str | os.PathLike, wanted: tuple[str, ...]):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: expected a model file, found "
                                 f"{'a folder' if self.path.is_dir() else 'nothing'} at this path")
        self._arrays: dict[str, object] = {}
        try:
            if is_hdf5(self.path):
                self._open_hdf5(wanted)
            else:
                self._open_mat_v5(wanted)
        except ModelFileError:
            raise
        except Exception as e:  # scipy/h5py raise many types for corrupt input; name the file
            raise ModelFileError(f"{self.path}: cannot read as a MATLAB v5 or HDF5 file: "
                                 f"{type(e).__name__}: {e}") from e

    # --- containers ---------------------------------------------------------
    def _open_mat_v5(self, wanted: tuple[str, ...]) -> None:
        import scipy.io

        self.container = "MATLAB v5"
        self.column_major = False  # loadmat already returns MATLAB's shapes
        info = {name: cls for name, _, cls in scipy.io.whosmat(str(self.path))}
        if not info:
            raise ModelFileError(f"{self.path}: expected MATLAB variables, found none")
        if any(w in info for w in wanted):
            names = [w for w in wanted if w in info]
            self._arrays = scipy.io.loadmat(str(self.path), variable_names=names)
            self.location = "top level"
            return
        structs = [n for n, c in info.items() if c == "struct"]
        for name in structs:  # the release's BaselFaceModel_mod.mat: one struct `BFM`
            s = scipy.io.loadmat(str(self.path), variable_names=[name])[name]
            if s.dtype.names and any(w in s.dtype.names for w in wanted) and s.size == 1:
                rec = s.reshape(-1)[0]
                self._arrays = {f: rec[f] for f in s.dtype.names}
                self.location = f"struct {name}"
                return
        raise ModelFileError(f"{self.path}: expected fields {', '.join(wanted)} (at the top level "
                             f"or in one struct), found variables {sorted(info)}")

    def _open_hdf5(self, wanted: tuple[str, ...]) -> None:
        import h5py

        with open(self.path, "rb") as f:
            matlab = f.read(10) == b"MATLAB 7.3"
        # MATLAB v7.3 writes column-major: a MATLAB [3N, K] matrix is an HDF5 [K, 3N] dataset.
        self.container = "MATLAB v7.3 (HDF5)" if matlab else "HDF5"
        self.column_major = matlab
        with h5py.File(self.path, "r") as h5:
            group, self.location = h5, "root"
            if not any(w in h5 for w in wanted):
                groups = [k for k in h5 if isinstance(h5[k], h5py.Group) and any(w in h5[k] for w in wanted)]
                if len(groups) != 1:
                    raise ModelFileError(f"{self.path}: expected datasets {', '.join(wanted)} at the root "
                                         f"or in one group, found {sorted(h5.keys())}")
                group, self.location = h5[groups[0]], f"group {groups[0]}"
            for name in wanted:
                if name in group:
                    item = group[name]
                    if not isinstance(item, h5py.Dataset):
                        raise ModelFileError(f"{self.path}: {name}: expected a numeric dataset, found a group")
                    self._arrays[name] = item[()]

    # --- access -------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self._arrays

    def names(self) -> list[str]:
        return sorted(k for k in self._arrays if not k.startswith("__"))

    def raw(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            raise ModelFileError(f"{self.path}: {name}: expected this field ({self.container}, "
                                 f"{self.location}), found only {self.names()}")
        a = np.asarray(self._arrays[name])
        if a.dtype.kind not in "fiub" or a.ndim > 2:
            raise ModelFileError(f"{self.path}: {name}: expected a numeric matrix, found {describe_array(a)}")
        return a

    def vector(self, name: str, length: int | None = None) -> np.ndarray:
        """A vector stored as [n], [n, 1] or [1, n] (all three occur), flattened."""
        a = self.raw(name)
        if a.ndim == 2 and 1 not in a.shape or (length is not None and a.size != length):
            want = f"a vector of {length}" if length is not None else "a vector [n, 1] or [1, n]"
            raise ModelFileError(f"{self.path}: {name}: expected {want}, found {describe_array(a)}")
        return a.reshape(-1)

    def matrix(self, name: str, rows: int | None, cols: int | None, *, min_cols: int = 1) -> np.ndarray:
        """A [rows, cols] matrix (None = any), accepting the transposed layout of column-major
        writers; `min_cols` bounds an unknown `cols`. Returns a view where possible."""
        a = self.raw(name)

        def fits(shape) -> bool:
            return (len(shape) == 2 and (rows is None or shape[0] == rows)
                    and (shape[1] == cols if cols is not None else shape[1] >= min_cols))

        # MATLAB v5 (loadmat) has MATLAB's own shapes: one layout only. HDF5 comes both ways
        # (h5py row-major, MATLAB v7.3 / h5write column-major): try the container's usual
        # layout, then the other one.
        layouts = [a] if self.container == "MATLAB v5" else [a.T, a] if self.column_major else [a, a.T]
        for cand in layouts:
            if fits(cand.shape):
                return cand
        r = "any" if rows is None else str(rows)
        c = str(cols) if cols is not None else f">= {min_cols}"
        either = " (or its transpose)" if len(layouts) == 2 else ""
        raise ModelFileError(f"{self.path}: {name}: expected a [{r}, {c}] matrix{either}, "
                             f"found {describe_array(a)}")
