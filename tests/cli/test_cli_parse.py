"""Argument parsing, help and exit codes: no model is loaded by anything here."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cli.helpers import REPO

COMMANDS = ("reconstruct", "embed", "verify", "evaluate", "convert", "build", "fetch", "info", "doctor")


def test_help_imports_nothing_heavy_and_shows_examples():
    # A fresh interpreter: --help must not import numpy, torch or the pipeline.
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "engine", "--help"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "quick start:" in p.stdout and "engine3dmm reconstruct photo.jpg" in p.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if "|" in line}
    assert not {"numpy", "torch", "onnxruntime", "engine.pipeline", "PIL"} & imported


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(cli, command):
    r = cli(command, "--help")
    assert r.rc == 0
    assert "examples:" in r.out
    assert "-q, --quiet" in r.out and "-v, --verbose" in r.out


@pytest.mark.parametrize("argv, message", [
    ([], "usage:"),
    (["frobnicate"], "invalid choice"),
    (["reconstruct"], "give at least one INPUT or --camera INDEX"),
    (["embed"], "the following arguments are required: INPUT"),
    (["reconstruct", "x.jpg", "--runner", "caffe"], "invalid choice: 'caffe'"),
    (["reconstruct", "x.jpg", "--batch-size", "0"], "--batch-size: expected an integer in 1..1024, found '0'"),
    (["reconstruct", "x.jpg", "--cropped", "--boxes", "b.csv"], "not allowed with argument"),
    (["embed", "x.jpg", "-q", "-v"], "not allowed with argument"),
    (["verify", "a.jpg"], "the following arguments are required: B"),
    (["reconstruct", "x.jpg", "--release-layout", "--format", "ply"], "not allowed with argument"),
    (["evaluate", "p.txt", "lfw", "--missing", "ignore"], "invalid choice: 'ignore'"),
    (["evaluate", "p.txt", "lfw", "--face", "first"], "invalid choice: 'first'"),
    (["evaluate", "p.txt", "lfw", "--fallback-box", "whole"], "invalid choice: 'whole'"),
    (["verify", "a.jpg", "b.jpg", "--face", "middle"], "invalid choice: 'middle'"),
])
def test_usage_errors_exit_2(cli, argv, message):
    r = cli(*argv)
    assert r.rc == 2
    assert message in r.err


@pytest.mark.parametrize("argv", [["-q", "info"], ["info", "-q"], ["-q", "info", "--json"]])
def test_quiet_works_before_and_after_the_command(argv):
    # A flag given before the subcommand must not be reset by the subcommand's default.
    from engine.cli.parser import build_parser

    args = build_parser().parse_args(argv)
    assert args.quiet is True and args.verbose is False


def test_version(cli):
    from engine import __version__

    r = cli("--version")
    assert r.rc == 0 and __version__ in r.out


def test_console_script_entry_point_is_main():
    # pyproject.toml declares `engine3dmm = "engine.cli:main"`; main must accept argv=None.
    import inspect

    from engine.cli import main

    assert inspect.signature(main).parameters["argv"].default is None


def test_face_rules_agree_with_the_library():
    # parser.py repeats engine.descriptors.FACE_RULES so that --help needs no numpy.
    from engine.cli.parser import FACE_RULES, build_parser
    from engine.descriptors import FACE_RULES as LIBRARY

    assert FACE_RULES == LIBRARY
    args = build_parser().parse_args(["evaluate", "p.txt", "lfw"])
    assert (args.face, args.missing, args.fallback_box) == ("center", "wrong", "none")
    assert build_parser().parse_args(["verify", "a.jpg", "b.jpg"]).face == "best"


@pytest.mark.parametrize("cmd", [["reconstruct", "a.jpg"], ["embed", "a.jpg"], ["verify", "a.jpg", "b.jpg"],
                                 ["evaluate", "pairs.txt", "root"]])
@pytest.mark.parametrize("option,value,bound", [("--batch-size", "100000", "1..1024"),
                                                ("--batch-size", "1025", "1..1024"), ("--workers", "65", "1..64"),
                                                ("--workers", "0", "1..64"), ("--threads", "5000", "1..1024"),
                                                ("--threads", "many", "1..1024")])
def test_sizes_are_bounded_on_every_command(cli, tmp_path, cmd, option, value, bound):
    # The tester's --batch-size 100000 ran into a 56 GiB allocation and a raw traceback.
    r = cli(*cmd, option, value, "-o", tmp_path / "out") if cmd[0] in ("reconstruct", "embed") else \
        cli(*cmd, option, value)
    assert r.rc == 2 and f"argument {option}: expected an integer in {bound}, found '{value}'" in r.err
    assert not (tmp_path / "out").exists()


def test_the_parsers_bounds_are_the_librarys():
    # parser.py repeats engine.pipeline.reconstructor's bounds so that --help needs no numpy.
    from engine.cli import parser
    from engine.pipeline import reconstructor

    assert (parser.MAX_BATCH_SIZE, parser.MAX_WORKERS, parser.MAX_THREADS) == (
        reconstructor.MAX_BATCH_SIZE, reconstructor.MAX_WORKERS, reconstructor.MAX_THREADS)
    args = parser.build_parser().parse_args(["reconstruct", "a.jpg", "--batch-size", "1024", "--workers", "64",
                                             "--threads", "1024"])
    assert (args.batch_size, args.workers, args.threads) == (1024, 64, 1024)
