"""The built-in synthetic weights: a deterministic stand-in until a user converts the real ones.

They are NOT a face model: their coefficients mean nothing. They exist so that every
runner, benchmark and test works on a fresh clone. Everything built from them says
`synthetic` in its metadata, and the runners report `synthetic=True`.

Recipe (numpy only, so machines without PyTorch can build them):
- convolutions: He-normal from `numpy.random.default_rng(seed)`;
- BatchNorm statistics: measured in one numpy forward pass over a fixed set of 16
  photo-like crops (see calibration_crops), layer by layer, so every
  normalised activation has unit variance; gamma 1, beta 0, except the last BatchNorm
  of each residual branch (gamma 0.2) so the residual stream grows slowly;
- fc_ftnew: random directions scaled so the calibration crops' coefficients have
  standard deviation about 1 around 0, i.e. they land roughly in [-3, 3] like the
  release's training labels.
Inputs unlike photos (e.g. uniform noise) fall far outside the calibration and give
large coefficients. Building the set takes a few seconds; engine.network.resolve keeps
a copy in the user's cache folder.
Determinism: identical for a given seed on a given machine; other BLAS builds may
differ in the last bits of the calibrated statistics.
"""
from __future__ import annotations

import numpy as np

from engine.network import architecture as arch
from engine.network import numpy_forward

DEFAULT_SEED = 0
RESIDUAL_GAMMA = 0.2
CALIBRATION_BATCH = 16
RECIPE = 2  # bump when the recipe changes: disk caches of the weights are keyed by it


def calibration_crops(seed: int, n: int | None = None, mean: np.ndarray | None = None) -> np.ndarray:
    """n photo-like crops [n,3,224,224] float32 in 0..255 around the mean image.

    Real photos vary far more than faces around a mean: overall brightness and colour
    casts, large shapes, texture, flat or hard contrast. The calibration set spans
    that variety so that real crops (not only pseudo-faces) give coefficients of
    order one: measured on skimage's astronaut, coffee, chelsea and camera crops,
    standard deviation 1.1-2.3 and extremes under 6 (with 4 pseudo-faces: up to 45).
    """
    from engine.network.weights import channel_mean_image

    n = CALIBRATION_BATCH if n is None else n
    rng = np.random.default_rng([seed, 1])
    base = channel_mean_image() if mean is None else mean
    out = np.empty((n, 3, 224, 224), np.float32)
    for i in range(n):
        level = rng.uniform(-70, 70) + rng.normal(0, 20, (3, 1, 1))  # brightness, colour cast
        img = np.zeros((3, 224, 224), np.float32)
        for cells, sd in ((4, 50), (14, 35), (56, 15)):  # large shapes .. texture
            g = rng.normal(0, sd * rng.uniform(0.3, 1.5), (3, cells, cells)).astype(np.float32)
            img += g.repeat(224 // cells, axis=1).repeat(224 // cells, axis=2)
        img += rng.normal(0, rng.uniform(1, 10), (3, 224, 224))  # sensor noise
        out[i] = np.clip(base + level + img, 0, 255)
    return out


def make_synthetic(seed: int = DEFAULT_SEED, mean: np.ndarray | None = None,
                   crops: np.ndarray | None = None) -> tuple[dict, np.ndarray, dict]:
    """(weights, mean image, metadata) of the synthetic set for `seed`. `crops`: the raw crops
    [N, 3, 224, 224] the BatchNorm statistics and fc_ftnew's scale are calibrated on (default:
    calibration_crops(seed); bench/bench_network.py builds its second, independent model on real
    faces)."""
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
    crops = calibration_crops(seed, mean=mean) if crops is None else crops
    feats = numpy_forward.features(w, mean, crops, calibrate=True).astype(np.float64)
    direction = rng.standard_normal((arch.NUM_COEFFS, arch.FC_IN))
    centred = feats - feats.mean(axis=0)
    out = centred @ direction.T
    scale = out.std() if out.std() > 0 else 1.0
    fc_w = direction / scale
    w[f"{arch.FC_NAME}.weight"] = fc_w.astype(np.float32)
    w[f"{arch.FC_NAME}.bias"] = (-(feats.mean(axis=0) @ fc_w.T)).astype(np.float32)
    meta = synthetic_metadata(seed)
    return w, mean, meta


def synthetic_metadata(seed: int) -> dict:
    return {"synthetic": True, "seed": seed, "recipe": RECIPE,
            "source": f"built-in synthetic weights (seed {seed}); NOT the trained 3DMM-CNN: coefficients are meaningless"}
