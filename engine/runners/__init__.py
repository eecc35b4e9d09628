"""Network runners: raw crops in, 198 coefficients out (see engine.runners.base).

    with create_runner("auto") as r:      # TensorRT > PyTorch CUDA > fastest CPU runner
        coeffs = r.run(crops)             # float32 [B, 198]
        print(r.name, r.precision, r.synthetic)  # precision: fp32, or a validated variant (int8, bf16)

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
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
# Measured on the reference CPU (bench/results/network_cpu.md): ONNX Runtime fp32 is the
# fastest float32 CPU path. Lower precisions are chosen per model, from the variants
# validated on its own weights (engine.network.variants).
CPU_PREFERENCE = ("onnxruntime", "torch-cpu")
# The runners torch.compile applies to (engine.runners.torch_compile), in the order "auto" prefers.
COMPILABLE = ("torch-cuda", "torch-cpu")

__all__ = ["Runner", "check_crops", "create_runner", "available_runners", "RUNNER_NAMES", "PRECISIONS", "COMPILABLE"]


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
                  precision: str | None = None, max_error: float | None = None, cuda_graphs: bool = False,
                  compile: bool = False, compile_mode: str | None = None, synthetic_seed: int = 0,
                  **options) -> Runner:
    """A runner by name ("auto", "onnxruntime", "torch-cpu", "torch-cuda", "tensorrt").

    Weights: the converted ones in `model_dir` (default: engine.network.resolve.default_model_dir()), else the built-in
    synthetic set (then `runner.synthetic` is True and a warning is logged).
    `max_batch`: the largest batch run at once (default 32 on CPU, 128 on GPU); larger
    inputs are chunked. `threads`: CPU threads.
    `precision`: None or "auto" on a CPU runner: the fastest variant validated within
    `max_error` coefficient sd (default engine.network.variants.DEFAULT_MAX_ERROR, 0.05) in the
    model card's variant card, else fp32; on a GPU runner its default (fp16). An explicit
    precision always wins ("fp32", "fp16", "bf16", "int8"; with runner "auto", int8 runs on
    onnxruntime and bf16 on torch-cpu, or torch-cuda on a GPU); fp16 is a GPU precision: on a
    CPU runner it is an InputError naming int8 and bf16 (no CPU runner computes float16 faster,
    and no card validates it); a CPU variant that cannot be
    used here (int8 without a fresh card or with a missing or changed file, a CPU without the
    instructions it needs, no PyTorch for bf16) is replaced by fp32 with a warning saying why;
    bf16 without a card runs, with a warning that its error is unknown. The runner's
    `precision` names what runs, `variant` holds the validated errors (None without a card)
    and `variant_note` one line saying what was chosen and why (None when nothing was
    chosen). `compile=True`: the PyTorch runners compiled with torch.compile (Inductor; see
    engine.runners.torch_compile and the runners' docstrings); "auto" then means the best
    PyTorch runner here (torch-cuda, else torch-cpu), and the other runners are an InputError.
    `compile_mode` (with compile only): None (the device's default: "max-autotune" on CUDA,
    "default" on the CPU), "default" or "max-autotune". `options` go to the runner (e.g.
    opt_batch, cache_dir for TensorRT)."""
    from engine.errors import BackendError, ModelFileError
    from engine.network import variants
    from engine.network.resolve import resolve_model
    from engine.runners.heap import release_free_heap

    if name not in ("auto",) + RUNNER_NAMES:
        raise InputError(f"runner name: expected 'auto' or one of {list(RUNNER_NAMES)}, found {name!r}")
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"precision: expected 'auto' or one of {list(PRECISIONS[1:])}, found {precision!r}")
    variants.check_max_error(max_error)
    check_compile(name, compile, compile_mode)
    available = available_runners()
    explicit = name != "auto"
    if compile and name == "auto":  # the best PyTorch runner, kept whatever precision is chosen
        torch_runners = [n for n in available if n in COMPILABLE]
        if not torch_runners:
            raise UnavailableError("compile=True (--compile) needs PyTorch (the torch-cuda or torch-cpu runner): "
                                   "pip install torch")
        name, explicit = torch_runners[0], True
    if name == "auto":
        if not available:
            raise UnavailableError("no runner is available: pip install onnxruntime onnx (CPU) or torch")
        name = available[0]
    elif name not in available:
        raise UnavailableError(f"runner {name!r} is not available on this machine (available: {available}); "
                               + _install_hint(name))
    model = resolve_model(model_dir, synthetic_seed=synthetic_seed)
    choice = variants.choose(model, name, explicit_runner=explicit, precision=precision, max_error=max_error,
                             available=available, compile=bool(compile))
    if choice.warning:
        log.warning("%s", choice.warning)
    try:
        runner = _make(choice.runner, choice.precision, model, max_batch, threads, cuda_graphs, options,
                       compile, compile_mode)
    except (ModelFileError, BackendError) as e:
        if choice.precision not in variants.VARIANT_PRECISIONS or choice.runner not in variants.CPU_RUNNERS:
            raise
        # Checked by the card, yet unusable (a file that ONNX Runtime cannot load): float32.
        fp32 = "onnxruntime" if "onnxruntime" in available and not compile else choice.runner
        log.warning("%s %s variant cannot be used: %s; running float32 (%s)", choice.runner, choice.precision, e,
                    fp32)
        choice = variants.Choice(fp32, "fp32")
        runner = _make(fp32, "fp32", model, max_batch, threads, cuda_graphs, options, compile, compile_mode)
    runner.variant = choice.variant
    runner.variant_note = choice.note
    if choice.precision in variants.VARIANT_PRECISIONS and choice.entry is not None:
        # copied into every result's provenance ("network") by the pipeline
        runner.model_description += (f"; {choice.runner} {choice.precision} variant, validated max "
                                     f"{choice.entry['errors']['coeff_max_sd']:.3g} sd against float32")
    log.info("runner %s (%s, %s%s) on %s", runner.name, runner.device, runner.precision,
             f", torch.compile mode {runner.compile_mode}" if runner.compiled else "", model.describe())
    if choice.note:
        log.info("%s", choice.note)
    # The runner holds its own copy of the weights: give the pages of ours (and of whatever the
    # build parsed and freed) back, so that they do not raise every later peak (engine.runners.heap).
    del model
    release_free_heap()
    return runner


GPU_RUNNERS = ("tensorrt", "torch-cuda")


def can_use_gpu(name: str) -> bool:
    """Whether runner `name` runs on a GPU when one is there ("auto" picks a GPU runner then):
    the rule by which Ray actors and replicas reserve a GPU (Ray hides every GPU from an actor
    that reserves none, and a CPU runner holding one would only keep it from others)."""
    return name in ("auto",) + GPU_RUNNERS


def runner_or_name(name: str = "auto", model_dir=None, *, threads: int | None = None, precision: str | None = None,
                   max_error: float | None = None, compile: bool = False, compile_mode: str | None = None):
    """What `Reconstructor(runner=...)` takes for these settings, in the process that will run it
    (a Ray actor or replica chooses its variant on its own machine): the name itself when only the
    name is set (the Reconstructor then makes and owns the runner), else the runner create_runner
    makes for `precision` / `max_error` / `compile` (same arguments, same errors)."""
    if precision in (None, "auto") and max_error is None and not compile:
        return name
    return create_runner(name, model_dir, threads=threads, precision=precision, max_error=max_error,
                         compile=bool(compile), compile_mode=compile_mode)


def check_compile(name: str, compile, compile_mode) -> None:
    """InputError unless `compile`/`compile_mode` can apply to runner `name` (before any loading)."""
    from engine.runners.torch_compile import check_args

    check_args(compile, compile_mode, "cpu")
    if compile and name not in ("auto",) + COMPILABLE:
        raise InputError(f"compile (--compile): torch.compile applies to the PyTorch runners {list(COMPILABLE)}; "
                         f"the {name} runner cannot compile (it runs "
                         + ("ONNX Runtime's own graph optimisations" if name == "onnxruntime"
                            else "a TensorRT engine, already compiled for the GPU") + "): drop --compile or use "
                         "--runner torch-cpu / torch-cuda")


def _make(name, precision, model, max_batch, threads, cuda_graphs, options, compile=False,
          compile_mode=None) -> Runner:
    gpu = name in ("tensorrt", "torch-cuda")
    kw = dict(max_batch=max_batch if max_batch is not None else (128 if gpu else 32), **options)
    if precision is not None:
        kw["precision"] = precision
    if compile:
        kw.update(compile=True, compile_mode=compile_mode)
    if name == "onnxruntime":
        from engine.runners.ort import OrtRunner

        return OrtRunner(model, threads=threads, **kw)
    if name == "torch-cpu":
        from engine.runners.torch_runner import TorchCpuRunner

        return TorchCpuRunner(model, threads=threads, **kw)
    if name == "torch-cuda":
        from engine.runners.torch_runner import TorchCudaRunner

        return TorchCudaRunner(model, cuda_graphs=cuda_graphs, **kw)
    from engine.runners.tensorrt_runner import TensorRTRunner

    return TensorRTRunner(model, **kw)


def _install_hint(name: str) -> str:
    return {"onnxruntime": "pip install onnxruntime onnx",
            "torch-cpu": "pip install torch",
            "torch-cuda": "needs an NVIDIA GPU and a CUDA build of PyTorch",
            "tensorrt": "needs an NVIDIA GPU, TensorRT (pip install tensorrt), cuda-python and PyTorch"}[name]
