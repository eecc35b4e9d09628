"""torch.compile (Inductor) for the PyTorch runners: `create_runner(..., compile=True)`.

What is compiled: the runner's fused network (BatchNorm folded), with Inductor's `freezing`
(weights treated as constants: constant folding, oneDNN weight prepacking on CPU), static
shapes (`dynamic=False`) and `fullgraph=True` (a graph break would be a bug, not a slowdown).

Batch sizes. A static-shape graph serves one batch size; a new size is a recompile (seconds
on a CPU, a minute or more on a GPU under max-autotune). So a chunk of n crops runs padded
with zero crops to the next *bucket*, a power of two up to the runner's max_batch (and
max_batch itself): at most ceil(log2(max_batch)) + 1 compilations per runner configuration (8 for
max_batch 128), at most 2x the work for an odd tail batch, none for the common sizes (1, 8,
32, 128). Padding every chunk to max_batch instead would compile once but make batch 1 cost
batch 32 on a CPU; compiling every size exactly would stall a run at each new tail size.
Each compilation is logged at info level with its duration. Dynamo keeps the compiled graphs
of a code object in one cache for the whole process (every runner of the network shares
`forward`), bounded by `torch._dynamo.config.recompile_limit` (default 8), beyond which it
silently runs eager: `ensure_recompile_room` raises that limit to what our buckets need.

Cache: Inductor's FX graph cache and AOTAutograd cache live in $TORCHINDUCTOR_CACHE_DIR;
when the user has not set it, `cache_dir()` (under the engine's cache folder, beside the
synthetic weights) is used, so a second process compiles faster (the first-run message
gives the time and the folder; measured numbers in bench/results/network_cpu.md).

Inductor's CPU backend compiles C++ at run time: without a C++ compiler `check_cpp_compiler`
raises UnavailableError naming what it looked for.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from engine.errors import BackendError, InputError, UnavailableError

log = logging.getLogger("engine.runners")

COMPILE_MODES = ("default", "max-autotune")
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"

# Dynamo compiles under a process-wide lock anyway; ours also keeps two threads from
# compiling the same bucket twice and keeps the recompile bookkeeping consistent.
_LOCK = threading.Lock()
_GRAPHS: set[tuple] = set()  # (device, precision, memory format, bucket) compiled in this process


def check_args(compile, compile_mode, device: str) -> str | None:
    """The Inductor mode to compile with on `device` ("cpu"/"cuda"), or None (eager).
    `compile_mode` None means the device's default (CPU "default", CUDA "max-autotune").
    InputError for a non-bool `compile`, an unknown mode, or a mode without compile."""
    if not isinstance(compile, bool):
        raise InputError(f"compile: expected True or False, found {compile!r}")
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise InputError(f"compile_mode: expected one of {list(COMPILE_MODES)} (or None: the device's default), "
                         f"found {compile_mode!r}" + (" (the runner's own CUDA graphs replace reduce-overhead: "
                                                      "cuda_graphs=True)" if compile_mode == "reduce-overhead" else ""))
    if not compile:
        if compile_mode is not None:
            raise InputError(f"compile_mode {compile_mode!r} needs compile=True (--compile)")
        return None
    if compile_mode is None:
        return "max-autotune" if device == "cuda" else "default"
    return compile_mode


def cache_dir() -> Path:
    """The engine's Inductor cache folder ($XDG_CACHE_HOME/engine3dmm/torchinductor)."""
    from engine.network.resolve import synthetic_cache_dir

    return synthetic_cache_dir() / "torchinductor"


