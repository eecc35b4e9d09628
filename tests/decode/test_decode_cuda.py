"""The CUDA decode kernel on a real GPU (marker `cuda`; skipped without one).

The kernel's per-thread body is already checked on the CPU (test_decode_cpu); these
tests check what only a GPU can: the launch configuration, streams and device memory.
"""
from __future__ import annotations

import numpy as np
import pytest

from engine import _core
from engine._reference import decode_reference
from engine.decode import Decoder
from engine.errors import InputError
from tests.decode.models import random_coeffs, random_model

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not _core.has_cuda(), reason="needs an NVIDIA GPU and the CUDA build of engine._C"),
]


@pytest.fixture(scope="module")
def full_model():
    return random_model(46990, seed=3)


@pytest.mark.parametrize("b", [1, 15, 16, 17, 64, 256])
@pytest.mark.parametrize("basis", ["fp32", "fp16"])
def test_cuda_matches_cpu_kernel(full_model, b, basis):
    import torch

    coeffs = random_coeffs(b, seed=b)
    gpu = Decoder(full_model, device="cuda", basis_dtype=basis).decode(torch.from_numpy(coeffs).cuda())
    cpu = Decoder(full_model, basis_dtype=basis).decode(coeffs)
    v = gpu.vertices.cpu().numpy()
    assert np.abs(v - cpu.vertices).max() <= 1e-5 * np.abs(cpu.vertices).max()
    if basis == "fp32":
        v_ref, _, _ = decode_reference(full_model.shape_mean, full_model.shape_basis, full_model.tex_mean,
                                       full_model.tex_basis, coeffs)
        assert np.abs(v - v_ref).max() <= 1e-5 * np.abs(v_ref).max()
    c = gpu.colors.cpu().numpy()
    assert np.abs(c.astype(int) - cpu.colors.astype(int)).max() <= 1
    rec = gpu.records.cpu().numpy()
    assert np.array_equal(rec[..., :12].copy().view(np.float32), v)
    assert np.array_equal(rec[..., 12:], c)


def test_cuda_on_a_side_stream_and_poisoned_outputs(full_model):
    import torch

    d = Decoder(full_model, device="cuda")
    coeffs = torch.from_numpy(random_coeffs(33)).cuda()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        out = d.decode(coeffs, stream=s)
    s.synchronize()
    again = d.decode(coeffs)
    assert torch.equal(out.vertices, again.vertices) and torch.equal(out.records, again.records)
    assert torch.isfinite(out.vertices).all()


def test_cuda_non_finite_flag(full_model):
    import torch

    c = random_coeffs(4)
    c[3, 120] = np.nan
    with pytest.raises(InputError, match=r"coeffs\[3, 120\]"):
        Decoder(full_model, device="cuda").decode(torch.from_numpy(c).cuda())


def test_cuda_non_finite_outside_alpha_and_beta_is_ignored_and_not_blamed(full_model):
    # Rows wider than 198 (e.g. a network head with extra outputs): only alpha and beta
    # are read, so a NaN elsewhere is not an error, and the message names the read column.
    import torch

    c = np.concatenate([np.full((2, 3), np.nan, np.float32), random_coeffs(2)], axis=1)  # 3 unused leading columns
    dec = Decoder(full_model, device="cuda", shape_offset=3)
    out = dec.decode(torch.from_numpy(c).cuda())
    assert torch.isfinite(out.vertices).all()
    c[1, 3 + 150] = np.inf
    with pytest.raises(InputError, match=r"coeffs\[1, 153\]"):
        dec.decode(torch.from_numpy(c).cuda())
