"""The one module that touches the compiled core, engine._C.

Everything else asks here whether a feature exists and gets a message that says
what to do when it does not. Importing this module never fails: the compiled core
is loaded on first use.
"""
from __future__ import annotations

import functools
import importlib.util
import json
from types import ModuleType

from engine.errors import UnavailableError


@functools.lru_cache(maxsize=None)
def core() -> ModuleType:
    """The compiled module engine._C; UnavailableError when it was not built."""
    try:
        from engine import _C
    except ImportError as e:
        raise UnavailableError(
            f"the compiled core engine._C is not importable ({e}); build it with "
            "`pip install -e .` from the repository (needs a C++17 compiler and CMake)"
        ) from e
    return _C


def has_core() -> bool:
    try:
        core()
        return True
    except UnavailableError:
        return False


def cuda_compiled() -> bool:
    """True when engine._C contains the CUDA kernels (decode and crop)."""
    return has_core() and bool(core().cuda_compiled())


@functools.lru_cache(maxsize=None)
def has_cuda() -> bool:
    """True when the CUDA kernel is compiled in and a CUDA device is usable."""
    return cuda_compiled() and core().cuda_device_count() > 0


def has_tensorrt() -> bool:
    """True when the TensorRT Python package is importable and a GPU is usable.

    Does not import TensorRT: creating TensorRT objects without a working CUDA
    driver can crash the process, so callers check this first.
    """
    return importlib.util.find_spec("tensorrt") is not None and has_cuda()


def require_cuda(feature: str) -> None:
    """Raise UnavailableError naming `feature` when CUDA decoding is impossible here."""
    if not cuda_compiled():
        raise UnavailableError(
            f"{feature} needs the CUDA build of engine._C; this build has no CUDA kernel. "
            "Install the CUDA toolkit (nvcc on PATH) and rebuild: ENGINE_WITH_CUDA=ON pip install -e ."
        )
    if not has_cuda():
        raise UnavailableError(f"{feature} needs an NVIDIA GPU with a working driver; none was found")


def build_info() -> dict:
    """How the compiled core was built (compiler, SIMD kernels, OpenMP, CUDA)."""
    info = json.loads(core().build_info_json())
    info["cuda_devices"] = core().cuda_device_count()
    return info


# ---- the crop kernels (csrc/include/e3dmm/crop.h): engine.crop's rule into the network's input batch ----

_CROP_LAYOUTS = ("hwc", "chw")
_CROP_OUT_TYPES = {"float32": 1, "float16": 2}


def has_cuda_crop() -> bool:
    """True when engine._C has the CUDA crop kernel and a CUDA device is usable."""
    return has_cuda() and hasattr(core(), "crop_cuda")


def _crop_core(feature: str) -> ModuleType:
    c = core()
    if not hasattr(c, "crop_cpu"):
        raise UnavailableError(f"{feature} needs a newer build of engine._C (it has no crop kernel); "
                               "rebuild it with `pip install -e .`")
    return c


_INT64_MAX = 2**63 - 1


def _found(v) -> str:
    """A short description of `v` for a message's "found ...": a scalar's value, an array's or
    tensor's dtype and shape (never its repr: that prints the elements), a sequence's length."""
    import numpy as np

    from engine.errors import describe_array

    if isinstance(v, np.generic):
        v = v.item()
    if v is None or isinstance(v, (bool, int, float)):
        return repr(v)
    if isinstance(v, str):
        return repr(v) if len(v) <= 40 else f"a str of {len(v)} characters"
    if isinstance(v, type):  # a class (np.float32 has `shape` and `dtype` too, as descriptors)
        return f"the type {v.__name__}"
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return f"{type(v).__name__} {describe_array(v)}"
    if isinstance(v, (list, tuple)):
        return f"a {type(v).__name__} of {len(v)} items"
    return type(v).__name__


def _crop_int(name: str, v, lo: int, hi: int = _INT64_MAX) -> int:
    """`v` as an int in [lo, hi] (hi: int64's by default, what the binding takes; the binding
    checks its own narrower limits with the same wording)."""
    import numpy as np

    from engine.errors import InputError

    is_int = isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
    if not is_int or v < lo or v > hi:
        rng = f">= {lo}" if hi == _INT64_MAX and not (is_int and v > hi) else f"in [{lo}, {hi}]"
        raise InputError(f"{name}: expected an integer {rng}, found {_found(v)}")
    return int(v)


