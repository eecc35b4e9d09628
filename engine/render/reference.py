"""The rasteriser's rule in plain numpy: the test oracle of csrc/src/raster.cpp.

Not for production (it is 100x slower and holds every pixel test in memory, in chunks): the
tests and bench/bench_raster.py compare the compiled rasteriser with it.

The rule (also in csrc/include/e3dmm/raster.h). Vertices in image coordinates: x right, y down,
pixel centres at integers, z smaller = nearer. For triangle (a, b, c) and pixel centre p, in
float64:

    area2 = (bx-ax)(cy-ay) - (by-ay)(cx-ax)
    w0 = (cx-bx)(py-by) - (cy-by)(px-bx)      (the weight of a)
    w1 = (ax-cx)(py-cy) - (ay-cy)(px-cx)      (of b)
    w2 = (bx-ax)(py-ay) - (by-ay)(px-ax)      (of c)

p is covered when it lies in the triangle's bounding box and w0, w1, w2 all have area2's sign
(zero included); area2 == 0 covers nothing; both windings draw. Depth z = (w0 za + w1 zb +
w2 zc) * (1 / area2), rounded to float32; the smallest float32 z wins, the lower triangle index
between equal ones. Colour: Gouraud-shaded Lambert light plus ambient (see vertex_shades), mixed
with weights w_i * (1 / area2), clamped to [0, 255] and rounded half up.

"Equal except at triangle edges", defined: a pixel is at an edge (`edge` in the result) when
  - a triangle's boundary passes within EDGE_PX pixels of its centre (inside or outside), and
    that triangle's depth there is not behind the drawn surface by more than TIE_ULPS float32
    units (or nothing is drawn there), or
  - two covering triangles are within TIE_ULPS float32 units of depth (surfaces meeting).
There the pixel's coverage or its winner may turn on the last bit of a product, which another
compiler or instruction set may round differently; everywhere else the compiled rasteriser
must give the same triangle, mask and float32 depth, and an RGB within one level (the colour
is mixed in double on both sides; the sums are formed in a different order for the normals).
"""
from __future__ import annotations

import numpy as np

from engine.errors import InputError, describe_array
from engine.render.raster import DEFAULT_AMBIENT, DEFAULT_LIGHT, RenderBuffers, check_mesh

EDGE_PX = 1e-3        # pixels: a centre this close to a triangle's boundary is "at an edge"
TIE_ULPS = 4          # float32 units of depth within which two surfaces "meet"
_CHUNK_TESTS = 1 << 22  # pixel tests held at once (about 0.5 GB of temporaries at most)
DEFAULT_GREY = 200    # the vertex colour without colours (raster.h: kDefaultGrey)


