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
    # in order of value: the build, the never-run GPU code's tests, then the tables
    assert names == ["build", "pytest_cuda", "bench_crop", "engine_bench", "bench_network", "bench_decode",
                     "bench_compiled", "pytest_rest"]
    assert all(s["status"].startswith("would ") for s in summary["steps"])
    gpu = summary["meta"]["gpu"]
    build = summary["steps"][0]
    if gpu is None:  # this machine: every GPU step names the GPU as what is missing
        assert all("gpu" in s["status"] for s in summary["steps"][:7])
    assert build["env"]["ENGINE_WITH_CUDA"] == "ON" and "-DENGINE_WITH_CUDA=ON" in build["detail"]
    # the steps expected to fit the default budget are the ones before pytest_rest
    assert sum(s["estimate"] for s in summary["steps"][:-1]) <= summary["meta"]["budget_s"]
    # the table, then the verdict line last; the output folder stays within what a device tool brings back
    last_two = proc.stdout.rstrip().splitlines()[-3:]
    assert last_two[0].startswith("| pytest_rest |") and last_two[-1].startswith("gpu_check: dry run: nothing ran")
    assert summary["meta"]["verdict"]["exit"] == 0
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


def test_every_step_parses_with_the_script_it_runs(tmp_path, monkeypatch):
    """The plan's command lines against the real argument parsers of the scripts they run (a
    wrong flag would only show on the GPU machine, where every second counts): each parser gets
    the planned argv and is stopped right after parsing."""
    import argparse
    import runpy

    mod = _module()
    gpu = {"name": "H200", "compute_cap": "9.0", "driver": "x", "memory": "x"}
    steps = mod.plan(tmp_path, gpu, {n: True for n in mod.PACKAGES}, sys.executable)

    class Parsed(Exception):
        pass

    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        ns = original(self, args, namespace)
        raise Parsed(ns)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    checked = []
    for step in steps:
        argv = step.argv[1:]
        if step.name == "build":
            assert step.argv[:2] == ["bash", "-c"] and "ENGINE_CUDA_ARCHITECTURES=90-real" in step.argv[2]
            continue
        if argv[:2] == ["-m", "pytest"]:
            import pytest as _pytest
            with _pytest.MonkeyPatch.context() as m:
                m.setattr(argparse.ArgumentParser, "parse_args", original)
                # the marker expression and -o options, as pytest reads them (collection only)
                proc = subprocess.run([sys.executable, *argv, "--collect-only", "-q", "tests/test_gpu_check.py"],
                                      cwd=REPO, capture_output=True, text=True, timeout=300)
            assert proc.returncode in (0, 5), proc.stdout[-2000:] + proc.stderr[-2000:]  # 5: none selected
            checked.append(step.name)
            continue
        if argv[:2] == ["-m", "engine.bench"]:
            from engine.bench.cli import main as run
            with pytest.raises(Parsed):
                run(argv[2:])
        else:
            monkeypatch.setattr(sys, "argv", [argv[0], *argv[1:]])
            monkeypatch.syspath_prepend(str(REPO / "bench"))  # as `python bench/x.py` has it
            with pytest.raises(Parsed):
                runpy.run_path(str(REPO / argv[0]), run_name="__main__")
        checked.append(step.name)
    assert checked == [s.name for s in steps if s.name != "build"]


def test_a_step_at_its_limit_takes_its_children_along(tmp_path):
    """A step's grandchildren (pytest's subprocesses, Inductor's compile workers, nvcc) must not
    outlive its limit: holding the output pipe, or the GPU, they would stall every later step."""
    import os
    import time

    mod = _module()
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    parent = (f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); "
              f"print('started', flush=True); time.sleep(60)")
    step = mod.Step("spawner", [sys.executable, "-c", parent], timeout=60, estimate=1)
    t0 = time.monotonic()
    with open(tmp_path / "log.txt", "w") as log:
        mod.run_step(step, log, remaining=3)
    assert step.status == "timed out after 3 s" and time.monotonic() - t0 < 30
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the step's grandchild {pid} outlived the step")
    assert "started" in (tmp_path / "log.txt").read_text()


def test_the_summary_keeps_the_folded_tables_across_rewrites(tmp_path):
    """summary.md is rewritten after every step: a table folded in (and its file removed) the
    first time must still be there the next time."""
    mod = _module()
    (tmp_path / "crop_gpu.md").write_text("| crop table |")
    meta = {"machine": "m", "gpu": None, "python": "3", "missing_packages": [], "date": "d", "budget_s": 1,
            "dry_run": False}
    steps = [mod.Step("bench_crop", ["x"], timeout=1, estimate=1)]
    folded = {}
    first = mod.summary_markdown(meta, steps, tmp_path, folded)
    second = mod.summary_markdown(meta, steps, tmp_path, folded)
    assert "| crop table |" in first and "| crop table |" in second
    assert not (tmp_path / "crop_gpu.md").exists()


