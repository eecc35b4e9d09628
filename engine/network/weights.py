"""Network weights as plain numpy: from Caffe blobs, to and from our own file, fused.

Our canonical form is a flat dict {name: float32 array} with the names and shapes of
`architecture.state_dict_shapes()`; the PyTorch module, the numpy forward and the ONNX
builder all consume it. Our own file is safetensors (no pickle, memory-mappable) with
metadata saying where the weights came from and whether they are synthetic.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError
from engine.fileio import atomic_write
from engine.network import architecture as arch

WEIGHTS_FORMAT = "engine3dmm-cnn3dmm-weights"
WEIGHTS_VERSION = "1"


def _fit(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """`arr` viewed as `shape`, or None. Legacy 4-D Caffe blobs pad vectors and matrices
    with LEADING 1s (a 198x2048 InnerProduct weight is 1x1x198x2048, a bias 1x1x1x198), and
    Caffe's Blob::ShapeEquals accepts exactly that padding; so do we, and nothing else (a
    transposed matrix or 1s elsewhere is the same size but another layout)."""
    if arr.shape == shape:
        return arr
    if arr.ndim == 4 and len(shape) < 4 and arr.shape == (1,) * (4 - len(shape)) + tuple(shape):
        return arr.reshape(shape)
    return None


def report_mismatch(where: str, missing: list[str], unexpected: list[str], misshaped: list[str]) -> None:
    """Raise one ModelFileError listing every missing, unexpected and misshaped entry."""
    if not (missing or unexpected or misshaped):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if items:
            parts.append(f"{label} ({len(items)}): " + ", ".join(items))
    raise ModelFileError(f"{where}: weights do not match the 3DMM-CNN ResNet-101: " + "; ".join(parts))


def from_caffe_blobs(blobs: dict[str, list[np.ndarray]], where: str = "caffemodel",
                     names: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Map Caffe blobs by layer name to our canonical weights (BatchNorm+Scale merged).

    `names`: the prototxt's name of each layer of the architecture (what
    caffe_io.validate_prototxt returns; default: the release's names). Like Caffe, weights
    are copied by layer name and layers the network does not use are ignored (listed at
    info level); missing, misshaped and non-finite layers are refused, all in one error."""
    from engine.network.caffe_io import log_ignored_layers

    expected = arch.expected_caffe_blobs()
    names = names or {}
    source = {n: names.get(n, n) for n in expected}  # architecture name -> name in the file

    def label(n: str) -> str:
        return source[n] if source[n] == n else f"{source[n]} (the architecture's {n})"

    missing = [label(n) for n in expected if source[n] not in blobs]
    misshaped, bad_values = [], []
    fitted: dict[str, list[np.ndarray]] = {}
    for name, shapes in expected.items():
        if source[name] not in blobs:
            continue
        found = blobs[source[name]]
        arrays = [_fit(a, s) for a, s in zip(found, shapes)]
        if len(found) != len(shapes) or any(a is None for a in arrays):
            misshaped.append(f"{label(name)} (expected blobs {[list(s) for s in shapes]}, "
                             f"found {[list(a.shape) for a in found]})")
            continue
        if not all(np.isfinite(a).all() for a in arrays):
            bad_values.append(label(name))
            continue
        fitted[name] = [a.astype(np.float32) for a in arrays]
    report_mismatch(where, missing, [], misshaped)
    if bad_values:
        raise ModelFileError(f"{where}: layers holding NaN or infinite weights: {', '.join(bad_values)}")
    log_ignored_layers(where, set(blobs) - set(source.values()))

    out: dict[str, np.ndarray] = {}
    negative = []
    for c in arch.all_convs():
        out[f"{c.conv}.weight"] = fitted[c.conv][0]
        mean, var, factor = fitted[c.bn]
        # Caffe keeps running sums and a moving-average factor; the statistics are
        # blob/factor, with factor 0 meaning "no statistics" (Caffe then uses 0).
        f = float(factor[0])
        inv = 0.0 if f == 0.0 else 1.0 / f
        out[f"{c.conv}.bn.running_mean"] = (mean * inv).astype(np.float32)
        out[f"{c.conv}.bn.running_var"] = (var * inv).astype(np.float32)
        stats = (out[f"{c.conv}.bn.running_mean"], out[f"{c.conv}.bn.running_var"])
        if not all(np.isfinite(a).all() for a in stats) or (stats[1].astype(np.float64) + arch.BN_EPS <= 0).any():
            negative.append(label(c.bn))  # e.g. a tiny factor, or a negative variance (sqrt of < 0)
        gamma, beta = fitted[c.scale]
        out[f"{c.conv}.bn.weight"] = gamma
        out[f"{c.conv}.bn.bias"] = beta
    if negative:
        raise ModelFileError(f"{where}: BatchNorm layers whose statistics (blobs 0 and 1 divided by blob 2) are "
                             f"not finite, or whose variance plus eps is not positive; either makes NaN outputs: "
                             f"{', '.join(negative)}")
    out[f"{arch.FC_NAME}.weight"], out[f"{arch.FC_NAME}.bias"] = fitted[arch.FC_NAME]
    return out


