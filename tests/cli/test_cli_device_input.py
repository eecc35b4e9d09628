"""--device-input (issue 11 section 2): every command with a runner takes it, it reaches the
Reconstructor, and `on` where the device path cannot run (this CPU machine: no CUDA runner) is an
error that says why, before any output is written."""
from __future__ import annotations

import subprocess
import sys

import pytest

from engine.cli.parser import build_parser


@pytest.mark.parametrize("command", [["reconstruct", "x.jpg"], ["embed", "x.jpg"], ["verify", "a.jpg", "b.jpg"],
                                     ["evaluate", "pairs.txt", "root"]])
def test_every_command_with_a_runner_takes_device_input(command):
    assert build_parser().parse_args(command).device_input == "auto"
    for choice in ("auto", "on", "off"):
        assert build_parser().parse_args([*command, "--device-input", choice]).device_input == choice
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--device-input", "yes"])


def test_device_input_reaches_the_reconstructor():
    from engine.cli.common import make_reconstructor

    args = build_parser().parse_args(["embed", "x.jpg", "--runner", "onnxruntime", "--device-input", "off"])
    with make_reconstructor(args, decode=False) as rec:
        assert rec.device_input is None


def test_device_input_on_without_a_gpu_fails_saying_why(tmp_path):
    import skimage.data
    from PIL import Image

    from engine._core import has_cuda_crop

    if has_cuda_crop():
        pytest.skip("a CUDA build with a GPU: the device path can run here")
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "engine", "reconstruct", str(photo), "-o", str(out), "--no-mesh",
                           "--device-input", "on"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "--device-input on:" in proc.stderr and "needs a CUDA runner" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_embed_ray_takes_device_input_to_its_actors():
    """embed --ray hands --device-input to the actors' Reconstructors (engine.distributed.embed's
    device_input); a value the API does not take is refused before Ray starts."""
    import inspect

    pytest.importorskip("ray")
    from engine.distributed import embed
    from engine.errors import InputError

    assert inspect.signature(embed).parameters["device_input"].default == "auto"
    with pytest.raises(InputError, match="device_input: expected 'auto', 'on', 'off', True or False, found 'yes'"):
        next(iter(embed(["x.jpg"], device_input="yes")))


@pytest.mark.parametrize("word,same", [("on", True), ("off", False)])
def test_the_api_takes_the_cli_words_on_and_off(runner, model, word, same):
    """Reconstructor(device_input="on"/"off") means True/False, as --device-input on/off does."""
    from engine.errors import InputError, UnavailableError
    from engine.pipeline import Reconstructor

    if same:  # a CPU runner: "on" is refused exactly as True is
        with pytest.raises(UnavailableError) as on:
            Reconstructor(runner=runner, model=model, device_input=word)
        with pytest.raises(UnavailableError) as true:
            Reconstructor(runner=runner, model=model, device_input=True)
        assert str(on.value) == str(true.value) and "device_input=True:" in str(on.value)
    else:
        with Reconstructor(runner=runner, model=model, device_input=word) as rec:
            assert rec.device_input is None
    with pytest.raises(InputError, match=r"device_input: expected 'auto', 'on', 'off', True, False or a "
                                         r"DeviceInput, found 'ON'"):
        Reconstructor(runner=runner, model=model, device_input="ON")
