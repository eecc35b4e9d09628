"""Bad input to the decode kernels: a typed error naming what was wrong, never a crash."""
from __future__ import annotations

import numpy as np
import pytest

from engine import _core
from engine.decode import Decoder
from engine.errors import InputError, UnavailableError
from tests.decode.models import random_coeffs, random_model

C = _core.core()
N = 40


@pytest.fixture(scope="module")
def m():
    return random_model(N)


def _args(m, coeffs=None, **over):
    a = dict(shape_mean=m.shape_mean, shape_basis=m.shape_basis, tex_mean=m.tex_mean, tex_basis=m.tex_basis,
             coeffs=random_coeffs(2) if coeffs is None else coeffs, shape_offset=0, tex_offset=99)
    a.update(over)
    return a


def _out(b=2):
    return np.empty((b, N, 3), np.float32)


@pytest.mark.parametrize(
    "override, words",
    [
        (dict(coeffs=random_coeffs(2).astype(np.float64)), "coeffs: expected float32"),
        (dict(coeffs=random_coeffs(2)[:, ::2]), "coeffs"),  # non-contiguous
        (dict(coeffs=np.empty((0, 198), np.float32)), "B >= 1"),
        (dict(coeffs=random_coeffs(2, width=150)), "coeff_stride"),
        (dict(shape_mean=np.zeros(3 * N + 1, np.float32)), "shape_mean: expected float32[3N] with N >= 1"),
        (dict(shape_mean=np.zeros(3 * N + 3, np.float32)), "shape_basis"),
        (dict(shape_mean=np.zeros(3 * N, np.float64)), "shape_mean: expected float32"),
        (dict(tex_mean=np.zeros(3 * N - 3, np.float32)), "tex_mean"),
        (dict(tex_basis=np.zeros((99, 3 * N), np.float16)), "same dtype"),
        (dict(shape_basis=np.asfortranarray(np.zeros((99, 3 * N), np.float32))), "not C-contiguous"),
        (dict(shape_basis=np.zeros((99, 3 * N), np.int32)), "float32 or float16"),
        (dict(tex_offset=150), "coeff_stride"),
        (dict(shape_offset=-1), "shape_offset"),
    ],
)
def test_binding_rejects_bad_arrays(m, override, words):
    with pytest.raises(InputError, match=words.replace("[", r"\[")):
        C.decode_cpu(**_args(m, **override), vertices=_out())


def test_wrong_output_shape_dtype_and_readonly(m):
    with pytest.raises(InputError, match=r"vertices: expected float32\[2, 40, 3\]"):
        C.decode_cpu(**_args(m), vertices=np.empty((2, N, 4), np.float32))
    with pytest.raises(InputError, match="colors: expected uint8"):
        C.decode_cpu(**_args(m), colors=np.empty((2, N, 3), np.int16))
    with pytest.raises(InputError, match="records"):
        C.decode_cpu(**_args(m), records=np.empty((2, N, 14), np.uint8))
    ro = _out()
    ro.flags.writeable = False
    with pytest.raises(InputError, match="writable"):
        C.decode_cpu(**_args(m), vertices=ro)
    with pytest.raises(InputError, match="at least one of"):
        C.decode_cpu(**_args(m))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("col", [0, 150])
def test_non_finite_coefficients_rejected_and_nothing_written(m, bad, col):
    coeffs = random_coeffs(3)
    coeffs[2, col] = bad
    v = np.full((3, N, 3), 7.0, np.float32)
    with pytest.raises(InputError, match=rf"coeffs\[2, {col}\]: expected a finite number"):
        C.decode_cpu(**_args(m, coeffs=coeffs), vertices=v)
    assert (v == 7.0).all()
    with pytest.raises(InputError, match="finite"):
        Decoder(m).decode(coeffs)


def test_unused_columns_may_hold_anything(m):
    # Only alpha and beta are read: a NaN in a column outside them is not an error.
    mm = random_model(N, ks=10, kt=10)
    coeffs = random_coeffs(2, width=30)
    coeffs[:, 25] = np.nan
    out = Decoder(mm).decode(coeffs)
    assert np.isfinite(out.vertices).all()


def test_decoder_input_errors(m):
    d = Decoder(m)
    with pytest.raises(InputError, match="floating-point"):
        d.decode(np.zeros((2, 198), np.int64))
    with pytest.raises(InputError, match=r"\[B >= 1, 198\]"):
        d.decode(np.zeros((0, 198), np.float32))
    with pytest.raises(InputError, match=r"\[B >= 1, 198\]"):
        d.decode(np.zeros((2, 197), np.float32))
    with pytest.raises(InputError, match="outputs"):
        d.decode(random_coeffs(1), outputs=("mesh",))
    # float64 and 1-D input are accepted (converted once) and give the same result.
    c = random_coeffs(1)
    assert np.array_equal(d.decode(c[0].astype(np.float64)).vertices, d.decode(c).vertices)


def test_mismatched_model_parts():
    m = random_model(N)
    m.tex_mean = m.tex_mean[:-3]
    with pytest.raises(InputError, match="model.tex_mean"):
        Decoder(m)
    with pytest.raises(InputError, match="basis_dtype"):
        Decoder(random_model(N), basis_dtype="int8")


def test_cuda_unavailable_is_a_clear_error(m):
    if _core.has_cuda():
        pytest.skip("a GPU is present")
    with pytest.raises(UnavailableError, match="GPU|CUDA"):
        Decoder(m, device="cuda")
    with pytest.raises(UnavailableError):
        C.decode_cuda(0, 0, 0, 0, 1, N, 99, 99, 0, 1, 198, 0, 99, 0, 0, 0, 0, 0)


def test_float16_bases_refuse_values_float16_cannot_hold():
    """A basis value beyond float16's range would become infinity in fp16 storage and every
    decoded vertex NaN: refused by name, as the C++ Decoder refuses it."""
    from engine.decode import Decoder
    from engine.morphable import MorphableModel, synthetic_model

    m = synthetic_model()
    tex = np.array(m.tex_basis, np.float32)
    tex[3, 17] = 7e4
    bad = MorphableModel(m.shape_mean, m.shape_basis, m.shape_sigma, m.tex_mean, tex, m.tex_sigma, m.faces,
                         metadata={**m.metadata, "name": "hot-model"})
    with pytest.raises(InputError, match=r"hot-model: tex_basis: .* found 70000 at \[3, 17\]"):
        Decoder(bad, basis_dtype="fp16")
    Decoder(bad, basis_dtype="fp32")  # float32 holds it
