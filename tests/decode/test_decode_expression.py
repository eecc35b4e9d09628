"""The decode kernels' optional expression term (issue 9 section 3): S = shape_mean + alpha @
shape_basis + expression_mean + e @ expression_basis, checked against the float64 reference
(engine._reference) on the CPU kernel (this machine's ISA here; every ISA in
test_cpu_kernel_paths.py), the CUDA kernel's per-thread body run on the host, the real CUDA
launch (marker `cuda`), and the C++ Decoder through a cache; bad expression input is refused
before anything is written."""
from __future__ import annotations

import numpy as np
import pytest

from engine import _core
from engine._reference import decode_reference
from engine.decode import Decoder, fp16_error_bound
from engine.errors import InputError
from tests.decode.models import random_coeffs, random_model

N, KE = 2_011, 29  # not a multiple of any block or vector width


@pytest.fixture(scope="module")
def model():
    return random_model(N, seed=11, ke=KE)


def _expr(b, seed=0):
    return np.random.default_rng(seed).normal(0.0, 1.0, (b, KE)).astype(np.float32)


def _reference(m, c, e, dt=np.float32):
    return decode_reference(m.shape_mean, m.shape_basis.astype(dt), m.tex_mean, m.tex_basis.astype(dt), c,
                            expr_mean=m.expression_mean, expr_basis=m.expression_basis.astype(dt), expression=e)


@pytest.mark.parametrize("b", [1, 2, 8, 17])
@pytest.mark.parametrize("basis", ["fp32", "fp16"])
def test_cpu_kernel_with_expression_matches_the_reference(model, b, basis):
    c, e = random_coeffs(b, seed=b), _expr(b, seed=b)
    dt = np.float32 if basis == "fp32" else np.float16
    out = Decoder(model, basis_dtype=basis).decode(c, expression=e)
    v, t, colors = _reference(model, c, e, dt)
    assert np.abs(out.vertices - v).max() <= 1e-5 * np.abs(v).max()
    # The texture has no expression term: colours are those of a decode without it.
    np.testing.assert_array_equal(out.colors, Decoder(model, basis_dtype=basis).decode(c).colors)
    # The PLY records carry the same vertices.
    np.testing.assert_array_equal(np.stack([out.records[k] for k in "xyz"], -1), out.vertices)


def test_expression_term_moves_the_shape_by_exactly_its_value(model):
    c, e = random_coeffs(3, seed=1), _expr(3, seed=2)
    dec = Decoder(model)
    moved = dec.decode(c, expression=e).vertices.astype(np.float64)
    plain = dec.decode(c).vertices.astype(np.float64)
    term = (model.expression_mean.astype(np.float64) + e.astype(np.float64) @ model.expression_basis).reshape(3, -1, 3)
    assert np.abs(moved - plain - term).max() < 1e-3  # float32 sums of ~100 mm values
    # Zero weights still add the expression mean (the release adds expMU whenever it uses the basis).
    zero = dec.decode(c, expression=np.zeros_like(e)).vertices
    assert np.abs(zero - plain - model.expression_mean.reshape(1, -1, 3)).max() < 1e-4


@pytest.mark.parametrize("b", [1, 4, 5, 16, 37])
def test_cuda_body_on_host_with_expression(model, b):
    """The CUDA kernel's per-thread body (global-memory expression weights, every batch tile)."""
    c, e = random_coeffs(b, seed=3 + b), _expr(b, seed=b)
    v = np.empty((b, N, 3), np.float32)
    col = np.empty((b, N, 3), np.uint8)
    _core.core().decode_cuda_body_on_host(model.shape_mean, model.shape_basis, model.tex_mean, model.tex_basis, c,
                                          0, 99, vertices=v, colors=col, expr_mean=model.expression_mean,
                                          expr_basis=model.expression_basis, expression=e)
    ref_v, _, ref_c = _reference(model, c, e)
    assert np.abs(v - ref_v).max() <= 1e-5 * np.abs(ref_v).max()
    cpu = Decoder(model).decode(c, expression=e)
    assert np.abs(v - cpu.vertices).max() <= 1e-5 * np.abs(ref_v).max()
    np.testing.assert_array_equal(col, cpu.colors)