def vertex_shades(vertices: np.ndarray, faces: np.ndarray, light, ambient: float) -> np.ndarray:
    """float64 [N]: ambient + (1 - ambient) * max(0, n . l) per vertex.

    n: the sum of the unnormalised normals (b - a) x (c - a) of the vertex's triangles,
    normalised ((0, 0, -1) where it is zero), turned to face the camera (n_z <= 0: the camera
    looks along +z); l: the unit vector towards the light. Light and ambient are taken at
    float32 precision, as the compiled core receives them."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    u, w = b - a, c - a
    fn = np.stack([u[:, 1] * w[:, 2] - u[:, 2] * w[:, 1],
                   u[:, 2] * w[:, 0] - u[:, 0] * w[:, 2],
                   u[:, 0] * w[:, 1] - u[:, 1] * w[:, 0]], axis=1)
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, f[:, k], fn)
    length = np.sqrt(vn[:, 0] * vn[:, 0] + vn[:, 1] * vn[:, 1] + vn[:, 2] * vn[:, 2])
    ok = (length > 0) & np.isfinite(length)
    n = np.where(ok[:, None], vn / np.where(ok, length, 1.0)[:, None], [0.0, 0.0, -1.0])
    n[n[:, 2] > 0] *= -1.0
    lt = np.asarray(light, np.float32).astype(np.float64)
    lt = lt / np.sqrt(lt[0] * lt[0] + lt[1] * lt[1] + lt[2] * lt[2])
    amb = float(np.float32(ambient))
    return amb + (1.0 - amb) * np.maximum(0.0, n[:, 0] * lt[0] + n[:, 1] * lt[1] + n[:, 2] * lt[2])


def _to_u8(x: np.ndarray) -> np.ndarray:
    out = np.zeros(x.shape, np.uint8)
    hi = x >= 255.0
    mid = (x > 0.0) & ~hi
    out[hi] = 255
    out[mid] = np.floor(x[mid] + 0.5).astype(np.uint8)
    return out


def render_reference(vertices_img, faces, colors=None, width=None, height=None, *, light=DEFAULT_LIGHT,
                     ambient=DEFAULT_AMBIENT, background=None):
    """The rule above: (RenderBuffers(rgb, mask, depth, triangle), edge bool [H, W]).

    Same arguments and argument checks as engine.render.render_buffers, except the sizes: the
    reference holds its pixel tests in memory in chunks and is meant for test and benchmark
    images."""
    m = check_mesh(vertices_img, faces, colors, width, height, light, ambient)
    W, H = m.width, m.height
    if not (1 <= W <= 1 << 16 and 1 <= H <= 1 << 16 and W * H <= 1 << 27):
        raise InputError(f"render_reference: {W} x {H}: outside the rasteriser's bounds")
    v = m.vertices.astype(np.float64)
    f = m.faces.astype(np.int64)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    ax, ay, za = a[:, 0], a[:, 1], a[:, 2]
    bx, by, zb = b[:, 0], b[:, 1], b[:, 2]
    cx, cy, zc = c[:, 0], c[:, 1], c[:, 2]
    area2 = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    with np.errstate(divide="ignore"):
        inv_area2 = 1.0 / area2  # area2 == 0 covers nothing; never used
    e = [(cx - bx, cy - by, bx, by), (ax - cx, ay - cy, cx, cy), (bx - ax, by - ay, ax, ay)]  # w_i's edge, origin
    lengths = [np.hypot(ex, ey) for ex, ey, _, _ in e]
    xs, ys = np.stack([ax, bx, cx], 1), np.stack([ay, by, cy], 1)
    # The exact box (coverage) and the box widened by EDGE_PX (the pixels near an edge).
    box = [np.maximum(np.ceil(xs.min(1)), 0), np.minimum(np.floor(xs.max(1)), W - 1),
           np.maximum(np.ceil(ys.min(1)), 0), np.minimum(np.floor(ys.max(1)), H - 1)]
    wide = [np.maximum(np.ceil(xs.min(1) - EDGE_PX), 0), np.minimum(np.floor(xs.max(1) + EDGE_PX), W - 1),
            np.maximum(np.ceil(ys.min(1) - EDGE_PX), 0), np.minimum(np.floor(ys.max(1) + EDGE_PX), H - 1)]
    live = np.flatnonzero((area2 != 0) & (wide[0] <= wide[1]) & (wide[2] <= wide[3]))
    x0, y0 = wide[0][live].astype(np.int64), wide[2][live].astype(np.int64)
    bw = wide[1][live].astype(np.int64) - x0 + 1
    tests = bw * (wide[3][live].astype(np.int64) - y0 + 1)

    kept = {k: [] for k in ("pix", "tri", "z32", "z64", "inside", "near")}
    ends = np.cumsum(tests)
    start = 0
    while start < len(live):  # chunks of whole triangles, about _CHUNK_TESTS pixel tests each
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + _CHUNK_TESTS, side="right")))
        sel = slice(start, stop)
        counts = tests[sel]
        t = np.repeat(live[sel], counts)
        j = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        bws = np.repeat(bw[sel], counts)
        px = (np.repeat(x0[sel], counts) + j % bws).astype(np.float64)
        py = (np.repeat(y0[sel], counts) + j // bws).astype(np.float64)
        w = [ex[t] * (py - oy[t]) - ey[t] * (px - ox[t]) for ex, ey, ox, oy in e]
        pos = area2[t] > 0
        in_box = (px >= box[0][t]) & (px <= box[1][t]) & (py >= box[2][t]) & (py <= box[3][t])
        inside = in_box & np.where(pos, (w[0] >= 0) & (w[1] >= 0) & (w[2] >= 0),
                                   (w[0] <= 0) & (w[1] <= 0) & (w[2] <= 0))
        sign = np.where(pos, 1.0, -1.0)
        dist = np.minimum.reduce([sign * w[k] / lengths[k][t] for k in range(3)])  # to the nearest edge, + inside
        near = np.abs(dist) < EDGE_PX
        z64 = (w[0] * za[t] + w[1] * zb[t] + w[2] * zc[t]) * inv_area2[t]
        inside &= ~np.isnan(z64)  # a NaN depth never passes the compiled depth test (cannot occur for float32 input)
        keep = inside | near
        fmax = float(np.finfo(np.float32).max)
        kept["pix"].append((py * W + px).astype(np.int64)[keep])
        kept["tri"].append(t[keep])
        kept["z64"].append(z64[keep])
        kept["z32"].append(np.clip(z64[keep], -fmax, fmax).astype(np.float32))
        kept["inside"].append(inside[keep])
        kept["near"].append(near[keep])
        start = stop
    cat = {k: (np.concatenate(vals) if vals else np.zeros(0, dtype)) for (k, vals), dtype in
           zip(kept.items(), (np.int64, np.int64, np.float32, np.float64, bool, bool))}

    depth = np.full(H * W, np.inf, np.float32)
    triangle = np.full(H * W, -1, np.int32)
    z_win = np.full(H * W, np.inf)
    ins = cat["inside"]
    pix_in, tri_in, z32_in, z64_in = cat["pix"][ins], cat["tri"][ins], cat["z32"][ins], cat["z64"][ins]
    order = np.lexsort((tri_in, z32_in, pix_in))  # by pixel, then float32 depth, then triangle index
    first = order[np.r_[True, pix_in[order][1:] != pix_in[order][:-1]]] if order.size else order
    depth[pix_in[first]] = z32_in[first]
    triangle[pix_in[first]] = tri_in[first]
    z_win[pix_in[first]] = z64_in[first]

    # Pixels at an edge (see the module docstring).
    tol = TIE_ULPS * np.spacing(np.abs(depth).astype(np.float32)).astype(np.float64)
    tol[~np.isfinite(tol)] = 0.0
    edge = np.zeros(H * W, bool)
    p, zk = cat["pix"], cat["z64"]
    near_front = ~np.isfinite(z_win[p]) | (zk <= z_win[p] + tol[p])
    edge[p[cat["near"] & near_front]] = True
    rival = ins & (cat["tri"] != triangle[p]) & (np.abs(zk - z_win[p]) <= tol[p])
    edge[p[rival]] = True

    rgb = np.zeros((H * W, 3), np.uint8)
    if background is not None:
        bg = np.asarray(background)
        if bg.shape != (H, W, 3) or bg.dtype != np.uint8:
            raise InputError(f"render_reference: background: expected uint8[{H}, {W}, 3], found {describe_array(bg)}")
        rgb[:] = bg.reshape(H * W, 3)
    drawn = np.flatnonzero(triangle >= 0)
    if drawn.size:
        shade = vertex_shades(v, f, m.light, m.ambient)
        base = m.colors.astype(np.float64) if m.colors is not None else np.full((len(v), 3), float(DEFAULT_GREY))
        shaded = base * shade[:, None]
        t = triangle[drawn].astype(np.int64)
        px, py = (drawn % W).astype(np.float64), (drawn // W).astype(np.float64)
        w = [ex[t] * (py - oy[t]) - ey[t] * (px - ox[t]) for ex, ey, ox, oy in e]
        mix = (w[0][:, None] * shaded[f[t, 0]] + w[1][:, None] * shaded[f[t, 1]]
               + w[2][:, None] * shaded[f[t, 2]]) * inv_area2[t][:, None]
        rgb[drawn] = _to_u8(mix)
    buffers = RenderBuffers(rgb.reshape(H, W, 3), (triangle >= 0).reshape(H, W), depth.reshape(H, W),
                               triangle.reshape(H, W))
    return buffers, edge.reshape(H, W)
