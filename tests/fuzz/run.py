"""The fuzz harness: run one target of tests/fuzz/targets/ under atheris (coverage-guided
libFuzzer for Python), or replay its seeds and regression corpus. See tests/fuzz/README.md.

    python -m tests.fuzz.run cache --seconds 600        # fuzz for 10 minutes
    python -m tests.fuzz.run cache --runs 20000         # a fixed number of inputs (what CI does)
    python -m tests.fuzz.run cache --replay             # seeds + tests/fuzz/corpus/cache/*, no fuzzing
    python -m tests.fuzz.run cache --replay crash-1234  # one input
    python -m tests.fuzz.run cache --write-seeds DIR    # seeds + corpus as files (for the C++ fuzzer)
    python -m tests.fuzz.run --list

A target is a module tests/fuzz/targets/fuzz_<name>.py defining EXPECTED (a tuple of
engine.errors classes), seeds() -> list[bytes] and one_input(data: bytes); optionally
CI_RUNS (int: the inputs `test_fuzz.py` runs it for in CI, default DEFAULT_CI_RUNS).
Anything one_input raises outside EXPECTED, a crash, a hang (TIMEOUT_S per input) or more
than RSS_LIMIT_MB of memory is a finding. A finding's input is saved under --artifacts
(default tests/fuzz/corpus/<name>/, where pytest replays it from then on) and the exact
path and the command that reproduces it are printed.

The fuzzing runs in a child process, so a crash inside a C extension is reported here too.
"""
from __future__ import annotations

import argparse
import importlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# E3DMM_FUZZ_TARGETS points the harness at another folder of targets (its own tests use it).
TARGETS = Path(os.environ.get("E3DMM_FUZZ_TARGETS", HERE / "targets"))
CORPUS = HERE / "corpus"
DEFAULT_CI_RUNS = 2000
TIMEOUT_S = 30  # per input
RSS_LIMIT_MB = 3072  # what one input may use; libFuzzer's -rss_limit_mb


def discover() -> list[str]:
    """Every target name: tests/fuzz/targets/fuzz_<name>.py."""
    return sorted(p.stem[len("fuzz_"):] for p in TARGETS.glob("fuzz_*.py"))


def ci_runs(name: str) -> int:
    """The target's CI_RUNS, read from its source (no import: pytest's process stays light)."""
    import ast

    tree = ast.parse((TARGETS / f"fuzz_{name}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CI_RUNS" for t in node.targets):
            return int(ast.literal_eval(node.value))
    return DEFAULT_CI_RUNS


def corpus_files(name: str) -> list[Path]:
    folder = CORPUS / name
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []


def load_target(name: str, instrument: bool):
    """Import fuzz_<name> (with the engine package instrumented for coverage when asked) and
    check that it follows the convention."""
    for p in (str(TARGETS), str(REPO)):
        if p not in sys.path:
            sys.path.insert(0, p)
    if instrument:
        import atheris

        with atheris.instrument_imports(include=["engine", f"fuzz_{name}"]):
            module = importlib.import_module(f"fuzz_{name}")
    else:
        module = importlib.import_module(f"fuzz_{name}")
    from engine.errors import EngineError

    expected = getattr(module, "EXPECTED", None)
    if not (isinstance(expected, tuple) and expected and
            all(isinstance(e, type) and issubclass(e, EngineError) for e in expected)):
        raise SystemExit(f"fuzz_{name}.EXPECTED: expected a non-empty tuple of engine.errors classes, found {expected!r}")
    for fn in ("seeds", "one_input"):
        if not callable(getattr(module, fn, None)):
            raise SystemExit(f"fuzz_{name}.{fn}: expected a function, found none")
    return module


# --- the child: replay or fuzz -------------------------------------------------------

class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"no result after {TIMEOUT_S} s")


