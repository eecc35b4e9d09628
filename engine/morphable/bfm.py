"""Basel Face Model loaders: BFM 2009 trimmed by the release's rule, and the release's
already-trimmed `BaselFaceModel_mod.mat` / `.h5`.

Dataset quirks, each handled in exactly one place below:
- BFM 2009 stores micrometres (shapeMU, shapeEV); the release divides both by 1000. The
  release's trimmed files already hold millimetres.
- The release shifts the trimmed mean shape by mod_struct.tx along x (after /1000).
- BFM 2009 has 199 components per basis; the release keeps the first 99 (the network's
  output is 99 shape + 99 texture coefficients).
- Vertex k occupies rows 3k, 3k+1, 3k+2 of every [3N, ...] array (x y z interleaved).
- All MATLAB indices are 1-based: mod_struct.vertex_indices, faces, landmark indices.
- shapeEV/texEV are standard deviations: the release decodes mu + PC * (coeff .* EV).
- Landmarks: innerLandmarkIndex and outerLandmarkIndex (68 each, 1-based, trimmed vertices)
  differ only on the 17 jaw points: the outer ones follow the contour a turned face shows.
- The release's trimmed files may hold the expression basis (expMU, expPC, expEV: 3DDFA's,
  already mapped and divided by 1000 by trimBaselFace.py); BFM 2009 has none, it comes from
  Model_Expression.mat (engine.morphable.expression).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError, describe_array
from engine.morphable.matfiles import FieldSource
from engine.morphable.model import (MAX_COMPONENTS, MAX_FACES, MAX_ROWS, MAX_VERTICES, MorphableModel,
                                    check_finite, check_index_range)

COMPONENTS = 99  # kept per basis, as the release does
BFM2009_VERTICES = 53_490
_BASIS_FIELDS = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV")
# `segbin` is read only to recognise the untrimmed BFM 2009 (it has no other use here).
_LANDMARK_FIELDS = ("innerLandmarkIndex", "outerLandmarkIndex")
_EXPRESSION_FIELDS = ("expMU", "expPC", "expEV")
_TRIMMED_FIELDS = (*_BASIS_FIELDS, "faces", "tl", *_LANDMARK_FIELDS, *_EXPRESSION_FIELDS, "segbin")
_MOD_STRUCT_FIELDS = ("vertex_indices", "faces", "tx", *_LANDMARK_FIELDS)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _one_based(src_path: Path, name: str, values: np.ndarray, n: int) -> np.ndarray:
    """1-based MATLAB indices (stored as any numeric type) -> 0-based int32, range-checked."""
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
            raise ModelFileError(f"{src_path}: {name}: expected integer vertex indices, found non-integer values")
    check_index_range(values, n, str(src_path), name, base=1)  # before the cast: 1e300 or 2^64-1 would wrap
    return (values.astype(np.int64) - 1).astype(np.int32)


def _basis(src: FieldSource, prefix: str, n3: int, ev_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean [n3_file], K-major unfolded basis [99, n3_file], sigma [99]) before any row
    selection; `ev_scale` converts EV to the model's units (1/1000 for BFM 2009 shape).
    Every value is finite (checked here, so the error names the file's field)."""
    mean = src.vector(f"{prefix}MU", n3)
    pc = src.matrix(f"{prefix}PC", n3, None, min_cols=COMPONENTS, max_cols=MAX_COMPONENTS)
    k = pc.shape[1]
    ev = src.vector(f"{prefix}EV", k)
    for field, values in ((f"{prefix}MU", mean), (f"{prefix}PC", pc), (f"{prefix}EV", ev)):
        check_finite(values, str(src.path), field)  # all of it: a NaN anywhere means a damaged file
    sigma = ev[:COMPONENTS].astype(np.float64) * ev_scale
    return mean.astype(np.float64), pc.T[:COMPONENTS], sigma


def _float32(values: np.ndarray, src_path: Path, field: str) -> np.ndarray:
    """C-contiguous float32 of float64 `values`; finite inputs can still overflow float32 (3.4e38)."""
    with np.errstate(over="ignore", invalid="ignore"):  # checked right below, naming the field
        out = np.ascontiguousarray(values.astype(np.float32))
    check_finite(out, str(src_path), f"{field} (as float32)")
    return out


