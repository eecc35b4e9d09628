"""The optional expression basis: 3DDFA's `Model_Expression.mat`, mapped onto the trimmed model
exactly as the 3DMM-CNN release's `3DMM_model/trimBaselFace.py` does.

Users bring that file, as they bring the Basel Face Model (it comes from the 3DDFA authors);
`engine3dmm convert --expression Model_Expression.mat` adds it to the model cache.

The file's quirks, each handled in exactly one place below:
- `mu_exp` [3M, 1] and `w_exp` [3M, 29] live on 3DDFA's own vertex set (M = 53,215), not on
  the BFM's 53,490 vertices: `vertex_expr_ref` of the release's `mod_struct_expr.mat` maps every
  BFM vertex to its 3DDFA vertex, 1-based, and -1 where there is none.
- trimBaselFace.py maps each KEPT vertex through it: `vertex_expr_ref[vertex_indices - 1]`, then
  rows 3(j - 1), 3(j - 1) + 1, 3(j - 1) + 2 of vertex j. A -1 there would become rows -6..-4, and
  Python's negative indexing would silently read 3DDFA's second-to-last vertex; none of the
  46,990 kept vertices maps to -1 in the release's file, and a file where one does is refused
  here (naming the vertex) instead.
- Both are divided by 1000 (3DDFA's micrometres to the model's millimetres, as BFM 2009's
  shapeMU), and, like shapePC, `w_exp` has unit-scale columns: the standard deviations are
  `expEV` (29 values), taken from mod_struct_expr.mat, not from Model_Expression.mat.
- The release adds the expression mean to the shape whenever it uses the basis
  (BaselFaceEstimator::getShape: shapeMU + expMU + ...); `expression_mean` is kept apart so the
  network's neutral mesh stays the release's, and the expression term is mean + e @ basis.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError
from engine.morphable.bfm import _float32, _fold, _one_based, sha256_of
from engine.morphable.matfiles import FieldSource
from engine.morphable.model import MAX_COMPONENTS, MAX_ROWS, MAX_VERTICES, MorphableModel, check_finite

_EXPRESSION_FIELDS = ("mu_exp", "w_exp")
_MOD_STRUCT_FIELDS = ("vertex_indices", "vertex_expr_ref", "expEV")
UNIT_SCALE = 1.0 / 1000.0  # trimBaselFace.py: mu_exp / 1000, w_exp / 1000
M_3DDFA = 53_215  # vertices of 3DDFA's expression model (Model_Expression.mat), quoted in size errors


def _expr_vertices(ms: FieldSource) -> np.ndarray:
    """The 1-based 3DDFA vertex of each kept vertex, in the kept vertices' order (int64 [n]),
    checked against everything but the expression file's size (_expr_vertex_rows)."""
    kept = ms.vector("vertex_indices", max_length=MAX_VERTICES)
    ref = ms.vector("vertex_expr_ref", max_length=MAX_ROWS)
    kept0 = _one_based(ms.path, "vertex_indices", kept, ref.size).astype(np.int64)  # into vertex_expr_ref
    if ref.dtype.kind == "f" and (not np.all(np.isfinite(ref)) or not np.array_equal(ref, np.round(ref))):
        raise ModelFileError(f"{ms.path}: vertex_expr_ref: expected integer vertex numbers (1-based, -1 where "
                             "none), found non-integer values")
    j = ref[kept0].astype(np.int64)
    if (j == -1).any():
        k = int(np.flatnonzero(j == -1)[0])
        raise ModelFileError(f"{ms.path}: vertex_expr_ref: expected an expression vertex for every kept vertex, "
                             f"found -1 (none) for kept vertex {k} (BFM vertex {int(kept[k])}); the release's "
                             "trimBaselFace.py would read the expression file's second-to-last vertex there")
    return j


def _expr_vertex_rows(ms: FieldSource, j: np.ndarray, n_expr: int) -> np.ndarray:
    """Rows [3n] of the expression file (`n_expr` vertices) for the kept vertices' 3DDFA
    vertices `j` (_expr_vertices), in the kept vertices' order."""
    bad = (j < 1) | (j > n_expr)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ModelFileError(f"{ms.path}: vertex_expr_ref: expected 1-based vertex numbers in [1, {n_expr}] (the "
                             f"expression file's vertices) or -1, found {int(j[k])} for kept vertex {k}")
    return (3 * (j[:, None] - 1) + np.arange(3)).reshape(-1)


