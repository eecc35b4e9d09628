"""float16 that cannot overflow: which parts of the network may compute in float16.

float16 holds magnitudes up to 65504. The fp16 ONNX graph (what TensorRT builds its
engine from) and the PyTorch fp16 trunk compute most of the network in float16; a layer
whose folded weights or bias, or whose values on real face crops, come near that limit
would overflow to inf (then NaN) on some input. `make_plan` measures, and every such
layer is kept in float32:

- a convolution runs in float16 when its folded weights and bias, the tensor it reads and
  the tensor it writes (before its ReLU) all stay within FP16_MAX / MARGIN;
- a residual sum runs in float16 when both terms and the sum do;
- ReLU and max pooling never exceed what they read: they run in their input's precision.

The margin (8x) covers faces unlike the calibration ones (contrast, lighting): the
activations of a convolutional network scale about linearly with input contrast.
Calibration: real faces, namely scikit-image's astronaut (her face, cropped by the
release's rule) and faces of scikit-image's LFW subset (25x25, upsampled); without
scikit-image, the synthetic calibration crops, and the plan says so (`calibration`).
Names: a convolution by its Caffe layer name ("res4b3_branch2b"), a residual sum by its
block name ("res4b3").
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np

from engine.network import architecture as arch

log = logging.getLogger("engine.network")

FP16_MAX = 65504.0
MARGIN = 8.0
LIMIT = FP16_MAX / MARGIN
PLAN_VERSION = 1


@dataclass(frozen=True)
class Fp16Plan:
    """Which operations stay float32 in a float16 network, and why."""

    fp32: frozenset = frozenset()  # convolution and block names
    reasons: dict = field(default_factory=dict)  # name -> why it stays float32
    calibration: str = ""  # what the activations were measured on
    peak: float = 0.0  # the largest magnitude seen in the trunk
    margin: float = MARGIN

    def runs_fp32(self, op: str) -> bool:
        return op in self.fp32

    def summary(self) -> str:
        if not self.fp32:
            return (f"every layer fits float16 with a {self.margin:g}x margin (largest value {self.peak:.4g} on "
                    f"{self.calibration})")
        return (f"{len(self.fp32)} operation(s) kept in float32, their values would come within a {self.margin:g}x "
                f"margin of float16's limit {FP16_MAX:g}: " + "; ".join(f"{k} ({self.reasons.get(k, '')})"
                                                                        for k in ordered(self.fp32)))

    def to_json(self) -> str:
        return json.dumps({"version": PLAN_VERSION, "margin": self.margin, "calibration": self.calibration,
                           "peak": self.peak, "fp32": ordered(self.fp32), "reasons": self.reasons},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Fp16Plan | None":
        """The plan stored by to_json, or None when absent, unreadable or of another version."""
        try:
            d = json.loads(text)
            if d.get("version") != PLAN_VERSION or float(d["margin"]) != MARGIN:
                return None
            return cls(frozenset(d["fp32"]), dict(d["reasons"]), str(d["calibration"]), float(d["peak"]),
                       float(d["margin"]))
        except (TypeError, ValueError, KeyError, AttributeError):
            return None


def ordered(names) -> list[str]:
    """`names` (operations) in forward order."""
    order = {n: i for i, n in enumerate(op_order())}
    return sorted(names, key=lambda n: order.get(n, len(order)))


def op_order() -> list[str]:
    """Every float16 operation in forward order."""
    out = [arch.STEM.conv]
    for b in arch.BLOCKS:
        out += ([b.branch1.conv] if b.branch1 else []) + [c.conv for c in b.branch2] + [b.name]
    return out


def op_tensors() -> dict[str, tuple[list[str], str]]:
    """{operation: (tensors it reads, tensor it writes)}, tensors named as numpy_forward
    records them. pool1 is bounded by conv1's output and a block's ReLU output by its sum."""
    ops = {arch.STEM.conv: (["centred"], arch.STEM.conv)}
    x = arch.STEM.conv
    for b in arch.BLOCKS:
        short = x
        if b.branch1 is not None:
            ops[b.branch1.conv] = ([x], b.branch1.conv)
            short = b.branch1.conv
        a, bb, c = b.branch2
        ops[a.conv] = ([x], a.conv)
        ops[bb.conv] = ([a.conv], bb.conv)
        ops[c.conv] = ([bb.conv], c.conv)
        ops[b.name] = ([short, c.conv], b.name)
        x = b.name
    return ops


def calibration_faces() -> tuple[np.ndarray, str]:
    """Real face crops float32 [N, 3, 224, 224] (BGR, 0..255) and what they are
    (engine.network.faces.fp16_faces); the synthetic calibration crops when scikit-image is
    not installed."""
    from engine.errors import UnavailableError
    from engine.network.faces import fp16_faces

    try:
        return fp16_faces()
    except UnavailableError:
        from engine.network.synthetic import calibration_crops

        return calibration_crops(seed=0), "synthetic calibration crops (scikit-image not installed: no real faces)"


def measure(fused: dict, mean: np.ndarray, crops: np.ndarray) -> dict[str, float]:
    """Largest magnitude of every trunk tensor on `crops` (float32, numpy forward)."""
    from engine.network.numpy_forward import fused_features

    peaks: dict[str, float] = {}

    def record(name, value):
        peaks[name] = max(peaks.get(name, 0.0), float(np.abs(value).max()) if value.size else 0.0)

    for i in range(0, len(crops), 8):  # 8 at a time: bounded memory (~0.3 GB), efficient matrix products
        fused_features(fused, mean, crops[i:i + 8].astype(np.float32), record)
    return peaks


def make_plan(fused: dict, mean: np.ndarray, crops: np.ndarray | None = None,
              calibration: str | None = None) -> Fp16Plan:
    """The operations that must stay float32 for `fused` weights (weights.fuse)."""
    if crops is None:
        crops, calibration = calibration_faces()
    peaks = measure(fused, mean, crops)
    fp32, reasons = set(), {}
    for op, (reads, writes) in op_tensors().items():
        why = []
        if f"{op}.weight" in fused:
            for part in ("weight", "bias"):
                m = float(np.abs(fused[f"{op}.{part}"]).max())
                if not m <= LIMIT:  # also NaN
                    why.append(f"{part} reaches {m:.3g}")
        for t in reads:
            if not peaks[t] <= LIMIT:
                why.append(f"input reaches {peaks[t]:.3g}")
        if not peaks[writes] <= LIMIT:
            why.append(f"output reaches {peaks[writes]:.3g}")
        if why:
            fp32.add(op)
            reasons[op] = ", ".join(why)
    return Fp16Plan(frozenset(fp32), reasons, calibration or "given crops", max(peaks.values()), MARGIN)


def log_plan(plan: Fp16Plan, what: str) -> None:
    """Say which layers stay float32 (a warning: the float16 network then runs them slower)."""
    if plan.fp32:
        log.warning("%s: %s", what, plan.summary())
    else:
        log.info("%s: %s", what, plan.summary())