def use_cache_dir() -> tuple[str, bool]:
    """Point Inductor's on-disk caches at `cache_dir()` unless the user has set
    $TORCHINDUCTOR_CACHE_DIR (their choice wins). Returns (the folder in use, whether it is
    ours). Process-wide: Inductor reads the variable, and there is no per-call setting. Call
    before anything of Inductor runs: Inductor writes its own default into the variable the
    first time it needs a folder (then it is replaced here: the user did not choose it)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    given = os.environ.get(CACHE_ENV)
    if given and os.path.abspath(given) != os.path.abspath(default_cache_dir()):
        return given, False
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # read-only home: Inductor's own default (a temp folder) still works
        log.info("torch.compile cache: cannot create %s (%s); using Inductor's default", folder, e)
        return default_cache_dir(), False
    os.environ[CACHE_ENV] = str(folder)
    return str(folder), True


def check_cpp_compiler() -> str:
    """The C++ compiler Inductor's CPU backend will use; UnavailableError when there is none."""
    from torch._inductor import config
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        return get_cpp_compiler()
    except RuntimeError as e:  # torch._inductor.exc.InvalidCxxCompiler
        wanted = [c for c in (config.cpp.cxx if isinstance(config.cpp.cxx, (list, tuple)) else (config.cpp.cxx,))
                  if c]
        raise UnavailableError(
            f"compile=True on the CPU needs a C++ compiler at run time (Inductor compiles the network to C++); "
            f"none found (looked for {wanted or ['g++']}, torch._inductor.config.cpp.cxx). Install one "
            "(apt install g++, or set CXX) or run without --compile") from e


def status() -> dict:
    """Whether torch.compile can run here, for `engine3dmm info`: {"usable": bool (on the CPU;
    a GPU needs no C++ compiler), "detail": one line, "cache": the folder it would use}. Sets
    nothing (use_cache_dir does, when a runner compiles)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return {"usable": False, "detail": "needs PyTorch (pip install torch)", "cache": None}
    given = os.environ.get(CACHE_ENV)
    cache = given or str(cache_dir())
    try:
        cxx = check_cpp_compiler()
    except UnavailableError as e:
        return {"usable": False, "detail": f"not on the CPU: {e}", "cache": cache}
    return {"usable": True, "detail": f"Inductor, C++ compiler {cxx}", "cache": cache}


def inductor_options(mode: str) -> dict:
    """torch.compile `options` for a mode: the mode's own settings, freezing on, and never
    Inductor's CUDA graphs (the runner owns its stream and its graphs, see TorchCudaRunner)."""
    import torch._inductor

    opts = dict(torch._inductor.list_mode_options(mode))
    opts["freezing"] = True
    opts["triton.cudagraphs"] = False
    return opts


def buckets(max_batch: int) -> tuple[int, ...]:
    """The batch sizes compiled for a runner: powers of two below max_batch, and max_batch."""
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return tuple(out + [max_batch])


def bucket(n: int, max_batch: int) -> int:
    """The compiled batch size a chunk of n (1..max_batch) crops runs at."""
    return next(b for b in buckets(max_batch) if b >= n)


def ensure_recompile_room(key: tuple) -> None:
    """Count `key` among the graphs compiled in this process and keep Dynamo's recompile
    limit above that count (plus headroom for the caller's own functions), so that a new
    bucket is compiled instead of silently falling back to eager. Call under _LOCK."""
    import torch._dynamo

    _GRAPHS.add(key)
    need = len(_GRAPHS) + 8
    cfg = torch._dynamo.config
    # PyTorch 2.7 renamed cache_size_limit to recompile_limit (the GPU image has 2.11, here 2.13)
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    if getattr(cfg, name) < need:
        new = max(need, 64)  # in one step: one log line, not one per bucket
        log.info("torch.compile: raising torch._dynamo.config.%s from %d to %d (the network keeps one compiled "
                 "graph per batch bucket and precision)", name, getattr(cfg, name), new)
        setattr(cfg, name, new)
    acc = "accumulated_" + name
    if hasattr(cfg, acc) and getattr(cfg, acc) < need:
        setattr(cfg, acc, max(need, 256))


def _cache_counters() -> dict[str, int]:
    from torch._dynamo.utils import counters

    c = counters["inductor"]
    return {k: int(c.get(k, 0)) for k in ("fxgraph_cache_hit", "fxgraph_cache_miss")}


