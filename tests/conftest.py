"""Shared fixtures and the skip rules for the `cuda` and `tensorrt` markers."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "cnn3dmm"


def _gpu_available() -> bool:
    """A usable NVIDIA GPU, seen by the compiled core or by PyTorch. Tests that need the
    core's CUDA kernel as well skip on their own when it was built without CUDA."""
    try:
        from engine import _core

        if _core.has_cuda():
            return True
    except Exception:
        pass
    if importlib.util.find_spec("torch") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def _tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and _gpu_available()


def pytest_collection_modifyitems(config, items):
    gpu = _gpu_available()
    trt = _tensorrt_available()
    skip_cuda = pytest.mark.skip(reason="needs an NVIDIA GPU")
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


# ---- the network: built once per session and shared (ResNet-101 is big) ----

@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A model folder with no converted weights: resolves to the synthetic set."""
    path = tmp_path_factory.getbasetemp() / "cnn3dmm_synthetic"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def synthetic_model(model_dir):
    from engine.network.resolve import resolve_model

    return resolve_model(model_dir)


@pytest.fixture(scope="session")
def onnx_paths(synthetic_model):
    """fp32 and fp16 ONNX of the synthetic weights, exported once per session."""
    return {p: synthetic_model.onnx_path(p) for p in ("fp32", "fp16")}


@pytest.fixture(scope="session")
def crops():
    """Three pseudo-face crops (raw: BGR, 0..255), not the calibration ones."""
    from engine.network.synthetic import calibration_crops

    return calibration_crops(seed=1234, n=3)


@pytest.fixture(scope="session")
def torch_reference(synthetic_model, crops):
    """float32 PyTorch outputs of the exact (unfused) module: the reference of all runners."""
    torch = pytest.importorskip("torch")
    from engine.network.torch_model import build

    net = build(synthetic_model.weights, synthetic_model.mean, fused=False, synthetic=True)
    with torch.inference_mode():
        return net(torch.from_numpy(crops)).numpy()


@pytest.fixture(scope="session")
def coeff_sd(torch_reference):
    """The coefficients' standard deviation: the unit of every accuracy tolerance."""
    return float(np.std(torch_reference))


# The pipeline's tests (test_pipeline.py, test_pipeline_pose.py): the default CPU runner on the
# default weights, built once (it costs seconds), the default morphable model, and the real
# photo of a face. A module that needs another `runner` or `model` defines its own.
@pytest.fixture(scope="session")
def runner():
    from engine.runners import create_runner

    r = create_runner("auto", max_batch=8)
    yield r
    r.close()


@pytest.fixture(scope="session")
def model():
    from engine.morphable import load_model

    return load_model()


@pytest.fixture(scope="session")
def astronaut():
    return pytest.importorskip("skimage.data").astronaut()
