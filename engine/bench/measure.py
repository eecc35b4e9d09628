"""Timing and memory measurement for the benchmark: the one place that decides how a
stage is timed, how many iterations it gets, and what "peak memory" means."""
from __future__ import annotations

import math
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field

import numpy as np

ROW_KEYS = ("stage", "runner", "device", "precision", "batch", "latency_ms_p50", "latency_ms_p99",
            "throughput_per_s", "model")


@dataclass
class Row:
    stage: str
    runner: str
    device: str
    precision: str
    batch: int
    latency_ms_p50: float
    latency_ms_p99: float
    throughput_per_s: float
    model: str
    iterations: int = 0
    peak_rss_mib: float | None = None
    peak_gpu_mib: float | None = None
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Skip:
    """Rows a run was asked for and did not measure, and why: logged, and kept in the JSON
    ("skipped") and the Markdown beside the rows that were measured, so a table never reads as
    if they had been. `batches` empty: every batch size."""

    stages: tuple[str, ...]
    runner: str
    precision: str
    reason: str
    batches: tuple[int, ...] = ()

    def as_dict(self) -> dict:
        return {**asdict(self), "stages": list(self.stages), "batches": list(self.batches)}

    def describe(self) -> str:
        who = " ".join(x for x in (self.runner, self.precision) if x and x != "-")
        at = f", batch {', '.join(map(str, self.batches))}" if self.batches else ""
        return f"{', '.join(self.stages)} ({who}{at}): skipped: {self.reason}"


def add_skip(skipped: list[Skip], skip: Skip) -> Skip:
    """Append `skip` to `skipped`, or widen the entry that differs only in its batch sizes (one
    line for a reason that holds at every batch size); returns the entry."""
    for i, s in enumerate(skipped):
        if (s.stages, s.runner, s.precision, s.reason) == (skip.stages, skip.runner, skip.precision, skip.reason):
            if s.batches and skip.batches:
                skipped[i] = Skip(s.stages, s.runner, s.precision, s.reason,
                                  tuple(dict.fromkeys(s.batches + skip.batches)))
                return skipped[i]
            if not s.batches and not skip.batches:
                return s
    skipped.append(skip)
    return skip


@dataclass
class Budget:
    """How long each stage is measured: at least `min_iters` timed calls, more until
    `seconds` have passed, never more than `max_iters`; `warmup` untimed calls first."""

    seconds: float
    min_iters: int
    max_iters: int
    warmup: int = 1
    pipelined_batches: tuple[int, int] = (4, 40)  # min, max batches through a pipelined stage
    rounds: int = 1  # network / network_decode / end_to_end are measured in interleaved rounds

    def iterations_for(self, seconds_per_call: float) -> int:
        n = math.ceil(self.seconds / max(seconds_per_call, 1e-6))
        return int(min(max(n, self.min_iters), self.max_iters))

    def batches_for(self, seconds_per_batch: float) -> int:
        lo, hi = self.pipelined_batches
        return int(min(max(math.ceil(self.seconds / max(seconds_per_batch, 1e-6)), lo), hi))


QUICK = Budget(seconds=1.5, min_iters=2, max_iters=10, warmup=1, pipelined_batches=(2, 6), rounds=1)
FULL = Budget(seconds=8.0, min_iters=4, max_iters=200, warmup=2, pipelined_batches=(3, 40), rounds=3)


def time_calls(fn, budget: Budget, sync=None) -> list[float]:
    """Seconds per call of fn() (after warm-up); `sync` waits for asynchronous work (GPU)."""
    t_first = None
    for _ in range(budget.warmup):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        t_first = time.perf_counter() - t0
    n = budget.iterations_for(t_first or 0.0)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return times


def summarize(times: list[float], faces_per_call: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, faces per second over the total time of all calls).

    For pipelined stages the "calls" are the intervals between consecutive batch
    completions (the pipeline's period per batch), so the throughput is the steady state
    and the one-off pipeline fill is left out (it is reported in the row's note)."""
    t = np.asarray(times, np.float64)
    return (float(np.percentile(t, 50) * 1e3), float(np.percentile(t, 99) * 1e3),
            float(faces_per_call * t.size / t.sum()))


class PeakMemory:
    """Peak resident memory of this process over a stage, in MiB.

    Linux keeps the peak (VmHWM) and lets a process reset it by writing 5 to
    /proc/self/clear_refs, so each stage gets its own peak; where that is not possible the
    process-wide peak since start is reported (then marked with a '>=' note by the caller).
    GPU: PyTorch's peak allocated memory (TensorRT's own allocations are not included)."""

    def __init__(self, gpu: bool = False):
        self.gpu = gpu
        self.per_stage = True

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.per_stage = False
        if self.gpu:
            import torch

            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        self.rss_mib = _vm_hwm_mib()
        self.gpu_mib = None
        if self.gpu:
            import torch

            self.gpu_mib = torch.cuda.max_memory_allocated() / 2**20
        return False


def proc_status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status ("VmHWM", "VmRSS") in MiB, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _vm_hwm_mib() -> float | None:
    hwm = proc_status_mib("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Machine:
    cpu: str
    cores: int
    system: str
    gpu: str | None = None
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        s = f"{self.cpu}, {self.cores} cores ({self.system})"
        s += f"; GPU: {self.gpu}" if self.gpu else ""
        return s + "".join(f"; {k} {v}" for k, v in self.extra.items())


def machine(gpu: bool) -> Machine:
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    gpu_name = None
    if gpu:
        import torch

        gpu_name = torch.cuda.get_device_name()
    return Machine(cpu, os.cpu_count() or 1, f"{platform.system()} {platform.release()}", gpu_name, _versions())


def _versions() -> dict:
    """Decode kernel ISA and the versions of the libraries that ran (those already imported)."""
    import sys

    out = {}
    try:
        from engine import _core

        out["decode kernel"] = _core.build_info().get("cpu_kernel_selected")
    except Exception:  # the table is still useful without it
        pass
    for mod in ("onnxruntime", "torch", "tensorrt", "numpy"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out
