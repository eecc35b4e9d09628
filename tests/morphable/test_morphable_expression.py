"""The optional expression basis (issue 9 section 3).

- The release's trimmed files (BaselFaceModel_mod .mat/.h5) hold it as expMU, expPC, expEV
  (trimBaselFace.py's output): read in every container, with outerLandmarkIndex.
- 3DDFA's Model_Expression.mat (mu_exp [3M, 1], w_exp [3M, 29]) comes from its authors, like the
  Basel Face Model, and is not here: a FULL-SIZE STAND-IN of the same structure (M = 53,215
  3DDFA vertices, random values) is mapped with the release's real mod_struct_expr.mat and
  compared with a line-by-line transcription of trimBaselFace.py, the release's own rule.
- Bad files: a kept vertex without an expression vertex (-1), expEV of another length, mu_exp
  not 3M long, vertex numbers beyond the file, non-finite values, a model of another size."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from bfm_files import assert_model_matches, expected_trimmed, trimmed_arrays, write_h5, write_mat_v5
from engine.decode import Decoder
from engine.errors import ModelFileError
from engine.morphable import load_model, synthetic_model, write_cache
from engine.morphable.expression import add_expression, load_expression

M_3DDFA = 53_215  # vertices of 3DDFA's expression model (vertex_expr_ref's largest value)


@pytest.mark.parametrize("container", ["mat-struct", "h5", "h5-matlab73"])
def test_trimmed_files_with_the_expression_basis(tmp_path, container):
    fields = trimmed_arrays(40, 99, seed=3, n_expression=29)
    if container == "mat-struct":
        path = write_mat_v5(tmp_path / "BaselFaceModel_mod.mat", fields, struct="BFM")
    elif container == "h5":
        path = write_h5(tmp_path / "BaselFaceModel_mod.h5", fields)
    else:
        path = write_h5(tmp_path / "BaselFaceModel_mod.mat", fields, matlab73=True)
    model = load_model(path)
    assert model.expression_components == 29 and model.has_expression
    assert_model_matches(model, expected_trimmed(fields))


@pytest.mark.parametrize("drop", ["expMU", "expEV"])
def test_trimmed_file_with_part_of_the_basis(tmp_path, drop):
    fields = trimmed_arrays(40, 99, seed=4, n_expression=5)
    del fields[drop]
    with pytest.raises(ModelFileError, match=f"{drop}: expected it beside"):
        load_model(write_mat_v5(tmp_path / "m.mat", fields, struct="BFM"))


def _release_transcription(mod_struct, mu_exp, w_exp):
    """trimBaselFace.py's expression lines, as released (Python 2 list comprehensions), on
    scipy.io.loadmat(..., squeeze_me=True, struct_as_record=False) views."""
    vertex_expr_ref = mod_struct.vertex_expr_ref
    vertex_indices_exp = [vertex_expr_ref[i - 1] for i in mod_struct.vertex_indices]
    numV_new = mod_struct.vertex_indices.shape[0]
    vertex_indices_exp3 = [None] * (numV_new * 3)
    vertex_indices_exp3[0::3] = [3 * (i - 1) for i in vertex_indices_exp]
    vertex_indices_exp3[1::3] = [3 * (i - 1) + 1 for i in vertex_indices_exp]
    vertex_indices_exp3[2::3] = [3 * (i - 1) + 2 for i in vertex_indices_exp]
    vertex_indices_exp3 = np.array(vertex_indices_exp3)
    expMU = mu_exp[vertex_indices_exp3] / 1000
    expEV = mod_struct.expEV
    expPC = w_exp[vertex_indices_exp3, :] / 1000
    return expMU, expPC, expEV


def test_full_size_stand_in_mapped_by_the_real_mod_struct(shared_dir, tmp_path):
    """A STAND-IN for 3DDFA's Model_Expression.mat (the real one comes from its authors): its
    structure and sizes, random values of its units (micrometres)."""
    ms_path = shared_dir / "mod_struct_expr.mat"
    rng = np.random.default_rng(5)
    mu_exp = (rng.standard_normal((3 * M_3DDFA, 1)) * 2000.0).astype(np.float32)
    w_exp = (rng.standard_normal((3 * M_3DDFA, 29)) * 1000.0).astype(np.float32)
    expr_path = write_mat_v5(tmp_path / "Model_Expression.mat", {"mu_exp": mu_exp, "w_exp": w_exp})
    base = synthetic_model(0)  # 46,990 vertices, the trimmed model's size
    model = add_expression(base.replace(expression_mean=None, expression_basis=None, expression_sigma=None),
                           expr_path, ms_path)
    ms = scipy.io.loadmat(ms_path, squeeze_me=True, struct_as_record=False)["mod_struct"]
    exp_mu, exp_pc, exp_ev = _release_transcription(ms, mu_exp.ravel(), w_exp)
    np.testing.assert_allclose(model.expression_mean, exp_mu, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.expression_sigma, exp_ev, rtol=1e-6)
    np.testing.assert_allclose(model.expression_basis, (exp_pc * exp_ev).T, rtol=1e-5, atol=1e-5)
    assert "Model_Expression.mat (sha256 " in model.metadata["expression"]
    # The cache keeps it, and the decode's expression term is the release's getShape2 term.
    write_cache(model, tmp_path / "m.e3dmm")
    cached = load_model(tmp_path / "m.e3dmm")
    np.testing.assert_array_equal(cached.expression_basis, model.expression_basis)
    e = rng.normal(0, 1, (1, 29)).astype(np.float32)
    c = np.zeros((1, 198), np.float32)
    v = Decoder(cached).decode(c, expression=e).vertices[0].astype(np.float64)
    release = (cached.shape_mean + exp_mu + exp_pc @ (e[0] * exp_ev)).reshape(-1, 3)
    assert np.abs(v - release).max() < 1e-3


# --- small files of the same structure, broken one way each -------------------------------

def _small(tmp_path, n_bfm=12, kept=(3, 7, 1, 9), m=10, ke=4, seed=0, **change):
    rng = np.random.default_rng(seed)
    ref = rng.permutation(m)[:n_bfm] + 1 if n_bfm <= m else np.r_[rng.permutation(m) + 1, -np.ones(n_bfm - m)]
    ms = {"vertex_indices": np.array(kept, np.uint16)[None, :], "vertex_expr_ref": ref.astype(np.int32)[:, None],
          "expEV": np.linspace(2.0, 0.5, ke)[:, None]}
    ex = {"mu_exp": rng.standard_normal((3 * m, 1)), "w_exp": rng.standard_normal((3 * m, ke))}
    for k, v in change.items():
        (ms if k in ms else ex)[k] = v
    return (write_mat_v5(tmp_path / "Model_Expression.mat", ex),
            write_mat_v5(tmp_path / "mod_struct_expr.mat", ms, struct="mod_struct"), len(kept))


def test_small_mapping_follows_vertex_expr_ref(tmp_path):
    e_path, ms_path, n = _small(tmp_path)
    got = load_expression(e_path, ms_path, n)
    ex = scipy.io.loadmat(e_path)
    ms = scipy.io.loadmat(ms_path)["mod_struct"][0, 0]
    j = ms["vertex_expr_ref"].ravel()[ms["vertex_indices"].ravel().astype(int) - 1]
    rows = (3 * (j[:, None] - 1) + np.arange(3)).ravel()
    np.testing.assert_allclose(got["expression_mean"], ex["mu_exp"].ravel()[rows] / 1000, rtol=1e-6)
    np.testing.assert_allclose(got["expression_basis"], (ex["w_exp"][rows] / 1000 * ms["expEV"].ravel()).T,
                               rtol=1e-6)


@pytest.mark.parametrize("case, words", [
    (dict(n_bfm=14, kept=(3, 13, 1)), ["vertex_expr_ref", "found -1 (none) for kept vertex 1", "second-to-last"]),
    (dict(expEV=np.ones((3, 1))), ["expEV", "expected 4 values", "found 3"]),
    (dict(mu_exp=np.zeros((29, 1))), ["mu_exp", "3M values", "found 29"]),
    (dict(w_exp=np.zeros((30, 4)) + np.nan), ["w_exp", "finite"]),
    (dict(vertex_expr_ref=np.full((12, 1), 11, np.int32)), ["vertex_expr_ref", "in [1, 10]", "found 11"]),
    (dict(kept=(3, 99)), ["vertex_indices", "index 99"]),
])
def test_bad_expression_files_name_file_and_field(tmp_path, case, words):
    e_path, ms_path, n = _small(tmp_path, **case)
    with pytest.raises(ModelFileError) as err:
        load_expression(e_path, ms_path, n)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_a_model_of_another_size_is_refused(tmp_path):
    e_path, ms_path, n = _small(tmp_path)
    with pytest.raises(ModelFileError, match=r"vertex_indices: expected 5 kept vertices \(the model's\), found 4"):
        load_expression(e_path, ms_path, 5)
