"""Bad arguments to the rasteriser give typed errors naming the argument, never a crash, a
wrapped index, a huge allocation or a hang: through engine.render and through the binding."""
from __future__ import annotations

import re

import numpy as np
import pytest

from engine import _core
from engine.errors import InputError
from engine.render import rasterize, render_buffers

TRI_V = np.array([[1, 1, 0], [8, 1, 0], [1, 8, 0]], np.float32)
TRI_F = np.array([[0, 1, 2]], np.int32)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e39])
def test_non_finite_or_non_float32_vertex(value):
    v = TRI_V.astype(np.float64)
    v[1, 2] = value
    with pytest.raises(InputError, match=rf"vertices\[1, 2\].*finite float32.*found {re.escape(repr(value))}"):
        rasterize(v, TRI_F, None, 10, 10)


@pytest.mark.parametrize("index", [3, -1, 2**31, 2**32 + 1, -(2**31) - 1])
def test_index_out_of_range_is_refused_before_any_cast(index):
    f = np.array([[0, index, 2]], np.int64)  # 2**32 + 1 would wrap to 1 as int32
    with pytest.raises(InputError, match=r"faces\[0, 1\].*\[0, 3\)"):
        rasterize(TRI_V, f, None, 10, 10)


@pytest.mark.parametrize("width, height, what", [
    (0, 10, "width"), (10, 0, "height"), (-5, 10, "width"), (2**16 + 1, 1, "width"),
    (2**16, 2**16, "width x height"), (2**40, 2**40, "width"), (2**70, 10, "width"),
    (10.0, 10, "width"), (True, 10, "width"), ("10", 10, "width")])
def test_image_size_is_bounded(width, height, what):
    with pytest.raises(InputError, match=what):
        rasterize(TRI_V, TRI_F, None, width, height)


@pytest.mark.parametrize("kw, what", [
    ({"light": (0, 0, 0)}, "light"), ({"light": (0, np.nan, 1)}, "light"), ({"light": (1, 2)}, "light"),
    ({"light": "up"}, "light"), ({"ambient": -0.1}, "ambient"), ({"ambient": 1.5}, "ambient"),
    ({"ambient": np.nan}, "ambient"), ({"background": np.zeros((10, 10, 3), np.float32)}, "background"),
    ({"background": np.zeros((9, 10, 3), np.uint8)}, "background")])
def test_bad_light_ambient_background(kw, what):
    with pytest.raises(InputError, match=what):
        rasterize(TRI_V, TRI_F, None, 10, 10, **kw)


@pytest.mark.parametrize("vertices, faces, colors, what", [
    (TRI_V[:, :2], TRI_F, None, "vertices"), (TRI_V.astype(complex), TRI_F, None, "vertices"),
    (TRI_V, TRI_F.astype(np.float32), None, "faces"), (TRI_V, TRI_F[0], None, "faces"),
    (TRI_V, TRI_F, np.zeros((2, 3), np.uint8), "colors"), (TRI_V, TRI_F, np.full((3, 3), 256), "colors"),
    (TRI_V, TRI_F, np.zeros((3, 3), np.float32), "colors")])
def test_bad_shapes_and_dtypes(vertices, faces, colors, what):
    with pytest.raises(InputError, match=what):
        rasterize(vertices, faces, colors, 10, 10)


def test_work_bound_refuses_a_mesh_of_huge_triangles():
    """300 triangles each covering a 4096 x 4096 image: 5e9 pixel tests, more than 2^32."""
    v = np.array([[-10, -10, 0], [9000, -10, 0], [-10, 9000, 0]], np.float32)
    f = np.zeros((300, 3), np.int32) + [0, 1, 2]
    with pytest.raises(InputError, match="pixel tests"):
        rasterize(v, f, None, 4096, 4096)


def test_the_binding_itself_gives_typed_errors():
    """engine._C.rasterize is reachable directly: its own checks must hold too."""
    C = _core.core()
    v, f = TRI_V, TRI_F
    bad_calls = [
        lambda: C.rasterize(v.astype(np.float64), f, None, 10, 10),
        lambda: C.rasterize(v, f.astype(np.int64), None, 10, 10),
        lambda: C.rasterize(np.asfortranarray(np.zeros((3, 3), np.float32)), f, None, 10, 10),
        lambda: C.rasterize(v, np.array([[0, 1, 7]], np.int32), None, 10, 10),
        lambda: C.rasterize(v, np.array([[0, -2, 1]], np.int32), None, 10, 10),
        lambda: C.rasterize(np.array([[np.nan, 0, 0]] * 3, np.float32), f, None, 10, 10),
        lambda: C.rasterize(v, f, None, 0, 10),
        lambda: C.rasterize(v, f, None, 2**40, 2**40),
        lambda: C.rasterize(v, f, None, 10, 10, light_x=1e300),
        lambda: C.rasterize(v, f, None, 10, 10, 0.0, 0.0, 0.0),
        lambda: C.rasterize(v, f, None, 10, 10, ambient=2.0),
        lambda: C.rasterize(v, f, np.zeros((3, 3), np.uint8), 10, 10, rgb=np.zeros((10, 10, 3), np.uint8)[::-1]),
        lambda: C.rasterize(v, f, None, 10, 10, rgb=np.zeros((10, 11, 3), np.uint8)),
        lambda: C.rasterize(v, f, None, 10, 10, num_threads=-1),
    ]
    for call in bad_calls:
        with pytest.raises(InputError):
            call()


def test_empty_mesh_and_degenerate_triangles_draw_nothing():
    out = render_buffers(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), None, 5, 4)
    assert not out.mask.any() and (out.triangle == -1).all() and np.isinf(out.depth).all()
    line = np.array([[0, 0, 0], [4, 4, 0], [2, 2, 0]], np.float32)  # collinear: area 0
    out = render_buffers(line, TRI_F, None, 5, 5)
    assert not out.mask.any()


def test_background_is_kept_and_the_callers_array_untouched():
    bg = np.full((10, 10, 3), 42, np.uint8)
    rgb, mask, depth = rasterize(TRI_V, TRI_F, None, 10, 10, background=bg)
    assert (bg == 42).all()
    assert (rgb[~mask] == 42).all() and mask.sum() == 36 and (rgb[mask] != 42).any()
