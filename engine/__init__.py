"""3DMM-CNN inference engine: face photos to 3D Morphable Model coefficients,
textured meshes and face descriptors (Tran et al., CVPR 2017).

`import engine` works on any machine: the compiled core, PyTorch, ONNX Runtime,
TensorRT and CUDA are loaded only when a feature needs them. The main names are
re-exported here lazily:

    engine.Reconstructor, engine.FaceResult      photos -> meshes and descriptors
    engine.FaceBox                               a face's box, and its 68 landmarks (pose)
    engine.Pose                                  a face's head pose (engine.pose)
    engine.MorphableModel, engine.load_model     morphable models (BFM, caches, synthetic)
    engine.Decoder                               coefficients -> meshes (CPU / CUDA kernels)
    engine.create_runner, engine.available_runners   the network on ONNX Runtime, PyTorch, TensorRT
    engine.expand_inputs, engine.OutputNames     the files a run reads; a file name for every face
"""
from __future__ import annotations

import importlib

from engine.errors import BackendError, EngineError, InputError, ModelFileError, UnavailableError

__version__ = "0.1.0"

_LAZY = {
    "Reconstructor": "engine.pipeline",
    "FaceResult": "engine.pipeline",
    "FaceBox": "engine.detect",
    "Pose": "engine.pose",
    "MorphableModel": "engine.morphable",
    "load_model": "engine.morphable",
    "Decoder": "engine.decode",
    "DecodedBatch": "engine.decode",
    "create_runner": "engine.runners",
    "available_runners": "engine.runners",
    "expand_inputs": "engine.images",
    "OutputNames": "engine.pipeline.naming",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["BackendError", "EngineError", "InputError", "ModelFileError", "UnavailableError", "__version__",
           *_LAZY]
