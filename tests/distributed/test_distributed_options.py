"""`embed --ray`'s option and refusals, checked before anything runs (no Ray needed)."""
from __future__ import annotations

import importlib.util

import pytest

from engine.cli import main


@pytest.mark.parametrize("argv, address", [(["--ray"], "local"), (["--ray", "auto"], "auto"),
                                           (["--ray=ray://head.example:10001"], "ray://head.example:10001"),
                                           (["--ray", "10.0.0.1:6379"], "10.0.0.1:6379"), ([], None)])
def test_ray_address_is_parsed(argv, address):
    from engine.cli.parser import build_parser

    assert build_parser().parse_args(["embed", "photos/", *argv]).ray == address


def test_an_input_after_a_bare_ray_is_a_usage_error(tmp_path, capsys):
    """argparse gives the word after a bare --ray to the option: a folder there is refused,
    saying how to write it, and nothing is created."""
    rc = main(["embed", "--ray", str(tmp_path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"argument --ray: expected local, auto, ray://HOST:PORT or HOST:PORT, found '{tmp_path}'" in err
    assert "put --ray last" in err
    assert not (tmp_path / "out").exists()


def test_boxes_with_ray_is_refused_before_the_output_folder(tmp_path, capsys):
    (tmp_path / "boxes.csv").write_text("a.png,0,0,10,10\n")
    rc = main(["embed", str(tmp_path), "--boxes", str(tmp_path / "boxes.csv"), "-o", str(tmp_path / "out"), "--ray"])
    assert rc == 1
    assert "--boxes cannot be used with --ray yet" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(importlib.util.find_spec("pandas") is not None and importlib.util.find_spec("ray") is not None,
                    reason="Ray Data is importable here")
def test_without_ray_data_the_run_says_what_to_install(tmp_path, capsys):
    rc = main(["embed", str(tmp_path), "-o", str(tmp_path / "out"), "--ray"])
    assert rc == 1
    assert "--ray needs Ray Data (ray with pandas and pyarrow): pip install 'ray[data]' (the 'distributed' extra)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
