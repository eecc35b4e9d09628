"""Decode kernels against the numpy reference and the machine's memory bandwidth.

    python bench/bench_decode.py [--batches 1 8 64] [--json PATH] [--markdown PATH]

All rows run in one process on the same model (the built-in synthetic model, full
trimmed-BFM size: 46,990 vertices, 99 + 99 components) and the same coefficients.
Every implementation produces the same outputs: float32 vertices and uint8 colours.

- numpy: the natural fast way: float32 matmul + add + clip + astype.
- cpu: our kernel (float32 or float16 bases).
- cuda: our kernel on the GPU (where present); torch-cuda: addmm + clamp + cast.

Effective bandwidth = (bytes of bases and means read + bytes of outputs written) / time,
reported as a fraction of the measured copy bandwidth (bytes read + written per second
of a large memcpy, the best of one thread per core and one thread) and of the read
bandwidth (a large sum on every core), both timed beside the kernels.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import _core  # noqa: E402
from engine.decode import Decoder  # noqa: E402
from engine.morphable import synthetic_model  # noqa: E402


def _time(fn):
    return _time_interleaved({"x": fn})["x"]


def _time_interleaved(fns, rounds=4, calls=5):
    """Median seconds per call of each function. Implementations run in alternating
    blocks (so load from other processes falls on all alike). Before each block the
    process sleeps and makes one untimed call: the previous library's worker threads
    (OpenBLAS, OpenMP) spin for a while after their last call and would otherwise
    steal the cores from the library being timed."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            time.sleep(0.2)  # let the previous library's spinning threads go idle
            fn()
            for _ in range(calls):
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


class HostBandwidth:
    """Timed functions for the machine's memory bandwidth, timed in the same alternating
    blocks as the kernels (load on this shared machine changes within minutes, so a figure
    measured once at the start misstates the fractions):
    - copy: bytes read + written per second of a large np.copyto (non-temporal stores, so
      no read-for-ownership traffic), best of one thread and one thread per core;
    - read: bytes read per second of a large np.sum, one thread per core (a kernel that
      streams its bases and writes little is bound by this, not by the copy)."""

    def __init__(self, nbytes=512 << 20):
        self.nbytes = nbytes
        self.src = np.ones(nbytes // 4, np.float32)
        self.dst = np.empty_like(self.src)
        nts = sorted({1, os.cpu_count() or 1})
        self.fns = {f"copy{nt}": self._threads(np.copyto, nt, self.dst, self.src) for nt in nts}
        self.fns["read"] = self._threads(np.sum, nts[-1], self.src)

    @staticmethod
    def _threads(fn, nt, *arrays):
        parts = np.array_split(np.arange(arrays[0].size), nt)
        bounds = [(p[0], p[-1] + 1) for p in parts]

        def run():
            ts = [threading.Thread(target=fn, args=tuple(a[b0:b1] for a in arrays)) for b0, b1 in bounds]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        return run

    def rates(self, times: dict) -> tuple[float, float]:
        """(copy, read) bytes per second from the times of self.fns."""
        copy = max(2 * self.nbytes / t for k, t in times.items() if k.startswith("copy"))
        return copy, self.nbytes / times["read"]


def machine_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor()}, {os.cpu_count()} cores"


def run(batches, model, gpu_only: bool = False):
    if gpu_only:  # the CPU rows of another machine would only blur a GPU table
        return [r for b in batches for r in _gpu_rows(model, *_coeffs_and_ref(model, b), b)], []
    n3 = model.shape_mean.shape[0]
    ks, kt = model.shape_basis.shape[0], model.tex_basis.shape[0]
    rows = []
    host = HostBandwidth()
    bws = []

    sb32 = np.ascontiguousarray(model.shape_basis, np.float32)
    tb32 = np.ascontiguousarray(model.tex_basis, np.float32)
    smu, tmu = np.asarray(model.shape_mean, np.float32), np.asarray(model.tex_mean, np.float32)
    decoders = {b: Decoder(model, basis_dtype=b) for b in ("fp32", "fp16")}
    for batch in batches:
        coeffs, ref64 = _coeffs_and_ref(model, batch)

        def numpy_decode():
            v = coeffs[:, :ks] @ sb32
            v += smu
            t = coeffs[:, ks:] @ tb32
            t += tmu
            np.clip(t, 0, 255, out=t)
            return v, t.astype(np.uint8)

        out_bytes = batch * n3 * (4 + 1)
        fns = {"numpy": numpy_decode}
        for basis, d in decoders.items():
            fns[basis] = lambda d=d: d.decode(coeffs, outputs=("vertices", "colors"))  # noqa: E731
        times = _time_interleaved({**fns, **host.fns})
        bw, read_bw = host.rates(times)
        bws.append((bw, read_bw))
        print(f"batch {batch}: host copy bandwidth (read + write) {bw / 1e9:.1f} GB/s, "
              f"read {read_bw / 1e9:.1f} GB/s", file=sys.stderr)
        t_np = times["numpy"]
        v_np, _ = numpy_decode()
        results = [("numpy", "fp32", t_np, np.abs(v_np - ref64).max(), 4)]
        for basis in decoders:
            v = fns[basis]().vertices.reshape(batch, -1)
            results.append(("cpu", basis, times[basis], np.abs(v - ref64).max(), 4 if basis == "fp32" else 2))
        for impl, basis, t, err, item in results:
            read = (ks + kt) * n3 * item + 2 * n3 * 4
            eff = (read + out_bytes) / t
            rows.append(dict(impl=impl, basis=basis, batch=batch, ms_per_batch=t * 1e3, faces_per_s=batch / t,
                             effective_gbps=eff / 1e9, bandwidth_fraction=eff / bw,
                             read_bandwidth_fraction=eff / read_bw, copy_gbps=bw / 1e9, read_gbps=read_bw / 1e9,
                             speedup_vs_numpy=t_np / t, max_abs_err_mm=float(err)))
        rows.extend(_gpu_rows(model, coeffs, ref64, batch))
    return rows, bws


