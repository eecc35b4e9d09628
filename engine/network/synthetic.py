"""The built-in synthetic weights: a deterministic stand-in until a user converts the real ones.

They are NOT a face model: their coefficients mean nothing. They exist so that every
runner, benchmark and test works on a fresh clone. Everything built from them says
`synthetic` in its metadata, and the runners report `synthetic=True`.

Recipe (numpy only, so machines without PyTorch can build them):
- convolutions: He-normal from `numpy.random.default_rng(seed)`;
- BatchNorm statistics: measured in one numpy forward pass over a fixed set of
  pseudo-face crops (the mean image plus smooth seeded noise), layer by layer, so every
  normalised activation has unit variance; gamma 1, beta 0, except the last BatchNorm
  of each residual branch (gamma 0.2) so the residual stream grows slowly;
- fc_ftnew: random directions scaled so the calibration crops' coefficients have
  standard deviation about 1 around 0, i.e. they land roughly in [-3, 3] like the
  release's training labels.
Inputs unlike faces (e.g. uniform noise) fall far outside the calibration and give
coefficients in the hundreds; intermediate activations stay below ~10 on face-like
crops (measured), well inside float16 range.
Determinism: identical for a given seed on a given machine; other BLAS builds may
differ in the last bits of the calibrated statistics.
"""
from __future__ import annotations

import numpy as np

from engine.network import architecture as arch
from engine.network import numpy_forward

DEFAULT_SEED = 0
RESIDUAL_GAMMA = 0.2
CALIBRATION_BATCH = 4


def calibration_crops(seed: int, n: int = CALIBRATION_BATCH, mean: np.ndarray | None = None) -> np.ndarray:
    """n pseudo-face crops [n,3,224,224] float32 in 0..255: mean image + smooth noise."""
    from engine.network.weights import channel_mean_image

    rng = np.random.default_rng([seed, 1])
    base = channel_mean_image() if mean is None else mean
    coarse = rng.normal(0.0, 40.0, (n, 3, 28, 28)).astype(np.float32)
    smooth = coarse.repeat(8, axis=2).repeat(8, axis=3)
    fine = rng.normal(0.0, 8.0, (n, 3, 224, 224)).astype(np.float32)
    return np.clip(base + smooth + fine, 0, 255).astype(np.float32)


def make_synthetic(seed: int = DEFAULT_SEED, mean: np.ndarray | None = None) -> tuple[dict, np.ndarray, dict]:
    """(weights, mean image, metadata) of the synthetic set for `seed`."""
    from engine.network.weights import channel_mean_image

    rng = np.random.default_rng([seed, 0])
    mean = channel_mean_image() if mean is None else mean
    w: dict[str, np.ndarray] = {}
    last_in_branch = {b.branch2[2].conv for b in arch.BLOCKS}
    for c in arch.all_convs():
        fan_in = c.cin * c.kernel * c.kernel
        w[f"{c.conv}.weight"] = (rng.standard_normal(c.weight_shape, dtype=np.float32)
                                 * np.float32(np.sqrt(2.0 / fan_in)))
        w[f"{c.conv}.bn.running_mean"] = np.zeros(c.cout, np.float32)
        w[f"{c.conv}.bn.running_var"] = np.ones(c.cout, np.float32)
        gamma = RESIDUAL_GAMMA if c.conv in last_in_branch else 1.0
        w[f"{c.conv}.bn.weight"] = np.full(c.cout, gamma, np.float32)
        w[f"{c.conv}.bn.bias"] = np.zeros(c.cout, np.float32)
    crops = calibration_crops(seed, mean=mean)
    feats = numpy_forward.features(w, mean, crops, calibrate=True).astype(np.float64)
    direction = rng.standard_normal((arch.NUM_COEFFS, arch.FC_IN))
    centred = feats - feats.mean(axis=0)
    out = centred @ direction.T
    scale = out.std() if out.std() > 0 else 1.0
    fc_w = direction / scale
    w[f"{arch.FC_NAME}.weight"] = fc_w.astype(np.float32)
    w[f"{arch.FC_NAME}.bias"] = (-(feats.mean(axis=0) @ fc_w.T)).astype(np.float32)
    meta = {"synthetic": True, "seed": seed,
            "source": f"built-in synthetic weights (seed {seed}); NOT the trained 3DMM-CNN: coefficients are meaningless"}
    return w, mean, meta
