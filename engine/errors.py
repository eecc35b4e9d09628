"""The engine's error hierarchy: one base class and four kinds.

Every message names the file, field or argument, what was expected and what
was found. The compiled core throws typed C++ errors that the binding maps to
these classes, so callers catch the same types whatever raised them.
"""


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(EngineError, ValueError):
    """Bad caller input: wrong shape, dtype, value, or an unreadable input file."""


class ModelFileError(EngineError):
    """A model file (morphable model, network weights, cache, engine) is missing,
    truncated, corrupt or inconsistent."""


class BackendError(EngineError, RuntimeError):
    """A runner or kernel failed while executing (CUDA error, TensorRT error)."""


class UnavailableError(EngineError, RuntimeError):
    """A feature needs something this machine lacks (GPU, TensorRT, dlib, ...).
    The message says what to install or enable."""


def describe_array(a) -> str:
    """Short 'dtype[shape]' description of an array-like for error messages."""
    shape = getattr(a, "shape", None)
    dtype = getattr(a, "dtype", None)
    if shape is None:
        return type(a).__name__
    return f"{dtype}[{', '.join(str(s) for s in shape)}]"
