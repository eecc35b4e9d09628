"""Non-finite model values are refused at load (issue 13, finding 8): in every container and
every field, the error names the file, the field, the count and the first bad index, instead
of surfacing much later when a mesh is written. Also the model-size bounds of validate_arrays."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from bfm_files import bfm2009_arrays, mod_struct_arrays, trimmed_arrays, write_h5, write_mat_v5
from engine.errors import ModelFileError
from engine.morphable import MorphableModel, load_model, write_cache
from engine.morphable.model import MAX_COMPONENTS, MAX_FACES, MAX_VERTICES

N, K = 10, 99
# Where the bad value goes, in MATLAB's [rows, cols] of each field.
SPOTS = {"shapeMU": (7, 0), "shapePC": (4, 7), "shapeEV": (5, 0), "texMU": (29, 0), "texPC": (0, 98), "texEV": (98, 0)}


def _write(container: str, path, fields):
    if container == "mat-struct":
        return write_mat_v5(path, fields, struct="BFM")
    if container == "mat-compressed":
        scipy.io.savemat(path, fields, do_compression=True)
        return path
    if container == "h5":
        return write_h5(path, fields)
    return write_h5(path, fields, matlab73=True, group="BFM")


@pytest.mark.parametrize("field", sorted(SPOTS))
@pytest.mark.parametrize("container", ["mat-struct", "mat-compressed", "h5", "matlab73"])
def test_nan_in_each_field_of_each_trimmed_container(tmp_path, container, field):
    fields = trimmed_arrays(N, K, seed=1)
    fields[field] = np.array(fields[field], copy=True)
    fields[field][SPOTS[field]] = np.nan
    path = _write(container, tmp_path / "BaselFaceModel_mod.mat", fields)
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    msg = str(e.value)
    index = f"[{SPOTS[field][0]}, {SPOTS[field][1]}]" if "PC" in field else f"[{SPOTS[field][0]}]"
    for w in (str(path), f": {field}:", "finite", "1 non-finite value", f"nan at {index}"):
        assert w in msg, (w, msg)


@pytest.mark.parametrize("value, shown", [(np.inf, "inf"), (-np.inf, "-inf")])
def test_infinities_are_refused_too(tmp_path, value, shown):
    fields = trimmed_arrays(N, K, seed=2)
    fields["texPC"][3:6, 0] = value
    with pytest.raises(ModelFileError, match=rf"texPC: expected finite values.*3 non-finite values.*the first {shown} at \[3, 0\]"):
        load_model(write_h5(tmp_path / "m.h5", fields))


def test_values_that_overflow_float32_when_folded(tmp_path):
    """Finite float64 values whose product (PC x EV) is beyond float32's 3.4e38."""
    fields = trimmed_arrays(N, K, seed=3)
    fields["shapePC"] = fields["shapePC"].astype(np.float64) * 1e30
    fields["shapeEV"] = fields["shapeEV"] * 1e30
    with pytest.raises(ModelFileError, match=r"m.mat: shapePC x shapeEV \(as float32\): expected finite values"):
        load_model(write_mat_v5(tmp_path / "m.mat", fields))


@pytest.mark.parametrize("field", ["shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV"])
def test_nan_in_bfm2009(tmp_path, field):
    bfm = bfm2009_arrays(40, 120, seed=1)
    bfm[field][(3, 0) if "PC" not in field else (3, 110)] = np.nan  # also in a column the model drops
    bfm_path = write_mat_v5(tmp_path / "01_MorphableModel.mat", bfm)
    ms_path = write_mat_v5(tmp_path / "mod_struct_expr.mat", mod_struct_arrays(40, 25, 30, seed=2), struct="mod_struct")
    with pytest.raises(ModelFileError, match=rf"01_MorphableModel.mat: {field}: expected finite values"):
        load_model(bfm_path, mod_struct_mat=ms_path)


def test_nan_tx_in_mod_struct(tmp_path):
    bfm_path = write_mat_v5(tmp_path / "01_MorphableModel.mat", bfm2009_arrays(40, 99, seed=1))
    ms = mod_struct_arrays(40, 25, 30, seed=2)
    ms["tx"] = np.array([[np.nan]])
    ms_path = write_mat_v5(tmp_path / "mod_struct_expr.mat", ms, struct="mod_struct")
    with pytest.raises(ModelFileError, match=r"mod_struct_expr.mat: tx: expected finite values.*nan at \[0\]"):
        load_model(bfm_path, mod_struct_mat=ms_path)


def _small_arrays(n: int = 5, k: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "shape_mean": rng.standard_normal(3 * n).astype(np.float32),
        "shape_basis": rng.standard_normal((k, 3 * n)).astype(np.float32),
        "shape_sigma": np.arange(1, k + 1, dtype=np.float32),
        "tex_mean": rng.uniform(0, 255, 3 * n).astype(np.float32),
        "tex_basis": rng.standard_normal((k, 3 * n)).astype(np.float32),
        "tex_sigma": np.arange(k + 1, 2 * k + 1, dtype=np.float32),
        "faces": np.array([[0, 1, 2], [2, 3, 4]], np.int32),
    }


@pytest.mark.parametrize("field", ["shape_mean", "shape_basis", "shape_sigma", "tex_mean", "tex_basis", "tex_sigma"])
def test_nan_in_a_cache_file(tmp_path, field):
    """The .e3dmm cache reader ends in validate_arrays: a NaN patched into the file is named."""
    arrays = _small_arrays()
    write_cache(MorphableModel(**arrays, metadata={"name": "small"}), tmp_path / "m.e3dmm")
    data = bytearray((tmp_path / "m.e3dmm").read_bytes())
    values = arrays[field].reshape(-1)
    at = bytes(data).find(values[:2].tobytes())
    assert at > 0 and bytes(data).count(values[:2].tobytes()) == 1
    data[at + 4:at + 8] = np.float32(np.nan).tobytes()  # the second value
    (tmp_path / "m.e3dmm").write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as e:
        load_model(tmp_path / "m.e3dmm")
    index = "[0, 1]" if "basis" in field else "[1]"
    for w in ("m.e3dmm", field, "finite", f"nan at {index}"):
        assert w in str(e.value), (w, str(e.value))


@pytest.mark.parametrize("field", ["shape_mean", "tex_basis", "tex_sigma"])
def test_nan_in_arrays_given_directly(field):
    arrays = _small_arrays()
    arrays[field].reshape(-1)[-1] = np.inf
    with pytest.raises(ModelFileError, match=rf"my arrays: {field}: expected finite values .*the first inf"):
        MorphableModel(**arrays, metadata={"name": "my arrays"})


@pytest.mark.parametrize("change, words", [
    (lambda a: a.update(shape_basis=np.zeros((MAX_COMPONENTS + 1, 15), np.float32),
                        shape_sigma=np.ones(MAX_COMPONENTS + 1, np.float32)),
     ["shape_basis", f"1 <= K <= {MAX_COMPONENTS}"]),
    (lambda a: a.update(faces=np.zeros((MAX_FACES + 1, 3), np.int32)), ["faces", f"F <= {MAX_FACES}"]),
    (lambda a: a.update(shape_mean=np.zeros(3 * (MAX_VERTICES + 1), np.float32)),
     ["shape_mean", f"at most {MAX_VERTICES} vertices"]),
])
def test_model_size_bounds(change, words):
    arrays = _small_arrays()
    change(arrays)
    with pytest.raises(ModelFileError) as e:
        MorphableModel(**arrays, metadata={"name": "big"})
    for w in words:
        assert w in str(e.value), (w, str(e.value))