def test_failed_tests_are_named_in_the_summary():
    mod = _module()
    text = "FAILED tests/a.py::test_x - assert 1 == 2\nERROR tests/b.py::test_y\n== 1 failed, 1 error in 3.0s =="
    assert mod._pytest_failures(text) == ["FAILED tests/a.py::test_x", "ERROR tests/b.py::test_y"]


def _gfm_cells(row: str) -> list[str]:
    """A GitHub Markdown table row's cells as GFM reads them (spec, "Tables (extension)"): split at
    the pipes no backslash escapes, then `\\|` is a `|` in the cell's text."""
    import re

    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def test_the_summary_keeps_a_command_with_pipes_copyable(tmp_path):
    """The build step's command holds `||` (pip, else CMake): the summary table must give it back
    whole, not with `/` for `|`."""
    out = tmp_path / "plan"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    build = json.loads((out / "summary.json").read_text())["steps"][0]
    assert " || " in build["detail"]
    (row,) = [ln for ln in (out / "summary.md").read_text().splitlines() if ln.startswith("| build |")]
    cells = _gfm_cells(row)
    assert len(cells) == 5 and cells[0] == "build" and cells[4] == build["detail"]
    try:  # an independent reader where one is installed
        from markdown_it import MarkdownIt
    except ImportError:
        return
    html = MarkdownIt("gfm-like").render((out / "summary.md").read_text())
    assert " || " in html


@pytest.mark.parametrize("case", ["shared", "shared_new", "foreign"])
def test_an_out_folder_that_is_not_for_gpu_check_is_refused(tmp_path, case):
    """--out inside ../shared (the team's data) or a folder with files that are not gpu_check's:
    exit 2 naming what was found, and nothing written there."""
    mod = _module()
    shared = (REPO.parent / "shared").resolve()
    if case.startswith("shared"):
        if not shared.is_dir():
            pytest.skip("no ../shared folder beside this checkout")
        out = shared / "cnn3dmm" / "x" if case == "shared" else shared / "no-such-dir-gpu-check" / "y"
        before = {p.name for p in shared.iterdir()}
    else:
        out = tmp_path / "data"
        out.mkdir()
        (out / "mean.binaryproto").write_bytes(b"x")
        (out / "summary.md").write_text("an earlier run's")  # gpu_check's own: not the reason
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"gpu_check: --out {out}: refused: " in proc.stderr
    if case.startswith("shared"):
        assert f"inside {shared}, the shared data folder" in proc.stderr
        assert not out.exists() and {p.name for p in shared.iterdir()} == before
    else:
        assert "not gpu_check's own (mean.binaryproto)" in proc.stderr
        assert sorted(p.name for p in out.iterdir()) == ["mean.binaryproto", "summary.md"]
    # an earlier run's folder is reused (gpu_check --only on a second call)
    again = tmp_path / "again"
    assert mod.main(["--dry-run", "--out", str(again)]) == 0
    assert mod.main(["--dry-run", "--out", str(again)]) == 0


# ---- a machine with a GPU, faked: nvidia-smi on PATH says there is one; the tools on PATH are only
# those the test puts there. The script runs for real, from a copy in a small checkout of its own
# (bench/gpu_check.py, engine's import path and this checkout's engine._C), so nothing is built
# here and nothing in this checkout is touched.

def _fake_bin(tmp_path: Path, compute_cap: str, tools: dict[str, str] | None = None) -> Path:
    """A PATH folder holding a fake nvidia-smi reporting one GPU of `compute_cap`, bash, and `tools`
    (name -> shell body)."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"nvidia-smi": f"echo 'NVIDIA H200, {compute_cap}, 580.159.04, 143771 MiB'", **(tools or {})}
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    os.symlink("/bin/bash", bin_dir / "bash")
    return bin_dir


def _env(bin_dir: Path) -> dict[str, str]:
    import os

    return {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/tmp"), "PIP_NO_INPUT": "1"}


def _built_core():
    """This checkout's engine._C when it has the CUDA kernels, and an architecture it has code for."""
    from engine import _core

    if not _core.cuda_compiled():
        pytest.skip("engine._C here was built without CUDA: nothing to count as already built")
    archs = _core.build_info()["cuda_architectures"]
    digits = archs.split(",")[0].split("-")[0].rstrip("af")
    return Path(_core.core().__file__), f"{digits[:-1]}.{digits[-1]}"


