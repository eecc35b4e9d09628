"""bench/gpu_check.sh: its plan, skip reasons and step runner, checked on a machine without a GPU
(the real run happens on a lent GPU machine; CI runs the dry run)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.sh"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_prints_the_plan_and_writes_a_summary(tmp_path):
    out = tmp_path / "plan"
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True, text=True,
                          timeout=120, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["dry_run"] is True
    names = [s["name"] for s in summary["steps"]]
    assert names == ["build", "pytest_cuda", "bench_decode", "bench_crop", "bench_network", "bench_compiled",
                     "engine_bench", "pytest_rest"]
    assert all(s["status"].startswith("would ") for s in summary["steps"])
    gpu = summary["meta"]["gpu"]
    build = summary["steps"][0]
    if gpu is None:  # this machine: every GPU step names the GPU as what is missing
        assert all("gpu" in s["status"] for s in summary["steps"][:7])
    assert build["env"]["ENGINE_WITH_CUDA"] == "ON"
    # the table is printed last, and the output folder stays within what a device tool brings back
    assert proc.stdout.rstrip().splitlines()[-1].startswith("| pytest_rest |")
    assert len(list(out.iterdir())) <= 8
    # a real run's folder: every table the steps write, less the Markdown folded into summary.md
    written = {o for s in summary["steps"] for o in s["outputs"]} | {"summary.md", "summary.json", "log.txt"}
    folded = {"decode_gpu.md", "crop_gpu.md", "engine_bench_gpu.md"}
    assert len(written - folded) <= 8, sorted(written - folded)
    for step in summary["steps"][2:7]:
        for o in step["outputs"]:
            assert str(out / o) in step["detail"]


def test_a_real_run_without_a_gpu_runs_nothing_and_says_why(tmp_path):
    mod = _module()
    if mod.detect_gpu() is not None:
        pytest.skip("this machine has a GPU: the real run is the device check itself")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no NVIDIA GPU found" in proc.stderr
    steps = json.loads((tmp_path / "summary.json").read_text())["steps"]
    assert all(s["status"].startswith("skipped: missing") for s in steps)


def test_architecture_of_the_present_gpu_only():
    mod = _module()
    assert mod.cuda_architecture("9.0") == "90-real"
    assert mod.cuda_architecture("8.6") == "86-real"


def test_step_runner_keeps_output_and_stops_at_the_limit(tmp_path):
    mod = _module()
    log_path = tmp_path / "log.txt"
    with open(log_path, "w") as log:
        ok = mod.Step("ok", [sys.executable, "-c", "print('== 3 passed, 1 skipped in 0.5s ==')"], timeout=60, estimate=1)
        mod.run_step(ok, log, remaining=60)
        slow = mod.Step("slow", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"],
                        timeout=60, estimate=1)
        mod.run_step(slow, log, remaining=2)  # the budget, not the step's own timeout, decides
        bad = mod.Step("bad", [sys.executable, "-c", "import sys; print('boom'); sys.exit(4)"], timeout=60, estimate=1)
        mod.run_step(bad, log, remaining=60)
    assert ok.status == "ok" and ok.detail == "3 passed, 1 skipped in 0.5s"
    assert slow.status == "timed out after 2 s" and slow.seconds < 20
    assert bad.status == "failed (exit 4)" and "boom" in bad.detail
    text = log_path.read_text()
    assert "===== slow" in text and "started" in text
