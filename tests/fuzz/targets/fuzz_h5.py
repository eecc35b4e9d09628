"""Fuzz target: the trimmed-model loader on HDF5 bytes: h5py's layout and MATLAB v7.3's
(issue 13, finding 5: tiny files that declared huge datasets allocated gigabytes)."""
from __future__ import annotations

import h5py

from _morphable import bfm_files, file_bytes, scratch
from engine.errors import ModelFileError
from engine.morphable import load_trimmed
from engine.morphable import bfm, hdf5, mat5, matfiles  # noqa: F401  (loaded lazily by the loader;
#   imported here so a harness that instruments the loaded modules covers them)

EXPECTED = (ModelFileError,)
N, K = 10, 99


def _compressed(path, fields):
    with h5py.File(path, "w") as h5:
        for name, a in fields.items():
            h5.create_dataset(name, data=a, compression="gzip", shuffle=True, fletcher32=True,
                              chunks=tuple(max(1, s // 2) for s in a.shape))


def seeds() -> list[bytes]:
    """Small trimmed models (about 20-40 KB): h5py root datasets, chunked with
    gzip + shuffle + fletcher32, and MATLAB v7.3 (transposed, in a group)."""
    f = bfm_files.trimmed_arrays(N, K, seed=2, n_faces=8)
    return [
        file_bytes("a.h5", lambda p: bfm_files.write_h5(p, f)),
        file_bytes("b.h5", lambda p: _compressed(p, f)),
        file_bytes("c.mat", lambda p: bfm_files.write_h5(p, f, matlab73=True, group="BFM")),
    ]


def one_input(data: bytes) -> None:
    path = scratch() / "BaselFaceModel_mod.h5"
    path.write_bytes(data)
    load_trimmed(path)
