"""The compiled z-buffer rasteriser (csrc/include/e3dmm/raster.h), with its arguments checked.

The rule it draws by (coverage of pixel centres, nearest surface, Gouraud-shaded Lambert light
with ambient, vertex colours mixed barycentrically) is stated in raster.h and in
engine/render/reference.py, which computes the same thing in numpy.
"""
from __future__ import annotations

import operator
from typing import NamedTuple

import numpy as np

from engine import _core
from engine.errors import InputError, describe_array

DEFAULT_LIGHT = (0.0, 0.0, -1.0)  # towards the light, image coordinates: from the camera
DEFAULT_AMBIENT = 0.3
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class RenderBuffers(NamedTuple):
    """What one rasterisation gives: all [H, W], row-major, the photo's pixel grid."""

    rgb: np.ndarray       # uint8 [H, W, 3]: the shaded mesh; the background where mask is False
    mask: np.ndarray      # bool [H, W]: a triangle is drawn here
    depth: np.ndarray     # float32 [H, W]: z of the drawn surface (smaller is nearer); +inf elsewhere
    triangle: np.ndarray  # int32 [H, W]: index of the drawn triangle; -1 elsewhere


class Mesh(NamedTuple):
    """Checked inputs, in the dtypes the core takes."""

    vertices: np.ndarray  # float32 [N, 3], finite
    faces: np.ndarray     # int32 [F, 3], in [0, N)
    colors: np.ndarray | None  # uint8 [N, 3]
    width: int
    height: int
    light: tuple[float, float, float]
    ambient: float


def _size(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"rasterize: {name}: expected an integer, found {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise InputError(f"rasterize: {name}: expected an integer, found {value!r}") from None
    if not -(2**63) <= v < 2**63:  # the core checks the real bounds; an int64 must reach it
        raise InputError(f"rasterize: {name}: expected an integer of at most 64 bits, found {v}")
    return v


def check_mesh(vertices, faces, colors, width, height, light=DEFAULT_LIGHT, ambient=DEFAULT_AMBIENT) -> Mesh:
    """Checks and converts the rasteriser's arguments (InputError naming the argument, what was
    expected and found). Done here, before any cast, so that a value the cast would change
    (an index past 2^31, a coordinate past float32's range) is refused, not wrapped or made inf."""
    v = np.asarray(vertices)
    if v.ndim != 2 or v.shape[1] != 3 or v.dtype.kind not in "fiu":
        raise InputError(f"rasterize: vertices: expected a real array [N, 3], found {describe_array(v)}")
    if v.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(v) | (np.abs(v) > _FLOAT32_MAX)
        if bad.any():
            i, c = (int(k) for k in np.argwhere(bad)[0])
            raise InputError(f"rasterize: vertices[{i}, {c}]: expected a finite float32 number, found {float(v[i, c])!r}")
    v = np.ascontiguousarray(v, dtype=np.float32)
    n = v.shape[0]

    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] != 3 or f.dtype.kind not in "iu":
        raise InputError(f"rasterize: faces: expected an integer array [F, 3], found {describe_array(f)}")
    if f.size:
        lo, hi = int(f.min()), int(f.max())
        if lo < 0 or hi >= n:
            bad = np.argwhere((f < 0) | (f >= n))[0]
            raise InputError(f"rasterize: faces[{bad[0]}, {bad[1]}]: expected a vertex index in [0, {n}), "
                             f"found {int(f[bad[0], bad[1]])}")
    f = np.ascontiguousarray(f, dtype=np.int32)

    c = None
    if colors is not None:
        c = np.asarray(colors)
        if c.shape != (n, 3) or c.dtype.kind not in "iu":
            raise InputError(f"rasterize: colors: expected an integer array [{n}, 3] (one RGB per vertex), "
                             f"found {describe_array(c)}")
        if c.size and (int(c.min()) < 0 or int(c.max()) > 255):
            raise InputError(f"rasterize: colors: expected values in [0, 255], found [{int(c.min())}, {int(c.max())}]")
        c = np.ascontiguousarray(c, dtype=np.uint8)

    try:
        lt = tuple(float(x) for x in light)
    except (TypeError, ValueError):
        raise InputError(f"rasterize: light: expected 3 numbers (a direction), found {light!r}") from None
    if len(lt) != 3 or not all(np.isfinite(lt)) or not any(lt) or max(abs(x) for x in lt) > _FLOAT32_MAX:
        raise InputError(f"rasterize: light: expected 3 finite numbers, not all zero, found {light!r}")
    if isinstance(ambient, (bool, np.bool_)) or not isinstance(ambient, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(ambient) <= 1.0:
        raise InputError(f"rasterize: ambient: expected a number in [0, 1], found {ambient!r}")
    return Mesh(v, f, c, _size("width", width), _size("height", height), lt, float(ambient))


def render_buffers(vertices_img, faces, colors=None, width=None, height=None, *, light=DEFAULT_LIGHT,
                   ambient=DEFAULT_AMBIENT, background=None, num_threads: int = 0) -> RenderBuffers:
    """Z-buffer rasterise a mesh in image coordinates.

    vertices_img: float [N, 3] (x right, y down, pixel centres at integers; z smaller = nearer);
    faces: int [F, 3], either winding (nothing is culled); colors: uint8 [N, 3] per vertex, or
    None for a uniform grey; width, height: the image in pixels (each <= 65,536, their product
    <= 2^27). light: direction towards the light (image coordinates; default from the camera);
    ambient: the shade the light does not reach, in [0, 1]. background: uint8 [H, W, 3] under
    the mesh (copied; default black). num_threads: 0 = all cores.
    Errors: InputError naming the argument (shape, dtype, a non-finite vertex, an index out of
    range, a size out of bounds, triangles whose boxes take more than 2^32 pixel tests);
    UnavailableError without the compiled core.
    """
    m = check_mesh(vertices_img, faces, colors, width, height, light, ambient)
    rgb = None
    if background is not None:
        bg = np.asarray(background)
        if bg.shape != (m.height, m.width, 3) or bg.dtype != np.uint8:
            raise InputError(f"rasterize: background: expected uint8[{m.height}, {m.width}, 3] (height, width), "
                             f"found {describe_array(bg)}")
        rgb = np.array(bg, dtype=np.uint8, order="C", copy=True)
    threads = _size("num_threads", num_threads)
    out = _core.core().rasterize(m.vertices, m.faces, m.colors, m.width, m.height, *m.light, m.ambient, rgb,
                                 threads)
    return RenderBuffers(*out)


def rasterize(vertices_img, faces, colors=None, width=None, height=None, *, light=DEFAULT_LIGHT,
              ambient=DEFAULT_AMBIENT, background=None, num_threads: int = 0):
    """render_buffers() without the triangle plane: (rgb uint8 [H, W, 3], mask bool [H, W],
    depth float32 [H, W]). Same arguments and errors."""
    b = render_buffers(vertices_img, faces, colors, width, height, light=light, ambient=ambient,
                       background=background, num_threads=num_threads)
    return b.rgb, b.mask, b.depth