@pytest.fixture
def small_checkout(tmp_path):
    """A checkout with gpu_check.py, engine's import path (__init__, errors, _core), this checkout's
    CUDA-built engine._C, and build sources an hour older than it. -> (root, compute_cap covered)."""
    import os
    import shutil
    import time

    so, cap = _built_core()
    root = tmp_path / "checkout"
    (root / "bench").mkdir(parents=True)
    (root / "engine").mkdir()
    shutil.copy2(REPO / "bench" / "gpu_check.py", root / "bench")
    for name in ("__init__.py", "errors.py", "_core.py"):
        shutil.copy2(REPO / "engine" / name, root / "engine")
    shutil.copy2(so, root / "engine" / so.name)
    (root / "csrc" / "src").mkdir(parents=True)
    (root / "python").mkdir()
    sources = [root / "csrc" / "src" / "decode.cu", root / "python" / "module.cpp", root / "CMakeLists.txt"]
    now = time.time()
    for p in sources:
        p.write_text("// source\n")
        os.utime(p, (now - 3600, now - 3600))
    os.utime(root / "engine" / so.name, (now - 60, now - 60))
    return root, cap


def _run(root: Path, bin_dir: Path, *args: str, env: dict[str, str] | None = None):
    proc = subprocess.run([sys.executable, str(root / "bench" / "gpu_check.py"), *args], cwd=root,
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**_env(bin_dir), **(env or {})})
    return proc, (proc.stdout + proc.stderr).strip().splitlines()[-1]


def test_already_built_needs_cuda_code_for_this_gpu_newer_than_every_source(small_checkout):
    import os
    import time

    mod = _module()
    root, cap = small_checkout
    ok, why = mod.already_built(sys.executable, {"compute_cap": cap}, root)
    assert ok, why
    assert "newer than every file under csrc, python, CMakeLists.txt" in why
    ok, why = mod.already_built(sys.executable, {"compute_cap": "3.5"}, root)  # no code for this GPU
    assert not ok and "not for this GPU (35-real)" in why
    assert mod.already_built(sys.executable, None, root) == (False, "no GPU to build for")
    for changed in ("python/module.cpp", "csrc/src/decode.cu", "CMakeLists.txt"):
        later = time.time() + 10
        os.utime(root / changed, (later, later))
        ok, why = mod.already_built(sys.executable, {"compute_cap": cap}, root)
        assert not ok and why.startswith(f"{changed} is newer than _C"), why
        os.utime(root / changed, (later - 7200, later - 7200))
    for so in (root / "engine").glob("_C*.so"):
        so.unlink()  # the import may then find another checkout's engine._C (an editable install's)
    ok, why = mod.already_built(sys.executable, {"compute_cap": cap}, root)
    assert not ok and ("not importable" in why or "is not this checkout's" in why), why


def test_covers_reads_cmakes_architecture_list():
    mod = _module()
    assert mod._covers("80-real,90", "9.0") and mod._covers("90a-real", "9.0") and mod._covers("120", "12.0")
    assert not mod._covers("80-real,90", "8.6") and not mod._covers("90-virtual", "9.0") and not mod._covers("", "9.0")
    assert not mod._covers("100-real", "1.0")


