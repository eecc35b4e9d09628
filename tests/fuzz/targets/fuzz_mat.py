"""Fuzz target: the trimmed-model loader (BaselFaceModel_mod) on MATLAB v5 bytes (issue 13,
finding 1: one changed data-type code crashed scipy's reader with SIGSEGV)."""
from __future__ import annotations

import numpy as np
import scipy.io

from _morphable import bfm_files, file_bytes, scratch
from engine.errors import ModelFileError
from engine.morphable import load_trimmed
from engine.morphable import bfm, hdf5, mat5, matfiles  # noqa: F401  (loaded lazily by the loader;
#   imported here so a harness that instruments the loaded modules covers them)

EXPECTED = (ModelFileError,)
N, K = 10, 99  # the loader keeps 99 components, so a seed needs at least 99


def seeds() -> list[bytes]:
    """Small trimmed models (about 10-30 KB): struct BFM and top-level fields, plain and
    miCOMPRESSED, plus one struct with a char, a cell and a nested struct beside the fields."""
    f = bfm_files.trimmed_arrays(N, K, seed=1, n_faces=8)
    extra = {**f, "note": "trimmed", "cells": np.array([[np.zeros(2), "x"]], dtype=object),
             "inner": {"a": np.ones((2, 2), np.int16)}}
    out = []
    for compress in (False, True):
        out.append(file_bytes("s.mat", lambda p: scipy.io.savemat(p, {"BFM": f}, do_compression=compress)))
        out.append(file_bytes("t.mat", lambda p: scipy.io.savemat(p, f, do_compression=compress)))
        out.append(file_bytes("x.mat", lambda p: scipy.io.savemat(p, {"BFM": extra}, do_compression=compress)))
    return out


def one_input(data: bytes) -> None:
    path = scratch() / "BaselFaceModel_mod.mat"
    path.write_bytes(data)
    load_trimmed(path)
