"""The built-in synthetic morphable model: the default until a user brings the real BFM.

It has exactly the trimmed BFM's sizes (46,990 vertices, 93,323 triangles, 99 + 99
components) so that every kernel, benchmark and file size behaves as with the real model,
and it looks like a face (a smooth head-like height field with a nose, eye sockets, brows,
lips and chin, skin-coloured), so meshes written from it are meaningful to look at.
It is labelled synthetic in its metadata; tools that show a model must say so.

Topology. Vertices lie on R = 250 horizontal rows of an oval; neighbouring rows are joined
by a "zipper" strip (every triangle has two vertices on one row and one on the other), which
gives L_i + L_{i+1} - 2 triangles per strip. Summed: F = 2V - L_first - L_last - 2(R - 1).
With V = 46,990 and F = 93,323 that fixes L_first + L_last = 159, and the interior row
lengths follow a rounded profile scaled so they add up to V exactly.

Modes. Per-vertex fields are spanned by 45 smooth functions (products of cosines of total
frequency up to 8 over the oval, orthonormalised over the vertices). A mode is a unit vector
in the 3 x 45 coefficient space, so the [3N] principal components are orthonormal like the
BFM's; a QR of random directions weighted towards low frequencies makes the first modes the
smoothest. Sigmas follow BFM-like
magnitudes for unit-norm components (shape: about 880 mm for the first, i.e. a few mm of
displacement per vertex at one standard deviation, falling off as a power law).

Landmarks (SYNTHETIC, like the rest). The 68 landmark vertices follow dlib's 68-point layout:
`LANDMARK_TEMPLATE` is the mean of dlib's landmarks on 18 real frontal photos (the release's 17
demo images, anhttran/3dmm_cnn demoCode/data, and scikit-image's astronaut), each similarity-
aligned so that the eye centres sit at (-0.5, 0) and (0.5, 0), then made left-right symmetric.
It is placed on this face's features (eye centres at x = +-32 mm, y = 28 mm; the mouth at about
y = -46 mm) and every point takes the vertex nearest to it in (x, y). `landmarks_outer` (the
release's outerLandmarkIndex: the jaw contour a frontal or near-side view shows) takes the jaw
points there; `landmarks` (innerLandmarkIndex) moves the 16 side jaw points 7% towards the
middle, about where the contour of a jaw side turned 20 degrees away lies; the other 51 are
shared. The choice of vertices is mirror-symmetric.

Expression (SYNTHETIC, for tests and demos; the real basis is 3DDFA's, `convert --expression`):
29 unit-norm [3N] modes, smooth fields as above concentrated on the mouth and jaw, and less on
the eyes and brows, orthonormalised, with sigmas of a few mm per standard deviation.
"""
from __future__ import annotations

import functools

import numpy as np

from engine.errors import InputError
from engine.morphable.model import MorphableModel

NUM_VERTICES = 46_990
NUM_FACES = 93_323
NUM_COMPONENTS = 99
NAME = "synthetic-bfm-46990"

_ROWS = 250
_END_SUM = 2 * NUM_VERTICES - NUM_FACES - 2 * (_ROWS - 1)  # L_first + L_last, see module doc
_HALF_WIDTH_MM = 75.0  # face about 150 mm wide
_HALF_HEIGHT_MM = 95.0  # forehead to chin about 190 mm
_MAX_FREQUENCY = 8  # highest total frequency of the mode functions
NUM_EXPRESSION = 29  # as 3DDFA's basis, which the release used

