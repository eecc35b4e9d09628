"""Plain numpy float64 decode: the oracle every kernel is tested against.

Written for clarity, not speed: the straightforward formula of the release with
sigma already folded into the bases (row k of a basis is PC[:, k] * EV[k]).
"""
from __future__ import annotations

import numpy as np


def decode_reference(shape_mean, shape_basis, tex_mean, tex_basis, coeffs, shape_offset=0, tex_offset=None,
                     expr_mean=None, expr_basis=None, expression=None):
    """Returns (vertices float64 [B,N,3], texture float64 [B,N,3] before clamping,
    colors uint8 [B,N,3] = clamp(texture, 0, 255) truncated).

    With expression weights [B, Ke] (and expr_mean [3N], expr_basis [Ke, 3N]) the shape gains
    the expression term expr_mean + expression @ expr_basis."""
    coeffs = np.atleast_2d(np.asarray(coeffs, dtype=np.float64))
    shape_basis = np.asarray(shape_basis, dtype=np.float64)
    tex_basis = np.asarray(tex_basis, dtype=np.float64)
    ks, kt = shape_basis.shape[0], tex_basis.shape[0]
    tex_offset = ks if tex_offset is None else tex_offset
    alpha = coeffs[:, shape_offset : shape_offset + ks]
    beta = coeffs[:, tex_offset : tex_offset + kt]
    b = coeffs.shape[0]
    vertices = np.asarray(shape_mean, np.float64)[None, :] + alpha @ shape_basis
    if expression is not None:
        e = np.atleast_2d(np.asarray(expression, np.float64))
        vertices = vertices + np.asarray(expr_mean, np.float64)[None, :] + e @ np.asarray(expr_basis, np.float64)
    texture = np.asarray(tex_mean, np.float64)[None, :] + beta @ tex_basis
    colors = np.trunc(np.clip(texture, 0.0, 255.0)).astype(np.uint8)
    return vertices.reshape(b, -1, 3), texture.reshape(b, -1, 3), colors.reshape(b, -1, 3)
