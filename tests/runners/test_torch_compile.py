"""torch.compile (Inductor) on the PyTorch runners (issue 11 §3): the compiled torch-cpu runner
against the float32 reference, batch buckets, two weight sets in one process, the refusals,
and the torch-cuda compiled path on a GPU.

Compiling ResNet-101 takes tens of seconds on 2 cores: one module-scoped runner compiles (the
`slow` tests share it, and a second runner in the same process reuses its graphs); the rest
never runs a compiled network."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.errors import InputError, UnavailableError
from engine.runners import COMPILABLE, available_runners, create_runner

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif("torch-cpu" not in available_runners(), reason="needs PyTorch")


# ---- cheap: the arguments and the refusals (nothing is compiled) ----

@pytest.mark.parametrize("name", ["onnxruntime", "tensorrt"], ids=["ort", "trt"])
def test_runners_that_cannot_compile_refuse_it_by_name(model_dir, name):
    with pytest.raises(InputError) as err:
        create_runner(name, model_dir, compile=True)
    msg = str(err.value)
    assert f"the {name} runner cannot compile" in msg and "torch-cpu" in msg and "torch-cuda" in msg


@pytest.mark.parametrize("kw, words", [
    ({"compile": "yes"}, "compile: expected True or False, found 'yes'"),
    ({"compile": True, "compile_mode": "fast"}, "compile_mode: expected one of ['default', 'max-autotune']"),
    ({"compile": True, "compile_mode": "reduce-overhead"}, "cuda_graphs=True"),
    ({"compile_mode": "default"}, "compile_mode 'default' needs compile=True"),
])
def test_bad_compile_arguments_are_input_errors(model_dir, kw, words):
    with pytest.raises(InputError, match="compile") as err:
        create_runner("torch-cpu", model_dir, **kw)
    assert words in str(err.value)


def test_a_compiled_runner_is_built_without_compiling_and_says_its_mode(model_dir):
    with create_runner("torch-cpu", model_dir, compile=True, max_batch=4) as r:
        assert r.compiled and r.compile_mode == "default" and r.compile_times == {}
        assert "compiled" in repr(r)


def test_auto_with_compile_picks_a_pytorch_runner_and_keeps_it(model_dir):
    with create_runner("auto", model_dir, compile=True, precision="fp32", max_batch=2) as r:
        assert r.name in COMPILABLE and r.compiled  # not onnxruntime, auto's CPU choice


def test_missing_cpp_compiler_is_unavailable_naming_it(model_dir):
    """Inductor's CPU backend compiles C++ at run time: without a compiler, an UnavailableError
    that says so, at construction (not a torch traceback at the first batch)."""
    from torch._inductor import config
    from torch._inductor.cpp_builder import cpp_compiler_search

    # torch's own patch (put back on exit): pytest's monkeypatch on a torch config proxy can leave
    # the setting deleted under some pytest versions, breaking every later compile in the session.
    cpp_compiler_search.cache_clear()  # its answer is memoised per search list
    try:
        with config.patch({"cpp.cxx": ("no-such-cxx-e3dmm",)}), pytest.raises(UnavailableError) as err:
            create_runner("torch-cpu", model_dir, compile=True)
    finally:
        cpp_compiler_search.cache_clear()
    assert config.cpp.cxx != ("no-such-cxx-e3dmm",)
    assert "C++ compiler" in str(err.value) and "no-such-cxx-e3dmm" in str(err.value)


def test_the_cache_folder_is_ours_unless_the_user_chose_one(monkeypatch, tmp_path):
    from engine.runners import torch_compile as tc

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(tc.CACHE_ENV, raising=False)
    folder, ours = tc.use_cache_dir()
    assert ours and folder == str(tmp_path / "xdg" / "engine3dmm" / "torchinductor")
    assert (tmp_path / "xdg" / "engine3dmm" / "torchinductor").is_dir()
    monkeypatch.setenv(tc.CACHE_ENV, str(tmp_path / "mine"))
    assert tc.use_cache_dir() == (str(tmp_path / "mine"), False)


def test_batch_buckets_bound_the_compilations():
    from engine.runners.torch_compile import bucket, buckets

    assert buckets(128) == (1, 2, 4, 8, 16, 32, 64, 128)
    assert buckets(100) == (1, 2, 4, 8, 16, 32, 64, 100) and buckets(1) == (1,)
    assert [bucket(n, 32) for n in (1, 2, 3, 5, 8, 9, 17, 32)] == [1, 2, 4, 8, 8, 16, 32, 32]
    assert bucket(65, 100) == 100


# ---- slow: one compiled runner, shared ----

@pytest.fixture(scope="module")
def compiled(model_dir):
    with create_runner("torch-cpu", model_dir, max_batch=4, threads=2, precision="fp32", compile=True) as r:
        yield r


@pytest.mark.slow
def test_compiled_matches_the_float32_reference(compiled, crops, torch_reference, coeff_sd, caplog):
    with caplog.at_level("INFO", logger="engine.runners"):
        got = compiled.run(crops)  # batch 3: padded to the bucket of 4
    assert got.shape == (3, 198) and got.dtype == np.float32
    assert np.abs(got - torch_reference).max() < 1e-4 * coeff_sd
    said = caplog.text
    assert "compiling the network with torch.compile" in said and "took" in said and "cache" in said
    assert set(compiled.compile_times) == {4}


@pytest.mark.slow
def test_a_second_batch_size_compiles_once_and_matches_eager(compiled, model_dir, coeff_sd):
    from engine.network.faces import builtin_faces

    faces, _ = builtin_faces("validation")  # real faces
    x = np.ascontiguousarray(faces[:5])
    with create_runner("torch-cpu", model_dir, max_batch=4, precision="fp32") as eager:
        want = eager.run(x)
    assert np.abs(compiled.run(x[:1]) - want[:1]).max() < 1e-4 * coeff_sd  # bucket 1: a new compilation
    assert np.abs(compiled.run(x) - want).max() < 1e-4 * coeff_sd  # 5 = chunks of 4 and 1: no new one
    assert np.abs(compiled.run(x[:4]) - want[:4]).max() < 1e-4 * coeff_sd
    assert set(compiled.compile_times) == {1, 4}


@pytest.mark.slow
def test_another_weight_set_in_the_same_process_runs_its_own_weights(compiled, synthetic_model, crops, coeff_sd):
    """Every runner shares the network's compiled code (one Dynamo cache per code object): a
    second model must still run its own weights, not the first one's."""
    from engine.runners.torch_runner import TorchCpuRunner

    w = dict(synthetic_model.weights)
    w["fc_ftnew.weight"] = -np.asarray(w["fc_ftnew.weight"])
    other = dataclasses.replace(synthetic_model, weights=w, fingerprint="negated head")
    with TorchCpuRunner(other, max_batch=4) as eager, TorchCpuRunner(other, max_batch=4, compile=True) as comp:
        want = eager.run(crops)
        got = comp.run(crops)
    assert np.abs(got - want).max() < 1e-4 * coeff_sd
    assert np.abs(got - compiled.run(crops)).max() > coeff_sd  # really another network


