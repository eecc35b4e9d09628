"""3DMM-CNN inference engine: face photos to 3D Morphable Model coefficients,
textured meshes and face descriptors (Tran et al., CVPR 2017).

`import engine` works on any machine: the compiled core, PyTorch, ONNX Runtime,
TensorRT and CUDA are loaded only when a feature needs them.
"""
from engine.errors import BackendError, EngineError, InputError, ModelFileError, UnavailableError

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "EngineError",
    "InputError",
    "ModelFileError",
    "UnavailableError",
    "__version__",
]