def _fold(pc_t: np.ndarray, sigma: np.ndarray, src_path: Path, prefix: str) -> np.ndarray:
    """Row k = PC[:, k] * sigma[k], computed in float64 and stored as C-contiguous float32."""
    with np.errstate(over="ignore"):  # an overflow becomes inf, which _float32 names
        folded = pc_t * sigma[:, None]
    return _float32(folded, src_path, f"{prefix}PC x {prefix}EV")


def _landmarks(src: FieldSource, n: int) -> dict[str, np.ndarray | None]:
    """innerLandmarkIndex -> `landmarks`, outerLandmarkIndex -> `landmarks_outer` (0-based), each
    None when absent; the outer ones only with the inner ones (the model's rule)."""
    out = {}
    for field, name in (("innerLandmarkIndex", "landmarks"), ("outerLandmarkIndex", "landmarks_outer")):
        out[name] = (_one_based(src.path, field, src.vector(field, max_length=MAX_VERTICES), n)
                     if src.has(field) else None)
    if out["landmarks_outer"] is not None and out["landmarks"] is None:
        raise ModelFileError(f"{src.path}: innerLandmarkIndex: expected it beside outerLandmarkIndex, found none")
    if out["landmarks_outer"] is not None and out["landmarks_outer"].shape != out["landmarks"].shape:
        raise ModelFileError(f"{src.path}: outerLandmarkIndex: expected {out['landmarks'].size} indices (as "
                             f"innerLandmarkIndex), found {out['landmarks_outer'].size}")
    return out


def _trimmed_expression(src: FieldSource, n3: int) -> dict[str, np.ndarray | None]:
    """expMU [3N], expPC [3N, Ke], expEV [Ke] of the release's trimmed file (already mapped and
    divided by 1000 by its trimBaselFace.py): folded like the other bases. All three or none."""
    have = [f for f in _EXPRESSION_FIELDS if src.has(f)]
    if not have:
        return {"expression_mean": None, "expression_basis": None, "expression_sigma": None}
    if len(have) != len(_EXPRESSION_FIELDS):
        missing = next(f for f in _EXPRESSION_FIELDS if f not in have)
        raise ModelFileError(f"{src.path}: {missing}: expected it beside {', '.join(have)} (the expression "
                             f"basis is expMU, expPC and expEV), found none")
    mean = src.vector("expMU", n3)
    pc = src.matrix("expPC", n3, None, max_cols=MAX_COMPONENTS)
    ev = src.vector("expEV", pc.shape[1])
    for field, values in (("expMU", mean), ("expPC", pc), ("expEV", ev)):
        check_finite(values, str(src.path), field)
    sigma = ev.astype(np.float64)
    return {"expression_mean": _float32(mean.astype(np.float64), src.path, "expMU"),
            "expression_basis": _fold(pc.T.astype(np.float64), sigma, src.path, "exp"),
            "expression_sigma": _float32(sigma, src.path, "expEV")}


def _sizes(src: FieldSource) -> int:
    """3N from shapeMU, the one field every form has."""
    n3 = src.vector("shapeMU", max_length=MAX_ROWS).size
    if n3 == 0 or n3 % 3:
        raise ModelFileError(f"{src.path}: shapeMU: expected 3N values (x y z per vertex), "
                             f"found {describe_array(src.raw('shapeMU'))}")
    return n3


