"""Test oracle: a plain float64 numpy interpreter of Caffe layer definitions.

It walks a parsed prototxt layer by layer and applies each layer's Caffe semantics to
the raw Caffe blobs (BatchNorm with its scale-factor blob, a separate Scale layer, ceil
rounding in pooling), knowing nothing about the engine's merged weights, PyTorch or
ONNX. Also: `to_caffe_blobs`, the inverse of the engine's mapping, to write test files.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _conv(x, w, stride, pad):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - kh) // stride + 1
    wo = (wd + 2 * pad - kw) // stride + 1
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :ho, :wo]
    return np.einsum("nchwij,ocij->nohw", win, w, optimize=True)


def _pool(x, p):
    k, s = p.kernel_size, p.stride
    n, c, h, w = x.shape
    # Caffe: pooled = ceil((h + 2*pad - k) / stride) + 1, here pad = 0
    ho = int(np.ceil((h - k) / s)) + 1
    wo = int(np.ceil((w - k) / s)) + 1
    out = np.empty((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, :, i * s:min(i * s + k, h), j * s:min(j * s + k, w)]
            if p.pool == 0:  # MAX
                out[:, :, i, j] = patch.max(axis=(2, 3))
            else:  # AVE: Caffe divides by the window size clipped to the padded input
                out[:, :, i, j] = patch.sum(axis=(2, 3)) / (min(i * s + k, h) - i * s) / (min(j * s + k, w) - j * s)
    return out


def caffe_forward(net, blobs: dict[str, list[np.ndarray]], data: np.ndarray) -> dict[str, np.ndarray]:
    """Run a parsed NetParameter on `data` (already mean-subtracted); returns every top."""
    t = {net.input[0]: data.astype(np.float64)}
    for layer in net.layer:
        b = [np.asarray(a, np.float64) for a in blobs.get(layer.name, [])]
        x = t[layer.bottom[0]]
        if layer.type == "Convolution":
            p = layer.convolution_param
            y = _conv(x, b[0], p.stride[0] if p.stride else 1, p.pad[0] if p.pad else 0)
            if p.bias_term:
                y = y + b[1].reshape(1, -1, 1, 1)
        elif layer.type == "BatchNorm":
            f = 0.0 if b[2].ravel()[0] == 0 else 1.0 / b[2].ravel()[0]
            mean, var = b[0].ravel() * f, b[1].ravel() * f
            eps = layer.batch_norm_param.eps
            y = (x - mean.reshape(1, -1, 1, 1)) / np.sqrt(var.reshape(1, -1, 1, 1) + eps)
        elif layer.type == "Scale":
            y = x * b[0].reshape(1, -1, 1, 1)
            if layer.scale_param.bias_term:
                y = y + b[1].reshape(1, -1, 1, 1)
        elif layer.type == "ReLU":
            y = np.maximum(x, 0)
        elif layer.type == "Pooling":
            y = _pool(x, layer.pooling_param)
        elif layer.type == "Eltwise":
            y = t[layer.bottom[0]] + t[layer.bottom[1]]
        elif layer.type == "InnerProduct":
            y = x.reshape(x.shape[0], -1) @ b[0].reshape(b[0].shape[-2], -1).T + b[1].ravel()
        else:
            raise NotImplementedError(layer.type)
        t[layer.top[0]] = y
    return t


def to_caffe_blobs(weights: dict[str, np.ndarray], factor: float = 2.0) -> dict[str, list[np.ndarray]]:
    """The engine's canonical weights written back as Caffe blobs (BN stats times `factor`)."""
    from engine.network import architecture as arch

    out = {}
    for c in arch.all_convs():
        out[c.conv] = [weights[f"{c.conv}.weight"]]
        out[c.bn] = [weights[f"{c.conv}.bn.running_mean"] * np.float32(factor),
                     weights[f"{c.conv}.bn.running_var"] * np.float32(factor),
                     np.array([factor], np.float32)]
        out[c.scale] = [weights[f"{c.conv}.bn.weight"], weights[f"{c.conv}.bn.bias"]]
    out[arch.FC_NAME] = [weights[f"{arch.FC_NAME}.weight"], weights[f"{arch.FC_NAME}.bias"]]
    return out

