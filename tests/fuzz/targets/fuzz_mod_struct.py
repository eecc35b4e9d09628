"""Fuzz target: BFM 2009 trimmed by a fuzzed mod_struct_expr.mat (MATLAB v5), with a small
valid BFM 2009 beside it (issue 13, finding 1 reached scipy's crash through this file too)."""
from __future__ import annotations

import functools

from _morphable import SHARED, bfm_files, file_bytes, scratch
from engine.errors import ModelFileError
from engine.morphable import load_bfm2009
from engine.morphable import bfm, hdf5, mat5, matfiles  # noqa: F401  (loaded lazily by the loader;
#   imported here so a harness that instruments the loaded modules covers them)

EXPECTED = (ModelFileError,)
N_BFM, K, N_KEPT, N_FACES = 40, 99, 25, 30


@functools.lru_cache(maxsize=1)
def _bfm() -> str:
    path = scratch() / "01_MorphableModel.mat"
    bfm_files.write_mat_v5(path, bfm_files.bfm2009_arrays(N_BFM, K, seed=3, n_triangles=10))
    return str(path)


def seeds() -> list[bytes]:
    """Small mod_structs (struct `mod_struct`, plain and miCOMPRESSED, about 1 KB), and the
    real release's mod_struct_expr.mat (824 KB, compressed) when ../shared has it."""
    import scipy.io

    ms = bfm_files.mod_struct_arrays(N_BFM, N_KEPT, N_FACES, seed=4)
    out = [file_bytes("m.mat", lambda p: scipy.io.savemat(p, {"mod_struct": ms}, do_compression=c))
           for c in (False, True)]
    real = SHARED / "mod_struct_expr.mat"
    if real.is_file():
        out.append(real.read_bytes())
    return out


def one_input(data: bytes) -> None:
    path = scratch() / "mod_struct_expr.mat"
    path.write_bytes(data)
    load_bfm2009(_bfm(), path)