def load_trimmed(path: str | os.PathLike) -> MorphableModel:
    """The release's `BaselFaceModel_mod.mat` (v5 or v7.3) or `.h5`: already in millimetres,
    already trimmed; faces and landmark indices 1-based."""
    src = FieldSource(path, _TRIMMED_FIELDS)
    n3 = _sizes(src)
    n = n3 // 3
    if src.has("segbin") or n == BFM2009_VERTICES:
        raise ModelFileError(f"{src.path}: shapeMU: expected an already-trimmed model (the release's "
                             f"BaselFaceModel_mod), found the untrimmed Basel Face Model 2009 ({n} vertices); "
                             f"trim it with load_model(path, mod_struct_mat=...) or "
                             f"engine.morphable.load_bfm2009(path, mod_struct_mat) and the release's "
                             f"mod_struct_expr.mat")
    arrays = {}
    for prefix, name in (("shape", "shape"), ("tex", "tex")):
        mean, pc_t, sigma = _basis(src, prefix, n3, 1.0)
        arrays[f"{name}_mean"] = _float32(mean, src.path, f"{prefix}MU")
        arrays[f"{name}_basis"] = _fold(pc_t, sigma, src.path, prefix)
        arrays[f"{name}_sigma"] = _float32(sigma, src.path, f"{prefix}EV")
    face_field = "faces" if src.has("faces") else "tl" if src.has("tl") else None
    if face_field is None:
        raise ModelFileError(f"{src.path}: faces: expected a field 'faces' (or 'tl'), found only {src.names()}")
    faces = src.matrix(face_field, None, 3, max_rows=MAX_FACES)
    arrays["faces"] = np.ascontiguousarray(_one_based(src.path, face_field, faces, n))
    arrays.update(_landmarks(src, n))
    arrays.update(_trimmed_expression(src, n3))
    return MorphableModel(**arrays, metadata={
        "synthetic": False,
        "name": Path(path).name,
        "source": f"{Path(path).name} (sha256 {sha256_of(src.path)}), {src.container}, {src.location}",
    })


def load_bfm2009(bfm_mat: str | os.PathLike, mod_struct_mat: str | os.PathLike) -> MorphableModel:
    """Trim BFM 2009 to the release's 46,990-vertex model, exactly as the release's
    trimBaselFace.py does with mod_struct_expr.mat, with its 68 inner and outer landmark
    vertices (the expression basis is added by engine.morphable.expression.add_expression)."""
    ms = FieldSource(mod_struct_mat, _MOD_STRUCT_FIELDS)
    src = FieldSource(bfm_mat, _BASIS_FIELDS)
    n3_bfm = _sizes(src)
    kept = _one_based(ms.path, "vertex_indices", ms.vector("vertex_indices", max_length=MAX_VERTICES),
                      n3_bfm // 3).astype(np.int64)
    n = kept.size
    # Rows 3k, 3k+1, 3k+2 of every kept vertex k, in the order of vertex_indices.
    rows = (3 * kept[:, None] + np.arange(3)).reshape(-1)
    tx_field = ms.vector("tx", 1)
    check_finite(tx_field, str(ms.path), "tx")
    tx = float(tx_field[0])

    arrays = {}
    for prefix, scale in (("shape", 1.0 / 1000.0), ("tex", 1.0)):
        mean, pc_t, sigma = _basis(src, prefix, n3_bfm, scale)
        mean = mean[rows] * scale  # shapeMU: micrometres -> millimetres; texMU: 0..255 as is
        if prefix == "shape":
            with np.errstate(over="ignore"):  # an overflow becomes inf, which _float32 names
                mean[0::3] += tx  # the release re-centres x after the unit change
        arrays[f"{prefix}_mean"] = _float32(mean, src.path, "shapeMU / 1000 + tx" if prefix == "shape" else "texMU")
        arrays[f"{prefix}_basis"] = _fold(pc_t[:, rows], sigma, src.path, prefix)  # PC itself is not scaled
        arrays[f"{prefix}_sigma"] = _float32(sigma, src.path, f"{prefix}EV")
    faces = ms.matrix("faces", None, 3, max_rows=MAX_FACES)
    arrays["faces"] = np.ascontiguousarray(_one_based(ms.path, "faces", faces, n))
    arrays.update(_landmarks(ms, n))
    bfm_name, ms_name = Path(bfm_mat).name, Path(mod_struct_mat).name
    return MorphableModel(**arrays, metadata={
        "synthetic": False,
        "name": f"bfm2009-trimmed-{n}",
        "source": (f"{bfm_name} (sha256 {sha256_of(src.path)}) trimmed by {ms_name} "
                   f"(sha256 {sha256_of(ms.path)}) with the 3DMM-CNN release's rule"),
    })