def test_fp16_bound_covers_the_expression_terms(model):
    c, e = random_coeffs(4, seed=7), _expr(4, seed=8)
    got = Decoder(model, basis_dtype="fp16").decode(c, expression=e).vertices
    v, _, _ = _reference(model, c, e)  # float32 bases: the exact values
    bound, _ = fp16_error_bound(model, c, expression=e)
    err = np.abs(got - v).reshape(4, -1).max(axis=1)
    assert (err <= bound + 1e-3).all(), (err, bound)


def test_bad_expression_input_is_refused_by_name(model):
    dec = Decoder(model)
    c = random_coeffs(2, seed=1)
    with pytest.raises(InputError, match=r"expression: expected weights \[2, 29\]"):
        dec.decode(c, expression=_expr(3))
    with pytest.raises(InputError, match="expression: expected floating-point"):
        dec.decode(c, expression=np.zeros((2, KE), np.int32))
    e = _expr(2)
    e[1, 5] = np.nan
    out = np.full((2, N, 3), 7.0, np.float32)
    with pytest.raises(InputError, match=r"expression\[1, 5\]: expected a finite number, found nan"):
        _core.core().decode_cpu(model.shape_mean, model.shape_basis, model.tex_mean, model.tex_basis, c, 0, 99,
                                vertices=out, expr_mean=model.expression_mean, expr_basis=model.expression_basis,
                                expression=e)
    assert (out == 7.0).all()  # nothing written
    with pytest.raises(InputError, match="expr_mean/expr_basis/expression: expected all three"):
        _core.core().decode_cpu(model.shape_mean, model.shape_basis, model.tex_mean, model.tex_basis, c, 0, 99,
                                vertices=out, expression=_expr(2))
    with pytest.raises(InputError, match="expr_basis"):
        _core.core().decode_cpu(model.shape_mean, model.shape_basis, model.tex_mean, model.tex_basis, c, 0, 99,
                                vertices=out, expr_mean=model.expression_mean,
                                expr_basis=model.expression_basis[:, :-3].copy(), expression=_expr(2))
    # A model without an expression basis has no expression term to add.
    plain = random_model(50, seed=1)
    with pytest.raises(InputError, match="no expression basis"):
        Decoder(plain).decode(random_coeffs(1), expression=np.zeros((1, KE), np.float32))


def test_cpp_decoder_of_a_cache_with_expression(tmp_path):
    """The C++ reader keeps the expression arrays; its float16 copy includes them."""
    from engine.morphable import MorphableModel, write_cache
    from tests.decode.models import random_model as rm

    m = rm(300, ks=7, kt=5, seed=3, ke=4)
    model = MorphableModel(shape_mean=m.shape_mean, shape_basis=m.shape_basis, shape_sigma=np.ones(7, np.float32),
                           tex_mean=m.tex_mean, tex_basis=m.tex_basis, tex_sigma=np.ones(5, np.float32),
                           faces=m.faces, expression_mean=m.expression_mean, expression_basis=m.expression_basis,
                           expression_sigma=m.expression_sigma)
    path = tmp_path / "m.e3dmm"
    write_cache(model, path)
    summary = _core.core().load_cache_summary(str(path))
    assert summary["expression_components"] == 4


@pytest.mark.cuda
@pytest.mark.skipif(not _core.has_cuda(), reason="needs an NVIDIA GPU and the CUDA build of engine._C")
@pytest.mark.parametrize("b", [1, 4, 16, 33])
@pytest.mark.parametrize("basis", ["fp32", "fp16"])
def test_cuda_launch_with_expression(model, b, basis):
    import torch

    c, e = random_coeffs(b, seed=b), _expr(b, seed=b)
    gpu = Decoder(model, device="cuda", basis_dtype=basis).decode(torch.from_numpy(c).cuda(),
                                                                   expression=torch.from_numpy(e).cuda())
    cpu = Decoder(model, basis_dtype=basis).decode(c, expression=e)
    v = gpu.vertices.cpu().numpy()
    assert np.abs(v - cpu.vertices).max() <= 1e-5 * np.abs(cpu.vertices).max()
    np.testing.assert_array_equal(gpu.colors.cpu().numpy(), cpu.colors)
    e[-1, 3] = np.inf
    with pytest.raises(InputError, match=r"expression\[.*, 3\]: expected a finite number"):
        Decoder(model, device="cuda", basis_dtype=basis).decode(torch.from_numpy(c).cuda(),
                                                                expression=torch.from_numpy(e).cuda())
