"""Fixtures of the CLI tests: real photos (scikit-image) and a runner of main([...]) that
captures the exit code and both streams.

Most tests call engine.cli.main in-process: the synthetic weights and morphable model
are built once per session (engine memoises them), where a subprocess would pay ~10 s
each time. Only what needs a real process (Ctrl-C, `--help` speed) starts one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.cli import main


@dataclass
class Run:
    rc: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """cli("reconstruct", ...) -> Run(rc, stdout, stderr) of engine.cli.main."""

    def run(*argv) -> Run:
        capsys.readouterr()  # drop anything printed before
        rc = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return Run(rc, out, err)

    return run


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    # The user's environment must not change what the tests see.
    monkeypatch.delenv("ENGINE3DMM_MAX_PIXELS", raising=False)


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    """astronaut.png (one face), coffee.jpg (no face), chelsea.jpg and camera.png (cat, man:
    used as 'other people' in cropped mode), written once per session."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage_data.astronaut()).save(d / "astronaut.png")
    Image.fromarray(skimage_data.coffee()).save(d / "coffee.jpg", quality=90)
    Image.fromarray(skimage_data.chelsea()).save(d / "chelsea.jpg", quality=90)
    Image.fromarray(skimage_data.camera()).save(d / "camera.png")
    return d
