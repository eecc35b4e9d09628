"""Coefficients to meshes: the Python face of the compiled decode kernels.

    S = shape_mean + alpha @ shape_basis                 (millimetres)
        [+ expression_mean + e @ expression_basis]       (with expression weights e [B, Ke])
    T = clamp(tex_mean + beta @ tex_basis, 0, 255)       truncated to uint8

Bases arrive with sigma folded in (see engine.morphable), so alpha and beta are
the network's outputs in standard deviations, and e (the pose fit's expression weights,
engine.pose) likewise. The expression term is optional: it needs a model with an
expression basis, and is added only to the rows decoded with `expression=`. The Decoder prepares the bases
once (float16 conversion, upload to the GPU) and then decodes batches.

Non-finite policy: a NaN or Inf coefficient is an input error (InputError naming
the row and column); on the CPU nothing is written. On the GPU the kernel raises a
device flag that `decode` checks after synchronising (`check_finite=True`, the
default); with `check_finite=False` no synchronisation happens and rows with
non-finite coefficients produce NaN vertices and clamped colours.

float16 bases: storage only, accumulation is float32. Each basis element is
rounded with relative error at most 2**-11, so a decoded value moves by at most
2**-11 * sum_k |c_k * basis[k, j]| (see `fp16_error_bound`): for the synthetic and
BFM models with |c| <= 3 that is a few hundredths of a millimetre and under one
colour level (measured values are in bench/results/decode_cpu.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import _core
from engine.errors import InputError, describe_array
from engine.mesh_io import VERTEX_DTYPE

BASIS_DTYPES = {"fp32": np.float32, "fp16": np.float16}
_BASIS_TYPE_CODE = {"fp32": 1, "fp16": 2}  # e3dmm::BasisType
OUTPUTS = ("vertices", "colors", "records")


@dataclass
class DecodedBatch:
    """Decoded meshes of one batch. Arrays are numpy on the CPU, torch tensors on CUDA.

    vertices: float32 [B, N, 3] millimetres; colors: uint8 [B, N, 3];
    records: [B, N] of VERTEX_DTYPE (on CUDA: uint8 [B, N, 15]), byte-for-byte the
    vertex block of a binary little-endian PLY. Outputs not requested are None.
    faces: int32 [F, 3], 0-based, shared by every mesh of the batch.
    """

    vertices: Any
    colors: Any
    records: Any
    faces: np.ndarray

    def __len__(self) -> int:
        for a in (self.vertices, self.colors, self.records):
            if a is not None:
                return int(a.shape[0])
        return 0


FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


def _check_fits_float16(model) -> None:
    """float16 storage of a basis turns any |value| > 65504 into infinity and the decoded mesh
    into NaN, with nothing said (the C++ Decoder refuses the same model, naming the element).
    Real bases hold millimetres and colour levels far inside the range: this is a hostile or
    broken model, refused by name (issue 13, finding 8's kind)."""
    meta = getattr(model, "metadata", None) or {}  # any object with the arrays decodes
    where = meta.get("path") or meta.get("name") or "model"
    for field in ("shape_basis", "tex_basis", "expression_basis"):
        if getattr(model, field, None) is None:
            continue
        a = np.asarray(getattr(model, field))
        big = np.abs(a) > FLOAT16_MAX
        if big.any():
            k, j = (int(i) for i in np.unravel_index(int(np.argmax(big)), a.shape))
            raise InputError(f"{where}: {field}: expected values float16 can hold (|v| <= {FLOAT16_MAX:g}) for "
                             f"basis_dtype='fp16', found {float(a[k, j]):g} at [{k}, {j}] ({int(big.sum())} such "
                             f"values); use basis_dtype='fp32'")


class Decoder:
    """Decodes coefficient rows [B, C] (alpha at columns shape_offset.., beta at
    tex_offset..; the release's 198-vector by default) into meshes.

    device: "cpu" (numpy in, numpy out) or "cuda" (torch CUDA tensors in and out,
    bases kept on the device, one kernel launch per batch on the given stream).
    basis_dtype: "fp32" or "fp16" storage of the bases.
    """

    def __init__(self, model, *, device: str = "cpu", basis_dtype: str = "fp32", num_threads: int = 0,
                 shape_offset: int = 0, tex_offset: int | None = None):
        if device not in ("cpu", "cuda"):
            raise InputError(f"Decoder: device: expected 'cpu' or 'cuda', found {device!r}")
        if basis_dtype not in BASIS_DTYPES:
            raise InputError(f"Decoder: basis_dtype: expected one of {sorted(BASIS_DTYPES)}, found {basis_dtype!r}")
        self.model = model
        self.device = device
        self.basis_dtype = basis_dtype
        self.num_threads = int(num_threads)
        self.shape_offset = int(shape_offset)
        # Default layout: alpha then beta, contiguous (the release's 198-vector at offset 0).
        ks = int(model.shape_basis.shape[0])
        self.tex_offset = self.shape_offset + ks if tex_offset is None else int(tex_offset)
        self.num_vertices = int(model.shape_mean.shape[0] // 3)
        self.faces = model.faces
        self._check_model(model)
        dt = BASIS_DTYPES[basis_dtype]
        if dt == np.float16:
            _check_fits_float16(model)
        arrays = {
            "shape_mean": _contiguous(model.shape_mean, np.float32),
            "shape_basis": _contiguous(model.shape_basis, dt),
            "tex_mean": _contiguous(model.tex_mean, np.float32),
            "tex_basis": _contiguous(model.tex_basis, dt),
        }
        if getattr(model, "expression_basis", None) is not None:  # the optional expression term
            arrays["expr_mean"] = _contiguous(model.expression_mean, np.float32)
            arrays["expr_basis"] = _contiguous(model.expression_basis, dt)
        if device == "cuda":
            _core.require_cuda("Decoder(device='cuda')")
            import torch

            arrays = {k: torch.from_numpy(np.array(v)).cuda() for k, v in arrays.items()}
        self._arrays = arrays
        self.coeff_width = max(self.shape_offset + self.shape_components, self.tex_offset + self.tex_components)

    @property
    def shape_components(self) -> int:
        return int(self.model.shape_basis.shape[0])

    @property
    def tex_components(self) -> int:
        return int(self.model.tex_basis.shape[0])

    @property
    def expression_components(self) -> int:
        """Ke, 0 when the model has no expression basis."""
        return int(self._arrays["expr_basis"].shape[0]) if "expr_basis" in self._arrays else 0

    @staticmethod
    def _check_model(model) -> None:
        n3 = model.shape_mean.shape[0]
        for name, a, shape in (
            ("shape_basis", model.shape_basis, (model.shape_basis.shape[0], n3)),
            ("tex_mean", model.tex_mean, (n3,)),
            ("tex_basis", model.tex_basis, (model.tex_basis.shape[0], n3)),
        ):
            if tuple(a.shape) != shape:
                raise InputError(
                    f"Decoder: model.{name}: expected shape {list(shape)} (3N = {n3} from shape_mean), "
                    f"found {describe_array(a)}"
                )

    def decode(self, coeffs, *, expression=None, outputs=OUTPUTS, stream=None,
               check_finite: bool = True) -> DecodedBatch:
        """Decode coefficient rows; returns the requested outputs (a subset of OUTPUTS).

        expression: optional expression weights [B, Ke] (float, one row per coefficient row,
        in standard deviations): each shape gains expression_mean + e @ expression_basis.
        InputError when the model has no expression basis or the shape is wrong; a NaN or Inf
        weight is an error like a non-finite coefficient."""
        unknown = set(outputs) - set(OUTPUTS)
        if unknown or not outputs:
            raise InputError(f"decode: outputs: expected a non-empty subset of {OUTPUTS}, found {tuple(outputs)}")
        if expression is not None and not self.expression_components:
            raise InputError("decode: expression: expected none, the morphable model has no expression basis "
                             "(convert --expression FILE adds one), found expression weights")
        if self.device == "cuda":
            return self._decode_cuda(coeffs, outputs, stream, check_finite, expression)
        return self._decode_cpu(coeffs, outputs, expression)

    # -- CPU -------------------------------------------------------------------
    def _host_coeffs(self, coeffs) -> np.ndarray:
        c = np.asarray(coeffs)
        if c.dtype.kind != "f":
            raise InputError(f"decode: coeffs: expected a floating-point array [B, {self.coeff_width}], "
                             f"found {describe_array(c)}")
        if c.ndim == 1:
            c = c[None, :]
        if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < self.coeff_width:
            raise InputError(f"decode: coeffs: expected [B >= 1, {self.coeff_width}] coefficient rows, "
                             f"found {describe_array(c)}")
        return np.ascontiguousarray(c, dtype=np.float32)

    def _host_expression(self, expression, b: int) -> np.ndarray:
        e = np.asarray(expression)
        ke = self.expression_components
        if e.dtype.kind != "f" or e.ndim not in (1, 2):
            raise InputError(f"decode: expression: expected floating-point weights [{b}, {ke}], found {describe_array(e)}")
        if e.ndim == 1:
            e = e[None, :]
        if e.shape != (b, ke):
            raise InputError(f"decode: expression: expected weights [{b}, {ke}] (one row per coefficient row, Ke "
                             f"of the model), found {describe_array(e)}")
        return np.ascontiguousarray(e, dtype=np.float32)

    def _decode_cpu(self, coeffs, outputs, expression=None) -> DecodedBatch:
        c = self._host_coeffs(coeffs)
        b, n = c.shape[0], self.num_vertices
        v = np.empty((b, n, 3), np.float32) if "vertices" in outputs else None
        col = np.empty((b, n, 3), np.uint8) if "colors" in outputs else None
        rec = np.empty((b, n), VERTEX_DTYPE) if "records" in outputs else None
        a = self._arrays
        expr = {}
        if expression is not None:
            expr = dict(expr_mean=a["expr_mean"], expr_basis=a["expr_basis"],
                        expression=self._host_expression(expression, b))
        _core.core().decode_cpu(a["shape_mean"], a["shape_basis"], a["tex_mean"], a["tex_basis"], c,
                                self.shape_offset, self.tex_offset, vertices=v, colors=col, records=rec,
                                num_threads=self.num_threads, **expr)
        return DecodedBatch(v, col, rec, self.faces)

    # -- CUDA ------------------------------------------------------------------
    def _decode_cuda(self, coeffs, outputs, stream, check_finite, expression=None) -> DecodedBatch:
        import torch

        if not isinstance(coeffs, torch.Tensor):
            coeffs = torch.from_numpy(self._host_coeffs(coeffs))
        if coeffs.dtype != torch.float32 or coeffs.ndim != 2 or coeffs.shape[0] < 1 \
                or coeffs.shape[1] < self.coeff_width:
            raise InputError(f"decode: coeffs: expected float32 [B >= 1, {self.coeff_width}], "
                             f"found {coeffs.dtype}{list(coeffs.shape)}")
        dev = self._arrays["shape_mean"].device
        s = torch.cuda.current_stream(dev) if stream is None else stream
        a = self._arrays
        # Everything happens on stream s: it first waits for the work that produced
        # `coeffs` on the current stream; copies and outputs are made on s, so the
        # caching allocator ties them to s and never hands them out while the kernel runs.
        if s != torch.cuda.current_stream(dev):
            s.wait_stream(torch.cuda.current_stream(dev))
            if coeffs.is_cuda:
                coeffs.record_stream(s)
        if expression is not None:
            if not isinstance(expression, torch.Tensor):
                expression = torch.from_numpy(self._host_expression(expression, coeffs.shape[0]))
            if expression.dtype != torch.float32 or tuple(expression.shape) != (coeffs.shape[0], self.expression_components):
                raise InputError(f"decode: expression: expected float32 [{coeffs.shape[0]}, {self.expression_components}], "
                                 f"found {expression.dtype}{list(expression.shape)}")
            if expression.is_cuda and s != torch.cuda.current_stream(dev):
                expression.record_stream(s)
        with torch.cuda.stream(s):
            coeffs = coeffs.to(dev, non_blocking=True).contiguous()
            if expression is not None:
                expression = expression.to(dev, non_blocking=True).contiguous()
            b, n = coeffs.shape[0], self.num_vertices
            v = torch.empty((b, n, 3), dtype=torch.float32, device=dev) if "vertices" in outputs else None
            col = torch.empty((b, n, 3), dtype=torch.uint8, device=dev) if "colors" in outputs else None
            rec = torch.empty((b, n, 15), dtype=torch.uint8, device=dev) if "records" in outputs else None
            # A flag per call, made on the caller's stream: calls on different streams
            # never share one, and reading it after s.synchronize() sees this kernel's write.
            flag = torch.zeros(1, dtype=torch.int32, device=dev) if check_finite else None
            _core.core().decode_cuda(
                a["shape_mean"].data_ptr(), a["shape_basis"].data_ptr(), a["tex_mean"].data_ptr(),
                a["tex_basis"].data_ptr(), _BASIS_TYPE_CODE[self.basis_dtype], n, self.shape_components,
                self.tex_components, coeffs.data_ptr(), b, coeffs.shape[1], self.shape_offset, self.tex_offset,
                _ptr(v), _ptr(col), _ptr(rec), s.cuda_stream, _ptr(flag),
                **({} if expression is None else dict(
                    expr_mean=a["expr_mean"].data_ptr(), expr_basis=a["expr_basis"].data_ptr(),
                    expr_components=self.expression_components, expression=expression.data_ptr())))
        if check_finite:
            s.synchronize()
        if check_finite and int(flag.item()):
            # Only alpha and beta columns are read (and flagged): look for the first bad one there.
            bad_mask = torch.zeros(coeffs.shape, dtype=torch.bool, device=coeffs.device)
            for lo, k in ((self.shape_offset, self.shape_components), (self.tex_offset, self.tex_components)):
                bad_mask[:, lo:lo + k] |= ~torch.isfinite(coeffs[:, lo:lo + k])
            if not bad_mask.any() and expression is not None:
                bad = (~torch.isfinite(expression)).nonzero()[0].tolist()
                raise InputError(f"decode: expression[{bad[0]}, {bad[1]}]: expected a finite number, "
                                 f"found {expression[bad[0], bad[1]].item()}")
            bad = bad_mask.nonzero()[0].tolist()
            raise InputError(f"decode: coeffs[{bad[0]}, {bad[1]}]: expected a finite number, "
                             f"found {coeffs[bad[0], bad[1]].item()}")
        return DecodedBatch(v, col, rec, self.faces)


def fp16_error_bound(model, coeffs, shape_offset: int = 0, tex_offset: int | None = None,
                     expression=None) -> tuple[np.ndarray, np.ndarray]:
    """Worst-case change of vertices (mm) and of texture values (colour levels) per
    row caused by storing the bases in float16: 2**-11 * sum_k |c_k * basis[k, j]|,
    maximised over j (with expression weights [B, Ke], their terms are in the shape's sum).
    Returns (shape_bound [B], tex_bound [B])."""
    c = np.atleast_2d(np.asarray(coeffs, np.float64))
    ks, kt = model.shape_basis.shape[0], model.tex_basis.shape[0]
    tex_offset = shape_offset + ks if tex_offset is None else tex_offset
    u = 2.0 ** -11
    alpha, beta = c[:, shape_offset : shape_offset + ks], c[:, tex_offset : tex_offset + kt]
    shape_terms = np.abs(alpha) @ np.abs(np.asarray(model.shape_basis, np.float64))
    if expression is not None:
        shape_terms += np.abs(np.atleast_2d(np.asarray(expression, np.float64))) @ \
            np.abs(np.asarray(model.expression_basis, np.float64))
    sb = u * shape_terms.max(axis=1)
    tb = u * (np.abs(beta) @ np.abs(np.asarray(model.tex_basis, np.float64))).max(axis=1)
    return sb, tb


def _contiguous(a, dtype) -> np.ndarray:
    # A read-only memmap of the right dtype passes through without a copy.
    return np.ascontiguousarray(a, dtype=dtype)


def _ptr(t) -> int:
    return 0 if t is None else t.data_ptr()
