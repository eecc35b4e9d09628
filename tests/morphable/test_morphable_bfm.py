"""BFM 2009 + mod_struct -> the release's trimmed model, checked against a direct transcription
of the release's trimBaselFace.py (tests/morphable/bfm_files.py), in every container."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from bfm_files import (assert_model_matches, bfm2009_arrays, expected_bfm2009, mod_struct_arrays,
                       write_h5, write_mat_v5)
from engine.errors import ModelFileError
from engine.morphable import load_bfm2009, load_model, write_cache

N_BFM, K, N_KEPT, N_FACES = 40, 120, 25, 30


@pytest.fixture
def small(tmp_path):
    bfm = bfm2009_arrays(N_BFM, K, seed=1)
    ms = mod_struct_arrays(N_BFM, N_KEPT, N_FACES, seed=2)
    return (bfm, ms, write_mat_v5(tmp_path / "01_MorphableModel.mat", bfm),
            write_mat_v5(tmp_path / "mod_struct_expr.mat", ms, struct="mod_struct"))


def test_small_bfm2009_trims_like_the_release(small):
    bfm, ms, bfm_path, ms_path = small
    model = load_bfm2009(bfm_path, ms_path)
    assert_model_matches(model, expected_bfm2009(bfm, ms))
    assert (model.num_vertices, model.num_faces, model.shape_components, model.tex_components) == (N_KEPT, N_FACES, 99, 99)
    assert model.synthetic is False and model.metadata["synthetic"] is False
    assert "01_MorphableModel.mat" in model.metadata["source"] and "mod_struct_expr.mat" in model.metadata["source"]
    # load_model with mod_struct_mat= takes the same path.
    again = load_model(bfm_path, mod_struct_mat=ms_path)
    np.testing.assert_array_equal(again.shape_basis, model.shape_basis)


def test_decoding_the_trimmed_model_equals_the_release_formula(small):
    """S = shapeMU + shapePC(:, 1:99) * (alpha .* shapeEV) in the release's units, against
    mean + alpha @ folded basis."""
    bfm, ms, bfm_path, ms_path = small
    model = load_bfm2009(bfm_path, ms_path)
    alpha = np.random.default_rng(3).uniform(-3, 3, 99)
    exp = expected_bfm2009(bfm, ms)
    release = exp["shape_mean"] + (exp["shape_basis"].T / exp["shape_sigma"]) @ (alpha * exp["shape_sigma"])
    ours = model.shape_mean.astype(np.float64) + alpha @ model.shape_basis.astype(np.float64)
    np.testing.assert_allclose(ours, release, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("container", ["h5", "matlab73"])
def test_bfm2009_in_hdf5_containers_gives_the_same_model(small, tmp_path, container):
    bfm, ms, bfm_path, ms_path = small
    h5 = write_h5(tmp_path / "bfm.mat", bfm, matlab73=container == "matlab73")
    ms73 = write_h5(tmp_path / "ms73.mat", ms, matlab73=True, group="mod_struct")
    assert_model_matches(load_bfm2009(h5, ms73), expected_bfm2009(bfm, ms))


def test_real_mod_struct_trims_a_full_size_bfm(shared_dir, tmp_path):
    """The real mod_struct_expr.mat on a synthetic 53,490-vertex BFM 2009 (100 components
    to keep the file at 128 MB; the slow test uses all 199)."""
    ms_path = shared_dir / "mod_struct_expr.mat"
    bfm = bfm2009_arrays(53_490, 100, seed=5, n_triangles=1000)
    bfm_path = write_mat_v5(tmp_path / "01_MorphableModel.mat", bfm)
    model = load_model(bfm_path, mod_struct_mat=ms_path)
    assert model.num_vertices == 46_990 and model.num_faces == 93_323
    assert model.shape_basis.shape == (99, 3 * 46_990) and model.tex_basis.shape == (99, 3 * 46_990)
    assert model.faces.min() >= 0 and model.faces.max() < 46_990
    assert model.landmarks.shape == (68,) and model.landmarks.max() < 46_990
    raw = scipy.io.loadmat(ms_path)["mod_struct"][0, 0]
    ms = {k: raw[k] for k in ("tx", "vertex_indices", "faces", "innerLandmarkIndex", "outerLandmarkIndex")}
    assert_model_matches(model, expected_bfm2009(bfm, ms))
    # The release's two landmark sets differ on the 17 jaw points, and only there (its README).
    differ = np.flatnonzero(model.landmarks != model.landmarks_outer)
    np.testing.assert_array_equal(differ, np.arange(17))


@pytest.mark.slow
def test_full_size_bfm2009_with_199_components_to_cache(shared_dir, tmp_path):
    """The real file's sizes (160470 x 199 float32 per basis, 128 MB each), trimmed, cached,
    memory-mapped back."""
    ms_path = shared_dir / "mod_struct_expr.mat"
    bfm = bfm2009_arrays(53_490, 199, seed=6, n_triangles=106_466)
    bfm_path = write_mat_v5(tmp_path / "01_MorphableModel.mat", bfm)
    model = load_bfm2009(bfm_path, ms_path)
    raw = scipy.io.loadmat(ms_path)["mod_struct"][0, 0]
    ms = {k: raw[k] for k in ("tx", "vertex_indices", "faces", "innerLandmarkIndex")}
    assert_model_matches(model, expected_bfm2009(bfm, ms))
    write_cache(model, tmp_path / "bfm.e3dmm")
    cached = load_model(tmp_path / "bfm.e3dmm")
    for name in ("shape_mean", "shape_basis", "shape_sigma", "tex_mean", "tex_basis", "tex_sigma", "faces", "landmarks"):
        np.testing.assert_array_equal(getattr(cached, name), getattr(model, name), err_msg=name)


# --- malformed inputs: a ModelFileError naming the file, the field, expected and found ------

def _drop(d, key):
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize("breakage, words", [
    (lambda b, m: (_drop(b, "shapePC"), m), ["01_MorphableModel.mat", "shapePC"]),
    (lambda b, m: ({**b, "shapePC": b["shapePC"][:-3]}, m), ["shapePC", "[120, >= 99]", "float32[117, 120]"]),
    (lambda b, m: ({**b, "texPC": b["texPC"][:, :50]}, m), ["texPC", ">= 99", "float32[120, 50]"]),
    (lambda b, m: ({**b, "shapeEV": b["shapeEV"][:10]}, m), ["shapeEV", "120", "float32[10, 1]"]),
    (lambda b, m: ({**b, "shapeMU": b["shapeMU"][:-1]}, m), ["shapeMU", "3N", "float32[119, 1]"]),
    (lambda b, m: (b, {**m, "vertex_indices": m["vertex_indices"] * 0}), ["mod_struct_expr.mat", "vertex_indices", "[1, 40]", "index 0"]),
    (lambda b, m: (b, {**m, "faces": m["faces"] + 100}), ["mod_struct_expr.mat", "faces", "[1, 25]"]),
    (lambda b, m: (b, {**m, "faces": m["faces"][:, :2]}), ["faces", "[any, 3]", "uint16[30, 2]"]),
    (lambda b, m: (b, _drop(m, "tx")), ["mod_struct_expr.mat", "tx"]),
])
def test_malformed_bfm2009_names_file_field_expected_found(tmp_path, breakage, words):
    bfm, ms = breakage(bfm2009_arrays(N_BFM, K, seed=1), mod_struct_arrays(N_BFM, N_KEPT, N_FACES, seed=2))
    bfm_path = write_mat_v5(tmp_path / "01_MorphableModel.mat", bfm)
    ms_path = write_mat_v5(tmp_path / "mod_struct_expr.mat", ms, struct="mod_struct")
    with pytest.raises(ModelFileError) as e:
        load_bfm2009(bfm_path, ms_path)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_unreadable_and_missing_files(tmp_path, small):
    _, _, bfm_path, ms_path = small
    junk = tmp_path / "junk.mat"
    junk.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(ModelFileError, match="junk.mat"):
        load_bfm2009(junk, ms_path)
    with pytest.raises(ModelFileError, match="nothing at this path"):
        load_bfm2009(tmp_path / "absent.mat", ms_path)
    with pytest.raises(ModelFileError, match="nothing at this path"):
        load_model(tmp_path / "absent.h5")


def test_untrimmed_bfm_without_mod_struct_says_how_to_trim(small):
    _, _, bfm_path, _ = small
    with pytest.raises(ModelFileError, match="mod_struct_mat"):
        load_model(bfm_path)