def _coeffs_and_ref(model, batch):
    """Coefficients [batch, Ks+Kt] (seeded by the batch size) and the float64 reference vertices."""
    ks, kt = model.shape_basis.shape[0], model.tex_basis.shape[0]
    coeffs = np.random.default_rng(batch).normal(0, 1, (batch, ks + kt)).astype(np.float32)
    sb = np.asarray(model.shape_basis, np.float64)
    ref64 = np.asarray(model.shape_mean, np.float64) + coeffs[:, :ks].astype(np.float64) @ sb
    return coeffs, ref64


def _gpu_rows(model, coeffs, ref64, batch):
    if not _core.has_cuda():
        return []
    import torch

    n3 = model.shape_mean.shape[0]
    ks, kt = model.shape_basis.shape[0], model.tex_basis.shape[0]
    x = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)

    def sync(fn):
        def g():
            fn()
            torch.cuda.synchronize()
        return g

    bw = 2 * x.numel() / _time(sync(lambda: y.copy_(x)))
    c = torch.from_numpy(coeffs).cuda()
    rows = []
    out_bytes = batch * n3 * (4 + 1)
    sb = torch.from_numpy(np.asarray(model.shape_basis, np.float32)).cuda()
    tb = torch.from_numpy(np.asarray(model.tex_basis, np.float32)).cuda()
    smu = torch.from_numpy(np.asarray(model.shape_mean, np.float32)).cuda()
    tmu = torch.from_numpy(np.asarray(model.tex_mean, np.float32)).cuda()

    def torch_decode():
        v = torch.addmm(smu, c[:, :ks], sb)
        t = torch.addmm(tmu, c[:, ks:], tb).clamp_(0, 255).to(torch.uint8)
        return v, t

    t_torch = _time(sync(torch_decode))
    err = np.abs(torch_decode()[0].cpu().numpy() - ref64).max()
    cand = [("torch-cuda", "fp32", t_torch, err, 4)]
    for basis in ("fp32", "fp16"):
        d = Decoder(model, device="cuda", basis_dtype=basis)
        fn = lambda d=d: d.decode(c, outputs=("vertices", "colors"), check_finite=False)  # noqa: E731
        v = fn().vertices.reshape(batch, -1).cpu().numpy()
        cand.append(("cuda", basis, _time(sync(fn)), np.abs(v - ref64).max(), 4 if basis == "fp32" else 2))
    for impl, basis, t, err, item in cand:
        eff = ((ks + kt) * n3 * item + 2 * n3 * 4 + out_bytes) / t
        rows.append(dict(impl=impl, basis=basis, batch=batch, ms_per_batch=t * 1e3, faces_per_s=batch / t,
                         effective_gbps=eff / 1e9, bandwidth_fraction=eff / bw, read_bandwidth_fraction=None,
                         copy_gbps=bw / 1e9, read_gbps=None, speedup_vs_numpy=None,
                         speedup_vs_torch_cuda=t_torch / t, max_abs_err_mm=float(err)))
    return rows


def markdown(rows, machine):
    lines = [f"Machine: {machine}. The host's bandwidths are timed in the same alternating rounds as "
             "the kernels of each batch: copy = bytes read + written per second of a large np.copyto, "
             "read = bytes read per second of a large np.sum on every core. GPU rows: device-to-device copy.", "",
             "| impl | basis | batch | ms/batch | faces/s | effective GB/s | copy GB/s | of copy bw | read GB/s "
             "| of read bw | vs numpy | max err (mm) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    pct = lambda v: "" if v is None else f"{v:.0%}"  # noqa: E731
    num = lambda v: "" if v is None else f"{v:.1f}"  # noqa: E731
    for r in rows:
        vs = f"{r['speedup_vs_numpy']:.2f}x" if r.get("speedup_vs_numpy") else \
            f"{r.get('speedup_vs_torch_cuda', 0):.2f}x vs torch"
        lines.append(f"| {r['impl']} | {r['basis']} | {r['batch']} | {r['ms_per_batch']:.3f} | "
                     f"{r['faces_per_s']:.0f} | {r['effective_gbps']:.1f} | {num(r['copy_gbps'])} | "
                     f"{pct(r['bandwidth_fraction'])} | {num(r['read_gbps'])} | {pct(r['read_bandwidth_fraction'])} | "
                     f"{vs} | {r['max_abs_err_mm']:.2e} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    ap.add_argument("--markdown", type=Path, help="write a markdown table here")
    ap.add_argument("--gpu-only", action="store_true", help="only the GPU rows (bench/gpu_check.sh)")
    args = ap.parse_args(argv)
    if args.gpu_only and not _core.has_cuda():
        sys.exit("bench_decode.py --gpu-only: engine._C has no usable CUDA device (build with ENGINE_WITH_CUDA=ON on a GPU machine)")
    model = synthetic_model()
    rows, bws = run(args.batches, model, gpu_only=args.gpu_only)
    machine = machine_name()
    table = markdown(rows, machine)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine,
                                         "copy_bandwidth_gbps": max((b for b, _ in bws), default=0) / 1e9,
                                         "read_bandwidth_gbps": max((r for _, r in bws), default=0) / 1e9,
                                         "model": model.metadata.get("name"), "rows": rows}, indent=1))
    if args.markdown:
        args.markdown.write_text("# Decode benchmark (bench/bench_decode.py)\n\n" + table)


if __name__ == "__main__":
    main()
