"""Hypothesis: on any small mesh (degenerate, huge, off-image, crossing triangles, either winding)
the compiled rasteriser equals the numpy reference except at triangle edges, and any argument
either draws or gives an InputError, nothing else."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import InputError
from engine.render import render_buffers
from engine.render.reference import render_reference

coord = st.one_of(st.floats(-40, 80, width=32), st.sampled_from([0.0, 0.5, 1.0, 7.0, -1e30, 1e30, 3.4e38]),
                  st.integers(-5, 40).map(float))


@st.composite
def meshes(draw):
    n = draw(st.integers(3, 12))
    v = np.array(draw(st.lists(st.tuples(coord, coord, st.floats(-100, 100, width=32)), min_size=n, max_size=n)),
                 np.float32)
    f = np.array(draw(st.lists(st.tuples(*[st.integers(0, n - 1)] * 3), min_size=0, max_size=16)),
                 np.int32).reshape(-1, 3)
    c = np.array(draw(st.lists(st.tuples(*[st.integers(0, 255)] * 3), min_size=n, max_size=n)), np.uint8)
    return v, f, c, draw(st.integers(1, 40)), draw(st.integers(1, 40))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meshes(), st.floats(0, 1, width=32))
def test_equals_reference_except_at_edges(mesh, ambient):
    v, f, c, w, h = mesh
    out = render_buffers(v, f, c, w, h, ambient=ambient)
    ref, edge = render_reference(v, f, c, w, h, ambient=ambient)
    clean = ~edge
    np.testing.assert_array_equal(out.triangle[clean], ref.triangle[clean])
    np.testing.assert_array_equal(out.depth[clean], ref.depth[clean])
    np.testing.assert_array_equal(out.mask, out.triangle >= 0)
    assert (np.abs(out.rgb.astype(int) - ref.rgb.astype(int))[clean] <= 1).all()
    assert (out.rgb[~out.mask] == 0).all() and np.isinf(out.depth[~out.mask]).all()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=9, max_size=9),
       st.lists(st.integers(-(2**40), 2**40), min_size=3, max_size=3),
       st.integers(-(2**64), 2**64), st.integers(-10, 64))
def test_any_argument_draws_or_is_an_input_error(coords, face, width, height):
    v = np.array(coords, np.float64).reshape(3, 3)
    f = np.array([face], np.int64)
    try:
        out = render_buffers(v, f, None, width, height)
    except InputError:
        return
    assert out.rgb.shape == (height, width, 3) and out.triangle.shape == (height, width)
