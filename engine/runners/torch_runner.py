"""PyTorch runners: CPU (float32, optional bfloat16) and CUDA (float16, channels-last,
optional CUDA-graph capture per batch size)."""
from __future__ import annotations

import threading

import numpy as np

from engine.errors import BackendError, InputError, UnavailableError
from engine.network import architecture as arch
from engine.runners.base import CROP_SHAPE, Runner, check_crops


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise UnavailableError("the PyTorch runners need PyTorch: pip install torch") from e
    return torch


def _build(model, precision: str, device: str):
    torch = _import_torch()
    from engine.network import torch_model

    net = torch_model.build(model.weights, model.mean, fused=True, synthetic=model.synthetic)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dtype is not None:
        plan = None
        if precision == "fp16":
            from engine.network.fp16 import log_plan

            plan = model.fp16_plan()
            log_plan(plan, "torch float16 trunk")
        torch_model.set_trunk_dtype(net, dtype, plan)
    return net.to(device)


class TorchCpuRunner(Runner):
    """BatchNorm folded into the convolutions (about 25% faster than the exact module), eager.

    Tried on the 2-core AVX-512 reference machine and not adopted: channels-last (no
    faster in eager), TorchScript freezing (slower), torch.compile with inductor freezing
    (35 s of compilation for no clear win over the noise of a shared machine).
    bfloat16 is about 2x faster but costs ~0.3 coefficient sd (see the bench table)."""

    name = "torch-cpu"
    device = "cpu"

    def __init__(self, model, *, max_batch: int = 32, threads: int | None = None, precision: str = "fp32"):
        super().__init__(model, max_batch)
        torch = _import_torch()
        if precision not in ("fp32", "bf16"):
            raise InputError(f"precision: the torch-cpu runner supports 'fp32' and 'bf16', found {precision!r}")
        if precision == "bf16" and not torch.backends.mkldnn.is_available():
            raise UnavailableError("precision 'bf16' on CPU needs a PyTorch build with oneDNN (mkldnn)")
        if threads is not None:
            if not isinstance(threads, int) or threads < 1:
                raise InputError(f"threads: expected a positive int or None, found {threads!r}")
            torch.set_num_threads(threads)  # process-wide: PyTorch has no per-module thread pool
        self.threads = torch.get_num_threads()
        self.precision = precision
        self._net = _build(model, precision, "cpu")

    def _run_chunk(self, crops: np.ndarray) -> np.ndarray:
        torch = _import_torch()
        try:
            with torch.inference_mode():
                return self._net(torch.from_numpy(crops)).numpy()
        except RuntimeError as e:
            raise BackendError(f"torch-cpu runner: inference failed on {crops.shape[0]} crops: {e}") from e

    def close(self) -> None:
        self._net = None
        super().close()


class TorchCudaRunner(Runner):
    """float16 trunk (float32 input, mean, pool5 and head), channels-last, own CUDA stream.

    With `cuda_graphs=True` the forward pass of each batch size is captured once into a
    CUDA graph (static input/output buffers) and replayed: this removes the ~300 kernel
    launches per image that dominate small-batch latency."""

    name = "torch-cuda"
    device = "cuda"

    def __init__(self, model, *, max_batch: int = 128, precision: str = "fp16", cuda_graphs: bool = False,
                 device_index: int = 0):
        super().__init__(model, max_batch)
        torch = _import_torch()
        if not torch.cuda.is_available():
            raise UnavailableError("the torch-cuda runner needs an NVIDIA GPU and a CUDA build of PyTorch")
        if precision not in ("fp16", "bf16", "fp32"):
            raise InputError(f"precision: the torch-cuda runner supports 'fp16', 'bf16', 'fp32', found {precision!r}")
        self.precision = precision
        self._dev = torch.device("cuda", device_index)
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
        if precision == "fp32":  # a float32 reference must not silently use TF32
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self._net = _build(model, precision, self._dev).to(memory_format=torch.channels_last)
        if precision == "fp16":
            self._use_fp16_plan(model)
        self.stream = torch.cuda.Stream(self._dev)
        self.cuda_graphs = bool(cuda_graphs)
        self._graphs: dict[int, tuple] = {}
        # The CUDA graphs' static input/output buffers (and the graph dict) are shared: two
        # threads enqueueing at once could replay one batch on the other's input. The lock
        # serialises the enqueue (copy in, replay, clone out); the stream keeps the order.
        self._lock = threading.Lock()

    def _graph(self, batch: int):
        torch = _import_torch()
        if batch not in self._graphs:
            # channels-last like the eager path's input, so the captured convolutions are the same
            # kernels; copy_() into it keeps this layout.
            static_in = torch.zeros((batch, *CROP_SHAPE), device=self._dev).contiguous(memory_format=torch.channels_last)
            # Warm up (cuDNN autotuning, allocator) on our stream before capture: a graph
            # must not capture one-time work.
            with torch.cuda.stream(self.stream), torch.inference_mode():
                for _ in range(2):
                    self._net(static_in)
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph, stream=self.stream):
                static_out = self._net(static_in)
            self._graphs[batch] = (graph, static_in, static_out)
        return self._graphs[batch]

    def run_device(self, crops):
        """Coefficients as a CUDA float32 tensor [B, 198], produced on `self.stream`.

        Accepts a numpy array or a torch tensor (any device). The result is not
        synchronised: consume it on `self.stream` or call `self.stream.synchronize()`."""
        torch = _import_torch()
        check_crops(crops)
        if isinstance(crops, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(crops)).pin_memory()
        else:
            x = crops
        with self._lock:
            if self._closed:
                raise BackendError("torch-cuda runner: run_device() called after close()")
            if crops.shape[0] == 0:
                return torch.empty((0, arch.NUM_COEFFS), device=self._dev)
            return self._enqueue(x)

    def _enqueue(self, x):
        torch = _import_torch()
        # the input may have been produced on the caller's stream
        self.stream.wait_stream(torch.cuda.current_stream(self._dev))
        outs = []
        try:
            with torch.cuda.stream(self.stream), torch.inference_mode():
                x = x.to(self._dev, non_blocking=True)
                for i in range(0, x.shape[0], self.max_batch):
                    chunk = x[i:i + self.max_batch]
                    if self.cuda_graphs:
                        graph, static_in, static_out = self._graph(chunk.shape[0])
                        static_in.copy_(chunk)
                        graph.replay()
                        outs.append(static_out.clone())  # the static buffer is reused by the next replay
                    else:
                        outs.append(self._net(chunk.contiguous(memory_format=torch.channels_last)))
                out = outs[0] if len(outs) == 1 else torch.cat(outs)
        except RuntimeError as e:
            raise BackendError(f"torch-cuda runner: inference failed on {x.shape[0]} crops: {e}") from e
        return out

    def run(self, crops) -> np.ndarray:
        check_crops(crops)
        if not isinstance(crops, np.ndarray):
            raise InputError(f"crops: expected a numpy array for run(), found {type(crops).__name__}")
        if crops.shape[0] == 0:
            return np.empty((0, arch.NUM_COEFFS), np.float32)
        out = self.run_device(crops)
        self.stream.synchronize()  # the copy below runs on the current stream
        return out.cpu().numpy()

    def close(self) -> None:
        with getattr(self, "_lock", None) or threading.Lock():  # not while another thread enqueues
            self._graphs.clear()
            self._net = None
            super().close()
