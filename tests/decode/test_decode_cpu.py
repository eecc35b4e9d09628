"""The CPU decode kernel (and the CUDA per-thread body run on the host) against
the float64 numpy reference."""
from __future__ import annotations

import numpy as np
import pytest

from engine import _core
from engine._reference import decode_reference
from engine.decode import Decoder, fp16_error_bound
from engine.mesh_io import VERTEX_DTYPE
from tests.decode.models import random_coeffs, random_model

C = _core.core()


@pytest.fixture(scope="module")
def model():
    # 1237 vertices: 3N = 3711 is not a multiple of the kernel's 384-column block or of 16.
    return random_model(1237)


@pytest.fixture(scope="module")
def full_model():
    # Full trimmed-BFM size: 46,990 vertices, 99 + 99 components.
    return random_model(46990, seed=3)


def _check_colors(colors, texture):
    """Colours equal the reference except where the float lies within rounding of an integer."""
    ref = np.trunc(np.clip(texture, 0, 255)).astype(np.uint8)
    near = np.abs(texture - np.round(texture)) < 1e-3
    mismatch = (colors != ref) & ~near
    assert not mismatch.any(), f"{mismatch.sum()} colour values differ from the reference"
    assert (np.abs(colors.astype(int) - ref.astype(int)) <= 1).all()


def _check_fp32(model, coeffs, out):
    v_ref, t_ref, _ = decode_reference(model.shape_mean, model.shape_basis, model.tex_mean, model.tex_basis, coeffs)
    scale = np.abs(v_ref).max()
    assert np.abs(out.vertices - v_ref).max() <= 1e-5 * scale
    _check_colors(out.colors, t_ref)
    # The interleaved records carry exactly the same bits.
    assert np.array_equal(out.records["x"], out.vertices[..., 0])
    assert np.array_equal(out.records["y"], out.vertices[..., 1])
    assert np.array_equal(out.records["z"], out.vertices[..., 2])
    assert np.array_equal(out.records["red"], out.colors[..., 0])
    assert np.array_equal(out.records["green"], out.colors[..., 1])
    assert np.array_equal(out.records["blue"], out.colors[..., 2])


@pytest.mark.parametrize("b", [1, 2, 7, 8, 9, 17, 64])
def test_cpu_fp32_matches_reference(model, b):
    coeffs = random_coeffs(b, seed=b)
    _check_fp32(model, coeffs, Decoder(model).decode(coeffs))


@pytest.mark.parametrize("b", [1, 9])
def test_cpu_fp32_full_size(full_model, b):
    coeffs = random_coeffs(b, seed=10 + b)
    _check_fp32(full_model, coeffs, Decoder(full_model).decode(coeffs))


@pytest.mark.parametrize("b", [1, 5, 8, 13])
def test_cpu_fp16_within_documented_bound(model, b):
    coeffs = random_coeffs(b, seed=20 + b)
    out = Decoder(model, basis_dtype="fp16").decode(coeffs)
    v_ref, t_ref, c_ref = decode_reference(model.shape_mean, model.shape_basis, model.tex_mean, model.tex_basis,
                                           coeffs)
    s_bound, t_bound = fp16_error_bound(model, coeffs)
    err_v = np.abs(out.vertices - v_ref).max(axis=(1, 2))
    assert (err_v <= s_bound + 1e-5 * np.abs(v_ref).max()).all()
    # Colours: truncation can move a value by one level more than the texture error.
    err_c = np.abs(out.colors.astype(int) - c_ref.astype(int)).max(axis=(1, 2))
    assert (err_c <= np.ceil(t_bound) + 1).all()
    assert err_v.max() > 0  # the fp16 path really used rounded bases


@pytest.mark.parametrize("b", [1, 8, 11])  # the streaming path, one batch tile, several tiles
def test_fp16_bases_give_exactly_the_fp32_result_of_rounded_bases(model, b):
    # Same kernel, same accumulation order: decoding fp16 bases equals decoding their
    # float32 widening. This pins every float16 load path bit for bit.
    coeffs = random_coeffs(b, seed=5)
    rounded = random_model(1237)
    rounded.shape_basis = model.shape_basis.astype(np.float16).astype(np.float32)
    rounded.tex_basis = model.tex_basis.astype(np.float16).astype(np.float32)
    rounded.shape_mean, rounded.tex_mean, rounded.faces = model.shape_mean, model.tex_mean, model.faces
    a = Decoder(model, basis_dtype="fp16").decode(coeffs)
    b = Decoder(rounded).decode(coeffs)
    assert np.array_equal(a.records, b.records)


@pytest.mark.parametrize("basis", ["fp32", "fp16"])
def test_every_output_element_is_written(model, basis):
    b, n = 10, 1237
    coeffs = random_coeffs(b, seed=7)
    m = model
    dt = np.float32 if basis == "fp32" else np.float16
    args = (m.shape_mean, m.shape_basis.astype(dt), m.tex_mean, m.tex_basis.astype(dt), coeffs, 0, 99)
    clean = Decoder(m, basis_dtype=basis).decode(coeffs)
    for poison_f, poison_u in ((np.nan, 0xAB), (1e30, 0x00)):
        v = np.full((b, n, 3), poison_f, np.float32)
        c = np.full((b, n, 3), poison_u, np.uint8)
        r = np.frombuffer(np.full(b * n * 15, poison_u, np.uint8).tobytes(), VERTEX_DTYPE).reshape(b, n).copy()
        C.decode_cpu(*args, vertices=v, colors=c, records=r)
        assert np.array_equal(v, clean.vertices)
        assert np.array_equal(c, clean.colors)
        assert r.tobytes() == clean.records.tobytes()


