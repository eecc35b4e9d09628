"""ONNX Runtime on the CPU: the default runner on machines without a GPU.

Precisions: fp32 (the float32 graph) and int8 (the validated variant that `engine3dmm validate`
builds, engine.network.quantize; never built on the fly: it needs calibration faces). No fp16:
ONNX Runtime's x86 provider computes a float16 graph in float32 (no faster), and no card
validates it (engine.network.variants refuses fp16 on the CPU runners, naming int8 and bf16)."""
from __future__ import annotations

import os

import numpy as np

from engine.errors import (NO_SUCH_PATH, BackendError, InputError, ModelFileError, UnavailableError, describe_path,
                           said_once)
from engine.network.onnx_export import INPUT_NAME, OUTPUT_NAME
from engine.runners.base import Runner
from engine.runners.heap import release_free_heap


PRECISIONS = ("fp32", "int8")  # engine.network.variants.PRECISIONS_OF["onnxruntime"]


def _int8_path(model):
    """The int8 variant file of `model`, checked to be built from these weights (the card's
    checks, sha256 included, are engine.network.variants'). ModelFileError otherwise, saying
    what was expected and what was found."""
    from engine.network.onnx_export import read_metadata
    from engine.network.variants import short_hash, variant_file

    path = variant_file(model, "int8")
    kind = describe_path(path)
    if kind != "a file":
        found = "it is missing" if kind == NO_SUCH_PATH else f"found {kind}"
        raise ModelFileError(f"{path}: expected the int8 variant's ONNX file, {found}; `engine3dmm validate` "
                             "builds it")
    try:
        meta = read_metadata(path)
    except Exception as e:
        raise ModelFileError(f"{path}: unreadable int8 variant ({type(e).__name__}: {said_once(path, e)})") from None
    if meta.get("weights_sha256") != model.fingerprint or meta.get("precision") != "int8":
        raise ModelFileError(f"{path}: expected an int8 variant of these weights (sha256 "
                             f"{short_hash(model.fingerprint)}), found precision {str(meta.get('precision'))[:20]!r} "
                             f"of weights {short_hash(meta.get('weights_sha256'))}; `engine3dmm validate` builds it "
                             "again")
    return path


class OrtRunner(Runner):
    name = "onnxruntime"
    device = "cpu"

    def __init__(self, model, *, max_batch: int = 32, threads: int | None = None, precision: str = "fp32"):
        super().__init__(model, max_batch)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise UnavailableError("the onnxruntime runner needs ONNX Runtime: pip install onnxruntime") from e
        if precision not in PRECISIONS:
            raise InputError(f"precision: the onnxruntime runner supports {list(PRECISIONS)}, found {precision!r}"
                             + (" (fp16 is a GPU precision; on the CPU int8 and bf16 are the validated faster "
                                "variants)" if precision == "fp16" else ""))
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads: expected a positive int or None, found {threads!r}")
        self.precision = precision
        self.onnx_path = _int8_path(model) if precision == "int8" else model.onnx_path(precision)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Busy-waiting threads win a few percent on an idle machine but lose badly
        # when the cores are shared (measured ~2x slower here), so they sleep.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(self.onnx_path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise BackendError(f"{self.onnx_path}: ONNX Runtime could not load the graph: {e}") from e
        self.threads = opts.intra_op_num_threads
        release_free_heap()  # the parse of the graph file, freed by now

    def _run_chunk(self, crops: np.ndarray) -> np.ndarray:
        try:
            return self._session.run([OUTPUT_NAME], {INPUT_NAME: crops})[0]
        except Exception as e:
            raise BackendError(f"onnxruntime runner: inference failed on {crops.shape[0]} crops: {e}") from e

    def close(self) -> None:
        self._session = None
        super().close()
