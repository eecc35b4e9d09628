"""`MorphableModel`: a decode-ready morphable model and the one check of its consistency.

Every source (BFM 2009 + mod_struct, the release's trimmed .mat/.h5, the `.e3dmm`
cache, the synthetic model) ends in the same arrays, laid out for the decode kernel:

- means are flat [3N] (x y z / r g b per vertex), float32;
- bases are K-major [K, 3N] with the standard deviation already folded in
  (row k = PC[:, k] * EV[k]), so decoding is mean + coeffs @ basis and a warp on
  the GPU reads consecutive floats of one component;
- faces are int32 [F, 3], 0-based;
- optional: the 68 landmark vertices (`landmarks`, the release's innerLandmarkIndex, and
  `landmarks_outer`, its outerLandmarkIndex: the jaw contour a turned face shows, differing on
  the 17 jaw points) and an expression basis (`expression_mean` [3N], `expression_basis`
  [Ke, 3N] sigma folded in, `expression_sigma` [Ke]; the release's 29 components of 3DDFA).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import ModelFileError, describe_array

# Array names as they appear in the `.e3dmm` cache and in error messages.
FLOAT_FIELDS = ("shape_mean", "shape_basis", "shape_sigma", "tex_mean", "tex_basis", "tex_sigma")
# Optional: all three or none (an expression term is mean + coefficients @ basis).
EXPRESSION_FIELDS = ("expression_mean", "expression_basis", "expression_sigma")
LANDMARK_FIELDS = ("landmarks", "landmarks_outer")

# What a face model can be. Every loader checks declared sizes against these bounds before
# it reads or allocates anything, so a small hostile file cannot make it allocate more than
# a model this size needs (BFM 2009: 53,490 vertices, 106,466 triangles, 199 components per
# basis; the release's trimmed model: 46,990 vertices, 93,323 triangles, 99 + 99).
MAX_VERTICES = 200_000  # about 4x the Basel Face Model
MAX_FACES = 2 * MAX_VERTICES  # a closed triangle mesh has about two triangles per vertex
MAX_COMPONENTS = 384  # per basis; BFM 2009 and 2017 have 199. 2 x 384 x 16 float32 = 48 KiB: the CUDA
# kernel keeps a 16-row tile of both coefficient sets in shared memory, and 48 KiB is what every
# GPU grants a block without an opt-in (csrc/include/e3dmm/limits.h)
MAX_ROWS = 3 * MAX_VERTICES  # the longest dimension a model array has: 3N (x y z per vertex)
MAX_ARRAY_ELEMENTS = MAX_ROWS * MAX_COMPONENTS  # the largest model array: a [3N, K] basis


@dataclass(eq=False)
class MorphableModel:
    """A linear face model: S = shape_mean + alpha @ shape_basis, T = tex_mean + beta @ tex_basis,
    and with an expression basis and expression coefficients e (the pose fit's):
    S = shape_mean + alpha @ shape_basis + expression_mean + e @ expression_basis.

    `alpha`, `beta` and `e` are in standard deviations (the network's output; the release's
    expression weights); the sigmas are already folded into the bases and kept separately
    only for reference. The expression mean belongs to the expression term: the release's
    PoseExpr adds it whenever it uses the expression basis (BaselFaceEstimator::getShape).
    """

    shape_mean: np.ndarray  # float32 [3N], millimetres
    shape_basis: np.ndarray  # float32 [Ks, 3N], sigma folded in
    shape_sigma: np.ndarray  # float32 [Ks], millimetres
    tex_mean: np.ndarray  # float32 [3N], 0..255
    tex_basis: np.ndarray  # float32 [Kt, 3N], sigma folded in
    tex_sigma: np.ndarray  # float32 [Kt]
    faces: np.ndarray  # int32 [F, 3], 0-based
    landmarks: np.ndarray | None = None  # int32 [68], 0-based vertex indices (innerLandmarkIndex)
    metadata: dict[str, Any] = field(default_factory=dict)
    landmarks_outer: np.ndarray | None = None  # int32 [68] (outerLandmarkIndex), only with `landmarks`
    expression_mean: np.ndarray | None = None  # float32 [3N], millimetres
    expression_basis: np.ndarray | None = None  # float32 [Ke, 3N], sigma folded in
    expression_sigma: np.ndarray | None = None  # float32 [Ke]

    def __post_init__(self) -> None:
        origin = str(self.metadata.get("name", "<MorphableModel arrays>"))
        validate_arrays(self._arrays(), origin)
        # Kernels take raw pointers: hand them C-contiguous arrays (a no-op for every loader).
        for name, a in self._arrays().items():
            if a is not None and not a.flags.c_contiguous:
                setattr(self, name, np.ascontiguousarray(a))
        self.metadata.setdefault("synthetic", False)
        self.metadata.setdefault("name", "unnamed")
        self.metadata.setdefault("source", "arrays")

    # --- sizes -------------------------------------------------------------
    @property
    def num_vertices(self) -> int:
        return self.shape_mean.shape[0] // 3

    @property
    def num_faces(self) -> int:
        return self.faces.shape[0]

    @property
    def shape_components(self) -> int:
        return self.shape_basis.shape[0]

    @property
    def tex_components(self) -> int:
        return self.tex_basis.shape[0]

    @property
    def expression_components(self) -> int:
        """Ke, 0 without an expression basis."""
        return 0 if self.expression_basis is None else self.expression_basis.shape[0]

    @property
    def has_expression(self) -> bool:
        return self.expression_basis is not None

    @property
    def synthetic(self) -> bool:
        """True for the built-in synthetic model (metadata["synthetic"]): not a real face model,
        and every tool that shows it says so. Read-only (a property without a setter)."""
        return bool(self.metadata.get("synthetic", False))

    def __repr__(self) -> str:
        tag = " SYNTHETIC" if self.synthetic else ""
        expr = f" + {self.expression_components} expression" if self.has_expression else ""
        return (f"MorphableModel({self.metadata.get('name')!r}{tag}: {self.num_vertices} vertices, "
                f"{self.num_faces} faces, {self.shape_components}+{self.tex_components}{expr} components)")

    def _arrays(self) -> dict[str, np.ndarray | None]:
        return {name: getattr(self, name) for name in (*FLOAT_FIELDS, "faces", *LANDMARK_FIELDS, *EXPRESSION_FIELDS)}

    def replace(self, **changes) -> "MorphableModel":
        """A new model with some arrays or the metadata replaced (validated like any model)."""
        arrays = {**self._arrays(), "metadata": dict(self.metadata), **changes}
        return MorphableModel(**arrays)


def _fail(origin: str, field_name: str, expected: str, found: str) -> ModelFileError:
    return ModelFileError(f"{origin}: {field_name}: expected {expected}, found {found}")


def validate_arrays(arrays: dict[str, np.ndarray | None], origin: str) -> None:
    """Check dtypes, shapes (within MAX_VERTICES / MAX_COMPONENTS / MAX_FACES), mutual
    consistency, finite float values and face/landmark ranges.

    The single consistency check for every way a model is made; `origin` (a file name)
    leads every message so the user knows which file is wrong. Raises ModelFileError.
    """
    for name in (*FLOAT_FIELDS, "faces"):
        a = arrays.get(name)
        if not isinstance(a, np.ndarray):
            raise _fail(origin, name, "a numpy array", type(a).__name__)
    for name in FLOAT_FIELDS:
        if arrays[name].dtype != np.float32:
            raise _fail(origin, name, "float32", describe_array(arrays[name]))
    mean = arrays["shape_mean"]
    if mean.ndim != 1 or mean.shape[0] == 0 or mean.shape[0] % 3:
        raise _fail(origin, "shape_mean", "float32[3N] with N >= 1", describe_array(mean))
    n3 = mean.shape[0]
    if n3 > MAX_ROWS:
        raise _fail(origin, "shape_mean", f"at most {MAX_VERTICES} vertices (3N <= {MAX_ROWS})", describe_array(mean))
    for prefix in ("shape", "tex"):
        m, b, s = (arrays[f"{prefix}_{x}"] for x in ("mean", "basis", "sigma"))
        if m.shape != (n3,):
            raise _fail(origin, f"{prefix}_mean", f"float32[{n3}]", describe_array(m))
        if b.ndim != 2 or b.shape[1] != n3 or not 1 <= b.shape[0] <= MAX_COMPONENTS:
            raise _fail(origin, f"{prefix}_basis", f"float32[K, {n3}] with 1 <= K <= {MAX_COMPONENTS}",
                        describe_array(b))
        if s.shape != (b.shape[0],):
            raise _fail(origin, f"{prefix}_sigma", f"float32[{b.shape[0]}] (one per basis row)",
                        describe_array(s))
    for name in FLOAT_FIELDS:  # after the shapes, so a huge array is refused before it is scanned
        check_finite(arrays[name], origin, name)
    faces = arrays["faces"]
    if faces.dtype != np.int32 or faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] > MAX_FACES:
        raise _fail(origin, "faces", f"int32[F, 3] with F <= {MAX_FACES}", describe_array(faces))
    check_index_range(faces, n3 // 3, origin, "faces")
    lm = arrays.get("landmarks")
    if lm is not None:
        if not isinstance(lm, np.ndarray) or lm.dtype != np.int32 or lm.ndim != 1 or lm.shape[0] > MAX_VERTICES:
            raise _fail(origin, "landmarks", "int32[68]", describe_array(lm))
        check_index_range(lm, n3 // 3, origin, "landmarks")
    outer = arrays.get("landmarks_outer")
    if outer is not None:
        if lm is None:
            raise _fail(origin, "landmarks_outer", "only with 'landmarks' (the inner landmark vertices)",
                        "no 'landmarks'")
        if not isinstance(outer, np.ndarray) or outer.dtype != np.int32 or outer.shape != lm.shape:
            raise _fail(origin, "landmarks_outer", f"int32[{lm.shape[0]}] (one per landmark)", describe_array(outer))
        check_index_range(outer, n3 // 3, origin, "landmarks_outer")
    _validate_expression(arrays, n3, origin)


def _validate_expression(arrays: dict[str, np.ndarray | None], n3: int, origin: str) -> None:
    """The optional expression basis: all three arrays or none, float32, [3N], [Ke, 3N] with
    1 <= Ke <= MAX_COMPONENTS, [Ke], finite."""
    present = [name for name in EXPRESSION_FIELDS if arrays.get(name) is not None]
    if not present:
        return
    if len(present) != len(EXPRESSION_FIELDS):
        missing = next(name for name in EXPRESSION_FIELDS if name not in present)
        raise _fail(origin, missing, "present (the expression arrays come together: "
                    f"{', '.join(EXPRESSION_FIELDS)})", f"only {', '.join(present)}")
    for name in EXPRESSION_FIELDS:
        a = arrays[name]
        if not isinstance(a, np.ndarray) or a.dtype != np.float32:
            raise _fail(origin, name, "float32", describe_array(a) if isinstance(a, np.ndarray) else type(a).__name__)
    m, b, s = (arrays[name] for name in EXPRESSION_FIELDS)
    if m.shape != (n3,):
        raise _fail(origin, "expression_mean", f"float32[{n3}]", describe_array(m))
    if b.ndim != 2 or b.shape[1] != n3 or not 1 <= b.shape[0] <= MAX_COMPONENTS:
        raise _fail(origin, "expression_basis", f"float32[Ke, {n3}] with 1 <= Ke <= {MAX_COMPONENTS}",
                    describe_array(b))
    if s.shape != (b.shape[0],):
        raise _fail(origin, "expression_sigma", f"float32[{b.shape[0]}] (one per basis row)", describe_array(s))
    for name in EXPRESSION_FIELDS:
        check_finite(arrays[name], origin, name)


def check_index_range(idx: np.ndarray, n: int, origin: str, field_name: str, base: int = 0) -> None:
    """Every index in [base, n - 1 + base]; the message gives the offending extreme."""
    if idx.size == 0:
        return
    lo, hi = int(idx.min()), int(idx.max())
    if lo < base or hi > n - 1 + base:
        bad = lo if lo < base else hi
        raise _fail(origin, field_name, f"{'0' if base == 0 else '1'}-based vertex indices in "
                    f"[{base}, {n - 1 + base}] (N = {n})", f"index {bad} (min {lo}, max {hi})")


def check_finite(a: np.ndarray, origin: str, field_name: str) -> None:
    """Every value finite (no NaN, no +-Inf): a non-finite model value poisons every vertex it
    touches, and the mesh writers would only notice much later, naming neither file nor field.
    One vectorised pass, no copy of `a`; the message gives the count and the first bad index."""
    finite = np.isfinite(a)
    if finite.all():
        return
    bad = np.flatnonzero(~finite)
    first = tuple(int(i) for i in np.unravel_index(bad[0], a.shape))
    where = ", ".join(str(i) for i in first)
    raise _fail(origin, field_name, "finite values (no NaN or Inf)",
                f"{bad.size} non-finite value{'s' if bad.size > 1 else ''} in {describe_array(a)}, "
                f"the first {float(a[first])} at [{where}]")
