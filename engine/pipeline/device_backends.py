"""The device input's backends: what decodes a batch's JPEGs and crops its faces into the network's
input (engine.pipeline.device_input.DeviceInput calls them on the network thread).

- `CudaBackend`: nvJPEG (torchvision.io.decode_jpeg(device="cuda"), batched) and the CUDA crop
  kernel (engine._core.crop_batch_cuda) on the runner's stream.
- `HostBackend`: the CPU stand-in the tests run: Pillow decodes without applying the EXIF
  orientation into CHW arrays (what nvJPEG gives), and engine._core.crop_batch_cpu (the CUDA
  kernel's per-pixel body) crops.

Both take the same `View`s (engine.pipeline.orientation) and check them the same way
(`view_sources`) before anything is launched: an address outside its image would be an illegal
memory access on the GPU, which poisons the whole CUDA context instead of raising."""
from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Callable

import numpy as np

from engine.errors import InputError, UnavailableError
from engine.network import architecture as arch
from engine.pipeline.orientation import View


def _crop_module():
    from engine import _core

    if not hasattr(_core.core(), "crop_cpu"):
        raise UnavailableError("the device input needs the crop kernel of engine._C; this build has none: "
                               "rebuild it with `pip install -e .`")
    return _core


def _extent(base) -> tuple[int, int, str]:
    """(address span in elements, element size, dtype name) of a numpy array or torch tensor:
    its elements lie at 0..span from its first element's address (no negative strides)."""
    if isinstance(base, np.ndarray):
        shape, strides = base.shape, [s // max(base.itemsize, 1) for s in base.strides]
        itemsize, dtype = base.itemsize, str(base.dtype)
    else:
        shape, strides = tuple(base.shape), tuple(base.stride())
        itemsize, dtype = int(base.element_size()), str(base.dtype).rsplit(".", 1)[-1]
    if any(s < 0 for s in strides) or any(n < 1 for n in shape):
        return -1, itemsize, dtype
    return sum((n - 1) * s for n, s in zip(shape, strides)), itemsize, dtype


def _address(base) -> int:
    return int(base.ctypes.data) if isinstance(base, np.ndarray) else int(base.data_ptr())


def view_sources(views: list) -> list[tuple[int, int, int, int, int, int]]:
    """The crop kernel's per-face sources (address, height, width, stride_y, stride_x, stride_c)
    of `views`, after checking each: a uint8 base (numpy array or torch tensor), and every pixel
    address the kernel may form (offset + c*stride_c + y*stride_y + x*stride_x) inside the base's
    own memory span. The address is that of the base's first element (`data_ptr()` includes a
    tensor view's storage offset) plus the View's offset, and the strides are the base's own, so
    non-contiguous bases (a permuted HWC tensor, a slice) are read where they lie. InputError
    names the view and what is wrong."""
    out = []
    for i, v in enumerate(views):
        span, itemsize, dtype = _extent(v.base)
        if dtype != "uint8" or itemsize != 1:
            raise InputError(f"device input: views[{i}]: expected a uint8 image, found {dtype}")
        lo = hi = v.offset
        for stride, n in ((v.stride_c, 3), (v.stride_y, v.height), (v.stride_x, v.width)):
            lo, hi = lo + min(0, stride * (n - 1)), hi + max(0, stride * (n - 1))
        if v.height < 1 or v.width < 1 or span < 0 or lo < 0 or hi > span:
            raise InputError(f"device input: views[{i}]: a {v.height}x{v.width} view at offset {v.offset} with "
                             f"strides (c {v.stride_c}, y {v.stride_y}, x {v.stride_x}) reaches elements {lo}..{hi} "
                             f"of an image whose elements span 0..{span}")
        out.append((_address(v.base) + v.offset, v.height, v.width, v.stride_y, v.stride_x, v.stride_c))
    return out


class HostBackend:
    """The CPU stand-in for nvJPEG and the CUDA kernel (tests, and machines without a GPU):
    Pillow decodes without applying the EXIF orientation, into CHW uint8 arrays, as nvJPEG does;
    engine._core.crop_batch_cpu (the CUDA kernel's per-pixel body) crops into the batch's own
    host buffer. Stand-ins for what nvJPEG does wrong, for the tests: `refuse(data) -> bool`
    makes the decoder refuse those inputs (what nvJPEG cannot read); `blank(data) -> bool` makes
    it return an all-zero image for them without a word (what nvJPEG's batched hardware decoder
    has been seen to do). `decodes` counts the decodes of each input, by the SHA-256 of its bytes."""

    name = "host (Pillow + the crop kernel's CPU body)"

    def __init__(self, refuse: Callable[[bytes], bool] | None = None, blank: Callable[[bytes], bool] | None = None):
        self._core = _crop_module()
        self.refuse = refuse
        self.blank = blank
        self.decodes: Counter = Counter()

    def output(self, crops: np.ndarray, n: int) -> np.ndarray:
        return crops[:n]

    def decode(self, datas: list) -> list:
        from PIL import Image

        out = []
        for d in datas:
            d = bytes(d)
            if self.refuse is not None and self.refuse(d):
                raise RuntimeError("Error while decoding JPEG images: refused (HostBackend.refuse)")
            self.decodes[hashlib.sha256(d).hexdigest()] += 1
            with Image.open(io.BytesIO(d)) as im:
                im.load()
                a = np.asarray(im.convert("RGB") if im.mode != "RGB" else im)
            a = np.ascontiguousarray(a.transpose(2, 0, 1))
            out.append(np.zeros_like(a) if self.blank is not None and self.blank(d) else a)
        return out

    @staticmethod
    def all_zero(images: list) -> np.ndarray:
        """bool [len(images)]: which decoded images are entirely zero."""
        return np.array([not img.any() for img in images], bool)

    @staticmethod
    def view(img: np.ndarray) -> View:
        _, h, w = img.shape
        return View(img, 0, h, w, img.strides[1], img.strides[2], img.strides[0])

    @staticmethod
    def array(v: View) -> np.ndarray:
        """The [3, H, W] array a View stands for (numpy strides over the base's memory, no copy;
        the base may be non-contiguous)."""
        span = _extent(v.base)[0]
        flat = np.lib.stride_tricks.as_strided(v.base, shape=(span + 1,), strides=(1,), writeable=False)
        return np.lib.stride_tricks.as_strided(flat[v.offset:], shape=(3, v.height, v.width),
                                               strides=(v.stride_c, v.stride_y, v.stride_x), writeable=False)

    def crop(self, views: list, bounds: np.ndarray, out: np.ndarray, row0: int) -> None:
        view_sources(views)  # the check the CUDA launch makes
        self._core.crop_batch_cpu([self.array(v) for v in views], bounds, size=arch.INPUT_SIZE, layout="chw",
                                  out=out[row0:row0 + len(views)])

    @staticmethod
    def put_rows(out, crops: np.ndarray, rows: list) -> None:
        if not np.shares_memory(out, crops):
            out[rows] = crops[rows]

    @staticmethod
    def to_host(out, crops: np.ndarray, n: int) -> None:
        if not np.shares_memory(out, crops):
            crops[:n] = out


class CudaBackend:
    """nvJPEG (torchvision.io.decode_jpeg(device="cuda"), batched) and the CUDA crop kernel
    (engine._core.crop_batch_cuda), writing into a float32 input buffer on the runner's stream.

    Streams and memory (torchvision 0.2x's decode_jpegs_cuda, read in its source): it allocates
    the output images with the caching allocator on the caller's *current* stream, decodes on a
    private pool stream of its own without first waiting for the current stream, synchronises its
    stream before returning and makes the current stream wait for it. A block that the current
    stream's queued work still reads can therefore be handed to nvJPEG and overwritten
    (pytorch/vision#9606; on H100-class hardware decoders even when the wrapper orders it).
    Hence decoding happens under `decode_stream`, a stream of ours on which nothing is ever
    queued: its pool only ever holds decoded images, and each of those is marked as used by the
    runner's stream (record_stream), so the allocator reuses its block only once the runner's
    stream has passed the point where it was freed (the allocator queries that event on the
    host: no block still read by a queued kernel is ever handed out). The runner's stream waits
    for `decode_stream` before the crop. The crop kernel, the copy of the CPU path's rows and
    the network run on the runner's stream, in that order; every image a crop reads is marked
    as used by that stream too, whoever allocated it (a caller's own tensors as well)."""

    name = "nvJPEG + the CUDA crop kernel"

    def __init__(self, runner):
        import torch
        import torchvision.io  # noqa: F401  (lazily: only a CUDA pipeline needs it)

        self._core = _crop_module()
        self.stream = runner.stream
        self.device = self.stream.device
        self.decode_stream = torch.cuda.Stream(self.device)

    def output(self, crops: np.ndarray, n: int):
        """The network's input [n, 3, 224, 224] float32, NCHW contiguous (what the crop kernel writes;
        the runner takes float32 and makes its own channels-last copy), on the runner's stream."""
        import torch

        with torch.cuda.stream(self.stream):
            return torch.empty((n, *crops.shape[1:]), dtype=torch.float32, device=self.device)

    def decode(self, datas: list) -> list:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        # CPU tensors over the bytes (decode_jpeg requires CPU inputs whatever the device); read
        # synchronously: decode_jpegs_cuda synchronises its stream before returning.
        encoded = [torch.frombuffer(d, dtype=torch.uint8) for d in datas]
        with torch.cuda.stream(self.decode_stream):
            images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        self.stream.wait_stream(self.decode_stream)
        for im in images:
            im.record_stream(self.stream)
        return images

    def all_zero(self, images: list) -> np.ndarray:
        """bool [len(images)]: which decoded images are entirely zero. One reduction per image and
        one small copy back, on `decode_stream`: the copy waits for the reductions alone, not for
        the runner's stream (the previous batch's network). The reductions' small blocks go back
        to decode_stream's pool after that copy has waited for them, so no queued kernel reads a
        block nvJPEG may be handed next (see the class docstring)."""
        import torch

        if not images:
            return np.zeros(0, bool)
        with torch.cuda.stream(self.decode_stream):
            nonzero = torch.stack([im.any() for im in images]).cpu().numpy()
        return ~nonzero

    @staticmethod
    def view(img) -> View:
        """A [3, H, W] uint8 image (nvJPEG's CHW; any strides) as a View."""
        _, h, w = img.shape
        return View(img, 0, int(h), int(w), int(img.stride(1)), int(img.stride(2)), int(img.stride(0)))

    def check_operands(self, views: list, out) -> None:
        """InputError unless every view's base is a uint8 CUDA tensor on this backend's device and
        `out` a contiguous float32/float16 CUDA tensor there: checked here, in Python, because the
        kernel would otherwise read host or foreign memory (or write NCHW into a channels-last
        buffer) before anything could say so."""
        import torch

        for i, v in enumerate(views):
            if not isinstance(v.base, torch.Tensor) or v.base.device != self.device:
                where = getattr(v.base, "device", type(v.base).__name__)
                raise InputError(f"device input: views[{i}]: expected a CUDA tensor on {self.device}, found {where}")
        if not (isinstance(out, torch.Tensor) and out.device == self.device and out.is_contiguous()
                and out.dtype in (torch.float32, torch.float16)):
            raise InputError(f"device input: out: expected a contiguous (NCHW) float32 or float16 CUDA tensor on "
                             f"{self.device}, found {getattr(out, 'dtype', type(out).__name__)} on "
                             f"{getattr(out, 'device', '?')}"
                             f"{' (not contiguous: channels-last?)' if hasattr(out, 'is_contiguous') and not out.is_contiguous() else ''}")

    def crop(self, views: list, bounds: np.ndarray, out, row0: int) -> None:
        import torch

        self.check_operands(views, out)
        sources = view_sources(views)
        rows = out[row0:row0 + len(views)]
        # The kernel reads the images later, on the runner's stream: none of their blocks may be
        # reused before that (decode() marks its own; a caller's tensors are marked here).
        for base in {id(v.base): v.base for v in views}.values():
            base.record_stream(self.stream)
        with torch.cuda.device(self.device):  # the kernel checks pointers against the current device
            self._core.crop_batch_cuda(sources, bounds, rows, size=arch.INPUT_SIZE,
                                       out_dtype=str(out.dtype).rsplit(".", 1)[-1], stream=self.stream)

    def put_rows(self, out, crops: np.ndarray, rows: list) -> None:
        import torch

        with torch.cuda.stream(self.stream):
            # Pinned, non-blocking copies: a pageable copy (torch.as_tensor(rows, device=...))
            # would wait for everything queued on the runner's stream, the previous batch's
            # network included. The pinned blocks are kept until the copies ran (torch records
            # an event on the stream for each).
            src = torch.from_numpy(crops[rows]).pin_memory().to(self.device, non_blocking=True)
            index = torch.as_tensor(rows, dtype=torch.int64).pin_memory().to(self.device, non_blocking=True)
            out[index] = src.to(out.dtype)

    def to_host(self, out, crops: np.ndarray, n: int) -> None:
        import torch

        with torch.cuda.stream(self.stream):
            host = out.to("cpu")  # synchronous: the caller asked for the crops on the host
        crops[:n] = host.numpy()


def machine_reason() -> str | None:
    """Why this machine cannot run the device input with any runner (None: it can, given a CUDA
    runner); what `engine3dmm info` shows."""
    import importlib.util

    from engine import _core

    if not _core.cuda_compiled():
        return "engine._C was built without CUDA (no crop kernel; rebuild with nvcc present: pip install -e .)"
    if not _core.has_cuda_crop():
        return "no usable CUDA device"
    if importlib.util.find_spec("torchvision") is None:
        return "nvJPEG is reached through torchvision, which is not installed (pip install torchvision)"
    return None


def unavailable_reason(runner, on_gpu: bool) -> str | None:
    """Why the device input cannot run with this runner (None: it can)."""
    import importlib.util

    if not on_gpu:
        where = f"the {runner.name} runner runs on the {runner.device}" if runner.device != "cuda" else \
            "this build of engine._C has no CUDA (rebuild on a machine with nvcc: pip install -e .)"
        return f"{where}: the device input needs a CUDA runner (torch-cuda, tensorrt) and a GPU"
    if not (hasattr(runner, "stream") and hasattr(runner, "run_device")):
        return f"the {runner.name} runner takes no device buffer"
    if importlib.util.find_spec("torchvision") is None:
        return "nvJPEG is reached through torchvision, which is not installed (pip install torchvision)"
    from engine import _core

    if not _core.has_cuda_crop():
        return "this build of engine._C has no CUDA crop kernel (rebuild: pip install -e .)"
    return None
