"""The int8 variant: ONNX Runtime static quantisation of the float32 graph.

`onnxruntime.quantization.quantize_static` does the work (QDQ format; per-channel int8
weights; uint8 activations, asymmetric, MinMax ranges over the calibration faces). uint8
activations x int8 weights is the pairing ONNX Runtime's x86 kernels run on VNNI: measured
here, 20 ms per face against 66 ms with int8 activations (which fall back to slower
kernels) and 36-80 ms for float32. The head (pool5, flatten and the 2048 -> 198 fc_ftnew)
stays float32: it costs nothing measurable and the regression's last sums are where 8 bits
lose most (measured: max error 0.72 instead of 0.74 sd on the synthetic weights).

MinMax is computed without ONNX Runtime's CalibMaxIntermediateOutputs: in ORT 1.32 that
option drops every complete group of collected outputs instead of merging it
(microsoft/onnxruntime#18893; the fix, #20226, was closed unmerged), so ranges would come
from the last few faces only. MinMax keeps two numbers per tensor and face, so memory
stays small without it.

The file is written atomically and carries, in its ONNX metadata, the weights' sha256, the
recipe and what it was calibrated on.
"""
from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from engine.errors import InputError, UnavailableError

log = logging.getLogger("engine.network")

# Kept in float32 (node names of engine.network.onnx_export).
FLOAT_NODES = ("pool5", "flatten", "fc_ftnew")
RECIPE = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "weights": "int8 per-channel",
          "activations": "uint8 per-tensor, asymmetric", "calibration_method": "MinMax",
          "float32_nodes": list(FLOAT_NODES), "version": 1}


class _Reader:
    """Calibration faces, one per call (ORT's CalibrationDataReader protocol)."""

    def __init__(self, crops: np.ndarray, input_name: str):
        self._items = iter(range(len(crops)))
        self._crops, self._name = crops, input_name

    def get_next(self):
        i = next(self._items, None)
        return None if i is None else {self._name: self._crops[i:i + 1]}

    def __iter__(self):  # CalibrationDataReader also iterates
        while (item := self.get_next()) is not None:
            yield item


class _DropAll(logging.Filter):
    def filter(self, record):
        return False


@contextlib.contextmanager
def _quiet_root():
    """ONNX Runtime's quantiser logs advice on the root logger at WARNING level ("consider
    pre-processing": symbolic shape inference and graph optimisation, which our graph already
    has, BatchNorm folded and shapes inferred at export). That is no warning to our users. A
    logger's own filter sees only records logged on it, so the engine's loggers pass."""
    root, f = logging.getLogger(), _DropAll()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def build_int8(fp32_path, out_path, crops: np.ndarray, metadata: dict[str, str]) -> Path:
    """Quantise the float32 ONNX graph at `fp32_path` into `out_path` (atomic), calibrated on
    `crops` float32 [N, 3, 224, 224] (raw BGR 0..255, N >= 1). `metadata` goes into the file's
    metadata_props with the recipe. Errors: InputError (no crops), UnavailableError (no ONNX
    Runtime quantisation tools)."""
    try:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError as e:
        raise UnavailableError(f"the int8 variant needs ONNX Runtime's quantisation tools: pip install onnxruntime "
                               f"onnx ({e})") from None
    from engine.fileio import atomic_write
    from engine.network.onnx_export import INPUT_NAME

    crops = np.ascontiguousarray(crops, dtype=np.float32)
    if crops.ndim != 4 or len(crops) == 0:
        raise InputError(f"calibration crops: expected float32[N >= 1, 3, 224, 224], found shape {crops.shape}")
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=out_path.parent) as tmp, _quiet_root():
        staged = Path(tmp) / "int8.onnx"
        quantize_static(str(fp32_path), str(staged), _Reader(crops, INPUT_NAME), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(FLOAT_NODES),
                        extra_options={})
        model = onnx.load(str(staged))
        del model.metadata_props[:]
        for k, v in {**metadata, "precision": "int8", "quantization": _recipe_text()}.items():
            model.metadata_props.add(key=k, value=str(v))
        with atomic_write(out_path) as f:
            f.write(model.SerializeToString())
    log.info("wrote the int8 variant %s (%d calibration faces)", out_path, len(crops))
    return out_path


def _recipe_text() -> str:
    return json.dumps(RECIPE, sort_keys=True)


def onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__