def load_expression(expression_mat: str | os.PathLike, mod_struct_mat: str | os.PathLike,
                    num_vertices: int) -> dict[str, np.ndarray]:
    """{"expression_mean" [3n], "expression_basis" [Ke, 3n], "expression_sigma" [Ke]} (float32,
    millimetres, sigma folded in) for the `num_vertices` kept vertices of mod_struct_mat, from
    3DDFA's Model_Expression.mat by the release's rule (module docstring).

    Raises ModelFileError naming the file and field: a missing or mis-shaped field, non-finite
    values, Ke != len(expEV), a kept vertex without an expression vertex, or a model that is not
    the one mod_struct_mat trims (num_vertices != len(vertex_indices))."""
    ms = FieldSource(mod_struct_mat, _MOD_STRUCT_FIELDS)
    src = FieldSource(expression_mat, _EXPRESSION_FIELDS)
    n_kept = ms.vector("vertex_indices", max_length=MAX_VERTICES).size
    if n_kept != num_vertices:
        raise ModelFileError(f"{ms.path}: vertex_indices: expected {num_vertices} kept vertices (the model's), "
                             f"found {n_kept}: the model is not the one this file trims")
    j = _expr_vertices(ms)
    mu = src.vector("mu_exp", max_length=MAX_ROWS)
    if mu.size == 0 or mu.size % 3:
        need = int(j.max()) if j.size else 1
        raise ModelFileError(
            f"{src.path}: mu_exp: expected 3M values, x y z for each of the M vertices of 3DDFA's model: M >= {need:,} "
            f"({ms.path.name}'s vertex_expr_ref refers to vertex {need:,}), so at least {3 * need:,} values (3DDFA's "
            f"own file: M = {M_3DDFA:,}, {3 * M_3DDFA:,} values); found {mu.size:,}"
            + (" (not a multiple of 3)" if mu.size % 3 else ""))
    n3_expr = mu.size
    w = src.matrix("w_exp", n3_expr, None, max_cols=MAX_COMPONENTS)
    ev = ms.vector("expEV", max_length=MAX_COMPONENTS)
    if ev.size != w.shape[1]:
        raise ModelFileError(f"{ms.path}: expEV: expected {w.shape[1]} values (one per column of w_exp in "
                             f"{src.path.name}), found {ev.size}")
    for path, field, values in ((src.path, "mu_exp", mu), (src.path, "w_exp", w), (ms.path, "expEV", ev)):
        check_finite(values, str(path), field)
    rows = _expr_vertex_rows(ms, j, n3_expr // 3)
    mean = mu[rows].astype(np.float64) * UNIT_SCALE
    pc_t = w[rows].T.astype(np.float64) * UNIT_SCALE  # [Ke, 3n]
    sigma = ev.astype(np.float64)
    return {"expression_mean": _float32(mean, src.path, "mu_exp / 1000"),
            "expression_basis": _fold(pc_t, sigma, src.path, "exp"),
            "expression_sigma": _float32(sigma, ms.path, "expEV")}


def add_expression(model: MorphableModel, expression_mat: str | os.PathLike,
                   mod_struct_mat: str | os.PathLike) -> MorphableModel:
    """`model` (the release's trimmed model, e.g. from BFM 2009 + mod_struct_expr.mat, or its
    cache) with 3DDFA's expression basis added (`load_expression`); the metadata records the
    two files and their sha256."""
    arrays = load_expression(expression_mat, mod_struct_mat, model.num_vertices)
    e, m = Path(expression_mat), Path(mod_struct_mat)
    meta = dict(model.metadata)
    meta["expression"] = (f"{e.name} (sha256 {sha256_of(e)}) mapped by {m.name} (sha256 {sha256_of(m)}) "
                          f"with the 3DMM-CNN release's rule: {arrays['expression_basis'].shape[0]} components")
    return model.replace(**arrays, metadata=meta)
