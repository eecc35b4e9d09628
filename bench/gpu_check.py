"""Everything GPU in one call: build, CUDA tests, GPU benchmark rows, one summary.

    bash bench/gpu_check.sh [--out DIR] [--budget-s 480] [--dry-run] [--only STEP ...] [--rebuild]

bench/README.md says what the machine needs, how to bring missing packages as wheels, and how
to run the second call.

Meant for a lent GPU machine with a short lease (an H100/H200 with PyTorch, torchvision, nvcc,
CMake, ninja, pybind11, onnx, onnxruntime, scikit-image and OpenCV; no TensorRT, dlib, trimesh
or plyfile, no network). Steps, in order of value, each under its own timeout and all under
one wall-clock budget (default 480 s), with the time each is expected to take on an H200 with
16 cores (`estimate`: a step is started only when that much of the budget is left):

1. build          ~90 s  engine._C with ENGINE_WITH_CUDA=ON for the present GPU's architecture only
                         (e.g. 90-real on an H100/H200: one nvcc pass instead of three); pip's
                         editable install, and if pip cannot build (no setuptools/wheel, an old
                         pip), CMake directly into engine/ (what setup.py runs). Skipped as
                         "already built" when this checkout's engine/_C*.so (as a child Python
                         imports it) has the CUDA kernels, machine code for this GPU, and is newer
                         than every file under csrc/ and python/ and CMakeLists.txt; --rebuild
                         builds anyway
2. pytest_cuda    ~60 s  `pytest -m "cuda or tensorrt"`: the CUDA kernels, the crop kernel's launch,
                         nvJPEG + crop through the Reconstructor, the compiled torch-cuda runner
3. bench_crop     ~20 s  GPU rows of bench/bench_crop.py (our crop kernel vs the OpenCV crop, batch 128)
4. engine_bench   ~90 s  `python -m engine.bench` with the GPU runners: the runner stages and the device
                         input rows (nvJPEG + crop kernel vs the CPU input path; which stage bounds end_to_end)
5. bench_network  ~60 s  GPU rows of bench/bench_network.py (torch-cuda eager/graphs, TensorRT where importable)
6. bench_decode   ~30 s  GPU rows of bench/bench_decode.py (our CUDA kernel vs torch addmm)
7. bench_compiled ~120 s the torch.compile rows (compiled, compiled + graphs; mode "default"), appended
8. pytest_rest    ~240 s the rest of the suite; tests whose packages are missing skip themselves.
                         Steps 1-7 take the whole default budget (470 of 480 s), so pytest_rest is
                         skipped "out of budget" on the first call: run it on a second call,
                         `bash bench/gpu_check.sh --only pytest_rest --out DIR2` (the build is then
                         "already built", so the default budget fits it)

Every step runs in its own process group, killed whole at its limit (a pytest's children, Inductor's
compile workers and nvcc do not outlive it). summary.md and summary.json are rewritten after every
step and when the script is stopped (SIGTERM, SIGINT), so a run cut short still reports the steps
that ran; a step that has not finished is "running" there. pytest prints the stack of every thread
of a test that runs over 120 s (faulthandler), so a hang is named in log.txt. Every step sees the
checkout first on PYTHONPATH, so `engine` and its fresh engine._C are the ones imported.

A step whose needs are missing is skipped with the reason; a step that no longer fits the
budget is skipped as "out of budget". Output folder (at most 8 files, so a device tool can
bring it back whole): summary.md (printed last), summary.json, log.txt (every command and
its output) and the tables decode_gpu.json, crop_gpu.json, network_gpu.{json,md},
engine_bench_gpu.json (decode_gpu.md, crop_gpu.md and engine_bench_gpu.md go into summary.md).
An --out inside the repository's ../shared folder, or one holding files that are not gpu_check's
own, is refused (exit 2, naming what was found): a mistyped path must not scatter tables into a
data folder. summary.md escapes `|` in its table as `\\|`, which GitHub shows as `|`.

Default output folder: bench/results/gpu-check-DATE for a real run (git-ignored: the raw run is
read, then its tables are curated into bench/results/gpu_<machine>.md and *_gpu_<machine>.json
and those are committed), a new temporary folder for a dry run (printed; a dry run writes
nothing into the checkout). A second call on the same lease should get its own --out:
summary.md is rewritten by each call (log.txt is appended to, so a reused folder keeps both).

`--dry-run` checks the script's own logic on any machine: it detects the GPU and packages,
prints the plan (commands, output paths, skip reasons) and writes summary.json with
"dry_run": true, running nothing. CI runs it (tests/test_gpu_check.py).

Exit status (the last line printed says which and why; summary.json's meta.verdict keeps it):
  0  every planned step that could run on this machine ran ok. Allowed, and named in the last
     line: steps skipped "out of budget" (run them with --only on a second call), a step skipped
     because an optional package is missing, the build skipped as "already built".
     A --dry-run whose plan was made exits 0.
  1  a step failed, crashed or timed out, or gpu_check was stopped (SIGTERM, SIGINT).
  2  usage: a bad option, a refused --out, or no NVIDIA GPU on this machine (nothing was run).
  3  there is a GPU, but the GPU part did not run: engine._C with CUDA is not there (the build was
     skipped for a missing tool, failed, or timed out) or the `cuda` tests (pytest_cuda, when
     planned) did not run; the last line starts "gpu_check: NOTHING GPU RAN" or
     "gpu_check: THE CUDA TESTS DID NOT RUN" and says why.
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
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Optional packages and what their absence skips (the device image has no TensorRT, dlib,
# trimesh or plyfile; bench/README.md says how to bring wheels to an offline machine).
PACKAGES = {
    "torch": "the torch-cuda runner, the CUDA decode tests that use torch tensors, bench_network",
    "torchvision": "the device input (nvJPEG): its cuda tests and engine_bench's device rows",
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


def detect_gpu(py: str | None = None) -> dict | None:
    """{name, compute_cap "9.0", driver, memory, how} of GPU 0 from nvidia-smi, else (a container
    without nvidia-smi) from PyTorch in `py`; None when neither finds one."""
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            out = subprocess.run([smi, "--query-gpu=name,compute_cap,driver_version,memory.total",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
        except (OSError, subprocess.SubprocessError):
            line = ""
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4 and re.fullmatch(r"\d+\.\d+", parts[1]):
            return {"name": parts[0], "compute_cap": parts[1], "driver": parts[2], "memory": parts[3],
                    "how": "nvidia-smi"}
    if py is None:
        return None
    probe = ("import json, torch\n"
             "if torch.cuda.is_available():\n"
             "    p = torch.cuda.get_device_properties(0)\n"
             "    print(json.dumps({'name': p.name, 'compute_cap': f'{p.major}.{p.minor}', 'driver': 'unknown',"
             " 'memory': f'{p.total_memory >> 20} MiB', 'how': 'torch ' + torch.__version__}))\n")
    try:
        out = subprocess.run([py, "-c", probe], capture_output=True, text=True, timeout=120)
        gpu = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return gpu if gpu and re.fullmatch(r"\d+\.\d+", str(gpu.get("compute_cap"))) else None


def cuda_architecture(compute_cap: str) -> str:
    """"9.0" -> "90-real": machine code for this GPU only (no PTX: nothing else will run it)."""
    major, minor = compute_cap.split(".")
    return f"{major}{minor}-real"


def present_packages() -> dict[str, bool]:
    return {name: importlib.util.find_spec(name) is not None for name in PACKAGES}


def build_command(py: str, arch: str, jobs: str, ninja: bool) -> list[str]:
    """pip's editable install of engine._C; when pip cannot build it, CMake directly (the
    configure and build setup.py runs), writing engine/_C*.so into the checkout."""
    pip = [py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-e", "."]
    folder = "build/gpu-check"
    configure = ["cmake", "-S", ".", "-B", folder, *(["-G", "Ninja"] if ninja else []),
                 "-DCMAKE_BUILD_TYPE=Release", f"-DENGINE_PYTHON_OUTPUT_DIR={REPO / 'engine'}",
                 f"-DPython_EXECUTABLE={py}", "-DENGINE_BUILD_PYTHON=ON", "-DENGINE_BUILD_TESTS=OFF",
                 "-DENGINE_BUILD_EXAMPLES=OFF", "-DENGINE_WITH_CUDA=ON", f"-DENGINE_CUDA_ARCHITECTURES={arch}"]
    script = (f"{shlex.join(pip)} || {{ echo 'gpu_check: pip could not build engine._C; CMake directly'; "
              f"{shlex.join(configure)} -Dpybind11_DIR=\"$({shlex.quote(py)} -m pybind11 --cmakedir)\" && "
              f"cmake --build {folder} --target _C -j {jobs}; }}")
    return ["bash", "-c", script]


# What engine._C is built from: a .so older than any of these may not hold their code.
BUILD_SOURCES = ("csrc", "python", "CMakeLists.txt")

_BUILT_PROBE = ("import json\n"
                "from engine import _core\n"
                "c = _core.core()\n"
                "print(json.dumps({'file': c.__file__, 'cuda': bool(c.cuda_compiled()),\n"
                "                  'archs': json.loads(c.build_info_json()).get('cuda_architectures') or ''}))\n")


def _covers(archs: str, compute_cap: str) -> bool:
    """Whether CMake's CUDA architecture list ("80-real,90") holds machine code for `compute_cap`
    ("9.0" needs 90, 90-real, 90a or 90a-real; PTX alone would cost a JIT compile on first use)."""
    want = "".join(compute_cap.split("."))
    return any(re.fullmatch(rf"{want}[af]?(-real)?", a.strip()) for a in archs.split(","))


def already_built(py: str, gpu: dict | None, repo: Path = REPO) -> tuple[bool, str]:
    """(True, what was found) when `repo`'s engine._C, as `py` imports it with the checkout first on
    its path, has the CUDA kernels with machine code for `gpu` and is newer than every build source
    (BUILD_SOURCES); else (False, why not). Its own child process: importing engine._C here would
    keep the old .so loaded in this process."""
    if gpu is None:
        return False, "no GPU to build for"
    try:
        out = subprocess.run([py, "-c", _BUILT_PROBE], cwd=repo, capture_output=True, text=True, timeout=120,
                             check=False,
                             env={**os.environ, "PYTHONPATH": str(repo)})
        found = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        return False, f"engine._C could not be probed ({type(e).__name__}: {e})"
    if not isinstance(found, dict):
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"engine._C is not importable with {py} ({last[-200:]})"
    so = Path(found["file"]).resolve()
    if so.parent != (repo / "engine").resolve():
        return False, f"the engine._C that {py} imports is not this checkout's ({so})"
    if not found["cuda"]:
        return False, f"{so.name} was built without CUDA"
    if not _covers(found["archs"], gpu["compute_cap"]):
        return False, (f"{so.name} has CUDA code for {found['archs'] or 'no architecture'}, "
                       f"not for this GPU ({cuda_architecture(gpu['compute_cap'])})")
    sources = [p for name in BUILD_SOURCES for p in ([repo / name] if (repo / name).is_file()
                                                     else (repo / name).rglob("*")) if p.is_file()]
    newest = max(sources, key=lambda p: p.stat().st_mtime, default=None)
    if newest is not None and newest.stat().st_mtime >= so.stat().st_mtime:
        return False, f"{newest.relative_to(repo)} is newer than {so.name}"
    return True, (f"engine/{so.name}: CUDA {found['archs']}, newer than every file under "
                  f"{', '.join(BUILD_SOURCES)}")


def plan(out: Path, gpu: dict | None, pkgs: dict[str, bool], py: str, ninja: bool = True) -> list[Step]:
    arch = cuda_architecture(gpu["compute_cap"]) if gpu else "native"
    jobs = str(os.cpu_count() or 2)
    gpu_runners = ["torch-cuda"] + (["tensorrt"] if pkgs["tensorrt"] else [])
    # -o faulthandler_timeout: a test running over 120 s gets every thread's stack in the log (a hang
    # is named even when the step's limit kills it); -rfEs: failures, errors and skips listed last.
    pytest = [py, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "-o", "faulthandler_timeout=120"]
    return [
        Step("build", build_command(py, arch, jobs, ninja), timeout=300, estimate=90,
             needs=["gpu", "nvcc", "cmake", "pybind11"],
             env={"ENGINE_WITH_CUDA": "ON", "ENGINE_CUDA_ARCHITECTURES": arch, "CMAKE_BUILD_PARALLEL_LEVEL": jobs}),
        Step("pytest_cuda", [*pytest, "-m", "cuda or tensorrt"], timeout=300, estimate=60, needs=["gpu", "built"]),
        Step("bench_crop", [py, "bench/bench_crop.py", "--gpu-only", "--batch", "128",
                            "--json", str(out / "crop_gpu.json"), "--markdown", str(out / "crop_gpu.md")],
             timeout=120, estimate=20, needs=["gpu", "built", "torch"], outputs=["crop_gpu.json", "crop_gpu.md"]),
        Step("engine_bench", [py, "-m", "engine.bench", "--runners", *gpu_runners, "--stages", "runners", "device",
                              "--batch-sizes", "1", "8", "32", "128",
                              "--json", str(out / "engine_bench_gpu.json"), "--markdown", str(out / "engine_bench_gpu.md")],
             timeout=300, estimate=90, needs=["gpu", "built", "torch"],
             outputs=["engine_bench_gpu.json", "engine_bench_gpu.md"]),
        Step("bench_network", [py, "bench/bench_network.py", "--gpu-only", "--batches", "1,8,32,128",
                               "--json", str(out / "network_gpu.json"), "--md", str(out / "network_gpu.md")],
             timeout=200, estimate=60, needs=["gpu", "built", "torch"], outputs=["network_gpu.json", "network_gpu.md"]),
        Step("bench_decode", [py, "bench/bench_decode.py", "--gpu-only", "--batches", "1", "8", "64", "256",
                              "--json", str(out / "decode_gpu.json"), "--markdown", str(out / "decode_gpu.md")],
             timeout=150, estimate=30, needs=["gpu", "built", "torch"], outputs=["decode_gpu.json", "decode_gpu.md"]),
        # torch.compile rows (issue 11 section 3): mode "default", since max-autotune's minutes of
        # autotuning per batch size do not fit the budget; appended to the same network tables.
        Step("bench_compiled", [py, "bench/bench_network.py", "--gpu-only", "--compiled", "only",
                                "--compile-mode", "default", "--batches", "1,128", "--append",
                                "--json", str(out / "network_gpu.json"), "--md", str(out / "network_gpu.md")],
             timeout=240, estimate=120, needs=["gpu", "built", "torch"], outputs=["network_gpu.json", "network_gpu.md"]),
        Step("pytest_rest", [*pytest, "-m", "not cuda and not tensorrt"], timeout=400, estimate=240, needs=["built"]),
    ]


def _missing(step: Step, have: dict[str, bool]) -> list[str]:
    return [{"built": "built engine._C with CUDA"}.get(n, n) for n in step.needs if not have.get(n, False)]


def _pytest_counts(text: str) -> str:
    """The closing line of a pytest run ("3 passed, 2 skipped in 4.1s"), or ""."""
    lines = [ln.strip("= ") for ln in text.splitlines() if re.search(r"\b(passed|failed|error|skipped|deselected)\b", ln)
             and re.search(r"\bin [0-9.]+s", ln)]
    return lines[-1] if lines else ""


def _pytest_failures(text: str, most: int = 12) -> list[str]:
    """The test ids of pytest's FAILED/ERROR summary lines (at most `most`)."""
    found = [m.group(1) + " " + m.group(2) for m in re.finditer(r"^(FAILED|ERROR) (\S+)", text, re.M)]
    return found[:most] + ([f"... and {len(found) - most} more"] if len(found) > most else [])