# dlib's 68 points, mean of 18 real frontal photos (module docstring): x right, y DOWN, in units
# of the distance between the eye centres, eye centres at (+-0.5, 0); symmetric.
LANDMARK_TEMPLATE = np.array([
    [-1.132, 0.058], [-1.12, 0.359], [-1.086, 0.656], [-1.032, 0.954], [-0.93, 1.232], [-0.763, 1.475],
    [-0.55, 1.678], [-0.299, 1.833], [0.0, 1.875], [0.299, 1.833], [0.55, 1.678], [0.763, 1.475],
    [0.93, 1.232], [1.032, 0.954], [1.086, 0.656], [1.12, 0.359], [1.132, 0.058], [-0.919, -0.163],
    [-0.786, -0.3], [-0.593, -0.349], [-0.386, -0.332], [-0.191, -0.265], [0.191, -0.265], [0.386, -0.332],
    [0.593, -0.349], [0.786, -0.3], [0.919, -0.163], [0.0, -0.042], [0.0, 0.147], [0.0, 0.337], [0.0, 0.531],
    [-0.232, 0.672], [-0.121, 0.71], [0.0, 0.746], [0.121, 0.71], [0.232, 0.672], [-0.692, 0.009],
    [-0.574, -0.062], [-0.425, -0.065], [-0.299, 0.022], [-0.433, 0.047], [-0.577, 0.05], [0.299, 0.022],
    [0.425, -0.065], [0.574, -0.062], [0.692, 0.009], [0.577, 0.05], [0.433, 0.047], [-0.453, 1.072],
    [-0.292, 0.988], [-0.124, 0.95], [0.0, 0.979], [0.124, 0.95], [0.292, 0.988], [0.453, 1.072],
    [0.299, 1.229], [0.135, 1.296], [0.0, 1.306], [-0.135, 1.296], [-0.299, 1.229], [-0.384, 1.079],
    [-0.125, 1.048], [0.0, 1.06], [0.125, 1.048], [0.384, 1.079], [0.128, 1.15], [0.0, 1.163],
    [-0.128, 1.15]])
_EYE_X_MM, _EYE_Y_MM = 64.0, 28.0  # eye-centre distance and height on this face
_TEMPLATE_Y_MM = 67.0  # mm per template unit downwards: the mouth (about 1.1) at y = -46 mm
_INNER_JAW = 0.93  # innerLandmarkIndex's side jaw points, relative to the outer contour's x: a side
# turned 20 degrees away shows its contour about this far in (a cylinder's: cos 20 = 0.94)


def _row_lengths() -> np.ndarray:
    """Row lengths of the oval: fixed ends, rounded interior, summing to NUM_VERTICES."""
    end0 = _END_SUM // 2
    end1 = _END_SUM - end0
    t = np.linspace(-1.0, 1.0, _ROWS)
    # 1 - |t|^2.5 rather than an ellipse: its finite slope at the ends keeps neighbouring rows
    # within a few vertices of each other, so no long sliver fans form at the top and bottom.
    bulge = (1.0 - np.abs(t) ** 2.5)[1:-1]
    base = (end0 + end1) / 2.0
    # Interior rows: base + scale * bulge; solve for scale so the real-valued total is right,
    # then distribute the rounding remainder by largest fractional part (stays smooth).
    need = NUM_VERTICES - end0 - end1
    scale = (need - base * bulge.size) / bulge.sum()
    real = base + scale * bulge
    lengths = np.floor(real).astype(np.int64)
    short = need - int(lengths.sum())
    lengths[np.argsort(-(real - lengths), kind="stable")[:short]] += 1
    out = np.concatenate([[end0], lengths, [end1]])
    assert out.sum() == NUM_VERTICES and out.min() >= 2
    return out


def _zipper(a_idx: np.ndarray, a_x: np.ndarray, b_idx: np.ndarray, b_x: np.ndarray) -> np.ndarray:
    """Triangulate the strip between row A (above) and row B (below), vectorised.

    Walking left to right, each step advances along A or along B, whichever next vertex is
    further left (A first on ties); an A-step makes (A[p-1], B[q], A[p]) and a B-step makes
    (A[p], B[q-1], B[q]). Both are counter-clockwise seen from +z (A above B), and none is
    degenerate: two distinct x on one row, one vertex on the other row.
    """
    keys = np.concatenate([a_x[1:], b_x[1:]])
    is_a = np.concatenate([np.ones(a_x.size - 1, bool), np.zeros(b_x.size - 1, bool)])
    order = np.argsort(keys, kind="stable")  # A events were placed first: ties go to A
    is_a = is_a[order]
    p = np.cumsum(is_a)  # A position after each event
    q = np.cumsum(~is_a)  # B position after each event
    tri = np.empty((order.size, 3), np.int64)
    tri[is_a] = np.stack([a_idx[p[is_a] - 1], b_idx[q[is_a]], a_idx[p[is_a]]], axis=1)
    nb = ~is_a
    tri[nb] = np.stack([a_idx[p[nb]], b_idx[q[nb] - 1], b_idx[q[nb]]], axis=1)
    return tri