def test_second_call_skips_the_build_when_already_built_and_says_so(small_checkout, tmp_path):
    """--only pytest_rest (the second call) must not spend ~90 s rebuilding: build is "already built",
    named in the summary and the last line; pytest_rest, out of this tiny budget, is said too (exit 0)."""
    root, cap = small_checkout
    out = tmp_path / "second"
    proc, last = _run(root, _fake_bin(tmp_path, cap), "--only", "pytest_rest", "--budget-s", "5", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    steps = {s["name"]: s for s in json.loads((out / "summary.json").read_text())["steps"]}
    assert list(steps) == ["build", "pytest_rest"]
    assert steps["build"]["status"] == "skipped: already built" and "CUDA" in steps["build"]["detail"]
    assert steps["pytest_rest"]["status"].startswith("skipped: out of budget")
    assert last.startswith("gpu_check: ok: ") and "build skipped: already built" in last
    assert "SKIPPED FOR BUDGET: pytest_rest" in last and "--only pytest_rest" in last
    assert "already built: engine/_C" in (out / "log.txt").read_text()


def test_a_gpu_machine_without_nvcc_or_cmake_exits_3_saying_nothing_gpu_ran(small_checkout, tmp_path):
    """The build is needed (a source changed) but nvcc and CMake are missing: not "fine" (exit 0)
    but exit 3 and a loud last line naming what is missing; every later step says it was not built."""
    import os
    import time

    root, cap = small_checkout
    later = time.time() + 10
    os.utime(root / "csrc" / "src" / "decode.cu", (later, later))
    out = tmp_path / "run"
    proc, last = _run(root, _fake_bin(tmp_path, cap), "--out", str(out))
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr
    assert last.startswith("gpu_check: NOTHING GPU RAN: ") and "missing nvcc, cmake" in last
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["verdict"]["exit"] == 3
    steps = summary["steps"]
    assert steps[0]["status"].startswith("skipped: missing nvcc, cmake")  # (and pybind11 where absent)
    assert all(s["status"].startswith("skipped: missing") and "built" in s["status"] for s in steps[1:])
    assert "**exit 3**" in (out / "summary.md").read_text()


def test_a_failed_build_exits_3_with_the_build_s_own_words(small_checkout, tmp_path):
    """A build that runs and fails (pip finds no project in the small checkout; the fake CMake
    fails): exit 3, the last line quoting the build's output. The machine has nvcc, CMake and
    pybind11 (an empty package on PYTHONPATH: only its presence is looked at before the build)."""
    root, _ = small_checkout
    bin_dir = _fake_bin(tmp_path, "3.5", {"nvcc": "exit 0", "cmake": "echo 'CMake Error: fake toolchain'; exit 7"})
    site = tmp_path / "site"
    (site / "pybind11").mkdir(parents=True)
    (site / "pybind11" / "__init__.py").write_text("")
    out = tmp_path / "run"
    proc, last = _run(root, bin_dir, "--out", str(out), env={"PYTHONPATH": str(site)})
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr
    build = json.loads((out / "summary.json").read_text())["steps"][0]
    assert build["status"] == "failed (exit 7)"
    assert last.startswith("gpu_check: NOTHING GPU RAN: ") and "CMake Error: fake toolchain" in last


def test_cuda_tests_skipped_for_budget_exit_3(small_checkout, tmp_path):
    root, cap = small_checkout
    out = tmp_path / "run"
    proc, last = _run(root, _fake_bin(tmp_path, cap), "--only", "pytest_cuda", "--budget-s", "5", "--out", str(out))
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr
    assert last.startswith("gpu_check: THE CUDA TESTS DID NOT RUN: pytest_cuda skipped: out of budget")


def test_the_exit_rule_for_steps_that_ran(tmp_path):
    """verdict() on steps as a run leaves them: a failed or timed-out step is 1, budget skips are 0."""
    mod = _module()
    gpu = {"compute_cap": "9.0"}

    def steps(**status):
        names = ("build", "pytest_cuda", "bench_crop", "pytest_rest")
        made = [mod.Step(n, ["x"], timeout=1, estimate=1) for n in names]
        for s in made:
            s.status = status.get(s.name, "ok")
        return made

    assert mod.verdict(steps(), gpu, False, None, tmp_path)[0] == 0
    code, line = mod.verdict(steps(bench_crop="timed out after 120 s"), gpu, False, None, tmp_path)
    assert code == 1 and "bench_crop timed out after 120 s" in line
    code, line = mod.verdict(steps(pytest_cuda="failed (exit 1)"), gpu, False, None, tmp_path)
    assert code == 1 and line.startswith("gpu_check: FAILED: pytest_cuda failed (exit 1)")
    code, line = mod.verdict(steps(build="timed out after 300 s"), gpu, False, None, tmp_path)
    assert code == 3 and "build timed out after 300 s" in line
    code, line = mod.verdict(steps(bench_crop="skipped: missing torch"), gpu, False, None, tmp_path)
    assert code == 0 and "not possible on this machine: bench_crop (missing torch)" in line
    assert mod.verdict(steps(), gpu, False, "signal 15", tmp_path)[0] == 1
    assert mod.verdict(steps(), None, False, None, tmp_path)[0] == 2
    assert mod.verdict(steps(build="skipped: missing gpu"), None, True, None, tmp_path)[0] == 0


def test_a_dry_run_without_out_writes_nowhere_in_the_checkout():
    import shutil

    before = sorted(p.name for p in (REPO / "bench" / "results").iterdir())
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("gpu_check: dry run: writing the plan to ")]
    out = Path(line.rsplit(" ", 1)[1])
    try:
        assert out.is_dir() and (out / "summary.json").is_file()
        assert REPO not in out.resolve().parents
        assert str(out / "summary.md") in proc.stdout.splitlines()[-1]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    assert sorted(p.name for p in (REPO / "bench" / "results").iterdir()) == before


def test_the_real_run_s_default_folder_is_git_ignored_and_the_curated_tables_are_not():
    import shutil

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    mod = _module()
    # the default --out's name, as main() makes it
    default = "bench/results/gpu-check-20261130-201500/summary.md"
    assert "gpu-check-{time.strftime('%Y%m%d-%H%M%S')}" in Path(mod.__file__).read_text()
    ignored = subprocess.run(["git", "check-ignore", "-q", default], cwd=REPO, timeout=60, check=False)
    assert ignored.returncode == 0
    kept = subprocess.run(["git", "check-ignore", "-q", "bench/results/gpu_h200.md"], cwd=REPO, timeout=60, check=False)
    assert kept.returncode == 1
