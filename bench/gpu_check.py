"""Everything GPU in one call: build, CUDA tests, GPU benchmark rows, one summary.

    bash bench/gpu_check.sh [--out DIR] [--budget-s 480] [--dry-run]

Meant for a lent GPU machine with a short lease (an H100/H200 with PyTorch, nvcc, CMake,
ninja, pybind11, onnx, onnxruntime, scikit-image and OpenCV; no TensorRT, dlib, trimesh or
plyfile, no network). Steps, in order of value, each under its own timeout and all under
one wall-clock budget, so the summary is always written:

1. build     engine._C with ENGINE_WITH_CUDA=ON for the present GPU's architecture only
             (e.g. 90-real on an H100/H200: one nvcc pass instead of three)
2. pytest_cuda    `pytest -m "cuda or tensorrt"`
3. bench_decode   GPU rows of bench/bench_decode.py (our CUDA kernel vs torch addmm)
4. bench_crop     GPU rows of bench/bench_crop.py (our crop kernel vs the OpenCV crop, batch 128)
5. bench_network  GPU rows of bench/bench_network.py (torch-cuda eager/graphs, TensorRT where importable)
   bench_compiled the torch.compile rows (compiled, compiled + graphs; mode "default"), appended
6. engine_bench   `python -m engine.bench` with the GPU runners: the runner stages and the device
                  input rows (nvJPEG + crop kernel vs the CPU input path; which stage bounds end_to_end)
7. pytest_rest    the rest of the suite; tests whose packages are missing skip themselves

A step whose needs are missing is skipped with the reason; a step that no longer fits the
budget is skipped as "out of budget". Output folder (at most 8 files, so a device tool can
bring it back whole): summary.md (printed last), summary.json, log.txt (every command and
its output) and the tables decode_gpu.json, crop_gpu.json, network_gpu.{json,md},
engine_bench_gpu.json (decode_gpu.md, crop_gpu.md and engine_bench_gpu.md go into summary.md).

`--dry-run` checks the script's own logic on any machine: it detects the GPU and packages,
prints the plan (commands, output paths, skip reasons) and writes summary.json with
"dry_run": true, running nothing. CI runs it (tests/test_gpu_check.py).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Optional packages and what their absence skips (the device image has no TensorRT, dlib,
# trimesh or plyfile; bench/README.md says how to carry wheels).
PACKAGES = {
    "torch": "the torch-cuda runner, the CUDA decode tests that use torch tensors, bench_network",
    "tensorrt": "the tensorrt runner rows and the `tensorrt` tests",
    "onnx": "ONNX export (the TensorRT path builds from it)",
    "onnxruntime": "the onnxruntime tests (CPU)",
    "dlib": "face detection tests and the detect rows",
    "face_recognition_models": "the landmark crop rule (dlib's 68-point model)",
    "trimesh": "tests that read meshes back with trimesh",
    "plyfile": "tests that read PLY files back with plyfile",
    "skimage": "tests and rows that use scikit-image's real photos",
    "cv2": "video tests and the OpenCV crop path",
    "pyarrow": "Parquet output tests",
    "atheris": "the fuzz harness tests",
    "pybind11": "building engine._C",
    "safetensors": "the converted-weights file",
}


@dataclass
class Step:
    name: str
    argv: list[str]
    timeout: int  # seconds, at most
    estimate: int  # seconds it needs to be worth starting
    needs: list[str] = field(default_factory=list)  # "gpu", "nvcc", "built", "torch", ...
    env: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    status: str = "planned"
    detail: str = ""
    seconds: float = 0.0


def detect_gpu() -> dict | None:
    """{name, compute_cap "9.0", driver, memory} of GPU 0 from nvidia-smi, or None."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=name,compute_cap,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) < 4 or not re.fullmatch(r"\d+\.\d+", parts[1]):
        return None
    return {"name": parts[0], "compute_cap": parts[1], "driver": parts[2], "memory": parts[3]}


def cuda_architecture(compute_cap: str) -> str:
    """"9.0" -> "90-real": machine code for this GPU only (no PTX: nothing else will run it)."""
    major, minor = compute_cap.split(".")
    return f"{major}{minor}-real"


def present_packages() -> dict[str, bool]:
    return {name: importlib.util.find_spec(name) is not None for name in PACKAGES}


