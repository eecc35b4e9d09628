"""The 3DMM-CNN network: Caffe file reading, weights, PyTorch module, ONNX export.

Importing this package loads neither PyTorch nor ONNX: the names below are resolved
on first use. PyTorch lives only in `engine.network.torch_model`.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "read_prototxt": "engine.network.caffe_io",
    "read_caffemodel": "engine.network.caffe_io",
    "read_mean": "engine.network.caffe_io",
    "write_caffemodel": "engine.network.caffe_io",
    "validate_prototxt": "engine.network.caffe_io",
    "match_network": "engine.network.caffe_net",
    "from_caffe_blobs": "engine.network.weights",
    "load_weights": "engine.network.weights",
    "save_weights": "engine.network.weights",
    "make_synthetic": "engine.network.synthetic",
    "build_onnx": "engine.network.onnx_export",
    "convert_caffe": "engine.network.convert",
    "resolve_model": "engine.network.resolve",
    "ResolvedModel": "engine.network.resolve",
    "default_model_dir": "engine.network.resolve",
    "build_torch_model": "engine.network.torch_model",
    "load_torch_model": "engine.network.torch_model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.network' has no attribute {name!r}")
    attr = "build" if name == "build_torch_model" else name
    return getattr(importlib.import_module(module), attr)