def check_state_dict(weights: dict, where: str) -> None:
    """Every canonical name present with its shape, nothing else (one error listing all)."""
    expected = arch.state_dict_shapes()
    missing = [n for n in expected if n not in weights]
    unexpected = [n for n in weights if n not in expected]
    misshaped = [f"{n} (expected {list(s)}, found {list(weights[n].shape)})"
                 for n, s in expected.items() if n in weights and tuple(weights[n].shape) != s]
    report_mismatch(where, missing, unexpected, misshaped)


def save_weights(path, weights: dict[str, np.ndarray], mean: np.ndarray, metadata: dict) -> None:
    """Write weights and the mean image to our safetensors file, atomically.

    `metadata` must say `synthetic` (bool) and `source` (str or dict)."""
    from safetensors.numpy import save

    check_state_dict(weights, str(path))
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    tensors["mean"] = np.ascontiguousarray(mean, dtype=np.float32)
    meta = {"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION,
            "synthetic": "true" if metadata["synthetic"] else "false",
            "source": json.dumps(metadata["source"])}
    meta.update({k: str(v) for k, v in metadata.items() if k not in ("synthetic", "source")})
    blob = save(tensors, metadata=meta)
    with atomic_write(path) as f:
        f.write(blob)


def load_weights(path) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """(weights, mean image [1,3,224,224], metadata) from our safetensors file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: weight file not found")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers/truncation
        raise ModelFileError(f"{path}: not a readable safetensors weight file ({e})") from None
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ModelFileError(f"{path}: metadata 'format': expected {WEIGHTS_FORMAT!r}, found {meta.get('format')!r}")
    mean = tensors.pop("mean", None)
    if mean is None or mean.shape != (1, 3, arch.INPUT_SIZE, arch.INPUT_SIZE):
        raise ModelFileError(f"{path}: tensor 'mean': expected [1, 3, 224, 224], "
                             f"found {None if mean is None else list(mean.shape)}")
    check_state_dict(tensors, str(path))
    info = {"synthetic": meta.get("synthetic") == "true",
            "source": json.loads(meta.get("source", "null"))}
    info.update({k: v for k, v in meta.items() if k not in ("synthetic", "source", "format", "version")})
    return tensors, mean, info


def fuse(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fold every BatchNorm+Scale into its convolution: {`<conv>.weight`, `<conv>.bias`, fc}.

    Computed in float64 so the fused float32 weights are as close to the unfused
    network as float32 allows."""
    out: dict[str, np.ndarray] = {}
    for c in arch.all_convs():
        w = weights[f"{c.conv}.weight"].astype(np.float64)
        g = weights[f"{c.conv}.bn.weight"].astype(np.float64)
        b = weights[f"{c.conv}.bn.bias"].astype(np.float64)
        m = weights[f"{c.conv}.bn.running_mean"].astype(np.float64)
        v = weights[f"{c.conv}.bn.running_var"].astype(np.float64)
        s = g / np.sqrt(v + arch.BN_EPS)
        out[f"{c.conv}.weight"] = (w * s[:, None, None, None]).astype(np.float32)
        out[f"{c.conv}.bias"] = (b - m * s).astype(np.float32)
    out[f"{arch.FC_NAME}.weight"] = weights[f"{arch.FC_NAME}.weight"].astype(np.float32)
    out[f"{arch.FC_NAME}.bias"] = weights[f"{arch.FC_NAME}.bias"].astype(np.float32)
    return out


def channel_mean_bgr() -> list[float]:
    return list(arch.CHANNEL_MEAN_BGR)


def channel_mean_image() -> np.ndarray:
    """The per-channel mean (B, G, R) as a constant [1,3,224,224] image, for when no mean file is given."""
    img = np.empty((1, 3, arch.INPUT_SIZE, arch.INPUT_SIZE), np.float32)
    img[0] = np.asarray(arch.CHANNEL_MEAN_BGR, np.float32)[:, None, None]
    return img