def plan(out: Path, gpu: dict | None, pkgs: dict[str, bool], py: str) -> list[Step]:
    arch = cuda_architecture(gpu["compute_cap"]) if gpu else "native"
    jobs = str(os.cpu_count() or 2)
    gpu_runners = ["torch-cuda"] + (["tensorrt"] if pkgs["tensorrt"] else [])
    return [
        Step("build", [py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-e", "."],
             timeout=300, estimate=60, needs=["gpu", "nvcc", "cmake", "pybind11"],
             env={"ENGINE_WITH_CUDA": "ON", "ENGINE_CUDA_ARCHITECTURES": arch, "CMAKE_BUILD_PARALLEL_LEVEL": jobs}),
        Step("pytest_cuda", [py, "-m", "pytest", "-m", "cuda or tensorrt", "-q", "-rs", "-p", "no:cacheprovider"],
             timeout=300, estimate=30, needs=["gpu", "built"]),
        Step("bench_decode", [py, "bench/bench_decode.py", "--gpu-only", "--batches", "1", "8", "64", "256",
                              "--json", str(out / "decode_gpu.json"), "--markdown", str(out / "decode_gpu.md")],
             timeout=150, estimate=30, needs=["gpu", "built", "torch"], outputs=["decode_gpu.json", "decode_gpu.md"]),
        Step("bench_crop", [py, "bench/bench_crop.py", "--gpu-only", "--batch", "128",
                            "--json", str(out / "crop_gpu.json"), "--markdown", str(out / "crop_gpu.md")],
             timeout=120, estimate=20, needs=["gpu", "built", "torch"], outputs=["crop_gpu.json", "crop_gpu.md"]),
        Step("bench_network", [py, "bench/bench_network.py", "--gpu-only", "--batches", "1,8,32,128",
                               "--json", str(out / "network_gpu.json"), "--md", str(out / "network_gpu.md")],
             timeout=200, estimate=60, needs=["gpu", "built", "torch"], outputs=["network_gpu.json", "network_gpu.md"]),
        # torch.compile rows (issue 11 section 3): mode "default", since max-autotune's minutes of
        # autotuning per batch size do not fit the budget; appended to the same network tables.
        Step("bench_compiled", [py, "bench/bench_network.py", "--gpu-only", "--compiled", "only",
                                "--compile-mode", "default", "--batches", "1,128", "--append",
                                "--json", str(out / "network_gpu.json"), "--md", str(out / "network_gpu.md")],
             timeout=240, estimate=120, needs=["gpu", "built", "torch"], outputs=["network_gpu.json", "network_gpu.md"]),
        Step("engine_bench", [py, "-m", "engine.bench", "--runners", *gpu_runners, "--stages", "runners", "device",
                              "--batch-sizes", "1", "8", "32", "128",
                              "--json", str(out / "engine_bench_gpu.json"), "--markdown", str(out / "engine_bench_gpu.md")],
             timeout=300, estimate=90, needs=["gpu", "built", "torch"],
             outputs=["engine_bench_gpu.json", "engine_bench_gpu.md"]),
        Step("pytest_rest", [py, "-m", "pytest", "-m", "not cuda and not tensorrt", "-q", "-rs",
                             "-p", "no:cacheprovider"],
             timeout=400, estimate=60, needs=["built"]),
    ]


def _missing(step: Step, have: dict[str, bool]) -> list[str]:
    return [n for n in step.needs if not have.get(n, False)]


def _pytest_counts(text: str) -> str:
    """The closing line of a pytest run ("3 passed, 2 skipped in 4.1s"), or ""."""
    lines = [ln.strip("= ") for ln in text.splitlines() if re.search(r"\b(passed|failed|error|skipped|deselected)\b", ln)
             and re.search(r"\bin [0-9.]+s", ln)]
    return lines[-1] if lines else ""


def run_step(step: Step, log, remaining: float) -> None:
    env = {**os.environ, **step.env, "PYTHONUNBUFFERED": "1"}
    limit = max(1, int(min(step.timeout, remaining)))
    log.write(f"\n===== {step.name}: {shlex.join(step.argv)} (env {step.env}, limit {limit} s)\n")
    log.flush()
    t0 = time.monotonic()
    try:
        proc = subprocess.run(step.argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace", timeout=limit)
        text, code = proc.stdout, proc.returncode
        step.status = "ok" if code == 0 else f"failed (exit {code})"
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode("utf-8", "replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        step.status = f"timed out after {limit} s"
    step.seconds = time.monotonic() - t0
    log.write(text)
    log.flush()
    counts = _pytest_counts(text)
    tail = [ln for ln in text.strip().splitlines() if ln.strip()][-3:]
    step.detail = counts or (" | ".join(tail)[-300:] if step.status != "ok" else "")


def summary_markdown(meta: dict, steps: list[Step], out: Path) -> str:
    lines = ["# GPU check (bench/gpu_check.sh)", "",
             f"- machine: {meta['machine']}",
             f"- GPU: {meta['gpu'] or 'none found'}",
             f"- python {meta['python']}; missing packages: {', '.join(meta['missing_packages']) or 'none'}",
             f"- date: {meta['date']}; budget {meta['budget_s']} s; {'DRY RUN' if meta['dry_run'] else 'ran'}", "",
             "| step | status | seconds | detail |", "|---|---|---:|---|"]
    for s in steps:
        lines.append(f"| {s.name} | {s.status} | {s.seconds:.0f} | {s.detail.replace('|', '/')} |")
    for name in ("decode_gpu.md", "crop_gpu.md", "engine_bench_gpu.md"):
        p = out / name
        if p.is_file():
            lines += ["", p.read_text()]
            p.unlink()  # folded in here: the output folder stays within 8 files
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: bench/results/gpu-check-DATE)")
    ap.add_argument("--budget-s", type=int, default=480, help="wall-clock budget for all steps (default 480)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and skip reasons; run nothing")
    ap.add_argument("--python", default=sys.executable, help="the Python that holds PyTorch (default: this one)")
    ap.add_argument("--only", nargs="+", metavar="STEP", default=None,
                    help="run only these steps (build is always kept: the others need it), e.g. "
                         "--only pytest_cuda engine_bench to recheck a fix on a short lease")
    args = ap.parse_args(argv)
    if args.budget_s < 1:
        ap.error(f"--budget-s: expected a positive number of seconds, found {args.budget_s}")
    out = args.out or REPO / "bench" / "results" / f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"gpu_check: --out {out}: cannot create the folder: {e.strerror or e}", file=sys.stderr)
        return 2
    gpu = detect_gpu()
    pkgs = present_packages()
    tools = {t: shutil.which(t) is not None for t in ("nvcc", "cmake", "ninja")}
    have = {**pkgs, **tools, "gpu": gpu is not None, "built": False}
    steps = plan(out, gpu, pkgs, args.python)
    if args.only:
        unknown = sorted(set(args.only) - {s.name for s in steps})
        if unknown:
            ap.error(f"--only: unknown step(s) {unknown}, expected some of {[s.name for s in steps]}")
        steps = [s for s in steps if s.name == "build" or s.name in args.only]
    meta = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
                       f"{platform.release()}",
            "gpu": gpu, "python": platform.python_version(), "dry_run": args.dry_run, "budget_s": args.budget_s,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "packages": pkgs, "tools": tools,
            "missing_packages": [f"{n} ({why})" for n, why in PACKAGES.items() if not pkgs[n]]}
    start = time.monotonic()
    with open(out / "log.txt", "w") as log:
        for step in steps:
            missing = _missing(step, {**have, "built": have["built"] or args.dry_run and have["gpu"]})
            if args.dry_run:
                step.status = f"would skip: missing {', '.join(missing)}" if missing else "would run"
                step.detail = shlex.join(step.argv) + (f"  (env {step.env})" if step.env else "")
                continue
            if missing:
                step.status = f"skipped: missing {', '.join(missing)}"
                continue
            remaining = args.budget_s - (time.monotonic() - start)
            if remaining < step.estimate:
                step.status = f"skipped: out of budget ({remaining:.0f} s left, needs ~{step.estimate} s)"
                continue
            run_step(step, log, remaining)
            if step.name == "build" and step.status == "ok":
                check = subprocess.run([args.python, "-c", "from engine import _core; import sys; "
                                        "sys.exit(0 if _core.has_cuda() else 3)"], cwd=REPO, capture_output=True)
                have["built"] = check.returncode == 0
                if not have["built"]:
                    step.status = "failed (engine._C built but has_cuda() is false)"
    meta["seconds"] = round(time.monotonic() - start, 1)
    text = summary_markdown(meta, steps, out)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps({"meta": meta, "steps": [s.__dict__ for s in steps]}, indent=1))
    print(text)
    if args.dry_run:
        return 0
    if gpu is None:
        print("gpu_check: no NVIDIA GPU found (nvidia-smi missing or silent): nothing was run", file=sys.stderr)
        return 2
    return 0 if all(s.status == "ok" or s.status.startswith("skipped") for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
