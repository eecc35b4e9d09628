"""The network forward pass in plain numpy (no PyTorch, no ONNX Runtime).

Used to calibrate the synthetic weights' BatchNorm statistics on machines that have
only numpy, and as a slow but dependable reference. Works in float32 or float64
(the dtype of the input).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from engine.network import architecture as arch


def conv2d(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """NCHW convolution (cross-correlation, as Caffe and PyTorch) via one matmul."""
    n, c, _, _ = x.shape
    o, _, k, _ = w.shape
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    if k == 1:
        cols = x[:, :, ::stride, ::stride].transpose(0, 2, 3, 1)  # N,Ho,Wo,C
        ho, wo = cols.shape[1:3]
        y = cols.reshape(-1, c) @ w.reshape(o, c).T
    else:
        win = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # N,C,Ho,Wo,k,k
        ho, wo = win.shape[2:4]
        y = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k) @ w.reshape(o, -1).T
    return y.reshape(n, ho, wo, o).transpose(0, 3, 1, 2)


def max_pool_ceil(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """Caffe MAX pooling without padding and with ceil rounding (windows may run past the edge)."""
    n, c, h, w = x.shape
    ho = -(-(h - k) // s) + 1
    wo = -(-(w - k) // s) + 1
    ph, pw = (ho - 1) * s + k - h, (wo - 1) * s + k - w
    xp = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), constant_values=-np.inf)
    return sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(axis=(4, 5))


def _bn(x, weights, name, calibrate: bool):
    if calibrate:
        # Set this BatchNorm's statistics from the batch before using them, so every
        # later layer sees normalised activations (data-dependent initialisation).
        weights[f"{name}.bn.running_mean"] = x.mean(axis=(0, 2, 3)).astype(np.float32)
        weights[f"{name}.bn.running_var"] = x.var(axis=(0, 2, 3)).astype(np.float32)
    m = weights[f"{name}.bn.running_mean"].astype(x.dtype)
    v = weights[f"{name}.bn.running_var"].astype(x.dtype)
    g = weights[f"{name}.bn.weight"].astype(x.dtype)
    b = weights[f"{name}.bn.bias"].astype(x.dtype)
    inv = 1 / np.sqrt(v + arch.BN_EPS)
    return (x - m[:, None, None]) * (inv * g)[:, None, None] + b[:, None, None]


def _conv_bn(x, c: arch.ConvSpec, weights, calibrate):
    y = conv2d(x, weights[f"{c.conv}.weight"].astype(x.dtype), c.stride, c.pad)
    return _bn(y, weights, c.conv, calibrate)


def features(weights: dict, mean: np.ndarray, crops: np.ndarray, calibrate: bool = False) -> np.ndarray:
    """pool5 output [N, 2048] of raw crops (mean subtracted here)."""
    x = crops - mean.astype(crops.dtype)
    x = np.maximum(_conv_bn(x, arch.STEM, weights, calibrate), 0)
    x = max_pool_ceil(x, 3, 2)
    for b in arch.BLOCKS:
        short = x if b.branch1 is None else _conv_bn(x, b.branch1, weights, calibrate)
        y = np.maximum(_conv_bn(x, b.branch2[0], weights, calibrate), 0)
        y = np.maximum(_conv_bn(y, b.branch2[1], weights, calibrate), 0)
        y = _conv_bn(y, b.branch2[2], weights, calibrate)
        x = np.maximum(short + y, 0)
    return x.mean(axis=(2, 3))


def forward(weights: dict, mean: np.ndarray, crops: np.ndarray) -> np.ndarray:
    """Coefficients [N, 198] of raw crops [N, 3, 224, 224] (BGR, 0..255)."""
    f = features(weights, mean, crops)
    return f @ weights[f"{arch.FC_NAME}.weight"].astype(f.dtype).T + weights[f"{arch.FC_NAME}.bias"].astype(f.dtype)


def fused_features(fused: dict, mean: np.ndarray, crops: np.ndarray, record=None) -> np.ndarray:
    """pool5 output [N, 2048] with BatchNorm folded into the convolutions (weights.fuse),
    the form every exported graph carries. `record(name, value)` sees each tensor of the
    trunk before its ReLU: "centred" (input minus mean), each convolution's output by its
    Caffe name, and each residual sum by its block name (pool1 and the ReLUs never exceed
    what they read)."""
    record = record or (lambda name, value: None)

    def conv(x, c: arch.ConvSpec):
        y = conv2d(x, fused[f"{c.conv}.weight"].astype(x.dtype), c.stride, c.pad)
        y += fused[f"{c.conv}.bias"].astype(x.dtype)[:, None, None]
        record(c.conv, y)
        return y

    x = crops - mean.astype(crops.dtype)
    record("centred", x)
    x = max_pool_ceil(np.maximum(conv(x, arch.STEM), 0), 3, 2)
    for b in arch.BLOCKS:
        short = x if b.branch1 is None else conv(x, b.branch1)
        y = np.maximum(conv(x, b.branch2[0]), 0)
        y = np.maximum(conv(y, b.branch2[1]), 0)
        x = short + conv(y, b.branch2[2])
        record(b.name, x)
        x = np.maximum(x, 0)
    return x.mean(axis=(2, 3))
