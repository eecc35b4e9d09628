"""Benchmark the network runners: latency p50/p99, throughput and max error vs float32.

    python bench/bench_network.py --json bench/results/network_cpu.json --md bench/results/network_cpu.md

For every runner available on this machine (plus the PyTorch eager float32 reference,
the exact unfused module, row runner "torch-eager"), at batch 1, 8, 32 on CPU (and 128
on GPU). Runners are timed in `--rounds` passes, a block of calls each, so that load
from other processes on a shared machine hits all of them alike. `max_abs_err` is the
largest difference from the float32 reference over the batch, in coefficient units
(standard deviations); the table also gives it relative to the coefficients' sd.
Inputs: pseudo-face crops (mean image plus smooth noise); the weights are whatever the
model folder resolves to (the synthetic set unless converted weights exist).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.fileio import atomic_write  # noqa: E402
from engine.network.resolve import resolve_model  # noqa: E402
from engine.network.synthetic import calibration_crops  # noqa: E402
from engine.runners import available_runners, create_runner  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = open("/proc/cpuinfo").read()
        isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni") if f" {f}" in flags]
    except OSError:
        isa = []
    return f"{cpu}, {os.cpu_count()} logical CPUs ({', '.join(isa)}), {platform.system()} {platform.release()}"


class EagerReference:
    """The exact unfused PyTorch module in float32 eager mode: the reference and the baseline."""

    name, precision = "torch-eager", "fp32"

    def __init__(self, model, device="cpu"):
        import torch

        from engine.network.torch_model import build

        if device == "cuda":  # a float32 baseline must not silently use TF32
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.torch, self.device = torch, device
        self.net = build(model.weights, model.mean, fused=False, synthetic=model.synthetic).to(device)

    def run(self, crops):
        torch = self.torch
        with torch.inference_mode():
            out = self.net(torch.from_numpy(crops).to(self.device))
            return out.cpu().numpy()  # .cpu() waits for the GPU, so timings include it

    def close(self):
        self.net = None


def configs(threads, gpu: bool, cpu: bool = True):
    """(runner name, create_runner kwargs) pairs to benchmark on this machine."""
    names = available_runners()
    out = []
    if not cpu:
        names = [n for n in names if n not in ("onnxruntime", "torch-cpu")]
    if "onnxruntime" in names:
        out.append(("onnxruntime", dict(threads=threads)))
    if "torch-cpu" in names:
        out.append(("torch-cpu", dict(threads=threads, precision="fp32")))
        out.append(("torch-cpu", dict(threads=threads, precision="bf16")))
    if gpu and "torch-cuda" in names:
        out.append(("torch-cuda", dict(precision="fp16", cuda_graphs=False)))
        out.append(("torch-cuda", dict(precision="fp16", cuda_graphs=True)))
    if gpu and "tensorrt" in names:
        out.append(("tensorrt", dict(precision="fp16")))
    return out


def bench_batch(batch, runners, iters, warmup, crops_all, rounds):
    x = crops_all[:batch]
    ref = runners[0][1].run(x)  # the float32 eager reference comes first
    times = {i: [] for i in range(len(runners))}
    errs = {}
    for i, (_, r) in enumerate(runners):
        out = r.run(x)
        errs[i] = float(np.abs(out - ref).max())
        for _ in range(warmup - 1):
            r.run(x)
    # `rounds` passes over the runners, a block of calls each: blocks keep one runtime's
    # worker threads from spinning while another runs; rounds spread outside load evenly.
    per_block = max(1, -(-iters // rounds))
    for _ in range(rounds):
        for i, (_, r) in enumerate(runners):
            for _ in range(per_block):
                t = time.perf_counter()
                r.run(x)
                times[i].append(time.perf_counter() - t)
    rows = []
    for i, (label, r) in enumerate(runners):
        ms = np.array(times[i]) * 1e3
        p50 = float(np.percentile(ms, 50))
        rows.append({"runner": r.name, "device": r.device, "precision": r.precision, "batch": batch,
                     "latency_ms_p50": round(p50, 3), "latency_ms_p99": round(float(np.percentile(ms, 99)), 3),
                     "throughput_per_s": round(batch / p50 * 1e3, 2), "max_abs_err": errs[i],
                     "config": label, "iters": iters, "ref_sd": float(ref.std()),
                     "min_ms": round(float(ms.min()), 3), "load_1m": round(os.getloadavg()[0], 2)})
    return rows


def markdown(rows, header: str) -> str:
    lines = [header, "",
             "| runner | config | device | precision | batch | p50 ms | p99 ms | min ms | images/s (p50) | max abs err (sd units) | err / coeff sd | p50 speed-up vs torch-eager (same device) | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {(r["batch"], r["device"]): r["latency_ms_p50"] for r in rows if r["runner"] == "torch-eager"}
    for r in rows:
        lines.append(f"| {r['runner']} | {r['config']} | {r['device']} | {r['precision']} | {r['batch']} | "
                     f"{r['latency_ms_p50']:.1f} | {r['latency_ms_p99']:.1f} | {r.get('min_ms', float('nan')):.1f} | "
                     f"{r['throughput_per_s']:.1f} | "
                     f"{r['max_abs_err']:.2e} | {r['max_abs_err'] / r['ref_sd']:.3f} | "
                     f"{base.get((r['batch'], r['device']), float('nan')) / r['latency_ms_p50']:.2f}x | "
                     f"{r.get('load_1m', float('nan')):.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default=None, help="comma-separated (default 1,8,32 on CPU; 1,8,32,128 with a GPU)")
    ap.add_argument("--iters", type=int, default=None, help="timed calls per runner and batch size (default: 12/4/2/2 for batch 1/8/32/128)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="passes over the runners per batch size")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--gpu", action="store_true", help="include GPU runners (default: only when present)")
    ap.add_argument("--gpu-only", action="store_true",
                    help="only GPU runners, against the float32 eager module on the same GPU (bench/gpu_check.sh)")
    ap.add_argument("--json", default=None, help="write rows as JSON here")
    ap.add_argument("--md", default=None, help="write a markdown table here")
    ap.add_argument("--append", action="store_true",
                    help="merge into an existing --json file (rows of the same runner/config/batch are replaced), "
                         "so batch sizes can be measured in separate quiet moments of a shared machine")
    args = ap.parse_args(argv)

    import torch

    gpu = args.gpu or args.gpu_only or torch.cuda.is_available()
    if args.gpu_only and not torch.cuda.is_available():
        sys.exit("bench_network.py --gpu-only: PyTorch sees no CUDA device")
    batches = [int(b) for b in args.batches.split(",")] if args.batches else ([1, 8, 32, 128] if gpu else [1, 8, 32])
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    model = resolve_model(args.model_dir)
    runners = [] if args.gpu_only else [("fp32 exact module, eager", EagerReference(model))]
    if gpu:  # the GPU targets compare with eager float32 on the same GPU
        runners.append(("fp32 exact module, eager", EagerReference(model, "cuda")))
    for name, kw in configs(threads, gpu, cpu=not args.gpu_only):
        r = create_runner(name, args.model_dir, max_batch=max(batches), **kw)
        label = ", ".join(f"{k}={v}" for k, v in kw.items())
        runners.append((label, r))
    crops_all = calibration_crops(seed=99, n=max(batches), mean=model.mean)
    rows = []
    for b in batches:
        iters = args.iters or {1: 12, 8: 4}.get(b, 2)
        rows += bench_batch(b, runners, iters, args.warmup, crops_all, args.rounds)
        for r in rows[-len(runners):]:
            print(f"{r['runner']:12s} {r['config']:38s} b={b:3d} p50 {r['latency_ms_p50']:9.2f} ms "
                  f"{r['throughput_per_s']:9.1f}/s err {r['max_abs_err']:.2e}", flush=True)
    for _, r in runners:
        r.close()
    meta = {"machine": machine(), "threads": threads, "torch": torch.__version__,
            "weights": model.describe(), "synthetic": model.synthetic,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average_1m_at_end": os.getloadavg()[0]}
    try:
        import onnxruntime

        meta["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if args.json and args.append and Path(args.json).is_file():
        old = json.loads(Path(args.json).read_text())["rows"]
        fresh = {(r["runner"], r["config"], r["batch"]) for r in rows}
        rows = sorted([r for r in old if (r["runner"], r["config"], r["batch"]) not in fresh] + rows,
                      key=lambda r: (r["batch"], r["device"]))
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    if args.md:
        header = (f"# Network runners, {'GPU' if gpu else 'CPU'}\n\nMachine: {meta['machine']}; {threads} threads; "
                  f"torch {meta['torch']}, onnxruntime {meta.get('onnxruntime')}; {meta['date']}; "
                  f"1-minute load average at the end {meta['load_average_1m_at_end']:.1f}.\n"
                  f"Weights: {meta['weights']}.\n"
                  "Latency per call (whole batch); runners timed in alternating blocks on a machine shared with other jobs.")
        with atomic_write(args.md, "w") as f:
            f.write(markdown(rows, header))
    return rows


if __name__ == "__main__":
    main()