class CompiledNet:
    """A network compiled with torch.compile (Inductor), one static graph per batch bucket.

    Call it with a batch whose size is a bucket (see `pad`); the first call of each bucket
    compiles (timed, logged at info level, recorded in `compile_seconds` {bucket: seconds}).
    Errors: BackendError when Inductor fails (the CPU runner checks for a C++ compiler first:
    check_cpp_compiler)."""

    def __init__(self, net, *, runner: str, device: str, precision: str, mode: str, memory_format: str,
                 max_batch: int, sync=None):
        import torch

        self.cache, self.own_cache = use_cache_dir()
        self.runner, self.device, self.mode, self.max_batch = runner, device, mode, max_batch
        self._key = (device, precision, memory_format)
        self._sync = sync  # waits for the device, so that a compile's time includes its first run
        self._fn = torch.compile(net, dynamic=False, fullgraph=True, options=inductor_options(mode))
        self.compile_seconds: dict[int, float] = {}
        self.compile_how: dict[int, str] = {}  # bucket: "cache hit", "compiled", or "in-process"
        self._said_first = False

    def times(self) -> dict[int, dict]:
        """{bucket: {"seconds": its compile (and first run) time, "how": "compiled" | "cache hit" |
        "in-process" (a graph another runner of this process compiled)}}."""
        return {b: {"seconds": t, "how": self.compile_how[b]} for b, t in self.compile_seconds.items()}

    def pad(self, x):
        """x [n, ...] (n <= max_batch) padded with zero crops to its bucket; returns (padded, n).
        Rows are independent (no batch statistics at inference), so the padding changes nothing
        in the first n outputs. The caller sets the memory format."""
        import torch

        n = x.shape[0]
        b = bucket(n, self.max_batch)
        if b == n:
            return x, n
        pad = torch.zeros((b - n, *x.shape[1:]), dtype=x.dtype, device=x.device)
        return torch.cat([x, pad]), n

    def __call__(self, x):
        b = x.shape[0]
        if b in self.compile_seconds:
            return self._fn(x)
        with _LOCK:
            if b in self.compile_seconds:  # another thread compiled it meanwhile
                return self._fn(x)
            ensure_recompile_room(self._key + (b,))
            if not self._said_first:
                log.info("%s runner: compiling the network with torch.compile (Inductor, mode %s, freezing) for "
                         "batch %d; each new batch bucket %s compiles once (about 10-30 s on a CPU, minutes on a "
                         "GPU under max-autotune; faster from the cache); cache: %s", self.runner, self.mode, b,
                         list(buckets(self.max_batch)), self.cache)
                self._said_first = True
            else:
                log.info("%s runner: torch.compile recompiles for a new batch bucket %d", self.runner, b)
            before = _cache_counters()
            t0 = time.perf_counter()
            try:
                out = self._fn(x)
                if self._sync is not None:
                    self._sync()
            except Exception as e:
                raise BackendError(f"{self.runner} runner: torch.compile (Inductor, mode {self.mode}) failed for "
                                   f"batch {b}: {type(e).__name__}: {str(e).strip().splitlines()[0][:500]}") from e
            dt = time.perf_counter() - t0
            after = _cache_counters()
            hit = after["fxgraph_cache_hit"] - before["fxgraph_cache_hit"]
            miss = after["fxgraph_cache_miss"] - before["fxgraph_cache_miss"]
            how = "cache hit" if hit and not miss else "compiled" if miss else "in-process"
            log.info("%s runner: torch.compile for batch %d took %.1f s (%s; cache %s)", self.runner, b, dt, {
                "cache hit": "from Inductor's FX graph cache", "compiled": "compiled afresh",
                "in-process": "reusing a graph compiled earlier in this process"}[how], self.cache)
            self.compile_seconds[b] = dt
            self.compile_how[b] = how
            return out

