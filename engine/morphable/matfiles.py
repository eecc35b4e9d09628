"""Named arrays from MATLAB and HDF5 files, with every read failure made a ModelFileError.

Users hold the same model in three containers:
- MATLAB v5 `.mat` (scipy.io.loadmat, after engine.morphable.mat5 checks every element):
  fields at the top level (BFM 2009's `01_MorphableModel.mat`) or inside one struct (the
  release's `BaselFaceModel_mod.mat` keeps everything in a struct called `BFM`);
- HDF5 written by h5py (the release's `BaselFaceModel_mod.h5`): datasets at the root, in
  numpy's row-major shapes ([3N, K], [F, 3]);
- MATLAB v7.3 `.mat`, which is HDF5 too, but column-major: every matrix appears transposed
  ([K, 3N], [3, F]) and a struct becomes a group.
`FieldSource` hides the container; `matrix()` and `vector()` undo the transposition by
comparing shapes with what the caller knows must be there. Nothing is read until a field is
asked for, and its declared shape is checked first: a field that is only tested with `has()`
is never read.
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


def _describe(shape: tuple[int, ...], dtype) -> str:
    return f"{dtype}[{', '.join(str(s) for s in shape)}]"


class FieldSource:
    """The arrays of one model file, by field name, read on demand."""

    def __init__(self, path: str | os.PathLike, wanted: tuple[str, ...]):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: expected a model file, found "
                                 f"{'a folder' if self.path.is_dir() else 'nothing'} at this path")
        self._arrays: dict[str, np.ndarray] = {}  # fields read so far
        self._h5: dict = {}  # HDF5: field -> hdf5.Dataset (declared shape and dtype)
        self._mat: dict = {}  # MATLAB v5 top level: field -> mat5.Variable
        self._struct = None  # MATLAB v5 struct holding the fields: its mat5.Variable
        self._available: list[str] = []
        self._guard(lambda: self._open_hdf5(wanted) if is_hdf5(self.path) else self._open_mat_v5(wanted))

    def _guard(self, action):
        try:
            return action()
        except ModelFileError:
            raise
        except MemoryError as e:  # sizes are bounded first: this machine lacks memory for a model this size
            raise ModelFileError(f"{self.path}: out of memory reading this {getattr(self, 'container', 'model')} "
                                 f"file (within the model bounds of engine.morphable.model): {e}") from e
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
            # libhdf5 reports a corrupt file as any of these (through h5py); so does the OS for a
            # file that vanished. Anything else is a bug here, and stays visible as one.
            raise ModelFileError(f"{self.path}: cannot read as a {getattr(self, 'container', 'MATLAB v5 or HDF5')} "
                                 f"file: {type(e).__name__}: {e}") from e

    # --- containers ---------------------------------------------------------
    def _open_mat_v5(self, wanted: tuple[str, ...]) -> None:
        from engine.morphable import mat5

        self.container = "MATLAB v5"
        self.column_major = False  # loadmat already returns MATLAB's shapes
        info = mat5.list_variables(self.path)
        if not info:
            raise ModelFileError(f"{self.path}: expected MATLAB variables, found none")
        if any(w in info for w in wanted):
            self._mat = {w: info[w] for w in wanted if w in info}
            self._available = list(self._mat)
            self.location = "top level"
            return
        for var in info.values():  # the release's BaselFaceModel_mod.mat: one struct `BFM`
            if var.mclass == "struct" and any(w in var.fields for w in wanted) and var.dims in ((1, 1), (1,)):
                self._struct = var
                self._available = [f for f in var.fields if f in wanted]
                self.location = f"struct {var.name}"
                return
        raise ModelFileError(f"{self.path}: expected fields {', '.join(wanted)} (at the top level "
                             f"or in one struct), found variables {sorted(info)}")

    def _open_hdf5(self, wanted: tuple[str, ...]) -> None:
        from engine.morphable import hdf5

        self.container = "HDF5"
        matlab, self.location, self._h5 = hdf5.find(self.path, wanted)
        # MATLAB v7.3 writes column-major: a MATLAB [3N, K] matrix is an HDF5 [K, 3N] dataset.
        self.container = "MATLAB v7.3 (HDF5)" if matlab else "HDF5"
        self.column_major = matlab
        self._available = list(self._h5)

    def _read(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._guard(lambda: self._load(name))
        return self._arrays[name]

    def _load(self, name: str) -> None:
        from engine.morphable import hdf5, mat5

        if name in self._h5:
            self._arrays[name] = hdf5.read(self.path, self._h5[name])
        elif name in self._mat:
            self._arrays[name] = np.asarray(mat5.load_variable(self.path, self._mat[name]))
        else:  # a field of the struct: scipy reads the struct whole, once
            s = mat5.load_variable(self.path, self._struct)
            if s.size != 1 or not set(self._available) <= set(s.dtype.names or ()):
                raise ModelFileError(f"{self.path}: {self._struct.name}: expected a 1x1 struct with fields "
                                     f"{self._available} (as when the file was opened), found "
                                     f"{describe_array(s)} with fields {s.dtype.names} (the file changed?)")
            rec = s.reshape(-1)[0]
            for f in self._available:
                self._arrays[f] = np.asarray(rec[f])

    def _declared(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype before reading where the container says them (HDF5)."""
        if name in self._h5:
            return self._h5[name].shape, self._h5[name].dtype
        a = self._read(name)  # MATLAB v5: bounded by mat5's checks, so reading is how to know
        return a.shape, a.dtype

    # --- access -------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self._available

    def names(self) -> list[str]:
        return sorted(self._available)

    def raw(self, name: str) -> np.ndarray:
        if name not in self._available:
            raise ModelFileError(f"{self.path}: {name}: expected this field ({self.container}, "
                                 f"{self.location}), found only {self.names()}")
        shape, dtype = self._declared(name)
        if dtype.kind not in "fiub" or len(shape) > 2:
            raise ModelFileError(f"{self.path}: {name}: expected a numeric matrix, found {_describe(shape, dtype)}")
        return self._read(name)

    def vector(self, name: str, length: int | None = None, *, max_length: int | None = None) -> np.ndarray:
        """A vector stored as [n], [n, 1] or [1, n] (all three occur), flattened; `length` is
        the exact size, `max_length` a bound checked before the data is read."""
        if name in self._available:
            shape, dtype = self._declared(name)
            size = int(np.prod(shape))
            if (len(shape) == 2 and 1 not in shape or (length is not None and size != length)
                    or (max_length is not None and size > max_length)):
                want = (f"a vector of {length}" if length is not None else
                        f"a vector [n, 1] or [1, n] with n <= {max_length}" if max_length is not None
                        else "a vector [n, 1] or [1, n]")
                raise ModelFileError(f"{self.path}: {name}: expected {want}, found {_describe(shape, dtype)}")
        return self.raw(name).reshape(-1)

    def matrix(self, name: str, rows: int | None, cols: int | None, *, min_cols: int = 1,
               max_cols: int | None = None, max_rows: int | None = None) -> np.ndarray:
        """A [rows, cols] matrix (None = any), accepting the transposed layout of column-major
        writers; `min_cols`/`max_cols` bound an unknown `cols`, `max_rows` an unknown `rows`,
        all checked on the declared shape before the data is read. Returns a view where possible."""
        if name not in self._available:
            self.raw(name)  # says which fields there are
        shape, dtype = self._declared(name)

        def fits(s) -> bool:
            return (len(s) == 2 and (s[0] == rows if rows is not None else max_rows is None or s[0] <= max_rows)
                    and (s[1] == cols if cols is not None else
                         s[1] >= min_cols and (max_cols is None or s[1] <= max_cols)))

        # MATLAB v5 (loadmat) has MATLAB's own shapes: one layout only. HDF5 comes both ways
        # (h5py row-major, MATLAB v7.3 / h5write column-major): try the container's usual
        # layout, then the other one.
        flips = [False] if self.container == "MATLAB v5" else [True, False] if self.column_major else [False, True]
        for flip in flips:
            if fits(tuple(reversed(shape)) if flip else shape):
                a = self.raw(name)
                return a.T if flip else a
        r = str(rows) if rows is not None else "any"
        c = str(cols) if cols is not None else f">= {min_cols}"
        bounds = ([f"{max_rows} rows"] if rows is None and max_rows is not None else []) + \
                 ([f"{max_cols} columns"] if cols is None and max_cols is not None else [])
        bound = f" of at most {' and '.join(bounds)}" if bounds else ""
        either = " (or its transpose)" if len(flips) == 2 else ""
        raise ModelFileError(f"{self.path}: {name}: expected a [{r}, {c}] matrix{bound}{either}, "
                             f"found {_describe(shape, dtype)}")