def _crop_bounds(bounds, n: int, fn: str):
    """bounds as C-contiguous int64 [n, 4]; InputError naming what was found otherwise."""
    import numpy as np

    from engine.errors import InputError, describe_array

    expected = f"integers [{n}, 4] (bl, bt, br, bb per face, as engine.crop.crop_bounds gives)"
    try:
        a = np.asarray(bounds)
    except (ValueError, TypeError, OverflowError):  # ragged rows: numpy's own words run to 200 characters
        raise InputError(f"{fn}: bounds: expected {expected}, found {_found(bounds)} that is not a table "
                         f"(rows of different lengths?)") from None
    if n == 0 and a.size == 0:  # no faces: [] is as good as an empty [0, 4] array
        return np.empty((0, 4), np.int64)
    if a.dtype.kind not in "iu" or a.shape != (n, 4):
        if bounds is None:
            what = "None"
        elif a.dtype == object:
            what = "numbers too large for int64 or not numbers"
        else:
            what = describe_array(a)
        raise InputError(f"{fn}: bounds: expected {expected}, found {what}")
    if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise InputError(f"{fn}: bounds: expected {expected} within int64, found {int(a.max())}")
    return np.ascontiguousarray(a, dtype=np.int64)


def crop_batch_cpu(images, bounds, size: int = 224, layout: str = "hwc", out=None, num_threads: int = 0):
    """Crop B faces by the release's rule on the CPU: float32 [B, 3, size, size], planar BGR 0..255.

    `images`: a list (or tuple) of B uint8 RGB numpy arrays, [H, W, 3] for layout "hwc" or [3, H, W]
    for "chw", any strides (views need no copy); the same array may appear for several faces.
    `bounds`: integers [B, 4], the crop bounds (bl, bt, br, bb) of engine.crop.crop_bounds for each
    face: columns [bl, br), rows [bt, bb), zero outside the image, each within +-2^33
    (engine._C.CROP_LIMITS). `out`: an optional float32 [B, 3, size, size] C-contiguous buffer written
    in place and returned. `num_threads`: 0 for every core. The GIL is released while cropping.

    The values are those of engine.crop._sample_bilinear bit for bit (same float64 taps, float32
    sums, rounding halves to even), within 1 grey level of engine.crop.crop_face (OpenCV); the
    kernel's per-element body is the one the CUDA kernel runs (csrc/src/crop_body.h).
    Raises InputError naming the argument, what was expected and what was found.
    """
    import numpy as np

    from engine.errors import InputError

    fn = "crop_batch_cpu"
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)  # a stacked batch: one image per row
    if not isinstance(images, (list, tuple)):
        raise InputError(f"{fn}: images: expected a list of B uint8 RGB arrays, found {_found(images)}")
    if not isinstance(layout, str) or layout not in _CROP_LAYOUTS:
        raise InputError(f"{fn}: layout: expected one of {list(_CROP_LAYOUTS)}, found {_found(layout)}")
    size = _crop_int(f"{fn}: size", size, 1)
    num_threads = _crop_int(f"{fn}: num_threads", num_threads, 0)
    b = _crop_bounds(bounds, len(images), fn)
    if out is not None and not isinstance(out, np.ndarray):
        raise InputError(f"{fn}: out: expected a float32 numpy array [{len(images)}, 3, {size}, {size}], "
                         f"found {_found(out)}")
    return _crop_core(fn).crop_cpu(list(images), b, size, layout, out, num_threads)


def _stream_handle(stream, fn: str) -> int:
    from engine.errors import InputError

    handle = getattr(stream, "cuda_stream", None)  # torch.cuda.Stream
    if handle is None:
        handle = getattr(stream, "ptr", None)  # cupy.cuda.Stream
    if handle is None:
        handle = stream
    if isinstance(handle, bool) or not isinstance(handle, int) or not 0 <= handle < 2**64:
        raise InputError(f"{fn}: stream: expected a cudaStream_t as an integer in [0, 2^64) (0: the default "
                         f"stream) or a torch/CuPy stream, found {_found(handle)}")
    return handle


