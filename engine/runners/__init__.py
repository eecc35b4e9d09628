"""Network runners: raw crops in, 198 coefficients out (see engine.runners.base).

    with create_runner("auto") as r:      # TensorRT > PyTorch CUDA > fastest CPU runner
        coeffs = r.run(crops)             # float32 [B, 198]
        print(r.name, r.precision, r.synthetic)

Importing this package imports neither PyTorch, ONNX Runtime nor TensorRT.
"""
from __future__ import annotations

import importlib.util
import os
import logging

from engine.errors import InputError, UnavailableError
from engine.runners.base import Runner, check_crops

log = logging.getLogger("engine.runners")

RUNNER_NAMES = ("tensorrt", "torch-cuda", "onnxruntime", "torch-cpu")
# Measured on the reference CPU (bench/results/network_cpu.md): ONNX Runtime fp32 is
# the fastest CPU path that stays within 0.05 sd of the float32 reference.
CPU_PREFERENCE = ("onnxruntime", "torch-cpu")

__all__ = ["Runner", "check_crops", "create_runner", "available_runners", "RUNNER_NAMES"]


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _driver_present() -> bool:
    """Whether the NVIDIA driver's library loads. Asking PyTorch costs about a second and
    0.9 GB of resident memory on a CPU machine (measured: the 81-megapixel benchmark row),
    so a machine without the driver is answered here in microseconds."""
    import ctypes

    names = ("nvcuda.dll",) if os.name == "nt" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def _cuda_present() -> bool:
    """A usable CUDA device, asked of PyTorch or cuda-python (never of TensorRT)."""
    if not _driver_present():
        return False
    if _has("torch"):
        import torch

        if torch.cuda.is_available():
            return True
    if _has("cuda.bindings"):
        try:
            from cuda.bindings import runtime as cudart

            err, n = cudart.cudaGetDeviceCount()
            return int(err) == 0 and n > 0
        except Exception:
            return False
    return False


def available_runners() -> list[str]:
    """Runner names usable on this machine, in the order "auto" would prefer them."""
    cuda = _cuda_present()
    names = []
    if cuda and _has("tensorrt") and _has("cuda.bindings") and _has("torch"):
        names.append("tensorrt")
    if cuda and _has("torch"):
        names.append("torch-cuda")
    for n in CPU_PREFERENCE:
        if n == "onnxruntime" and _has("onnxruntime") and _has("onnx"):
            names.append(n)
        if n == "torch-cpu" and _has("torch"):
            names.append(n)
    return names


def create_runner(name: str = "auto", model_dir=None, *, max_batch: int | None = None, threads: int | None = None,
                  precision: str | None = None, cuda_graphs: bool = False, synthetic_seed: int = 0,
                  **options) -> Runner:
    """A runner by name ("auto", "onnxruntime", "torch-cpu", "torch-cuda", "tensorrt").

    Weights: the converted ones in `model_dir` (default: engine.network.resolve.default_model_dir()), else the built-in
    synthetic set (then `runner.synthetic` is True and a warning is logged).
    `max_batch`: the largest batch run at once (default 32 on CPU, 128 on GPU); larger
    inputs are chunked. `threads`: CPU threads. `precision`: None picks the runner's
    default (fp32 on CPU, fp16 on GPU). `options` go to the runner (e.g. opt_batch,
    cache_dir for TensorRT)."""
    from engine.network.resolve import resolve_model

    if name not in ("auto",) + RUNNER_NAMES:
        raise InputError(f"runner name: expected 'auto' or one of {list(RUNNER_NAMES)}, found {name!r}")
    available = available_runners()
    if name == "auto":
        if not available:
            raise UnavailableError("no runner is available: pip install onnxruntime onnx (CPU) or torch")
        name = available[0]
    elif name not in available:
        raise UnavailableError(f"runner {name!r} is not available on this machine (available: {available}); "
                               + _install_hint(name))
    model = resolve_model(model_dir, synthetic_seed=synthetic_seed)
    gpu = name in ("tensorrt", "torch-cuda")
    kw = dict(max_batch=max_batch if max_batch is not None else (128 if gpu else 32), **options)
    if precision is not None:
        kw["precision"] = precision
    if name == "onnxruntime":
        from engine.runners.ort import OrtRunner

        runner = OrtRunner(model, threads=threads, **kw)
    elif name == "torch-cpu":
        from engine.runners.torch_runner import TorchCpuRunner

        runner = TorchCpuRunner(model, threads=threads, **kw)
    elif name == "torch-cuda":
        from engine.runners.torch_runner import TorchCudaRunner

        runner = TorchCudaRunner(model, cuda_graphs=cuda_graphs, **kw)
    else:
        from engine.runners.tensorrt_runner import TensorRTRunner

        runner = TensorRTRunner(model, **kw)
    log.info("runner %s (%s, %s) on %s", runner.name, runner.device, runner.precision, model.describe())
    return runner


def _install_hint(name: str) -> str:
    return {"onnxruntime": "pip install onnxruntime onnx",
            "torch-cpu": "pip install torch",
            "torch-cuda": "needs an NVIDIA GPU and a CUDA build of PyTorch",
            "tensorrt": "needs an NVIDIA GPU, TensorRT (pip install tensorrt), cuda-python and PyTorch"}[name]
