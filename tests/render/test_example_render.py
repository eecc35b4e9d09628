"""examples/render_result.py runs as written and draws what `reconstruct --render` draws."""
from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_example_draws_what_the_cli_draws(tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    from PIL import Image
    from skimage import data

    example = runpy.run_path(str(REPO / "examples" / "render_result.py"))
    example["main"](["-o", str(tmp_path / "example.png")])
    assert "yaw" in capsys.readouterr().out
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    assert main(["reconstruct", str(tmp_path / "astronaut.png"), "-o", str(tmp_path / "out"), "--render", "-q"]) == 0
    a = cv2.imread(str(tmp_path / "example.png"))
    b = cv2.imread(str(tmp_path / "out" / "astronaut.render.png"))
    assert a.shape == b.shape == (512, 512, 3)
    np.testing.assert_array_equal(a[40:], b[40:])  # below the SYNTHETIC marks, whose words differ
    assert (a[40:] != data.astronaut()[40:, :, ::-1]).any()  # and something was drawn
