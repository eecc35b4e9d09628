"""TensorRT engine-cache keying, validation and atomic writes (no TensorRT needed),
plus the TensorRT and CUDA runner tests that run where a GPU is present."""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

from engine.errors import UnavailableError
from engine.runners import trt_cache

KEY = trt_cache.EngineKey(onnx_sha256="ab" * 32, trt_version="10.12.0", gpu_name="NVIDIA H100 80GB HBM3",
                          compute_capability="9.0", precision="fp16", profile=(1, 128, 128))
PAYLOAD = bytes(range(256)) * 40


def test_key_digest_is_stable_and_covers_every_field():
    assert KEY.digest() == trt_cache.EngineKey(**dataclasses.asdict(KEY)).digest()
    changes = {"onnx_sha256": "cd" * 32, "trt_version": "11.0.0", "gpu_name": "NVIDIA H200",
               "compute_capability": "8.9", "precision": "fp32", "profile": (1, 32, 128)}
    digests = {KEY.digest()}
    for field, value in changes.items():
        digests.add(dataclasses.replace(KEY, **{field: value}).digest())
    assert len(digests) == 1 + len(changes)


def test_engine_and_timing_cache_paths_are_keyed(tmp_path):
    p = trt_cache.engine_path(tmp_path, "cnn3dmm", KEY)
    assert p.parent == tmp_path and p.name.startswith("cnn3dmm.fp16.b1-128-128.") and p.suffix == ".engine"
    assert trt_cache.engine_path(tmp_path, "cnn3dmm", dataclasses.replace(KEY, gpu_name="NVIDIA L4")) != p
    t1 = trt_cache.timing_cache_path(tmp_path, "10.12.0", "NVIDIA H100", "9.0")
    assert t1.name.startswith("tensorrt-10.12.0.sm90.") and t1.suffix == ".timing"
    assert t1 != trt_cache.timing_cache_path(tmp_path, "10.12.0", "NVIDIA H200", "9.0")
    assert t1 != trt_cache.timing_cache_path(tmp_path, "11.0.0", "NVIDIA H100", "9.0")


def test_engine_round_trips(tmp_path):
    p = tmp_path / "e.engine"
    trt_cache.write_engine(p, KEY, PAYLOAD)
    assert trt_cache.read_engine(p, KEY) == (PAYLOAD, "")
    assert [f.name for f in tmp_path.iterdir()] == ["e.engine"]  # no temporary left behind


@pytest.mark.parametrize("field, value", [("trt_version", "10.13.0"), ("gpu_name", "NVIDIA A100"),
                                          ("compute_capability", "8.0"), ("onnx_sha256", "00" * 32),
                                          ("profile", (1, 8, 32))])
def test_stale_or_foreign_engine_is_detected_with_a_reason(tmp_path, field, value):
    p = tmp_path / "e.engine"
    trt_cache.write_engine(p, dataclasses.replace(KEY, **{field: value}), PAYLOAD)
    payload, reason = trt_cache.read_engine(p, KEY)
    assert payload is None and "stale or foreign engine" in reason and field in reason


@pytest.mark.parametrize("damage, expect", [
    (lambda d: d[: len(d) - 10], "truncated engine"),
    (lambda d: d[:10], "truncated (10 bytes"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "checksum mismatch"),
    (lambda d: b"PLAN" + d[4:], "not an engine written by this engine"),
    (lambda d: d[:16] + b"X" + d[17:], "corrupt header"),
    (lambda d: PAYLOAD, "not an engine written by this engine"),  # a raw TensorRT plan
])
def test_damaged_engine_files_are_rejected_not_loaded(tmp_path, damage, expect):
    p = tmp_path / "e.engine"
    trt_cache.write_engine(p, KEY, PAYLOAD)
    p.write_bytes(damage(p.read_bytes()))
    payload, reason = trt_cache.read_engine(p, KEY)
    assert payload is None and expect in reason and str(p) in reason


def test_missing_engine_and_timing_cache(tmp_path):
    assert trt_cache.read_engine(tmp_path / "none.engine", KEY) == (None, f"{tmp_path / 'none.engine'}: no cached engine")
    assert trt_cache.read_timing_cache(tmp_path / "none.timing") == b""
    trt_cache.write_timing_cache(tmp_path / "t.timing", b"\x01\x02")
    assert trt_cache.read_timing_cache(tmp_path / "t.timing") == b"\x01\x02"


def test_failed_write_leaves_the_old_engine_intact(tmp_path):
    p = tmp_path / "e.engine"
    trt_cache.write_engine(p, KEY, PAYLOAD)
    with pytest.raises(TypeError):
        trt_cache.write_engine(p, KEY, "not bytes")  # fails midway through the write
    assert trt_cache.read_engine(p, KEY) == (PAYLOAD, "")
    assert [f.name for f in tmp_path.iterdir()] == ["e.engine"]


@pytest.mark.skipif("tensorrt" in sys.modules, reason="TensorRT already imported by another test")
def test_no_tensorrt_object_without_a_cuda_device(synthetic_model):
    """Without a GPU (or cuda-python) the runner refuses before importing TensorRT."""
    from engine.runners import available_runners
    from engine.runners.tensorrt_runner import TensorRTRunner

    if "tensorrt" in available_runners():
        pytest.skip("a GPU and TensorRT are present")
    with pytest.raises(UnavailableError, match="CUDA device|cuda-python"):
        TensorRTRunner(synthetic_model)
    assert "tensorrt" not in sys.modules


# ------------------------------------------------------------------ GPU machines only

FP16_TOL_SD = 0.05  # float16 paths vs the float32 reference, in coefficient sd


@pytest.mark.tensorrt
def test_tensorrt_runner_matches_reference_and_caches(model_dir, crops, torch_reference, coeff_sd, caplog):
    import torch

    from engine.runners import create_runner

    with create_runner("tensorrt", model_dir, max_batch=8) as r:
        assert r.precision == "fp16" and r.device == "cuda"
        out = r.run_device(crops)
        assert out.is_cuda and out.dtype == torch.float32 and out.shape == (3, 198)
        r.stream.synchronize()
        assert np.abs(out.cpu().numpy() - torch_reference).max() / coeff_sd < FP16_TOL_SD
        engine_file = r.engine_path
    assert engine_file.is_file()
    caplog.clear()
    with create_runner("tensorrt", model_dir, max_batch=8) as r:  # second time: loaded, not rebuilt
        assert not any("building a TensorRT" in m for m in caplog.messages)
        assert np.abs(r.run(crops) - torch_reference).max() / coeff_sd < FP16_TOL_SD
    engine_file.write_bytes(engine_file.read_bytes()[:-100])  # damaged: rebuilt with a message
    with create_runner("tensorrt", model_dir, max_batch=8) as r:
        assert any("building a TensorRT" in m for m in caplog.messages)


@pytest.mark.cuda
@pytest.mark.parametrize("graphs", [False, True])
def test_torch_cuda_fp16_matches_reference(model_dir, crops, torch_reference, coeff_sd, graphs):
    import torch

    from engine.runners import create_runner

    with create_runner("torch-cuda", model_dir, max_batch=2, cuda_graphs=graphs) as r:
        assert r.precision == "fp16"
        out = r.run_device(crops)
        assert out.is_cuda and out.dtype == torch.float32 and out.shape == (3, 198)
        r.stream.synchronize()
        assert np.abs(out.cpu().numpy() - torch_reference).max() / coeff_sd < FP16_TOL_SD
        assert np.array_equal(r.run(crops), r.run(crops))
