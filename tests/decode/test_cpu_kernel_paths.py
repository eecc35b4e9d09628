"""Every CPU kernel (avx512, avx2, generic) against the reference: the process picks
one at load time, so each runs in a subprocess with E3DMM_CPU_KERNEL set."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import _core

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import numpy as np
from engine import _core
from engine._reference import decode_reference
from engine.decode import Decoder
from tests.decode.models import random_coeffs, random_model
m = random_model(1237, seed=4)
for basis in ("fp32", "fp16"):
    for b in (1, 3, 8, 13):
        c = random_coeffs(b, seed=b)
        out = Decoder(m, basis_dtype=basis).decode(c)
        dt = np.float32 if basis == "fp32" else np.float16
        v, t, _ = decode_reference(m.shape_mean, m.shape_basis.astype(dt), m.tex_mean, m.tex_basis.astype(dt), c)
        assert np.abs(out.vertices - v).max() <= 1e-5 * np.abs(v).max(), (basis, b)
        ref = np.trunc(np.clip(t, 0, 255)).astype(np.uint8)
        bad = (out.colors != ref) & (np.abs(t - np.round(t)) > 1e-3)
        assert not bad.any(), (basis, b)
# The optional expression term, both code paths (B = 1 streams, B > 1 tiles), both basis types.
me = random_model(1237, seed=5, ke=29)
for basis in ("fp32", "fp16"):
    dt = np.float32 if basis == "fp32" else np.float16
    for b in (1, 9):
        c = random_coeffs(b, seed=b)
        e = np.random.default_rng(b).normal(0, 1, (b, 29)).astype(np.float32)
        out = Decoder(me, basis_dtype=basis).decode(c, expression=e)
        v, _, _ = decode_reference(me.shape_mean, me.shape_basis.astype(dt), me.tex_mean, me.tex_basis.astype(dt), c,
                                   expr_mean=me.expression_mean, expr_basis=me.expression_basis.astype(dt),
                                   expression=e)
        assert np.abs(out.vertices - v).max() <= 1e-5 * np.abs(v).max(), ("expression", basis, b)
print(_core.core().cpu_kernel_isa())
"""


@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_kernel_path_matches_reference(isa):
    supported = {"avx512": ["avx512f"], "avx2": ["avx2", "fma", "f16c"], "generic": []}[isa]
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if isa != "generic" and (not flags or not all(f in flags.split() for f in supported)):
        pytest.skip(f"this CPU cannot run the {isa} kernel")
    if isa != "generic" and isa not in _core.build_info()["cpu_kernels"]:
        pytest.skip(f"the {isa} kernel is not built on this architecture")
    env = dict(os.environ, E3DMM_CPU_KERNEL=isa)
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == isa
