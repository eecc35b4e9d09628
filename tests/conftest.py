"""Shared fixtures and the skip rules for the `cuda` and `tensorrt` markers."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "cnn3dmm"


def _gpu_available() -> bool:
    try:
        from engine import _core

        return _core.has_cuda()
    except Exception:
        return False


def _tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and _gpu_available()


def pytest_collection_modifyitems(config, items):
    gpu = _gpu_available()
    trt = _tensorrt_available()
    skip_cuda = pytest.mark.skip(reason="needs an NVIDIA GPU and the CUDA build of engine._C")
    skip_trt = pytest.mark.skip(reason="needs TensorRT importable and a GPU")
    for item in items:
        if "cuda" in item.keywords and not gpu:
            item.add_marker(skip_cuda)
        if "tensorrt" in item.keywords and not trt:
            item.add_marker(skip_trt)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The real files of the original release in ../shared/cnn3dmm (skips when absent)."""
    if not SHARED.is_dir():
        pytest.skip(f"reference files not found at {SHARED} (they live beside the repository, not in it)")
    return SHARED
