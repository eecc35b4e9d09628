"""Fuzz target: the `.e3dmm` model cache, both readers at once (issue 13, findings 2, 3, 4,
7 and 8). The input is the file. The Python reader (engine.morphable.cache.read_cache) and
the C++ one (engine._C.load_cache_summary, i.e. e3dmm::MorphableModel::load) must give the
same verdict and see the same model; an accepted model is decoded at zero coefficients
(which must give exactly its mean shape and clamped mean colour) and written as a PLY.
The C++ reader alone, under ASan/UBSan, is tests/fuzz/cpp/fuzz_cache.cpp (same corpus).
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "morphable"))
import cache_bytes  # noqa: E402  (tests/morphable: the spec-level file builder and the two verdicts)

from engine import mesh_io  # noqa: E402
from engine.decode import Decoder  # noqa: E402
from engine.errors import ModelFileError  # noqa: E402
from engine.morphable import MorphableModel, cache, model, write_cache  # noqa: E402,F401  (instrumented with the target)

EXPECTED = (ModelFileError,)
CI_RUNS = 20000  # about 8 s: most inputs are refused within the header


@functools.lru_cache(maxsize=1)
def _path() -> Path:
    """One scratch file per process, on tmpfs when there is one (an input is written per run)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    folder = Path(tempfile.mkdtemp(prefix="e3dmm-fuzz-cache-", dir=base))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder / "model.e3dmm"


def _write(model_: MorphableModel) -> bytes:
    write_cache(model_, _path())  # the project's own writer
    return _path().read_bytes()


def seeds() -> list[bytes]:
    """Small valid caches (about 1-2 KB) written by engine's writer: with and without landmarks,
    one vertex and one component, and metadata with nested values."""
    out = []
    for sizes, lm, meta in [((4, 2, 3, 2), 3, {}), ((1, 1, 1, 1), None, {}),
                            ((6, 3, 2, 4), 68, {"extra": {"list": [1, -2.5e-3, None, True, "\u00e9"], "o": {}}})]:
        n, ks, kt, f = sizes
        arrays = cache_bytes.tiny_arrays(n=n, ks=ks, kt=kt, f=f, landmarks=lm, seed=n)
        out.append(_write(MorphableModel(**arrays, metadata={"name": f"seed{n}", "source": "fuzz", **meta})))
    # The optional arrays of issue 9: outer landmarks and an expression basis.
    arrays = cache_bytes.tiny_arrays(n=5, ks=2, kt=2, f=3, landmarks=4, outer=True, ke=3, seed=9)
    out.append(_write(MorphableModel(**arrays, metadata={"name": "seed-optional", "source": "fuzz"})))
    return out


def one_input(data: bytes) -> None:
    path = _path()
    path.write_bytes(data)
    py = cache_bytes.python_verdict(path)
    if cache_bytes.cpp_reader() is not None:
        cpp = cache_bytes.cpp_verdict(path)
        if py[0] != cpp[0] or (py[0] and py[1] != cpp[1]):
            raise AssertionError(f"the readers disagree: Python {py}, C++ {cpp}")
    if not py[0]:
        raise ModelFileError(py[1])
    m = cache.read_cache(path)
    json.dumps(m.metadata)  # what the reader returned is JSON again
    coeffs = np.zeros((1, m.shape_components + m.tex_components), np.float32)
    out = Decoder(m).decode(coeffs, outputs=("vertices", "colors", "records"))
    np.testing.assert_array_equal(out.vertices[0].reshape(-1), m.shape_mean)
    np.testing.assert_array_equal(out.colors[0].reshape(-1), np.clip(m.tex_mean, 0, 255).astype(np.uint8))
    mesh_io.ply_bytes(out.records[0], m.faces)
