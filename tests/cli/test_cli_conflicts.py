"""Options that cannot work together are usage errors (exit 2, `engine3dmm <cmd>: error: ...`),
found before anything runs, each with advice that works for THAT combination (README: "options
that cannot work together"). Nothing is loaded, nothing is created."""
from __future__ import annotations

import pytest

FP16_CPU = ("precision fp16: the CPU runners do not run float16 (the {r} runner supports {ps}): fp16 is the GPU "
            "runners' precision (tensorrt, torch-cuda). On the CPU use --precision int8 (onnxruntime) or bf16 "
            "(torch-cpu), the variants `engine3dmm validate` measures against float32 on these weights, or fp32")
DEVICE_CPU = ("--device-input on: the device input decodes and crops on the GPU for a CUDA runner (torch-cuda, "
              "tensorrt); --runner {r} runs on the CPU: use --runner torch-cuda, tensorrt or auto, or "
              "--device-input auto / off")
COMPILE_INT8 = ("--compile --precision int8: int8 is an ONNX Runtime graph (the onnxruntime runner), which "
                "torch.compile cannot compile: use --precision fp32 or bf16 (torch-cpu) or drop --compile")

CASES = {
    "device-input on, torch-cpu": (["--runner", "torch-cpu", "--device-input", "on"],
                                   DEVICE_CPU.format(r="torch-cpu")),
    "device-input on, onnxruntime": (["--runner", "onnxruntime", "--device-input", "on"],
                                     DEVICE_CPU.format(r="onnxruntime")),
    "device-input on, int8 (onnxruntime)": (
        ["--precision", "int8", "--device-input", "on"],
        "--device-input on: the device input decodes and crops on the GPU for a CUDA runner (torch-cuda, tensorrt); "
        "--precision int8 runs on onnxruntime, on the CPU: use --precision fp16, bf16 or fp32, or --device-input "
        "auto / off"),
    "compile, int8": (["--compile", "--precision", "int8"], COMPILE_INT8),
    "compile, int8, torch-cpu": (["--compile", "--precision", "int8", "--runner", "torch-cpu"], COMPILE_INT8),
    "compile, onnxruntime": (["--compile", "--runner", "onnxruntime"],
                             "--compile: torch.compile applies to the PyTorch runners (torch-cuda, torch-cpu, or "
                             "auto); --runner onnxruntime cannot compile: drop --compile or use --runner torch-cpu / "
                             "torch-cuda"),
    "compile, tensorrt": (["--compile", "--runner", "tensorrt"],
                          "--compile: torch.compile applies to the PyTorch runners (torch-cuda, torch-cpu, or auto); "
                          "--runner tensorrt cannot compile: drop --compile or use --runner torch-cpu / torch-cuda"),
    "compile-mode without compile": (["--compile-mode", "max-autotune"],
                                     "--compile-mode max-autotune: applies with --compile only (add --compile or "
                                     "drop --compile-mode)"),
    "fp16, onnxruntime": (["--precision", "fp16", "--runner", "onnxruntime"],
                          FP16_CPU.format(r="onnxruntime", ps="['fp32', 'int8']")),
    "fp16, torch-cpu": (["--precision", "fp16", "--runner", "torch-cpu"],
                        FP16_CPU.format(r="torch-cpu", ps="['fp32', 'bf16']")),
    "fp16, torch-cpu, compile": (["--precision", "fp16", "--runner", "torch-cpu", "--compile"],
                                 "precision fp16: the CPU runners do not run float16 (the torch-cpu runner supports "
                                 "['fp32', 'bf16']): fp16 is the GPU runners' precision (torch-cuda). On the CPU use "
                                 "--precision bf16 or fp32 (torch-cpu, compiled)"),
    "int8, torch-cpu": (["--precision", "int8", "--runner", "torch-cpu"],
                        "precision: the torch-cpu runner supports ['fp32', 'bf16'], found 'int8' (use --runner "
                        "onnxruntime or auto)"),
    "int8, torch-cuda": (["--precision", "int8", "--runner", "torch-cuda"],
                         "precision: the torch-cuda runner supports ['fp16', 'bf16', 'fp32'], found 'int8' (use "
                         "--runner onnxruntime or auto)"),
    "bf16, onnxruntime": (["--precision", "bf16", "--runner", "onnxruntime"],
                          "precision: the onnxruntime runner supports ['fp32', 'int8'], found 'bf16' (use --runner "
                          "torch-cpu or auto)"),
    "bf16, tensorrt": (["--precision", "bf16", "--runner", "tensorrt"],
                       "precision: the tensorrt runner supports ['fp16', 'fp32'], found 'bf16' (use --runner "
                       "torch-cpu or auto)"),
}


@pytest.mark.parametrize("command", ["reconstruct", "embed"])
@pytest.mark.parametrize("case", list(CASES))
def test_options_that_cannot_work_together_are_usage_errors_with_advice(cli, tmp_path, monkeypatch, command, case):
    options, advice = CASES[case]
    card = tmp_path / "card"
    monkeypatch.setenv("ENGINE3DMM_MODEL_DIR", str(card))
    out = tmp_path / "out"
    r = cli(command, tmp_path / "photo.jpg", "-o", out, *options)
    assert r.rc == 2, r.err
    assert r.err.splitlines()[-1] == f"engine3dmm {command}: error: {advice}"
    assert "Traceback" not in r.err and r.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing created: no output, no model card


def test_the_apis_messages_give_the_same_advice(tmp_path):
    """create_runner (the API) refuses --compile's int8 and fp16 with advice that works with compile."""
    pytest.importorskip("torch")
    from engine.errors import InputError
    from engine.runners import create_runner

    with pytest.raises(InputError, match=r"int8 is an ONNX Runtime graph, which torch.compile cannot compile: use "
                                         r"--precision fp32 or bf16 \(torch-cpu\) or drop --compile"):
        create_runner("auto", tmp_path, precision="int8", compile=True)
    with pytest.raises(InputError, match=r"On the CPU use --precision bf16 or fp32 \(torch-cpu, compiled\)$"):
        create_runner("torch-cpu", tmp_path, precision="fp16", compile=True)
