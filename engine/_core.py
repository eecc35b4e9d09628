"""The one module that touches the compiled core, engine._C.

Everything else asks here whether a feature exists and gets a message that says
what to do when it does not. Importing this module never fails: the compiled core
is loaded on first use.
"""
from __future__ import annotations

import functools
import importlib.util
import json
from types import ModuleType

from engine.errors import UnavailableError


@functools.lru_cache(maxsize=None)
def core() -> ModuleType:
    """The compiled module engine._C; UnavailableError when it was not built."""
    try:
        from engine import _C
    except ImportError as e:
        raise UnavailableError(
            f"the compiled core engine._C is not importable ({e}); build it with "
            "`pip install -e .` from the repository (needs a C++17 compiler and CMake)"
        ) from e
    return _C


def has_core() -> bool:
    try:
        core()
        return True
    except UnavailableError:
        return False


def cuda_compiled() -> bool:
    """True when engine._C contains the CUDA decode kernel."""
    return has_core() and bool(core().cuda_compiled())


@functools.lru_cache(maxsize=None)
def has_cuda() -> bool:
    """True when the CUDA kernel is compiled in and a CUDA device is usable."""
    return cuda_compiled() and core().cuda_device_count() > 0


def has_tensorrt() -> bool:
    """True when the TensorRT Python package is importable and a GPU is usable.

    Does not import TensorRT: creating TensorRT objects without a working CUDA
    driver can crash the process, so callers check this first.
    """
    return importlib.util.find_spec("tensorrt") is not None and has_cuda()


def require_cuda(feature: str) -> None:
    """Raise UnavailableError naming `feature` when CUDA decoding is impossible here."""
    if not cuda_compiled():
        raise UnavailableError(
            f"{feature} needs the CUDA build of engine._C; this build has no CUDA kernel. "
            "Install the CUDA toolkit (nvcc on PATH) and rebuild: ENGINE_WITH_CUDA=ON pip install -e ."
        )
    if not has_cuda():
        raise UnavailableError(f"{feature} needs an NVIDIA GPU with a working driver; none was found")


def build_info() -> dict:
    """How the compiled core was built (compiler, SIMD kernels, OpenMP, CUDA)."""
    info = json.loads(core().build_info_json())
    info["cuda_devices"] = core().cuda_device_count()
    return info
