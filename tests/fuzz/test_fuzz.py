"""The standing fuzz harness in the test suite (issue 13), for every target in tests/fuzz/targets/:

- every seed and every regression input under tests/fuzz/corpus/<target>/ goes through the
  target once, in a child process (a segfault fails the test instead of killing pytest);
- every target runs under atheris for its CI_RUNS inputs (a fixed count with a fixed seed:
  reproducible, about 60-90 s for all targets together). A finding fails the test and shows
  the input.

Also: the harness itself finds a planted bug, a crash and a hang (its own targets, in a temp folder).
"""
from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import run  # noqa: E402  (tests/fuzz/run.py: the harness)

TARGETS = run.discover()


def harness(*args, timeout=600, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.fuzz.run", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def tail(proc, n=6000) -> str:
    return (proc.stdout + proc.stderr)[-n:]


def test_every_target_module_is_found():
    assert "cache" in TARGETS
    assert sorted(TARGETS) == sorted(p.stem[5:] for p in (HERE / "targets").glob("fuzz_*.py"))


@pytest.mark.parametrize("target", TARGETS)
def test_seeds_and_regression_corpus_replay_cleanly(target):
    proc = harness(target, "--replay", timeout=900)
    assert proc.returncode == 0, (f"replaying {target} (return code {proc.returncode}; a negative code is the "
                                  f"signal that killed it, and the last 'replaying' line names the input):\n"
                                  + tail(proc))
    assert f"of {target}: 0 findings" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_briefly(target, tmp_path):
    pytest.importorskip("atheris", reason="atheris (the test extra) is not installed")
    runs = run.ci_runs(target)
    proc = harness(target, "--runs", str(runs), "--artifacts", str(tmp_path), timeout=600)
    found = sorted(tmp_path.iterdir())
    shown = "\n".join(f"{p.name} ({p.stat().st_size} bytes), base64: {base64.b64encode(p.read_bytes()[:4096]).decode()}"
                      for p in found)
    assert proc.returncode == 0 and not found, (f"fuzzing {target} for {runs} inputs found:\n{shown}\n"
                                               f"save it under tests/fuzz/corpus/{target}/ with a descriptive name "
                                               f"once fixed.\nOutput:\n" + tail(proc))


# --- the harness finds what it should --------------------------------------------------

PLANTED = {
    "exception": """
        def one_input(data):
            if len(data) >= 2 and data[0] == 0x61 and data[1] == 0x62:
                raise KeyError("planted")
            if data[:1] == b"z":
                raise InputError("expected")
    """,
    "segfault": """
        import ctypes
        def one_input(data):
            if data[:1] == b"!":
                ctypes.string_at(0)
    """,
}


@pytest.fixture
def planted(tmp_path):
    folder = tmp_path / "targets"
    folder.mkdir()
    for name, body in PLANTED.items():
        (folder / f"fuzz_{name}.py").write_text(textwrap.dedent("""
            from engine.errors import InputError
            EXPECTED = (InputError,)
            def seeds():
                return [b"aa", b"zz"]
        """) + textwrap.dedent(body))
    return {"E3DMM_FUZZ_TARGETS": str(folder)}


def test_the_harness_reports_a_planted_exception_and_saves_the_input(planted, tmp_path):
    pytest.importorskip("atheris", reason="atheris (the test extra) is not installed")
    art = tmp_path / "art"
    proc = harness("exception", "--runs", "300000", "--artifacts", str(art), env=planted, timeout=300)
    assert proc.returncode == 1, tail(proc)
    (found,) = art.iterdir()
    assert found.read_bytes()[:2] == b"ab"
    assert f"FINDING: {found}" in proc.stdout and f"--replay {found}" in proc.stdout
    replay = harness("exception", "--replay", str(found), env=planted)
    assert replay.returncode == 1 and "KeyError: 'planted'" in replay.stdout + replay.stderr
    assert harness("exception", "--replay", env=planted).returncode == 0  # the seeds: b"aa" fine, b"zz" expected


def test_the_replay_reports_a_crash_as_a_failure(planted, tmp_path):
    crash = tmp_path / "crash"
    crash.write_bytes(b"!")
    proc = harness("segfault", "--replay", str(crash), env=planted)
    assert proc.returncode < 0 or proc.returncode > 1, tail(proc)  # killed by SIGSEGV
    assert proc.stdout.strip().splitlines()[-1] == f"replaying {crash} (1 bytes)"