@pytest.mark.slow
def test_cli_compile_runs_the_compiled_runner(compiled, tmp_path, crops, capsys):
    """reconstruct --cropped --compile: coefficients equal to the eager runner's run of the same
    crop (batch 1: the fixture's bucket, reused in-process when it ran first)."""
    from PIL import Image

    from engine.cli import main

    img = tmp_path / "face.png"
    Image.fromarray(np.clip(crops[0].transpose(1, 2, 0)[:, :, ::-1], 0, 255).astype(np.uint8)).save(img)
    outs = {}
    for label, extra in (("compiled", ["--compile"]), ("eager", [])):
        rc = main(["reconstruct", str(img), "--cropped", "--no-mesh", "--runner", "torch-cpu", "--batch-size", "1",
                   "-o", str(tmp_path / label), *extra])
        err = capsys.readouterr().err
        assert rc == 0, err
        assert ("compiled with torch.compile" in err) == (label == "compiled")
        outs[label] = np.load(tmp_path / label / "face_face0.npy")
    assert np.abs(outs["compiled"] - outs["eager"]).max() < 1e-4 * float(np.std(outs["eager"])) + 1e-5


# ---- CUDA (skips without a GPU; runs in bench/gpu_check.sh) ----

@pytest.mark.cuda
def test_torch_cuda_compiled_matches_float32_and_keeps_the_stream_contract(model_dir, crops, torch_reference,
                                                                           coeff_sd):
    """Mode "default" (seconds to compile; max-autotune takes minutes): float16 compiled, alone and
    inside the runner's own CUDA graphs, within the float16 budget of the float32 reference
    (tests/network/test_fp16.py's 0.05 sd); run_device's result is produced on the runner's
    stream and is not overwritten by the next call."""
    tol = 0.05 * coeff_sd
    with create_runner("torch-cuda", model_dir, max_batch=4, precision="fp16", compile=True,
                       compile_mode="default") as comp, \
            create_runner("torch-cuda", model_dir, max_batch=4, precision="fp16", compile=True,
                          compile_mode="default", cuda_graphs=True) as graphs:
        for r in (comp, graphs):
            assert r.compiled and r.compile_mode == "default"
            assert np.abs(r.run(crops) - torch_reference).max() < tol  # batch 3: bucket 4
            first = r.run_device(crops)
            second = r.run_device(np.ascontiguousarray(crops[::-1]))
            r.stream.synchronize()
            assert np.abs(first.cpu().numpy() - torch_reference).max() < tol  # not overwritten by `second`
            assert np.abs(second.cpu().numpy() - torch_reference[::-1]).max() < tol
            assert set(r.compile_times) == {4}


def test_the_benchmark_states_compiled_against_onnxruntime_and_the_gpu_target():
    """bench/bench_network.py's lines under its table (rows as it writes them)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "bench_network.py"
    spec = importlib.util.spec_from_file_location("bench_network", path)
    bn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bn)

    def row(runner, device, precision, ms, compiled=False, config="c", batch=8):
        return {"model": "m", "runner": runner, "device": device, "precision": precision, "batch": batch,
                "latency_ms_p50": ms, "compiled": compiled, "config": config, "max_abs_err": 0.002, "ref_sd": 1.0}

    rows = [row("torch-eager", "cpu", "fp32", 400.0), row("onnxruntime", "cpu", "fp32", 250.0),
            row("torch-cpu", "cpu", "fp32", 400.0), row("torch-cpu", "cpu", "fp32", 200.0, compiled=True),
            row("torch-eager", "cuda", "fp32", 30.0), row("torch-cuda", "cuda", "fp16", 12.0, config="eager"),
            row("torch-cuda", "cuda", "fp16", 7.5, compiled=True, config="graphs+compile")]
    lines = bn.compiled_lines(rows)
    assert lines[0] == ("- m, batch 8: torch-cpu fp32 compiled 200.0 ms (error 0.002 of the coefficients' sd); "
                        "1.25x ONNX Runtime float32 (250.0 ms), 2.00x eager torch-cpu fp32")
    assert lines[1] == ("- m, batch 8: fastest torch-cuda float16 is graphs+compile: 4.00x torch-eager float32 on the "
                        "same GPU (PASS, target 3x)")
