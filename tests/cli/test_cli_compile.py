"""--compile on the commands that take a runner (issue 11 §3): it reaches create_runner, and
combinations that cannot compile are usage errors. Nothing here compiles a network (the
compiled run itself is tests/runners/test_torch_compile.py's slow CLI test)."""
from __future__ import annotations

import pytest

from engine.cli.parser import build_parser

pytest.importorskip("torch")


def test_the_parsers_compile_constants_agree_with_the_library():
    from engine.cli import parser
    from engine.runners import COMPILABLE
    from engine.runners.torch_compile import COMPILE_MODES

    assert parser.COMPILABLE_RUNNERS == COMPILABLE and parser.COMPILE_MODES == COMPILE_MODES


@pytest.mark.parametrize("command", [["reconstruct", "x.jpg"], ["embed", "x.jpg"], ["verify", "a.jpg", "b.jpg"],
                                     ["evaluate", "pairs.txt", "root"]])
def test_every_command_with_a_runner_takes_compile(command):
    args = build_parser().parse_args([*command, "--compile", "--compile-mode", "default"])
    assert args.compile is True and args.compile_mode == "default"
    assert build_parser().parse_args(command).compile is False


def test_compile_reaches_the_runner(tmp_path):
    from engine.cli.common import network_runner

    args = build_parser().parse_args(["reconstruct", "x.jpg", "--runner", "torch-cpu", "--compile"])
    runner = network_runner(args)
    try:
        assert runner.name == "torch-cpu" and runner.compiled and runner.compile_mode == "default"
    finally:
        runner.close()
    args = build_parser().parse_args(["embed", "x.jpg", "--compile", "--compile-mode", "max-autotune",
                                      "--precision", "fp32"])
    runner = network_runner(args)  # auto + --compile: a PyTorch runner, not onnxruntime
    try:
        assert runner.name in ("torch-cpu", "torch-cuda") and runner.compiled
        assert runner.compile_mode == "max-autotune"
    finally:
        runner.close()
    assert network_runner(build_parser().parse_args(["reconstruct", "x.jpg"])) == "auto"  # no --compile: a name


@pytest.mark.parametrize("argv, words", [
    (["reconstruct", "x.jpg", "--compile", "--runner", "onnxruntime"], "--runner onnxruntime cannot compile"),
    (["verify", "a.jpg", "b.jpg", "--compile", "--runner", "tensorrt"], "--runner tensorrt cannot compile"),
    (["embed", "x.jpg", "--compile-mode", "default"], "--compile-mode default: applies with --compile only"),
    (["embed", "x.jpg", "--compile", "--ray", "--runner", "onnxruntime"], "--runner onnxruntime cannot compile"),
])
def test_combinations_that_cannot_compile_are_usage_errors(cli, tmp_path, argv, words):
    run = cli(*argv, "-o", tmp_path / "out") if argv[0] != "verify" else cli(*argv)
    assert run.rc == 2 and words in run.err
    assert not (tmp_path / "out").exists()  # refused before anything was created


def test_engine_bench_refuses_runners_that_cannot_compile(capsys):
    from engine.bench.cli import main

    assert main(["--runners", "onnxruntime", "--compile", "--stages", "runners"]) == 2
    assert "onnxruntime" in capsys.readouterr().err
