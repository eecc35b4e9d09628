"""Session fixtures for the network tests: built once, shared (ResNet-101 is big)."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A model folder with no converted weights: resolves to the synthetic set.

    tests/runners uses the same folder name, so the ONNX files are exported once per session."""
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
