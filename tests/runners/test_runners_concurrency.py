"""Runners called from several threads at once (two reconstruct() iterators of one
Reconstructor, reconstruct_crops during a run): every call must get its own input's
coefficients, exactly as when the calls run one after another."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from engine.runners import available_runners, create_runner

CPU_RUNNERS = [n for n in ("onnxruntime", "torch-cpu") if n in available_runners()]


def _calls(crops):
    # different inputs and batch sizes (1, 2 and 3 rows: one and two chunks of max_batch 2)
    return [crops[:1], crops[1:3], crops[::-1].copy(), crops[2:], crops[[0, 2]], crops]


def _concurrent(fn, inputs, rounds: int = 2):
    """fn(x) for every input on a thread of its own, all started together, `rounds` times."""
    results = [[None] * len(inputs) for _ in range(rounds)]
    errors = []
    start = threading.Barrier(len(inputs))

    def work(i):
        try:
            start.wait()
            for r in range(rounds):
                results[r][i] = fn(inputs[i])
        except BaseException as e:  # reported in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


@pytest.mark.parametrize("name", CPU_RUNNERS)
def test_concurrent_cpu_runs_equal_sequential_runs(name, model_dir, crops):
    with create_runner(name, model_dir, max_batch=2, threads=1) as r:
        inputs = _calls(crops)
        sequential = [r.run(x) for x in inputs]
        for got in _concurrent(r.run, inputs):
            for s, g in zip(sequential, got):
                np.testing.assert_allclose(g, s, rtol=1e-5, atol=1e-4)


def _gpu_cases():
    cases = []
    if "torch-cuda" in available_runners():
        cases += [("torch-cuda", {"cuda_graphs": True}), ("torch-cuda", {})]
    if "tensorrt" in available_runners():
        cases.append(pytest.param("tensorrt", {}, marks=pytest.mark.tensorrt))  # builds an engine: minutes
    return cases or [pytest.param(None, None, marks=pytest.mark.skip(reason="needs an NVIDIA GPU"))]


@pytest.mark.cuda
@pytest.mark.parametrize("name, options", _gpu_cases())
def test_concurrent_run_device_calls_do_not_mix_their_inputs(name, options, model_dir, crops, tmp_path, coeff_sd):
    """Shared device buffers (CUDA-graph static inputs, TensorRT's bindings) are guarded:
    run_device from several threads gives each call its own input's coefficients."""
    if name == "tensorrt":
        options = {"cache_dir": tmp_path}
    with create_runner(name, model_dir, max_batch=2, **options) as r:
        inputs = _calls(crops)
        sequential = [r.run(x) for x in inputs]

        def run_device(x):
            out = r.run_device(x)
            r.stream.synchronize()
            return out.cpu().numpy()

        for got in _concurrent(run_device, inputs, rounds=4):
            for s, g in zip(sequential, got):
                # The same input: equal up to float16 noise. Eager calls from another thread
                # may run other kernels (PyTorch keeps its cuDNN benchmark cache per thread:
                # measured 0.011 apart on an H200), so the bound is the float16 budget, 0.05
                # sd; another call's input would give coefficients about 1 sd apart.
                np.testing.assert_allclose(g, s, rtol=0, atol=0.05 * coeff_sd)
