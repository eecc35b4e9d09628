"""TensorRT runner: a strongly typed FP16 engine from the fp16 ONNX graph.

- Strongly typed network (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`): precision
  comes from the graph's types, which works on TensorRT 10.12+ and 11 (11 removed
  BuilderFlag.FP16).
- One optimisation profile for batch 1..max_batch with optimum `opt_batch`.
- Persistent timing cache and engine cache (see trt_cache for keying and validation).
- Execution: set_input_shape / set_tensor_address / execute_async_v3 on a stream
  created with cuda-python; output left on the device as a torch tensor.
TensorRT is imported only here, and no TensorRT object is created until a CUDA device
has been found (creating a Builder/Runtime without one can crash the process).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from engine.errors import BackendError, InputError, UnavailableError
from engine.network import architecture as arch
from engine.network.onnx_export import INPUT_NAME, OUTPUT_NAME
from engine.runners import trt_cache
from engine.runners.base import CROP_SHAPE, Runner, check_crops

log = logging.getLogger("engine.runners")


def _cuda_check(result, what: str):
    """cuda-python calls return (err, *values); raise BackendError on error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"{what} failed: CUDA error {int(err)} ({err})")
    return values[0] if len(values) == 1 else values


def gpu_identity(device_index: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") via cuda-python, without TensorRT."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as e:
        raise UnavailableError("the tensorrt runner needs cuda-python: pip install cuda-python") from e
    count = _cuda_check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if count <= device_index:
        raise UnavailableError(f"the tensorrt runner needs a CUDA device; found {count}")
    prop = _cuda_check(cudart.cudaGetDeviceProperties(device_index), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return name, f"{prop.major}.{prop.minor}"


def _onnx_sha256(path: Path) -> str:
    from engine.network.convert import file_sha256

    return file_sha256(path)


class TensorRTRunner(Runner):
    name = "tensorrt"
    device = "cuda"

    def __init__(self, model, *, max_batch: int = 128, opt_batch: int | None = None, precision: str = "fp16",
                 cache_dir=None, device_index: int = 0, workspace_gib: float = 4.0):
        super().__init__(model, max_batch)
        if precision not in ("fp16", "fp32"):
            raise InputError(f"precision: the tensorrt runner supports 'fp16' and 'fp32', found {precision!r}")
        self.precision = precision
        gpu, cc = gpu_identity(device_index)  # before any TensorRT object exists
        try:
            import tensorrt as trt
            import torch
        except ImportError as e:
            raise UnavailableError("the tensorrt runner needs TensorRT (pip install tensorrt) and PyTorch") from e
        self._trt = trt
        self._torch = torch
        opt = opt_batch or max_batch
        if not 1 <= opt <= max_batch:
            raise InputError(f"opt_batch: expected 1..{max_batch}, found {opt}")
        onnx_path = model.onnx_path(precision)
        if precision == "fp16":
            self._use_fp16_plan(model)
        cache_dir = Path(cache_dir) if cache_dir is not None else onnx_path.parent
        key = trt_cache.EngineKey(_onnx_sha256(onnx_path), trt.__version__, gpu, cc, precision, (1, opt, max_batch))
        self.engine_path = trt_cache.engine_path(cache_dir, model.tag, key)
        self.timing_cache_path = trt_cache.timing_cache_path(cache_dir, trt.__version__, gpu, cc)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        payload, reason = trt_cache.read_engine(self.engine_path, key)
        engine = self._runtime.deserialize_cuda_engine(payload) if payload is not None else None
        if engine is None:
            if payload is not None:
                reason = f"{self.engine_path}: TensorRT could not deserialize it"
            # A missing engine is the normal first run (info); a stale or corrupt one is news (warning).
            (log.info if payload is None and reason.endswith(": no cached engine") else log.warning)(
                "%s; building a TensorRT %s engine for %s (sm %s), batch 1..%d (opt %d); this takes minutes once",
                reason, precision, gpu, cc, max_batch, opt)
            payload = self._build(onnx_path, key, workspace_gib)
            trt_cache.write_engine(self.engine_path, key, payload)
            engine = self._runtime.deserialize_cuda_engine(payload)
            if engine is None:
                raise BackendError(f"{self.engine_path}: freshly built engine failed to deserialize")
        self._engine = engine
        self._context = engine.create_execution_context()
        from cuda.bindings import runtime as cudart

        self._cudart = cudart
        self._dev = torch.device("cuda", device_index)
        self._raw_stream = _cuda_check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
                                       "cudaStreamCreateWithFlags")
        # The same stream as a torch stream, so the decode kernel can be queued on it.
        self.stream = torch.cuda.ExternalStream(int(self._raw_stream), device=self._dev)
        self._in = torch.empty((max_batch, *CROP_SHAPE), dtype=torch.float32, device=self._dev)
        self._out = torch.empty((max_batch, arch.NUM_COEFFS), dtype=torch.float32, device=self._dev)
        # The execution context and the _in/_out buffers are shared: two threads enqueueing at
        # once (two reconstruct() iterators, reconstruct_crops during a run) could run one
        # batch on the other's input. The lock serialises the enqueue (copy in, execute, copy
        # out into a fresh tensor); the stream's order then keeps the batches apart.
        self._lock = threading.Lock()

    def _build(self, onnx_path: Path, key: trt_cache.EngineKey, workspace_gib: float) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
        if key.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # a float32 reference must not use TF32
        timing = config.create_timing_cache(trt_cache.read_timing_cache(self.timing_cache_path))
        if not config.set_timing_cache(timing, ignore_mismatch=True):
            log.warning("%s: timing cache rejected; starting an empty one", self.timing_cache_path)
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=True)
        profile = builder.create_optimization_profile()
        mn, opt, mx = key.profile
        profile.set_shape(INPUT_NAME, (mn, *CROP_SHAPE), (opt, *CROP_SHAPE), (mx, *CROP_SHAPE))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"{onnx_path}: TensorRT failed to build an engine (see the TensorRT log above)")
        trt_cache.write_timing_cache(self.timing_cache_path, bytes(config.get_timing_cache().serialize()))
        return bytes(serialized)

    def run_device(self, crops):
        """Coefficients as a CUDA float32 tensor [B, 198] on `self.stream` (not synchronised)."""
        torch = self._torch
        check_crops(crops)
        x = torch.from_numpy(np.ascontiguousarray(crops)).pin_memory() if isinstance(crops, np.ndarray) else crops
        n = x.shape[0]
        with self._lock:
            if self._closed:
                raise BackendError("tensorrt runner: run_device() called after close()")
            return self._enqueue(x, n)

    def _enqueue(self, x, n: int):
        torch = self._torch
        result = torch.empty((n, arch.NUM_COEFFS), dtype=torch.float32, device=self._dev)
        self.stream.wait_stream(torch.cuda.current_stream(self._dev))
        with torch.cuda.stream(self.stream):
            for i in range(0, n, self.max_batch):
                chunk = x[i:i + self.max_batch]
                b = chunk.shape[0]
                self._in[:b].copy_(chunk, non_blocking=True)
                self._context.set_input_shape(INPUT_NAME, (b, *CROP_SHAPE))
                self._context.set_tensor_address(INPUT_NAME, self._in.data_ptr())
                self._context.set_tensor_address(OUTPUT_NAME, self._out.data_ptr())
                if not self._context.execute_async_v3(int(self._raw_stream)):
                    raise BackendError(f"tensorrt runner: execute_async_v3 failed for batch {b}")
                result[i:i + b].copy_(self._out[:b])
        return result

    def run(self, crops) -> np.ndarray:
        check_crops(crops)
        if not isinstance(crops, np.ndarray):
            raise InputError(f"crops: expected a numpy array for run(), found {type(crops).__name__}")
        out = self.run_device(crops)
        self.stream.synchronize()
        return out.cpu().numpy()

    def close(self) -> None:
        lock = getattr(self, "_lock", None) or threading.Lock()
        with lock:  # not while another thread enqueues on the stream
            if getattr(self, "_raw_stream", None) is not None:
                self.stream.synchronize()
                self._cudart.cudaStreamDestroy(self._raw_stream)
                self._raw_stream = None
            self._context = self._engine = self._runtime = None
            super().close()