def _kill_group(proc: subprocess.Popen) -> None:
    """End the step's whole process group (its children too), politely first."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_step(step: Step, log, remaining: float) -> None:
    env = {**os.environ, **step.env, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    limit = max(1, int(min(step.timeout, remaining)))
    log.write(f"\n===== {step.name}: {shlex.join(step.argv)} (env {step.env}, limit {limit} s)\n")
    log.flush()
    t0 = time.monotonic()
    step.status = "running"
    with tempfile.TemporaryFile("w+", errors="replace") as buf:
        try:
            # its own session: the whole group (pytest's children, Inductor's compile workers, nvcc)
            # is ended at the limit, and a grandchild keeping a pipe open cannot hang us
            proc = subprocess.Popen(step.argv, cwd=REPO, env=env, stdout=buf, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except OSError as e:
            step.status, step.detail = "failed (could not start)", f"{type(e).__name__}: {e}"
            return
        try:
            code = proc.wait(timeout=limit)
            step.status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            step.status = f"timed out after {limit} s"
        except BaseException:  # stopped (SIGTERM/SIGINT): take the step's processes along
            _kill_group(proc)
            step.status = "stopped"
            raise
        finally:
            _kill_group(proc)  # what is left of the group (nothing, normally)
            step.seconds = time.monotonic() - t0
            buf.seek(0)
            text = buf.read()
            log.write(text)
            log.flush()
            counts = _pytest_counts(text)
            failures = _pytest_failures(text)
            tail = [ln for ln in text.strip().splitlines() if ln.strip()][-3:]
            step.detail = "; ".join(filter(None, [counts, ", ".join(failures)])) or \
                (" | ".join(tail)[-300:] if step.status != "ok" else "")


def _cell(text: str) -> str:
    """`text` as one cell of a GitHub Markdown table: `|` escaped as `\\|` (GFM shows a `|`,
    so a command copied from the cell is the command that ran), line breaks as spaces."""
    return " ".join(text.replace("|", "\\|").splitlines())


def own_files(steps: list[Step]) -> set[str]:
    """The names gpu_check writes into its output folder (a rerun, e.g. --only, may reuse one)."""
    names = {"summary.md", "summary.json", "log.txt", *(o for s in steps for o in s.outputs)}
    return names | {f".{n}.tmp" for n in ("summary.md", "summary.json")}


def check_out(out: Path, own: set[str]) -> str | None:
    """Why `out` may not be the output folder, or None: inside the repository's ../shared folder
    (the team's data, read-only or not), or holding files that are not gpu_check's own (a typo must
    not scatter tables into a data folder)."""
    shared = (REPO.parent / "shared").resolve()
    where = out.resolve()
    if where == shared or shared in where.parents:
        return f"it is inside {shared}, the shared data folder: choose a folder of your own"
    if where.is_dir():
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in where.iterdir() if p.name not in own)
        if found:
            more = f" and {len(found) - 8} more" if len(found) > 8 else ""
            return (f"it already holds files that are not gpu_check's own ({', '.join(found[:8])}{more}): "
                    "choose an empty or new folder, or one an earlier gpu_check run wrote")
    elif where.exists():
        return "it exists and is not a folder"
    return None


def summary_markdown(meta: dict, steps: list[Step], out: Path, folded: dict[str, str] | None = None) -> str:
    """The summary; the Markdown tables the steps wrote are moved into it (`folded` keeps their
    text between rewrites: the files go, so the output folder stays within 8 files)."""
    folded = {} if folded is None else folded
    lines = ["# GPU check (bench/gpu_check.sh)", "",
             f"- machine: {meta['machine']}",
             f"- GPU: {meta['gpu'] or 'none found'}",
             f"- python {meta['python']}; missing packages: {', '.join(meta['missing_packages']) or 'none'}",
             f"- date: {meta['date']}; budget {meta['budget_s']} s; {'DRY RUN' if meta['dry_run'] else 'ran'}"
             + (f"; {meta['seconds']} s so far" if "seconds" in meta else ""),
             *([f"- **exit {meta['verdict']['exit']}**: {_cell(meta['verdict']['line'])}"]
               if "verdict" in meta else []),
             "",
             "| step | status | seconds | estimate | detail |", "|---|---|---:|---:|---|"]
    for s in steps:
        lines.append(f"| {_cell(s.name)} | {_cell(s.status)} | {s.seconds:.0f} | {s.estimate} | {_cell(s.detail)} |")
    for name in ("decode_gpu.md", "crop_gpu.md", "engine_bench_gpu.md"):
        p = out / name
        if p.is_file():
            folded[name] = p.read_text()
            p.unlink()
        if name in folded:
            lines += ["", folded[name]]
    return "\n".join(lines) + "\n"


def _ran(step: Step) -> bool:
    """Whether the step was started and came to an end of its own (ok, failed, timed out)."""
    return step.status == "ok" or step.status.startswith(("failed", "timed out", "crashed"))


def verdict(steps: list[Step], gpu: dict | None, dry_run: bool, stopped: str | None, out: Path) -> tuple[int, str]:
    """The exit status and the last line printed (the rule is the module docstring's "Exit status")."""
    if dry_run:
        return 0, f"gpu_check: dry run: nothing ran; the plan is in {out / 'summary.md'}"
    if gpu is None:
        return 2, ("gpu_check: no NVIDIA GPU found (nvidia-smi missing or silent, torch sees none): "
                   "nothing was run")
    if stopped:
        return 1, f"gpu_check: STOPPED ({stopped}): the steps not finished are marked in {out / 'summary.md'}"
    by_name = {s.name: s for s in steps}
    build = by_name["build"]
    if not (build.status == "ok" or build.status.startswith("skipped: already built")):
        why = build.status + (f": {build.detail}" if build.detail and _ran(build) else "")
        return 3, (f"gpu_check: NOTHING GPU RAN: engine._C with CUDA is not there (build {why[:300]}); "
                   f"every later step was skipped (log: {out / 'log.txt'})")
    cuda = by_name.get("pytest_cuda")
    if cuda is not None and not _ran(cuda):
        return 3, f"gpu_check: THE CUDA TESTS DID NOT RUN: pytest_cuda {cuda.status}"
    bad = [s for s in steps if s.status != "ok" and not s.status.startswith("skipped")]
    if bad:
        return 1, "gpu_check: FAILED: " + "; ".join(f"{s.name} {s.status}" for s in bad) + \
            f" (summary: {out / 'summary.md'}, log: {out / 'log.txt'})"
    ran = [s.name for s in steps if s.status == "ok"]
    notes = [f"{len(ran)} step(s) ran ok ({', '.join(ran) or 'none'})"]
    if build.status.startswith("skipped: already built"):
        notes.append("build skipped: already built")
    budget = [s.name for s in steps if s.status.startswith("skipped: out of budget")]
    if budget:
        notes.append(f"SKIPPED FOR BUDGET: {', '.join(budget)} (run on a second call: "
                     f"bash bench/gpu_check.sh --only {' '.join(budget)} --out NEW_DIR)")
    missing = [f"{s.name} ({s.status[len('skipped: '):]})" for s in steps
               if s.status.startswith("skipped: missing")]
    if missing:
        notes.append(f"skipped, not possible on this machine: {', '.join(missing)}")
    return 0, "gpu_check: ok: " + "; ".join(notes)


class _Stopped(Exception):
    """SIGTERM: the run is being ended (a device tool's time limit); the summary is still written."""


def _on_sigterm(signum, frame):
    raise _Stopped(f"signal {signum}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder: new, empty, or an earlier run's; never inside ../shared "
                         "(default: bench/results/gpu-check-DATE)")
    ap.add_argument("--budget-s", type=int, default=480, help="wall-clock budget for all steps (default 480)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and skip reasons; run nothing")
    ap.add_argument("--python", default=sys.executable, help="the Python that holds PyTorch (default: this one)")
    ap.add_argument("--only", nargs="+", metavar="STEP", default=None,
                    help="run only these steps (build is always kept: the others need it; it is skipped "
                         "when engine._C is already built for this GPU), e.g. --only pytest_rest on a "
                         "second call, or --only pytest_cuda engine_bench to recheck a fix on a short lease")
    ap.add_argument("--rebuild", action="store_true",
                    help="build engine._C even when it is already built for this GPU and newer than its sources")
    args = ap.parse_args(argv)
    if args.budget_s < 1:
        ap.error(f"--budget-s: expected a positive number of seconds, found {args.budget_s}")
    names = [s.name for s in plan(Path("."), None, {n: False for n in PACKAGES}, args.python)]
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:  # before any folder is made
        ap.error(f"--only: unknown step(s) {unknown}, expected some of {names}")
    if args.out is not None:
        out = args.out
    elif args.dry_run:  # a dry run writes nothing into the checkout
        out = Path(tempfile.mkdtemp(prefix="gpu-check-dry-run-"))
        print(f"gpu_check: dry run: writing the plan to {out}", file=sys.stderr, flush=True)
    else:  # git-ignored (.gitignore): the raw run is curated before anything is committed
        out = REPO / "bench" / "results" / f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}"
    pkgs = present_packages()
    tools = {t: shutil.which(t) is not None for t in ("nvcc", "cmake", "ninja")}
    why = check_out(out, own_files(plan(out, None, pkgs, args.python)))
    if why:
        print(f"gpu_check: --out {out}: refused: {why}", file=sys.stderr)
        return 2
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"gpu_check: --out {out}: cannot create the folder: {e.strerror or e}", file=sys.stderr)
        return 2
    start = time.monotonic()
    gpu = detect_gpu(args.python)
    have = {**pkgs, **tools, "gpu": gpu is not None, "built": False}
    steps = plan(out, gpu, pkgs, args.python, ninja=tools["ninja"])
    if args.only:
        steps = [s for s in steps if s.name == "build" or s.name in args.only]
    meta = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
                       f"{platform.release()}",
            "gpu": gpu, "python": platform.python_version(), "dry_run": args.dry_run, "budget_s": args.budget_s,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "packages": pkgs, "tools": tools,
            "missing_packages": [f"{n} ({why})" for n, why in PACKAGES.items() if not pkgs[n]]}
    folded: dict[str, str] = {}
    stopped: str | None = None

    def write_summary() -> str:
        meta["seconds"] = round(time.monotonic() - start, 1)
        text = summary_markdown(meta, steps, out, folded)
        for name, body in (("summary.md", text),
                           ("summary.json", json.dumps({"meta": meta, "steps": [s.__dict__ for s in steps]}, indent=1))):
            tmp = out / f".{name}.tmp"
            tmp.write_text(body)
            os.replace(tmp, out / name)  # whole or not at all, even if we are killed mid-write
        return text

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with open(out / "log.txt", "a") as log:  # appended: a reused folder keeps the earlier call's log
            for step in steps:
                if step.name == "build" and have["gpu"] and not args.rebuild:
                    built, why = already_built(args.python, gpu)
                    log.write(f"\n===== build: {'already built: ' if built else 'to build: '}{why}\n")
                    if built:
                        have["built"] = True
                        step.status, step.detail = ("would skip: already built" if args.dry_run
                                                    else "skipped: already built"), why
                        continue
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
                write_summary()  # this step shows as "running" if the run ends inside it
                try:
                    run_step(step, log, remaining)
                except Exception as e:  # our own fault: this step's, not the run's
                    step.status, step.detail = "crashed", f"gpu_check: {type(e).__name__}: {e}"
                if step.name == "build" and step.status == "ok":
                    try:
                        check = subprocess.run([args.python, "-c", "from engine import _core; import sys; "
                                                "sys.exit(0 if _core.has_cuda() else 3)"], cwd=REPO,
                                               capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                                               timeout=120, check=False)
                        have["built"] = check.returncode == 0
                    except (OSError, subprocess.SubprocessError) as e:  # a hung import must not end the run
                        have["built"], step.detail = False, f"{type(e).__name__}: {e}"
                    if not have["built"]:
                        step.status = "failed (engine._C built but has_cuda() is false)"
                write_summary()
    except (_Stopped, KeyboardInterrupt) as e:
        stopped = str(e) or "interrupt"
        for step in steps:
            if step.status in ("planned", "running"):
                step.status = f"not run: gpu_check was stopped ({stopped})"
    finally:
        signal.signal(signal.SIGTERM, previous)
        code, line = verdict(steps, gpu, args.dry_run, stopped, out)
        meta["verdict"] = {"exit": code, "line": line}
        text = write_summary()
        print(text, flush=True)
        # the last line of the output, whatever the tail a device tool keeps
        print(line, file=sys.stdout if code == 0 else sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