def _out_address(out_ptr, n: int, size: int, out_dtype: str, fn: str) -> int:
    """The device address of the output: an integer, or a CUDA tensor checked for shape and dtype."""
    from engine.errors import InputError, describe_array

    if hasattr(out_ptr, "data_ptr"):  # a torch tensor: checked, then its address
        want = (n, 3, size, size)
        ok = (tuple(out_ptr.shape) == want and str(out_ptr.dtype).rsplit(".", 1)[-1] == out_dtype
              and out_ptr.is_contiguous() and getattr(out_ptr, "is_cuda", False))
        if not ok:
            raise InputError(f"{fn}: out_ptr: expected a contiguous CUDA tensor {out_dtype}{list(want)}, found "
                             f"{describe_array(out_ptr)} on {getattr(out_ptr, 'device', '?')}"
                             f"{'' if out_ptr.is_contiguous() else ' (not contiguous)'}")
        return int(out_ptr.data_ptr())
    if isinstance(out_ptr, bool) or not isinstance(out_ptr, int) or out_ptr < 0 or out_ptr >= 2**64:
        raise InputError(f"{fn}: out_ptr: expected the device address (an integer in [0, 2^64)) of a contiguous "
                         f"{out_dtype}[{n}, 3, {size}, {size}] buffer, found {_found(out_ptr)}")
    return out_ptr


def crop_batch_cuda(sources, bounds, out_ptr, size: int = 224, out_dtype: str = "float32", stream=0) -> None:
    """Crop B faces by the release's rule on the GPU, in one kernel launch, straight into the network's
    input buffer: out[b] = planar BGR 0..255 crop of face b, as crop_batch_cpu computes it.

    `sources`: a list of B tuples (device_ptr, height, width, stride_y, stride_x, stride_c), one per face:
    the device address of a uint8 RGB image on the current device and its strides in elements
    (a torchvision/nvJPEG CHW tensor t: (t.data_ptr(), H, W, t.stride(1), t.stride(2), t.stride(0)); an
    HWC tensor: (ptr, H, W, t.stride(0), t.stride(1), t.stride(2))). `bounds`: integers [B, 4] as for
    crop_batch_cpu. `out_ptr`: the device address of a contiguous [B, 3, size, size] buffer of
    `out_dtype` ("float32" or "float16"), or such a CUDA tensor (its shape and dtype are then checked).
    `stream`: a cudaStream_t as an integer (0: the legacy default stream) or a torch/CuPy stream.
    Asynchronous: returns once the kernel is queued on `stream`.

    Raises InputError for bad arguments (checked on every machine; an image or output that is not
    device memory is named), UnavailableError when the build has no CUDA kernel or no GPU is present,
    BackendError when CUDA fails.
    """
    import numpy as np

    from engine.errors import InputError

    fn = "crop_batch_cuda"
    if not isinstance(sources, (list, tuple)):
        raise InputError(f"{fn}: sources: expected a list of B tuples (device_ptr, height, width, stride_y, "
                         f"stride_x, stride_c), found {_found(sources)}")
    rows = []
    for i, s in enumerate(sources):
        if not isinstance(s, (list, tuple)) or len(s) != 6:
            raise InputError(f"{fn}: sources[{i}]: expected a tuple (device_ptr, height, width, stride_y, stride_x, "
                             f"stride_c), found {_found(s)}")
        row = []
        for name, v in zip(("device_ptr", "height", "width", "stride_y", "stride_x", "stride_c"), s):
            row.append(_crop_int(f"{fn}: sources[{i}].{name}", v, 1 if name == "device_ptr" else -(2**63)))
        rows.append(row)
    if not isinstance(out_dtype, str) or out_dtype not in _CROP_OUT_TYPES:
        raise InputError(f"{fn}: out_dtype: expected one of {list(_CROP_OUT_TYPES)}, found {_found(out_dtype)}")
    size = _crop_int(f"{fn}: size", size, 1)
    b = _crop_bounds(bounds, len(rows), fn)
    src = np.array(rows, dtype=np.int64).reshape(len(rows), 6)
    out_addr = _out_address(out_ptr, len(rows), size, out_dtype, fn)
    handle = _stream_handle(stream, fn)
    _crop_core(fn).crop_cuda(src, b, out_addr, size, _CROP_OUT_TYPES[out_dtype], handle)