def replay(name: str, files: list[str]) -> int:
    """Run seeds and corpus files (or `files`) through one_input; 1 when any misbehaves."""
    module = load_target(name, instrument=False)
    inputs = [(f"seed {i}", s) for i, s in enumerate(module.seeds())] if not files else []
    inputs += [(str(p), p.read_bytes()) for p in (map(Path, files) if files else corpus_files(name))]
    signal.signal(signal.SIGALRM, _alarm)
    failures = 0
    for label, data in inputs:
        print(f"replaying {label} ({len(data)} bytes)", flush=True)  # the last line names a crashing input
        signal.alarm(TIMEOUT_S)
        try:
            module.one_input(data)
        except module.EXPECTED:
            pass
        except BaseException as e:  # noqa: BLE001 (every other outcome is the finding)
            if isinstance(e, KeyboardInterrupt):
                raise
            failures += 1
            print(f"FINDING in {label}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()
        finally:
            signal.alarm(0)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if rss_mb > RSS_LIMIT_MB:
            print(f"FINDING in {label}: peak memory {rss_mb:.0f} MB > {RSS_LIMIT_MB} MB", flush=True)
            return 1
    print(f"replayed {len(inputs)} inputs of {name}: {failures} findings", flush=True)
    return 1 if failures else 0


def fuzz_child(name: str, workdir: str, artifacts: str, libfuzzer_args: list[str]) -> None:
    import atheris

    module = load_target(name, instrument=True)
    os.makedirs(workdir, exist_ok=True)
    for i, s in enumerate(module.seeds()):  # the seeds and the regression corpus start the run
        Path(workdir, f"seed-{i}").write_bytes(s)
    for p in corpus_files(name):
        shutil.copyfile(p, Path(workdir, f"corpus-{p.name}"))
    expected = module.EXPECTED

    def test_one_input(data: bytes) -> None:
        try:
            module.one_input(data)
        except expected:
            pass

    args = [sys.argv[0], workdir, f"-artifact_prefix={artifacts.rstrip('/')}/", f"-timeout={TIMEOUT_S}",
            f"-rss_limit_mb={RSS_LIMIT_MB}", "-print_final_stats=1", *libfuzzer_args]
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


def write_seeds(name: str, folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    module = load_target(name, instrument=False)
    for i, s in enumerate(module.seeds()):
        (folder / f"seed-{i}").write_bytes(s)
    for p in corpus_files(name):
        shutil.copyfile(p, folder / f"corpus-{p.name}")
    print(f"wrote the seeds and the corpus of {name} to {folder}")
    return 0


# --- the parent: set up, run the child, report --------------------------------------------

def fuzz(name: str, runs: int | None, seconds: int | None, artifacts: Path, workdir: Path | None,
         seed: int, extra: list[str]) -> int:
    artifacts.mkdir(parents=True, exist_ok=True)
    before = set(artifacts.iterdir())
    tmp = None
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix=f"e3dmm-fuzz-{name}-")
        workdir = Path(tmp)
    budget = [f"-runs={runs}"] if runs is not None else [f"-max_total_time={seconds}"]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", name, "--workdir", str(workdir),
           "--artifacts", str(artifacts), "--", f"-seed={seed}", *budget, *extra]
    print(f"fuzzing {name}: {' '.join(budget)}, working corpus {workdir}, findings to {artifacts}", flush=True)
    t0 = time.monotonic()
    try:
        rc = subprocess.call(cmd, cwd=REPO)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    found = sorted(set(artifacts.iterdir()) - before)
    if rc == 0 and not found:
        print(f"fuzzing {name}: no finding in {time.monotonic() - t0:.0f} s", flush=True)
        return 0
    for p in found:
        print(f"FINDING: {p} ({p.stat().st_size} bytes)\n"
              f"  reproduce: python -m tests.fuzz.run {name} --replay {p}\n"
              f"  keep it as a regression input: after the fix, move it to {CORPUS / name}/ under a short "
              f"descriptive name (pytest replays every file there)", flush=True)
    if not found:
        print(f"fuzzing {name}: the fuzzer exited with status {rc} and saved no input (see its output above)")
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = []
    if "--" in argv:
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("target", nargs="?", help="a target name: " + ", ".join(discover()))
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--runs", type=int, help="stop after this many inputs")
    budget.add_argument("--seconds", type=int, help="stop after this long (default 60)")
    ap.add_argument("--replay", nargs="*", metavar="FILE",
                    help="no fuzzing: run the seeds and the corpus (or these files) once")
    ap.add_argument("--artifacts", type=Path, help="where findings are saved (default tests/fuzz/corpus/TARGET/)")
    ap.add_argument("--workdir", type=Path, help="a working corpus kept across runs (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed (default 1: reproducible)")
    ap.add_argument("--write-seeds", type=Path, metavar="DIR",
                    help="write the seeds and the regression corpus into DIR and stop (the C++ fuzzer's seed corpus)")
    ap.add_argument("--list", action="store_true", help="list the targets")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        fuzz_child(args._child, str(args.workdir), str(args.artifacts), extra)
        return 0
    if args.list:
        print("\n".join(discover()))
        return 0
    if args.target not in discover():
        ap.error(f"target: expected one of {', '.join(discover())}, found {args.target!r}")
    if args.replay is not None:
        return replay(args.target, args.replay)
    if args.write_seeds:
        return write_seeds(args.target, args.write_seeds)
    seconds = args.seconds if args.runs is None and args.seconds is not None else 60
    return fuzz(args.target, args.runs, seconds, args.artifacts or CORPUS / args.target, args.workdir,
                args.seed, extra)


if __name__ == "__main__":
    sys.exit(main())