def test_thread_count_does_not_change_results(model):
    coeffs = random_coeffs(19, seed=8)
    one = Decoder(model, num_threads=1).decode(coeffs)
    two = Decoder(model, num_threads=2).decode(coeffs)
    assert one.records.tobytes() == two.records.tobytes()


@pytest.mark.parametrize("basis", ["fp32", "fp16"])
def test_single_row_path_equals_the_batched_path_bit_for_bit(full_model, basis):
    # B = 1 streams wide blocks whose width depends on the thread count (1, 2, 3 and 7
    # threads cut 140,970 columns differently); the batched path is register-blocked.
    # Both add the products in the same k order, so every result is the same bits.
    coeffs = random_coeffs(2, seed=11)
    batched = Decoder(full_model, basis_dtype=basis).decode(coeffs).records[0].tobytes()
    for nt in (1, 2, 3, 7):
        single = Decoder(full_model, basis_dtype=basis, num_threads=nt).decode(coeffs[:1]).records[0].tobytes()
        assert single == batched, nt


def test_outputs_subset(model):
    coeffs = random_coeffs(3)
    out = Decoder(model).decode(coeffs, outputs=("colors",))
    assert out.vertices is None and out.records is None and out.colors.shape == (3, 1237, 3)


def test_colour_clamps_hit_both_ends(model):
    coeffs = random_coeffs(8) * 3
    colors = Decoder(model).decode(coeffs).colors
    assert colors.min() == 0 and colors.max() == 255


@pytest.mark.parametrize("b", [1, 3, 4, 5, 16, 17, 33])
@pytest.mark.parametrize("basis", ["fp32", "fp16"])
def test_cuda_thread_body_on_host_matches_reference(b, basis):
    # The CUDA kernel's per-thread body, run over the whole index space on the CPU with
    # the tile the launch picks (1 for B = 1, 4 up to B = 4, else 16, with remainders),
    # every vertex, both basis types.
    m = random_model(301, seed=b)
    coeffs = random_coeffs(b, seed=30 + b)
    dt = np.float32 if basis == "fp32" else np.float16
    n = 301
    v = np.full((b, n, 3), np.nan, np.float32)
    c = np.full((b, n, 3), 0xAB, np.uint8)
    r = np.zeros((b, n), VERTEX_DTYPE)
    r.view(np.uint8)[:] = 0xCD
    C.decode_cuda_body_on_host(m.shape_mean, m.shape_basis.astype(dt), m.tex_mean, m.tex_basis.astype(dt), coeffs,
                               0, 99, vertices=v, colors=c, records=r)
    cpu = Decoder(m, basis_dtype=basis).decode(coeffs)
    assert np.abs(v - cpu.vertices).max() <= 1e-5 * np.abs(cpu.vertices).max()
    v_ref, t_ref, _ = decode_reference(m.shape_mean, m.shape_basis.astype(dt), m.tex_mean, m.tex_basis.astype(dt),
                                       coeffs)
    assert np.abs(v - v_ref).max() <= 1e-5 * np.abs(v_ref).max()
    _check_colors(c, t_ref)
    assert np.array_equal(r["x"], v[..., 0]) and np.array_equal(r["z"], v[..., 2])
    assert np.array_equal(r["red"], c[..., 0]) and np.array_equal(r["blue"], c[..., 2])


def test_custom_coefficient_layout():
    # Coefficient rows wider than Ks + Kt, with texture first: offsets are honoured.
    m = random_model(50, ks=7, kt=5)
    coeffs = random_coeffs(4, width=20)
    out = Decoder(m, shape_offset=8, tex_offset=1).decode(coeffs)
    v_ref, t_ref, _ = decode_reference(m.shape_mean, m.shape_basis, m.tex_mean, m.tex_basis, coeffs,
                                       shape_offset=8, tex_offset=1)
    assert np.abs(out.vertices - v_ref).max() <= 1e-5 * np.abs(v_ref).max()
    _check_colors(out.colors, t_ref)


def test_default_texture_offset_follows_the_shape_offset():
    # alpha at columns 5..11, beta right after it (12..16) unless told otherwise.
    m = random_model(40, ks=7, kt=5)
    coeffs = random_coeffs(3, width=17)
    d = Decoder(m, shape_offset=5)
    assert d.tex_offset == 12 and d.coeff_width == 17
    out = d.decode(coeffs)
    v_ref, t_ref, _ = decode_reference(m.shape_mean, m.shape_basis, m.tex_mean, m.tex_basis, coeffs,
                                       shape_offset=5, tex_offset=12)
    assert np.abs(out.vertices - v_ref).max() <= 1e-5 * np.abs(v_ref).max()
    _check_colors(out.colors, t_ref)
