"""Fuzz target: the .pts landmark file reader (engine.pose.read_pts, issue 9): the release's
layout (68 lines "x y") and iBUG's (version / n_points / braces), any bytes. A bad file is an
InputError naming it; anything else (another exception, a hang, a huge allocation) is a bug."""
from __future__ import annotations

import numpy as np

from engine.errors import InputError
from engine.pose import read_pts, write_pts

from _scratch import file_bytes, scratch

EXPECTED = (InputError,)
CI_RUNS = 10000


def seeds() -> list[bytes]:
    lm = np.random.default_rng(0).uniform(0, 500, (68, 2))
    release = file_bytes("seed.pts", lambda p: write_pts(p, lm))
    ibug = ("version: 1\nn_points: 68\n{\n" + "".join(f"{x:.3f} {y:.3f}\n" for x, y in lm) + "}\n").encode()
    return [release, ibug, b"# comment\n" + release]


def one_input(data: bytes) -> None:
    path = scratch() / "in.pts"
    path.write_bytes(data)
    lm = read_pts(path)
    assert lm.shape == (68, 2) and np.isfinite(lm).all()
