"""Random morphable models of realistic magnitude for kernel tests."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def random_model(n: int, ks: int = 99, kt: int = 99, seed: int = 0, ke: int = 0) -> SimpleNamespace:
    """A model with BFM-like magnitudes: coordinates ~ +-100 mm, shape modes of a few
    mm per sigma, mean colour ~ 60..200 with modes of ~ 20 levels per sigma (so that
    colours hit both clamps for |c| ~ 3). `ke` > 0 adds an expression basis (modes of a few
    mm per sigma, a mean of about a millimetre), as the release's 3DDFA one."""
    rng = np.random.default_rng(seed)
    decay = 1.0 / np.sqrt(1.0 + np.arange(max(ks, kt)))
    expr = {}
    if ke:
        expr = dict(expression_mean=rng.normal(0.0, 1.0, 3 * n).astype(np.float32),
                    expression_basis=(rng.standard_normal((ke, 3 * n)) * 3.0).astype(np.float32),
                    expression_sigma=np.ones(ke, np.float32))
    return SimpleNamespace(**expr,
        shape_mean=rng.uniform(-100, 100, 3 * n).astype(np.float32),
        shape_basis=(rng.standard_normal((ks, 3 * n)) * 4.0 * decay[:ks, None]).astype(np.float32),
        tex_mean=rng.uniform(60, 200, 3 * n).astype(np.float32),
        tex_basis=(rng.standard_normal((kt, 3 * n)) * 20.0 * decay[:kt, None]).astype(np.float32),
        faces=rng.integers(0, n, (2 * n, 3)).astype(np.int32),
    )


def random_coeffs(b: int, width: int = 198, seed: int = 1) -> np.ndarray:
    """Coefficients like the network's outputs: standard deviations, mostly within [-3, 3]."""
    return np.random.default_rng(seed).normal(0.0, 1.2, (b, width)).astype(np.float32)
