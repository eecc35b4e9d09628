"""PyTorch runners: CPU (float32, optional bfloat16) and CUDA (float16, channels-last,
optional CUDA-graph capture per batch size); either optionally compiled with torch.compile
(Inductor, engine.runners.torch_compile)."""
from __future__ import annotations

import threading

import numpy as np

from engine.errors import BackendError, InputError, UnavailableError
from engine.network import architecture as arch
from engine.runners.base import CROP_SHAPE, Runner, check_crops
from engine.runners.torch_compile import check_args


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
    """BatchNorm folded into the convolutions (about 25% faster than the exact module), eager,
    or with `compile=True` compiled by torch.compile with Inductor's C++/OpenMP CPU backend
    (static shapes, freezing, batch buckets: engine.runners.torch_compile; needs a C++
    compiler at run time, else UnavailableError). `compile_mode`: "default" (the default on
    the CPU) or "max-autotune" (also tunes the GEMM of the head; longer to compile).
    The compiled path's speed against eager and ONNX Runtime, its compile times and its error
    are in bench/results/network_cpu.md.

    Tried on the 2-core AVX-512 reference machine and not adopted: channels-last (no
    faster in eager), TorchScript freezing (slower).
    bfloat16 is about 2x faster but costs ~0.3 coefficient sd (see the bench table)."""

    name = "torch-cpu"
    device = "cpu"

    def __init__(self, model, *, max_batch: int = 32, threads: int | None = None, precision: str = "fp32",
                 compile: bool = False, compile_mode: str | None = None):
        super().__init__(model, max_batch)
        torch = _import_torch()
        mode = check_args(compile, compile_mode, "cpu")
        if mode is not None:
            from engine.runners.torch_compile import check_cpp_compiler

            check_cpp_compiler()  # UnavailableError now, not a torch traceback at the first batch
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
        self._compiled = None
        if mode is not None:
            from engine.runners.torch_compile import CompiledNet

            # Inductor's OpenMP code takes its thread count when it is generated: set above, before this.
            self._compiled = CompiledNet(self._net, runner=self.name, device="cpu", precision=precision, mode=mode,
                                         memory_format="contiguous", max_batch=max_batch)
        self.compiled = self._compiled is not None
        self.compile_mode = mode
        self.compile_cache = self._compiled.cache if self._compiled is not None else None

    @property
    def compile_times(self) -> dict[int, dict]:
        """{batch bucket: {"seconds", "how"}} of each torch.compile in this runner (empty when eager;
        engine.runners.torch_compile.CompiledNet.times)."""
        return self._compiled.times() if self._compiled is not None else {}

    def _run_chunk(self, crops: np.ndarray) -> np.ndarray:
        torch = _import_torch()
        try:
            with torch.inference_mode():
                x = torch.from_numpy(crops)
                if self._compiled is None:
                    return self._net(x).numpy()
                x, n = self._compiled.pad(x)
                return self._compiled(x)[:n].numpy()
        except RuntimeError as e:
            raise BackendError(f"torch-cpu runner: inference failed on {crops.shape[0]} crops: {e}") from e

    def close(self) -> None:
        self._net = self._compiled = None
        super().close()


class TorchCudaRunner(Runner):
    """float16 trunk (float32 input, mean, pool5 and head), channels-last, own CUDA stream.

    With `cuda_graphs=True` the forward pass of each batch size is captured once into a
    CUDA graph (static input/output buffers) and replayed: this removes the ~300 kernel
    launches per image that dominate small-batch latency.

    With `compile=True` the network is compiled by torch.compile (Inductor; `compile_mode`
    "max-autotune", the default here, or "default", which compiles in a fraction of the time)
    with static shapes, freezing and batch buckets (engine.runners.torch_compile). Inductor's
    own CUDA graphs (the "cudagraph trees" of mode max-autotune / reduce-overhead) are always
    off, i.e. max-autotune runs as "max-autotune-no-cudagraphs": they replay on a private
    stream and pool, overwrite their outputs at the next call and are per-thread, which would
    break this runner's contract (results produced on `self.stream`, valid until consumed,
    any thread). The launch overhead they remove is removed by `cuda_graphs=True` instead: the
    compiled forward pass is captured into this runner's own per-bucket graphs, so compile and
    cuda_graphs combine (the fastest configuration) and neither changes the contract."""

    name = "torch-cuda"
    device = "cuda"

    def __init__(self, model, *, max_batch: int = 128, precision: str = "fp16", cuda_graphs: bool = False,
                 device_index: int = 0, compile: bool = False, compile_mode: str | None = None):
        super().__init__(model, max_batch)
        mode = check_args(compile, compile_mode, "cuda")
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
        self._compiled = None
        if mode is not None:
            from engine.runners.torch_compile import CompiledNet

            self._compiled = CompiledNet(self._net, runner=self.name, device="cuda", precision=precision, mode=mode,
                                         memory_format="channels_last", max_batch=max_batch,
                                         sync=self.stream.synchronize)
        self.compiled = self._compiled is not None
        self.compile_mode = mode
        self.compile_cache = self._compiled.cache if self._compiled is not None else None
        self._graphs: dict[int, tuple] = {}
        # The CUDA graphs' static input/output buffers (and the graph dict) are shared: two
        # threads enqueueing at once could replay one batch on the other's input. The lock
        # serialises the enqueue (copy in, replay, clone out); the stream keeps the order.
        self._lock = threading.Lock()

    @property
    def compile_times(self) -> dict[int, dict]:
        """{batch bucket: {"seconds", "how"}} of each torch.compile in this runner (empty when eager;
        engine.runners.torch_compile.CompiledNet.times)."""
        return self._compiled.times() if self._compiled is not None else {}

    def _forward(self, x):
        return self._net(x) if self._compiled is None else self._compiled(x)

    def _graph(self, batch: int):
        torch = _import_torch()
        if batch not in self._graphs:
            # channels-last like the eager path's input, so the captured convolutions are the same
            # kernels; copy_() into it keeps this layout.
            static_in = torch.zeros((batch, *CROP_SHAPE), device=self._dev).contiguous(memory_format=torch.channels_last)
            # Warm up (cuDNN autotuning, allocator; with compile=True the compilation and
            # Inductor's autotuning) on our stream before capture: a graph must not capture
            # one-time work.
            with torch.cuda.stream(self.stream), torch.inference_mode():
                for _ in range(2):
                    self._forward(static_in)
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            # thread_local: the pipeline's other threads (prep workers pinning host buffers, the
            # device input's decode stream) keep working during a capture; the default global
            # mode would fail their allocations, or the capture, for work that is not in it.
            with torch.inference_mode(), torch.cuda.graph(graph, stream=self.stream,
                                                          capture_error_mode="thread_local"):
                static_out = self._forward(static_in)
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
                    n = chunk.shape[0]
                    if self._compiled is not None:  # padded to its compiled batch bucket
                        chunk, n = self._compiled.pad(chunk)
                    if self.cuda_graphs:
                        graph, static_in, static_out = self._graph(chunk.shape[0])
                        static_in.copy_(chunk)
                        graph.replay()
                        outs.append(static_out[:n].clone())  # the static buffer is reused by the next replay
                    else:
                        outs.append(self._forward(chunk.contiguous(memory_format=torch.channels_last))[:n])
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
            self._net = self._compiled = None
            super().close()
