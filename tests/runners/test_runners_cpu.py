"""CPU runners: the protocol, input checking, chunking, cross-validation, the factory."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from engine.errors import BackendError, InputError, UnavailableError
from engine.runners import available_runners, create_runner

CPU_RUNNERS = [n for n in ("onnxruntime", "torch-cpu") if n in available_runners()]


@pytest.fixture(scope="module", params=CPU_RUNNERS)
def runner(request, model_dir):
    with create_runner(request.param, model_dir, max_batch=2, threads=2) as r:
        yield r


def test_protocol_attributes(runner):
    assert runner.name in ("onnxruntime", "torch-cpu")
    assert runner.device == "cpu" and runner.precision == "fp32" and runner.synthetic is True
    assert runner.max_batch == 2 and "SYNTHETIC" in runner.model_description


def test_matches_the_float32_reference_across_chunks(runner, crops, torch_reference, coeff_sd):
    got = runner.run(crops)  # batch 3 with max_batch 2: two chunks
    assert got.shape == (3, 198) and got.dtype == np.float32
    assert np.abs(got - torch_reference).max() < 1e-4 * coeff_sd
    assert runner.run(crops[:0]).shape == (0, 198)


@pytest.mark.parametrize("bad, found", [
    (np.zeros((1, 3, 224, 224), np.float64), "float64[1, 3, 224, 224]"),
    (np.zeros((1, 3, 224, 224), np.uint8), "uint8[1, 3, 224, 224]"),
    (np.zeros((3, 224, 224), np.float32), "float32[3, 224, 224]"),
    (np.zeros((1, 224, 224, 3), np.float32), "float32[1, 224, 224, 3]"),
    (np.zeros((2, 3, 112, 112), np.float32), "float32[2, 3, 112, 112]"),
    ([[1.0]], "list"),
])
def test_bad_inputs_are_input_errors_naming_expected_and_found(runner, bad, found):
    with pytest.raises(InputError) as err:
        runner.run(bad)
    msg = str(err.value)
    assert msg.startswith("crops: expected float32[B, 3, 224, 224]") and f"found {found}" in msg


def test_non_contiguous_input_is_accepted(runner, crops, torch_reference, coeff_sd):
    flipped = np.ascontiguousarray(crops[:, :, ::-1])[:, :, ::-1]  # a view with negative strides
    assert not flipped.flags.c_contiguous
    assert np.abs(runner.run(flipped) - torch_reference).max() < 1e-4 * coeff_sd


def test_closed_runner_refuses_to_run(model_dir, crops):
    r = create_runner(CPU_RUNNERS[0], model_dir)
    r.close()
    with pytest.raises(BackendError, match="after close"):
        r.run(crops[:1])


def test_factory_rejects_unknown_names_and_precisions(model_dir):
    with pytest.raises(InputError, match="runner name: expected 'auto' or one of"):
        create_runner("caffe", model_dir)
    with pytest.raises(InputError, match="precision: expected 'auto' or one of"):
        create_runner(CPU_RUNNERS[0], model_dir, precision="int4")
    with pytest.raises(InputError, match="max_batch"):
        create_runner(CPU_RUNNERS[0], model_dir, max_batch=0)
    if "torch-cpu" in CPU_RUNNERS:  # a precision the named runner cannot run is a usage error, not a fallback
        with pytest.raises(InputError, match=r"the torch-cpu runner supports \['fp32', 'bf16'\], found 'int8'"):
            create_runner("torch-cpu", model_dir, precision="int8")


@pytest.mark.skipif("onnxruntime" not in CPU_RUNNERS, reason="needs ONNX Runtime")
def test_a_variant_without_a_validated_card_runs_float32(model_dir, crops, torch_reference, coeff_sd, caplog):
    """The session's model folder has no variant card: int8 asked for gives float32 and a warning
    saying how to build it; the default (auto) is float32 without a word."""
    with caplog.at_level("WARNING", logger="engine"):
        with create_runner("onnxruntime", model_dir, precision="int8") as r:
            assert r.precision == "fp32" and r.variant is None
            assert np.abs(r.run(crops) - torch_reference).max() < 1e-4 * coeff_sd
    assert "--precision int8: no validated variants for these weights" in caplog.text
    assert "`engine3dmm validate` builds them" in caplog.text and "running float32 (onnxruntime)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="engine.network.variants"):
        with create_runner("auto", model_dir) as r:
            assert r.precision == "fp32" and r.variant_note is None


def test_auto_prefers_gpu_runners_then_onnxruntime(model_dir):
    names = available_runners()
    order = ["tensorrt", "torch-cuda", "onnxruntime", "torch-cpu"]
    assert names == [n for n in order if n in names]
    if "tensorrt" in names:
        return  # "auto" would build a TensorRT engine (minutes): covered by the tensorrt test
    with create_runner("auto", model_dir) as r:
        assert r.name == names[0]
    if "torch-cuda" not in names:
        assert names[0] == "onnxruntime"


@pytest.mark.skipif("torch-cuda" in available_runners(), reason="a GPU is present")
def test_gpu_runners_are_unavailable_without_a_gpu(model_dir):
    for name in ("torch-cuda", "tensorrt"):
        with pytest.raises(UnavailableError, match=f"runner '{name}' is not available"):
            create_runner(name, model_dir)


@pytest.mark.skipif("torch-cpu" not in available_runners(), reason="needs PyTorch")
def test_torch_cpu_bf16_accuracy_cost(model_dir, crops, torch_reference, coeff_sd):
    """bfloat16 keeps 8 mantissa bits: measured max error 0.28 coefficient sd on the
    synthetic weights, far above the 0.05 sd budget; `auto` takes it only where the variant
    card validated it within budget (engine.network.variants), asking for it directly runs it."""
    with create_runner("torch-cpu", model_dir, precision="bf16") as r:
        assert r.precision == "bf16"
        got = r.run(crops)
    err_sd = np.abs(got - torch_reference).max() / coeff_sd
    assert 0.001 < err_sd < 0.6


@pytest.mark.skipif("onnxruntime" not in CPU_RUNNERS, reason="needs ONNX Runtime")
def test_onnxruntime_runner_works_without_torch(model_dir, onnx_paths, crops, torch_reference, coeff_sd, tmp_path):
    """The default CPU path needs neither PyTorch nor a GPU (ONNX already exported)."""
    np.save(tmp_path / "crops.npy", crops)
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np\n"
            "from engine.runners import create_runner, available_runners\n"
            "assert available_runners() == ['onnxruntime'], available_runners()\n"
            f"with create_runner('auto', {str(model_dir)!r}, threads=1) as r:\n"
            f"    np.save({str(tmp_path / 'out.npy')!r}, r.run(np.load({str(tmp_path / 'crops.npy')!r})))\n"
            "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "out.npy")
    assert np.abs(got - torch_reference).max() < 1e-4 * coeff_sd
