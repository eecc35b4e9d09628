"""`FaceResult`: what the pipeline hands back for one face (or one failed input).

Arrays are views into the buffers of the batch the face ran in (no per-face copy):
`coeffs` is a row of the batch's coefficients [B, 198], `records` / `vertices` /
`colors` are rows of the decoded batch, `crop` a row of the batch's crop buffer.
A result therefore keeps its whole batch alive; copy what you keep for long.

With `reconstruct(..., pose=True)` each face also has a `pose` (engine.pose.Pose; conventions
in engine.pose.angles), its `expression` weights when the morphable model has an expression
basis, and `posed_vertices`, the mesh in the photo's pixels; or `pose_error` saying why not
(no landmarks, bad landmarks, a model without landmark vertices). A face whose pose fails keeps
its mesh and coefficients: only the pose is missing.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.detect import FaceBox
from engine.errors import InputError
from engine.mesh_io import VERTEX_DTYPE


@dataclass(eq=False)
class FaceResult:
    """One face of one input (image, array, video frame or crop), or one failed input.

    source: the input's name (path as given, the caller's name, or "<array 3>").
    face_index: index of the face in its image (detector order: most confident first);
        -1 on an error result.
    frame: video frame index, None for still images.
    box: the face box cropped (None in already-cropped mode and on errors).
    crop: float32 [3, 224, 224] BGR 0..255 network input when `keep_crops`, else None.
    coeffs: float32 [198] (alpha = shape, beta = texture, in standard deviations);
        None on an error result.
    error: None, or why this input produced no face (unreadable file, no face found...).
    provenance: runner name/device/precision, network and morphable model, synthetic flags.
    pose: engine.pose.Pose when the run fitted poses and this face's fit succeeded, else None.
    pose_error: why this face has no pose (when the run fitted poses), else None.
    expression: float32 [Ke] expression weights (standard deviations) fitted with the pose,
        or None (no pose, or a morphable model without an expression basis: pose only).
    """

    source: str
    face_index: int
    frame: int | None = None
    box: FaceBox | None = None
    crop: np.ndarray | None = field(default=None, repr=False)
    coeffs: np.ndarray | None = field(default=None, repr=False)
    error: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict, repr=False)
    # the decoded batch and this face's row in it (None when decode=False or on errors)
    _decoded: Any = field(default=None, repr=False)
    _row: int = field(default=-1, repr=False)
    _split: int = field(default=99, repr=False)  # number of shape components (alpha)
    pose: Any = None
    pose_error: str | None = None
    expression: np.ndarray | None = field(default=None, repr=False)
    _posed: Any = field(default=None, repr=False)  # PosedBatch of the batch (pose runs)
    _landmarks: np.ndarray | None = field(default=None, repr=False)  # given without a box (crops)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def alpha(self) -> np.ndarray | None:
        """Shape coefficients (a view of `coeffs`)."""
        return None if self.coeffs is None else self.coeffs[: self._split]

    @property
    def beta(self) -> np.ndarray | None:
        """Texture coefficients (a view of `coeffs`)."""
        return None if self.coeffs is None else self.coeffs[self._split:]

    def _field(self, name: str):
        if self._decoded is None:
            return None
        a = getattr(self._decoded, name)
        return None if a is None else a[self._row]

    @property
    def vertices(self) -> np.ndarray | None:
        """float32 [N, 3] millimetres (a view into the batch; None when not decoded)."""
        return self._field("vertices")

    @property
    def colors(self) -> np.ndarray | None:
        """uint8 [N, 3] (a view into the batch; None when not decoded)."""
        return self._field("colors")

    @property
    def records(self) -> np.ndarray | None:
        """VERTEX_DTYPE [N]: x y z + red green blue, the binary PLY vertex block (a view)."""
        return self._field("records")

    @property
    def landmarks(self) -> np.ndarray | None:
        """float32 [68, 2] (x, y) image pixels of this face's 68 landmarks (dlib's, or the caller's
        through the API or the boxes sidecar), or None (a detector box without the landmark
        model, a plain given box, or an already-cropped input)."""
        if self._landmarks is not None:
            return self._landmarks
        return None if self.box is None else self.box.landmarks

    @property
    def posed_vertices(self) -> np.ndarray | None:
        """float32 [N, 3]: this face's mesh (with its fitted expression, when there is one) in
        the photo's pixels, x right, y down, z along the view scaled alike, smaller = closer
        (Pose.to_image); None without a pose. Computed on first use, for the whole batch at once."""
        if self.pose is None or self._posed is None:
            return None
        return self._posed.vertices(self._row)

    @property
    def faces(self) -> np.ndarray | None:
        """int32 [F, 3] triangles (0-based), shared by every mesh of the model."""
        return None if self._decoded is None else self._decoded.faces

    @property
    def name(self) -> str:
        """A file-name stem for this face: its input's stem, frame and face index ("photo_face0",
        "clip_f000012_face1"), by the rule of engine.pipeline.naming applied to this input alone.
        Inputs of the same stem (a/img.jpg, b/img.jpg) give the same name: to write the faces
        of several inputs into one folder, name them with `naming.OutputNames(inputs)`, which
        keeps every face's files apart."""
        from engine.pipeline.naming import OutputNames

        return OutputNames([self.source]).name(self.source, self.frame, self.face_index)

    def mesh_comments(self) -> list[str]:
        """PLY/OBJ header comments: engine, source, face, and "synthetic" warnings."""
        from engine import __version__

        p = self.provenance
        out = [f"engine3dmm {__version__}", f"source {_ascii_line(self.source)}",
               f"face {self.face_index}" + ("" if self.frame is None else f" frame {self.frame}"),
               f"runner {p.get('runner')} {p.get('device')} {p.get('precision')}",
               f"morphable model {_ascii_line(str(p.get('morphable_model')))}"]
        if p.get("network_synthetic"):
            out.append("WARNING synthetic network weights: coefficients are meaningless")
        if p.get("morphable_synthetic"):
            out.append("WARNING synthetic morphable model: not the Basel Face Model")
        return out

    def write_mesh(self, path: str | os.PathLike, fmt: str = "ply") -> None:
        """Write this face's mesh ("ply" binary, "ply-ascii", "obj", or "ply-release": the
        release's demo's ASCII PLY, whose header has no room for our comments), atomically."""
        from engine.mesh_io import write_mesh

        if self.error is not None:
            raise InputError(f"{path}: cannot write a mesh for {self.source}: this input failed ({self.error})")
        rec = self.records
        if rec is None:
            raise InputError(f"{path}: no mesh for {self.source} face {self.face_index}: "
                             f"it was run with decode=False (use reconstruct(), not embed())")
        write_mesh(path, rec, self.faces, fmt=fmt, comments=() if fmt == "ply-release" else self.mesh_comments())

    def write_posed_mesh(self, path: str | os.PathLike, fmt: str = "ply") -> None:
        """Write this face's posed mesh (`posed_vertices`: the photo's pixels, x right, y down, z
        along the view; with its colours and the model's triangles) as `fmt`, atomically, to lay
        over the photo in MeshLab or Blender. InputError when the face has no pose."""
        from engine.mesh_io import write_mesh

        posed = self.posed_vertices
        if posed is None:
            raise InputError(f"{path}: no posed mesh for {self.source} face {self.face_index}: "
                             + (self.pose_error or "the run did not fit poses (reconstruct(..., pose=True))"))
        rec = np.empty(posed.shape[0], VERTEX_DTYPE)
        rec["x"], rec["y"], rec["z"] = posed[:, 0], posed[:, 1], posed[:, 2]
        colors = self._posed.colors(self._row)
        rec["red"], rec["green"], rec["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
        comments = () if fmt == "ply-release" else [
            *self.mesh_comments(), "posed: x right, y down in pixels of the photo (0 0 = centre of its top-left "
            "pixel), z along the view in pixels at the face's depth, smaller = closer",
            f"pose yaw {self.pose.yaw:.3f} pitch {self.pose.pitch:.3f} roll {self.pose.roll:.3f} degrees, "
            f"camera {self.pose.camera['model']}"]
        write_mesh(path, rec, self._posed.faces, fmt=fmt, comments=comments)


def _ascii_line(s: str) -> str:
    # PLY comments must be single-line ASCII: escape anything else the way Python's ascii() does.
    return ascii(s)[1:-1]


class PosedBatch:
    """The posed meshes of one batch, made on first use: the batch's faces with a pose are
    decoded again with their expression weights (the decode kernel's expression term) when
    there are any, else their decoded shapes are used, then each goes through its Pose."""

    def __init__(self, decoder, coeffs: np.ndarray, poses: list, expression: np.ndarray | None, decoded):
        self._decoder, self._coeffs, self._poses = decoder, coeffs, poses
        self._expression, self._decoded = expression, decoded
        self._lock = threading.Lock()
        self._shapes: dict[int, np.ndarray] | None = None
        self._colors: dict[int, np.ndarray] = {}

    @property
    def faces(self) -> np.ndarray:
        return self._decoder.faces

    def _decode_posed_rows(self) -> None:
        """Shapes (and colours) of the rows with a pose, once for the batch."""
        rows = [i for i, p in enumerate(self._poses) if p is not None]
        self._shapes, self._colors = {}, {}
        if not rows:
            return
        d = self._decoded
        if self._expression is None and d is not None and d.vertices is not None and d.colors is not None:
            self._shapes = {i: _host(d.vertices[i]) for i in rows}
            self._colors = {i: _host(d.colors[i]) for i in rows}
            return
        out = self._decoder.decode(self._coeffs[rows], outputs=("vertices", "colors"),
                                   expression=None if self._expression is None else self._expression[rows])
        v, c = _host(out.vertices), _host(out.colors)
        self._shapes = {i: v[k] for k, i in enumerate(rows)}
        self._colors = {i: c[k] for k, i in enumerate(rows)}

    def vertices(self, row: int) -> np.ndarray | None:
        with self._lock:
            if self._shapes is None:
                self._decode_posed_rows()
        shape = self._shapes.get(row)
        return None if shape is None else self._poses[row].to_image(shape)

    def colors(self, row: int) -> np.ndarray | None:
        with self._lock:
            if self._shapes is None:
                self._decode_posed_rows()
        return self._colors.get(row)


def _host(a) -> np.ndarray:
    """A numpy array of a numpy array or a (CUDA) torch tensor."""
    return a if isinstance(a, np.ndarray) else a.cpu().numpy()


@dataclass
class HostDecoded:
    """A decoded batch back on the host from the GPU: only the PLY records were copied;
    vertices and colours are strided views into them (see `record_views`)."""

    vertices: np.ndarray
    colors: np.ndarray
    records: np.ndarray
    faces: np.ndarray

    def __len__(self) -> int:
        """Meshes in the batch, as engine.decode.DecodedBatch answers (callers use either)."""
        return int(self.records.shape[0])


def record_views(records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vertices float32 [..., N, 3], colors uint8 [..., N, 3]) as zero-copy views into
    VERTEX_DTYPE records [..., N]: the x y z floats sit at byte 0 and the colours at byte
    12 of each 15-byte record, so both views have a 15-byte row stride (unaligned floats:
    numpy handles them; call np.ascontiguousarray for libraries that need alignment)."""
    if records.dtype != VERTEX_DTYPE or not records.flags.c_contiguous:
        raise InputError(f"records: expected C-contiguous VERTEX_DTYPE records, found {records.dtype}")
    raw = records.view(np.uint8).reshape(records.shape + (VERTEX_DTYPE.itemsize,))
    shape = records.shape + (3,)
    strides = raw.strides[:-1] + (4,)
    vertices = np.ndarray(shape, np.dtype("<f4"), buffer=raw, offset=0, strides=strides)
    colors = np.ndarray(shape, np.uint8, buffer=raw, offset=12, strides=raw.strides[:-1] + (1,))
    return vertices, colors
