"""Resident memory: giving freed C-heap pages back to the system (after a runner is built).

- ``release_free_heap()``  glibc's malloc_trim(0); does nothing on other C libraries
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
    return trim


def release_free_heap() -> None:
    """Return the C heap's free pages to the system (glibc's malloc_trim(0)); a no-op elsewhere.

    Why: glibc keeps freed blocks that lie between live ones resident for the rest of the
    process. Building a runner frees two such masses: ONNX Runtime's parse of the 170 MB graph
    file (about 290 MB, freed once its session holds the initializers) and the network's weights
    (170 MB, freed once the runner has its own copy). Later allocations as large as a photo are
    mapped afresh and never reuse them, so they only raise the process's peak: measured with
    /proc/self/status on the 81-megapixel row of bench/results/engine_bench_cpu.md, trimming
    after the session and after the weights are dropped takes 450 MB off the resident memory of
    a ready Reconstructor. Costs a few milliseconds: call it after such a release, not per item."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
