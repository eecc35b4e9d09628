"""The runner protocol: raw crops in, 198 coefficients out.

Every runner has `name`, `device` ("cpu"/"cuda"), `precision` ("fp32"/"bf16"/"fp16"/"int8"),
`synthetic` (True when it runs the built-in synthetic weights), `fingerprint` (sha256
of the weights), `mean_kind` ("image", or "per-channel" for a model converted without the
release's mean image), `fp32_ops` (at fp16: the operations kept in float32 so that no
value overflows, see engine.network.fp16), `variant` (the validated variant's errors, see
engine.network.variants; None without a variant card), `variant_note`, `max_batch`,
`compiled` (True for a PyTorch runner made with compile=True: torch.compile, Inductor),
`run(crops) -> np.ndarray`, `close()` and context-manager support; CUDA runners add
`run_device(crops) -> torch.Tensor` (left on the device) and `stream`.

Input contract: float32 [B, 3, 224, 224], BGR, 0..255, NOT mean-subtracted (the mean
image is inside every graph). Larger batches than `max_batch` run in chunks.
"""
from __future__ import annotations

import numpy as np

from engine.errors import BackendError, InputError, describe_array
from engine.network import architecture as arch

CROP_SHAPE = (3, arch.INPUT_SIZE, arch.INPUT_SIZE)
EXPECTED = f"float32[B, {', '.join(map(str, CROP_SHAPE))}] (BGR, 0..255, not mean-subtracted)"


def check_crops(crops, argument: str = "crops") -> None:
    """Raise InputError unless `crops` (numpy array or torch tensor) matches the contract."""
    shape = getattr(crops, "shape", None)
    dtype = getattr(crops, "dtype", None)
    if shape is None or dtype is None:
        raise InputError(f"{argument}: expected {EXPECTED}, found {type(crops).__name__}")
    if str(dtype) not in ("float32", "torch.float32"):
        raise InputError(f"{argument}: expected {EXPECTED}, found {describe_array(crops)} (wrong dtype)")
    if len(shape) != 4 or tuple(shape[1:]) != CROP_SHAPE:
        raise InputError(f"{argument}: expected {EXPECTED}, found {describe_array(crops)} (wrong shape)")


class Runner:
    """Base class: input checking, chunking, context management."""

    name = "?"
    device = "cpu"
    precision = "fp32"
    compiled = False  # torch.compile (engine.runners.torch_compile); only the PyTorch runners can

    def __init__(self, model, max_batch: int):
        if not isinstance(max_batch, int) or max_batch < 1:
            raise InputError(f"max_batch: expected a positive int, found {max_batch!r}")
        self.max_batch = max_batch
        self.synthetic = bool(model.synthetic)
        self.model_description = model.describe()
        self.fingerprint = model.fingerprint  # sha256 of the weights: identifies outputs made with them
        self.mean_kind = model.mean_kind
        self.fp32_ops: tuple[str, ...] = ()
        # Set by create_runner: the validated variant that runs (engine.network.variants.Choice.variant)
        # and one line saying why it was chosen; None without a variant card.
        self.variant: dict | None = None
        self.variant_note: str | None = None
        self._closed = False

    def _use_fp16_plan(self, model) -> None:
        """Record which operations the float16 network keeps in float32 (engine.network.fp16)."""
        from engine.network.fp16 import ordered

        self.fp32_ops = tuple(ordered(model.fp16_plan().fp32))

    # subclasses implement this on a checked, C-contiguous chunk of at most max_batch crops
    def _run_chunk(self, crops: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, crops) -> np.ndarray:
        """Coefficients float32 [B, 198] of raw crops float32 [B, 3, 224, 224]."""
        if self._closed:
            raise BackendError(f"{self.name} runner: run() called after close()")
        check_crops(crops)
        if not isinstance(crops, np.ndarray):
            raise InputError(f"crops: expected a numpy array for run(), found {type(crops).__name__}")
        crops = np.ascontiguousarray(crops)
        out = np.empty((crops.shape[0], arch.NUM_COEFFS), np.float32)
        for i in range(0, crops.shape[0], self.max_batch):
            out[i:i + self.max_batch] = self._run_chunk(crops[i:i + self.max_batch])
        return out

    def close(self) -> None:
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"<{type(self).__name__} name={self.name} device={self.device} precision={self.precision} "
                f"max_batch={self.max_batch} synthetic={self.synthetic}{' compiled' if self.compiled else ''}>")
