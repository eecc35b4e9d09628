"""examples/render_mesh.py: its caption is true for any image, and it writes where it is
told, by default into the current folder, never into the repository."""
from __future__ import annotations

import runpy
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example():
    return runpy.run_path(str(REPO / "examples" / "render_mesh.py"))


PROVENANCE = {"runner": "onnxruntime"}


@pytest.mark.parametrize("network, morphable", [(True, True), (True, False), (False, True), (False, False)])
def test_the_caption_names_the_image_and_says_what_is_synthetic(example, network, morphable):
    prov = {**PROVENANCE, "network_synthetic": network, "morphable_synthetic": morphable}
    lines = example["caption"](prov, 3.5, "me.jpg")
    text = " ".join(lines)
    assert lines[0].startswith("me.jpg reconstructed by engine3dmm with ")
    assert ("SYNTHETIC network weights" in text) == network and ("SYNTHETIC morphable model" in text) == morphable
    assert "the person in me.jpg" in text if (network or morphable) else "person" not in text
    assert "untrained" in text if network else "untrained" not in text
    assert " her " not in f" {text} " and "astronaut" not in text  # nothing about another picture
    assert lines[-1] == "Right: the morphable model's mean face (all coefficients 0)."


def test_it_writes_into_the_current_folder_by_default(example, tmp_path, monkeypatch, capsys):
    from PIL import Image
    from skimage import data

    readme_picture = REPO / "docs" / "mesh.png"
    before = readme_picture.read_bytes()
    photo = tmp_path / "portrait.png"
    Image.fromarray(data.astronaut()).save(photo)
    monkeypatch.chdir(tmp_path)
    example["main"](["--image", str(photo), "--box", "179,87,272,178"])  # a box: no detector needed
    out = capsys.readouterr().out
    assert out.startswith("wrote mesh.png\nportrait.png reconstructed by engine3dmm with "), out
    assert "her face" not in out and "astronaut" not in out
    with Image.open(tmp_path / "mesh.png") as im:  # read back by Pillow
        assert im.format == "PNG" and im.size[0] == 5 * example["PANEL"]
    assert readme_picture.read_bytes() == before  # the repository's picture is left alone


@pytest.mark.parametrize("box", ["1,2,3", "10,10,5,20", "a,b,c,d"])
def test_a_bad_box_is_a_usage_error(example, box, capsys):
    with pytest.raises(SystemExit) as e:
        example["main"](["--box", box])
    assert e.value.code == 2 and "expected X0,Y0,X1,Y1" in capsys.readouterr().err
