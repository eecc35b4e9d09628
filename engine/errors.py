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


NO_SUCH_PATH = "nothing (no such file or folder)"


def describe_path(path) -> str:
    """What is at `path`, for a message's "found ..." part: "a file", "a folder", "a broken
    link", NO_SUCH_PATH or "neither a file nor a folder" (a device, a
    pipe...). Never raises."""
    import os

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "a broken link" if os.path.islink(path) else NO_SUCH_PATH
    except (OSError, ValueError) as e:  # a name too long, a folder without permission, a NUL byte
        return f"nothing readable ({getattr(e, 'strerror', None) or e})"
    import stat

    if stat.S_ISREG(st.st_mode):
        return "a file"
    if stat.S_ISDIR(st.st_mode):
        return "a folder"
    return "neither a file nor a folder"


def said_once(path, error) -> str:
    """The text of `error` without its leading "`path`: " (when it has one), for a message
    that names `path` itself: the path is said once."""
    text = str(error)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text
