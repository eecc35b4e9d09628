"""The release's already-trimmed BaselFaceModel_mod in its containers: the v5 .mat (struct BFM,
as trimBaselFace.py writes it), top-level fields, the h5py .h5 and MATLAB v7.3 (transposed)."""
from __future__ import annotations

import numpy as np
import pytest

from bfm_files import assert_model_matches, expected_trimmed, trimmed_arrays, write_h5, write_mat_v5
from engine.errors import ModelFileError
from engine.morphable import load_model, load_trimmed

N, K = 30, 99


@pytest.fixture
def fields():
    return trimmed_arrays(N, K, seed=7)


@pytest.mark.parametrize("container", ["mat-struct", "mat-top", "h5", "h5-matlab73", "h5-matlab73-group"])
def test_trimmed_model_in_every_container(tmp_path, fields, container):
    if container == "mat-struct":
        path = write_mat_v5(tmp_path / "BaselFaceModel_mod.mat", fields, struct="BFM")
        model = load_trimmed(path)
    elif container == "mat-top":
        path = write_mat_v5(tmp_path / "BaselFaceModel_mod.mat", fields)
        model = load_trimmed(path)
    elif container == "h5":
        path = write_h5(tmp_path / "BaselFaceModel_mod.h5", fields)
        model = load_trimmed(path)
    else:  # MATLAB v7.3 is HDF5 with a .mat name: content decides, and mod_mat/h5 both read it
        group = "BFM" if container.endswith("group") else None
        path = write_h5(tmp_path / "BaselFaceModel_mod.mat", fields, matlab73=True, group=group)
        model = load_trimmed(path)
    assert_model_matches(model, expected_trimmed(fields))
    assert model.metadata["synthetic"] is False and path.name in model.metadata["source"]
    loaded = load_model(path)  # the dispatcher picks the same reader from the content
    np.testing.assert_array_equal(loaded.tex_basis, model.tex_basis)


def test_tl_instead_of_faces_and_extra_components(tmp_path):
    f = trimmed_arrays(N, 140, seed=8)
    f["tl"] = f.pop("faces")
    model = load_model(write_mat_v5(tmp_path / "m.mat", f, struct="BFM"))
    assert_model_matches(model, expected_trimmed(f))
    assert model.shape_components == 99


def test_hdf5_without_matlab_header_but_transposed(tmp_path, fields):
    """MATLAB's h5write also writes column-major, with no MAT header: shapes decide."""
    import h5py

    with h5py.File(tmp_path / "m.h5", "w") as h5:
        for k, v in fields.items():
            h5[k] = np.asarray(v).T
    assert_model_matches(load_model(tmp_path / "m.h5"), expected_trimmed(fields))


@pytest.mark.parametrize("change, words", [
    (lambda f: f.pop("faces"), ["faces", "'faces' (or 'tl')"]),
    (lambda f: f.update(faces=f["faces"] - 1), ["faces", "1-based", "index 0"]),
    (lambda f: f.update(shapePC=f["shapePC"][:, :98]), ["shapePC", ">= 99", "float32[90, 98]"]),
    (lambda f: f.update(texMU=f["texMU"][:60]), ["texMU", "vector of 90", "float32[60, 1]"]),
    (lambda f: f.update(texEV=f["texEV"][:5]), ["texEV", "vector of 99"]),
    (lambda f: f.update(innerLandmarkIndex=f["innerLandmarkIndex"] + 0.5), ["innerLandmarkIndex", "integer"]),
    (lambda f: f.update(shapeMU=np.zeros((3, 5, 2))), ["shapeMU", "numeric matrix"]),
])
@pytest.mark.parametrize("container", ["mat", "h5"])
def test_malformed_trimmed_files(tmp_path, fields, change, words, container):
    change(fields)
    if container == "mat":
        path = write_mat_v5(tmp_path / "bad_mod.mat", fields, struct="BFM")
    else:
        path = write_h5(tmp_path / "bad_mod.h5", fields)
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    for w in ["bad_mod", *words]:
        assert w in str(e.value), (w, str(e.value))


def test_file_without_model_fields(tmp_path):
    path = write_mat_v5(tmp_path / "other.mat", {"foo": np.zeros(3)})
    with pytest.raises(ModelFileError, match=r"other.mat: expected fields shapeMU.*found variables \['foo'\]"):
        load_model(path)
    with pytest.raises(ModelFileError, match="other.h5"):
        load_model(write_h5(tmp_path / "other.h5", {"foo": np.zeros(3)}))