@functools.lru_cache(maxsize=1)
def _topology() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, faces): normalised plane coordinates in [-1, 1] per vertex (v = +1 at the top
    row, the forehead) and the triangles. Independent of the seed."""
    lengths = _row_lengths()
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    width = lengths.max()
    v_rows = np.linspace(1.0, -1.0, _ROWS)
    u = np.empty(NUM_VERTICES)
    v = np.empty(NUM_VERTICES)
    xs = []
    for i, (s, n) in enumerate(zip(starts, lengths)):
        # Same spacing on every row (rows centred), so strips are made of near-regular triangles.
        x = (np.arange(n) - (n - 1) / 2.0) * (2.0 / (width - 1))
        u[s:s + n] = x
        v[s:s + n] = v_rows[i]
        xs.append(x)
    faces = np.concatenate([
        _zipper(np.arange(starts[i], starts[i] + lengths[i]), xs[i],
                np.arange(starts[i + 1], starts[i + 1] + lengths[i + 1]), xs[i + 1])
        for i in range(_ROWS - 1)
    ]).astype(np.int32)
    assert faces.shape == (NUM_FACES, 3)
    return u, v, faces


def _bump(x, y, x0, y0, sx, sy):
    return np.exp(-0.5 * (((x - x0) / sx) ** 2 + ((y - y0) / sy) ** 2))


def _mean_shape(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Depth z (mm) of a face-like surface over the plane (x, y in mm), head centre at the origin."""
    # Front of a head-sized ellipsoid (semi-axes 82 x 112 x 95 mm), clipped where the oval's
    # corners would leave it.
    r2 = (x / 82.0) ** 2 + (y / 112.0) ** 2
    z = 95.0 * np.sqrt(np.clip(1.0 - r2, 0.03, None))
    # Nose: a ridge from the bridge (y = 35) to the tip (y = 0), widening downwards, with a
    # quick fall below the tip.
    ridge = np.where(y > 0.0, np.clip(1.0 - y / 45.0, 0.0, 1.0) ** 1.5, np.exp(-0.5 * (y / 7.0) ** 2))
    nose_width = 7.0 + 6.0 * np.clip(1.0 - y / 35.0, 0.0, 1.5)
    z += 24.0 * ridge * np.exp(-0.5 * (x / nose_width) ** 2)
    z += 4.0 * (_bump(x, y, 13.0, -6.0, 6.0, 5.0) + _bump(x, y, -13.0, -6.0, 6.0, 5.0))  # nostrils
    z -= 11.0 * (_bump(x, y, 33.0, 28.0, 14.0, 9.0) + _bump(x, y, -33.0, 28.0, 14.0, 9.0))  # eye sockets
    z += 5.0 * _bump(x, y, 0.0, 43.0, 38.0, 6.0)  # brow ridge
    z += 4.0 * (_bump(x, y, 45.0, 5.0, 15.0, 15.0) + _bump(x, y, -45.0, 5.0, 15.0, 15.0))  # cheekbones
    z += 5.0 * _bump(x, y, 0.0, -40.0, 22.0, 6.0) + 4.0 * _bump(x, y, 0.0, -52.0, 20.0, 5.0)  # lips
    z -= 2.0 * _bump(x, y, 0.0, -46.0, 22.0, 1.2)  # mouth line
    z += 7.0 * _bump(x, y, 0.0, -80.0, 20.0, 12.0)  # chin
    return z


def _mean_colour(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Skin-like RGB (0..255) with redder lips, darker brows and eyes: [N, 3]."""
    skin = np.array([205.0, 155.0, 130.0])
    lips = np.array([180.0, 95.0, 95.0])
    brow = np.array([95.0, 65.0, 50.0])
    eye = np.array([120.0, 95.0, 85.0])
    w_lips = np.clip(_bump(x, y, 0.0, -46.0, 20.0, 6.0) * 1.3, 0.0, 1.0)
    w_brow = np.clip((_bump(x, y, 30.0, 45.0, 14.0, 3.5) + _bump(x, y, -30.0, 45.0, 14.0, 3.5)) * 1.2, 0.0, 1.0)
    w_eye = np.clip((_bump(x, y, 32.0, 28.0, 9.0, 4.5) + _bump(x, y, -32.0, 28.0, 9.0, 4.5)) * 1.2, 0.0, 1.0)
    c = np.broadcast_to(skin, (x.size, 3)).copy()
    for w, col in ((w_lips, lips), (w_brow, brow), (w_eye, eye)):
        c += w[:, None] * (col - c)
    return c


@functools.lru_cache(maxsize=1)
def _smooth_fields() -> tuple[np.ndarray, np.ndarray]:
    """(Q, degree): orthonormal columns [N, M] spanning the cosines
    cos(pi i (u+1)/2) cos(pi j (v+1)/2) with i + j <= _MAX_FREQUENCY, and each column's i + j
    (to weight low frequencies first)."""
    u, v, _ = _topology()
    d = _MAX_FREQUENCY
    # Cosines rather than polynomials: they oscillate evenly, while high-degree polynomials
    # orthonormalised over the oval pile their variation up at the border (steep rims).
    i, j = np.divmod(np.arange((d + 1) ** 2), d + 1)
    order = np.argsort(i + j, kind="stable")  # QR keeps column order: lowest frequencies first
    i, j = i[order], j[order]
    keep = (i + j) <= d
    cu = np.cos(np.pi * np.arange(d + 1)[None, :] * (u[:, None] + 1.0) / 2.0)
    cv = np.cos(np.pi * np.arange(d + 1)[None, :] * (v[:, None] + 1.0) / 2.0)
    q, _ = np.linalg.qr(cu[:, i[keep]] * cv[:, j[keep]])
    return q.astype(np.float32), (i + j)[keep].astype(float)


def _folded_modes(rng: np.random.Generator, sigma: np.ndarray, channel_gain: np.ndarray,
                  falloff: float) -> np.ndarray:
    """Smooth K-major basis [K, 3N] float32 whose rows are orthonormal fields times `sigma`."""
    q, degree = _smooth_fields()
    m, count = q.shape[1], sigma.size
    weight = np.concatenate([channel_gain[c] * np.exp(-degree / falloff) for c in range(3)])
    directions, _ = np.linalg.qr(weight[:, None] * rng.standard_normal((3 * m, count)))
    directions = (directions * sigma[None, :]).astype(np.float32)  # fold sigma in the small matrix
    out = np.empty((count, 3 * NUM_VERTICES), np.float32)
    for c in range(3):  # interleave: component c of vertex i sits at 3i + c
        out[:, c::3] = directions[c * m:(c + 1) * m].T @ q.T
    return out


def _nearest_vertices(x: np.ndarray, y: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Index of the vertex nearest to each (px, py), searched among the rows within 3 mm of py
    (rows are 0.76 mm apart; a point beyond the oval's ends takes the nearest row's). Mirror-
    symmetric: a point right of the middle takes the mirror image of its mirror point's vertex
    (rows are symmetric about x = 0), and a point on the middle a vertex at x = 0 exactly."""
    lengths = _row_lengths()
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    row_of = np.repeat(np.arange(lengths.size), lengths)
    out = np.empty(px.size, np.int32)
    for i, (qx, qy) in enumerate(zip(px, py)):
        qy = min(max(qy, y.min()), y.max())
        near = np.flatnonzero((x == 0.0) if qx == 0.0 else (np.abs(y - qy) <= 3.0))
        k = int(near[np.argmin((x[near] - abs(qx)) ** 2 + (y[near] - qy) ** 2)]) if qx >= 0 else \
            int(near[np.argmin((x[near] + qx) ** 2 + (y[near] - qy) ** 2)])
        if qx < 0:  # found at the mirror point (-qx, qy): take the mirror vertex in its row
            r = row_of[k]
            k = int(starts[r] + lengths[r] - 1 - (k - starts[r]))
        out[i] = k
    return out


@functools.lru_cache(maxsize=1)
def synthetic_landmarks() -> tuple[np.ndarray, np.ndarray]:
    """(inner [68], outer [68]) int32 vertex indices of the synthetic face (module docstring)."""
    u, v, _ = _topology()
    x, y = u * _HALF_WIDTH_MM, v * _HALF_HEIGHT_MM
    px = LANDMARK_TEMPLATE[:, 0] * _EYE_X_MM
    py = _EYE_Y_MM - LANDMARK_TEMPLATE[:, 1] * _TEMPLATE_Y_MM
    outer = _nearest_vertices(x, y, px, py)
    side_jaw = np.r_[0:8, 9:17]
    px_inner = px.copy()
    px_inner[side_jaw] *= _INNER_JAW
    inner = _nearest_vertices(x, y, px_inner, py)
    return inner, outer


def _expression(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean [3N], folded basis [29, 3N], sigma [29]) of the synthetic expression model."""
    q, degree = _smooth_fields()
    m = q.shape[1]
    mask = (_bump(x, y, 0.0, -50.0, 32.0, 22.0) + 0.6 * _bump(x, y, 0.0, -80.0, 30.0, 15.0)
            + 0.4 * (_bump(x, y, 32.0, 36.0, 18.0, 12.0) + _bump(x, y, -32.0, 36.0, 18.0, 12.0)))
    gain = np.array([0.6, 1.0, 0.8])  # x, y, z: expressions move the mouth and jaw mostly up and down
    weight = np.concatenate([gain[c] * np.exp(-degree / 2.5) for c in range(3)])
    directions, _ = np.linalg.qr(weight[:, None] * rng.standard_normal((3 * m, NUM_EXPRESSION)))
    modes = np.empty((3 * NUM_VERTICES, NUM_EXPRESSION))
    for c in range(3):
        modes[c::3] = (q @ directions[c * m:(c + 1) * m]) * mask[:, None]
    # Unit-norm, orthogonal [3N] modes, like principal components (Cholesky of the 29 x 29 Gram
    # matrix: the same span as a QR, an order of magnitude faster on [3N, 29]).
    modes = modes @ np.linalg.inv(np.linalg.cholesky(modes.T @ modes)).T
    k = np.arange(NUM_EXPRESSION)
    sigma = 600.0 / (1.0 + k) ** 0.8  # mm for a unit-norm mode: a few mm at the mouth per std
    basis = (modes * sigma[None, :]).T.astype(np.float32)
    return np.zeros(3 * NUM_VERTICES, np.float32), basis, sigma.astype(np.float32)


@functools.lru_cache(maxsize=8)
def synthetic_model(seed: int = 0) -> MorphableModel:
    """The synthetic model for `seed` (memoised; arrays are read-only so sharing is safe)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"synthetic model: seed: expected an integer >= 0, found {seed!r}")
    rng = np.random.default_rng([int(seed), 0x3D33])
    u, v, faces = _topology()
    x, y = u * _HALF_WIDTH_MM, v * _HALF_HEIGHT_MM

    shape_mean = np.stack([x, y, _mean_shape(x, y)], axis=1).ravel()
    k = np.arange(NUM_COMPONENTS)
    shape_sigma = 880.0 / (1.0 + k) ** 0.75
    # Depth varies most between faces; colour modes favour overall brightness/redness.
    shape_basis = _folded_modes(rng, shape_sigma, np.array([1.0, 0.8, 1.4]), falloff=1.5)
    tex_mean = _mean_colour(x, y).ravel()
    tex_sigma = 4000.0 / (1.0 + k) ** 0.8
    tex_basis = _folded_modes(rng, tex_sigma, np.array([1.2, 1.0, 0.9]), falloff=1.5)
    inner, outer = synthetic_landmarks()
    # Its own generator: the shape and texture bases stay what they were before it existed.
    expr_mean, expr_basis, expr_sigma = _expression(np.random.default_rng([int(seed), 0xE4B7]), x, y)

    arrays = dict(
        shape_mean=shape_mean.astype(np.float32),
        shape_basis=shape_basis,
        shape_sigma=shape_sigma.astype(np.float32),
        tex_mean=tex_mean.astype(np.float32),
        tex_basis=tex_basis,
        tex_sigma=tex_sigma.astype(np.float32),
        faces=faces.copy(),
        landmarks=inner.copy(),
        landmarks_outer=outer.copy(),
        expression_mean=expr_mean,
        expression_basis=expr_basis,
        expression_sigma=expr_sigma,
    )
    for a in arrays.values():
        if a is not None:
            a.setflags(write=False)
    return MorphableModel(**arrays, metadata={
        "synthetic": True,
        "name": NAME,
        "source": f"built-in synthetic model (seed {int(seed)}); not the Basel Face Model",
        "seed": int(seed),
        "landmarks": "SYNTHETIC: dlib's 68-point layout placed on the synthetic face (not the release's "
                     "innerLandmarkIndex / outerLandmarkIndex)",
        "expression": f"SYNTHETIC: {NUM_EXPRESSION} smooth modes around the mouth, jaw and eyes (not 3DDFA's "
                      "Model_Expression.mat)",
    })
