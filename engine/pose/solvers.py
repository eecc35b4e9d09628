"""Batched pose solvers (numpy, every face of a batch at once): EPnP for the perspective camera,
an affine fit for the weak-perspective one, and one Levenberg-Marquardt refinement for both,
which can also fit expression weights jointly with the pose.

Internally everything is in OpenCV's camera frame (x right, y down, z forward; engine.pose.angles
says how it relates to the reported frame). Shapes: B faces, n points, Ke expression components.
Points take weights w [B, n] of 0 or 1, so that faces with different point subsets (the jaw
points the release drops at large yaw) share one batch. No loop over faces anywhere.

EPnP is Lepetit, Moreno-Noguer and Fua's (IJCV 2009), as in the release's epnp.cpp: four
control points (the points' centroid and principal axes), the 12 x 12 system M'M, its null space,
and the betas from the three linearisations (N = 1, 2, 3 kernel vectors); of the three solutions
the one of least reprojection error is kept, then refined by `refine`.
"""
from __future__ import annotations

import numpy as np

from engine.pose.angles import rotation_from_vector

_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
_PAIR_I, _PAIR_J = (np.array(x) for x in zip(*_PAIRS))
# compute_L_6x10's columns: the kernel vectors' dot products (k, l) and their factor (2 off the diagonal)
_L_ROW = np.array([0, 0, 1, 0, 1, 2, 0, 1, 2, 3])
_L_COL = np.array([0, 1, 1, 2, 2, 2, 3, 3, 3, 3])
_L_FACTOR = np.array([1.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 2.0, 1.0])
TINY_STEP = 1e-4  # radians (0.006 degrees): a smaller rotation step changes no reported angle
TINY_WEIGHT = 1e-3  # standard deviations: a smaller expression step is as good as none
CONVERGED = 1e-5  # refine stops early once no face's cost falls by more than this fraction


def _weighted_mean(x, w):
    return (w[..., None] * x).sum(-2) / np.maximum(w.sum(-1), 1e-12)[..., None]


def kabsch(src, dst, w):
    """(R [B,3,3], t [B,3]) minimising sum w ||R src + t - dst||^2 (proper rotations)."""
    cs, cd = _weighted_mean(src, w), _weighted_mean(dst, w)
    h = np.matmul(((src - cs[:, None]) * w[..., None]).transpose(0, 2, 1), dst - cd[:, None])
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.transpose(0, 2, 1) @ u.transpose(0, 2, 1)))
    d = np.where(d == 0, 1.0, d)
    fix = np.ones((src.shape[0], 3))
    fix[:, 2] = d
    r = vt.transpose(0, 2, 1) @ (fix[:, :, None] * u.transpose(0, 2, 1))
    return r, cd - np.matmul(r, cs[..., None])[..., 0]


def _reprojection_rms(points, uv, w, cam, r, t):
    xc = _rotate(r, points) + t[:, None]
    z = xc[..., 2]
    bad = (z <= 1e-9).any(-1) & (w > 0).any(-1)  # a point behind the camera: not a solution
    z = np.where(z > 1e-9, z, 1e-9)
    proj = cam[:, None, :1] * xc[..., :2] / z[..., None] + cam[:, None, 1:]
    err = (w * ((proj - uv) ** 2).sum(-1)).sum(-1) / np.maximum(w.sum(-1), 1.0)
    return np.where(bad, np.inf, np.sqrt(err))


def epnp(points, uv, w, cam):
    """Perspective pose (R [B,3,3], t [B,3], OpenCV frame) of `points` [B,n,3] seen at `uv` [B,n,2]
    pixels by cameras `cam` [B,3] (focal_px, cx, cy), over the points of weight 1."""
    b = points.shape[0]
    xn = (uv - cam[:, None, 1:]) / cam[:, None, :1]  # normalised image coordinates
    # Control points: the centroid and the principal axes scaled by their spread.
    c0 = _weighted_mean(points, w)
    d = points - c0[:, None]
    cov = np.matmul((d * w[..., None]).transpose(0, 2, 1), d) / np.maximum(w.sum(-1), 1.0)[:, None, None]
    ev, evec = np.linalg.eigh(cov)
    ctrl = np.concatenate([c0[:, None], c0[:, None] + (np.sqrt(np.maximum(ev, 1e-12))[:, :, None]
                                                        * evec.transpose(0, 2, 1))], axis=1)  # [B,4,3]
    # Barycentric coordinates alpha [B,n,4]: [p; 1] = [ctrl; 1]' alpha.
    cmat = np.concatenate([ctrl.transpose(0, 2, 1), np.ones((b, 1, 4))], axis=1)  # [B,4,4]
    ph = np.concatenate([points, np.ones(points.shape[:2] + (1,))], axis=-1)
    alpha = np.matmul(ph, np.linalg.inv(cmat).transpose(0, 2, 1))  # one inverse per face, not per point
    # M [B, 2n, 12]: each point gives two rows, weighted.
    n = points.shape[1]
    m = np.zeros((b, n, 2, 4, 3))
    m[:, :, 0, :, 0] = alpha
    m[:, :, 0, :, 2] = -alpha * xn[..., 0:1]
    m[:, :, 1, :, 1] = alpha
    m[:, :, 1, :, 2] = -alpha * xn[..., 1:2]
    m = (m * w[:, :, None, None, None]).reshape(b, 2 * n, 12)
    _, kernel = np.linalg.eigh(m.transpose(0, 2, 1) @ m)  # ascending: the null space comes first
    v = kernel[:, :, :4].transpose(0, 2, 1).reshape(b, 4, 4, 3)  # [B, k, control point, xyz]
    # rho: squared distances between the world control points; L [B,6,10] (betas10 order
    # B11 B12 B22 B13 B23 B33 B14 B24 B34 B44), as epnp.cpp's compute_L_6x10.
    dc = ctrl[:, _PAIR_I] - ctrl[:, _PAIR_J]
    rho = np.einsum("bpx,bpx->bp", dc, dc)
    dv = v[:, :, _PAIR_I] - v[:, :, _PAIR_J]  # [B, k, 6, 3]
    dot = np.einsum("bkpx,blpx->bpkl", dv, dv)
    lmat = dot[:, :, _L_ROW, _L_COL] * _L_FACTOR
    # N = 4 linearised (B11 B12 B13 B14), N = 2 (B11 B12 B22), N = 3 (B11 B12 B22 B13 B23): the
    # three least-squares problems as one pinv of [3B, 6, 5], each padded with zero columns
    # (whose coefficients come out 0; the others are those of the unpadded problem).
    sub = np.zeros((3, b, 6, 5))
    sub[0, ..., :4] = lmat[..., [0, 1, 3, 6]]
    sub[1, ..., :3] = lmat[..., :3]
    sub[2] = lmat[..., :5]
    sol = np.matmul(np.linalg.pinv(sub), rho[None, ..., None])[..., 0]  # [3, B, 5]
    b4, _, b5 = sol
    s4 = np.sign(b4[:, 0])
    beta0 = np.sqrt(np.abs(sol[:, :, 0]))  # [3, B]
    safe = np.where(beta0[0] > 1e-12, beta0[0], 1.0)
    betas = np.zeros((3, b, 4))
    betas[0, :, 0] = beta0[0]
    betas[0, :, 1:] = (s4 / safe)[:, None] * b4[:, 1:4]
    beta1 = np.where(np.sign(sol[1:, :, 2]) == np.sign(sol[1:, :, 0]), np.sqrt(np.abs(sol[1:, :, 2])), 0.0)
    b0 = np.where(sol[1:, :, 1] < 0, -beta0[1:], beta0[1:])
    betas[1:, :, 0] = b0
    betas[1:, :, 1] = beta1
    safe = np.where(np.abs(b0[1]) > 1e-12, b0[1], 1.0)
    betas[2, :, 2] = b5[:, 3] / safe

    # The three candidates of every face in one batch of 3B: [candidate, face] order.
    betas = betas.reshape(3 * b, 4)
    v3 = np.concatenate([v] * 3).reshape(3 * b, 4, 12)
    ccs = np.matmul(betas[:, None, :], v3)[:, 0].reshape(3 * b, 4, 3)  # camera control points
    alpha3 = np.concatenate([alpha] * 3)
    w3 = np.concatenate([w] * 3)
    pcs = np.matmul(alpha3, ccs)
    flip = np.where(_weighted_mean(pcs, w3)[:, 2] < 0, -1.0, 1.0)  # in front of the camera: z > 0
    points3 = np.concatenate([points] * 3)
    r, t = kabsch(points3, pcs * flip[:, None, None], w3)
    err = _reprojection_rms(points3, np.concatenate([uv] * 3), w3, np.concatenate([cam] * 3), r, t)
    best = np.argmin(err.reshape(3, b), axis=0) * b + np.arange(b)
    return r[best], t[best]


def affine_pose(points, uv, w):
    """Weak-perspective pose (R [B,3,3] OpenCV frame, scale s [B], t2 [B,2]) from the least-squares
    affine camera uv = A [p; 1], its 2 x 3 part made the nearest scaled pair of orthonormal rows."""
    ph = np.concatenate([points, np.ones(points.shape[:2] + (1,))], axis=-1)
    phw = (ph * w[..., None]).transpose(0, 2, 1)
    xtx = np.matmul(phw, ph)
    xty = np.matmul(phw, uv)
    a = np.linalg.solve(xtx + 1e-9 * np.eye(4), xty).transpose(0, 2, 1)  # [B, 2, 4]
    u, sv, vt = np.linalg.svd(a[:, :, :3], full_matrices=False)
    rows = u @ vt  # [B, 2, 3], orthonormal rows
    r = np.concatenate([rows, np.cross(rows[:, 0], rows[:, 1])[:, None]], axis=1)
    return r, sv.mean(-1), a[:, :, 3]


def _rotate(r, p):
    """r [B,3,3] applied to points [B,n,3] (a batched matmul: much faster than einsum here)."""
    return np.matmul(p, r.transpose(0, 2, 1))


FIRST_PASS = 3  # refine's iterations over the whole batch; the faces not yet converged go on alone
MU_START = 1e-3  # Levenberg-Marquardt's damping at the start (relative to the normal matrix's diagonal)


class _Basis:
    """The shared expression basis (base, delta) [Ke, n, 3], laid out once per `refine` call as
    [n, 3, Ke] (a point's 3 x Ke block, what the Jacobian multiplies)."""

    def __init__(self, expr):
        base, delta = (np.asarray(x, np.float64) for x in expr)
        self.ke = base.shape[0]
        self.base_t = np.ascontiguousarray(base.transpose(1, 2, 0))
        self.delta_t = np.ascontiguousarray(delta.transpose(1, 2, 0))

    def of_faces(self, lam):
        """[b, n, 3, Ke] each face's basis E_i = base_i + lam_i delta_i for jaw weights lam [b, n]."""
        return self.base_t + lam[..., None, None] * self.delta_t


class _Faces:
    """What refine's cost needs of the faces it is fitting now (all of them, or after FIRST_PASS
    the subset still converging): observations, cameras, and the Jacobian's buffers."""

    def __init__(self, uv, sigma, cam, npar):
        self.uv, self.sigma, self.cam = uv, sigma, cam
        self.b, self.n = uv.shape[:2]
        self.inv_sigma = (1.0 / sigma)[:, None]
        if cam is not None:
            self.f = cam[:, None, :1]  # [b, 1, 1]
            self.c = cam[:, None, 1:]  # [b, 1, 2]
        self.jbuf = np.empty((self.b, self.n, 2, npar))
        # jx [b,n,2,3]: d residual / d camera-frame point (the weights in); g [b,n,3,P]: d point /
        # d parameters. The Jacobian is jx @ g, one product per point; their constant entries
        # (zeros, the translation's identity) are written here once.
        self.jx = np.zeros((self.b, self.n, 2, 3))
        self.g = np.zeros((self.b, self.n, 3, npar))
        if cam is not None:
            self.g[..., 3:6] = np.eye(3)

    def subset(self, a, npar):
        return _Faces(self.uv[a], self.sigma[a], None if self.cam is None else self.cam[a], npar)


def _prepare(p, lam, wt, fc, basis):
    """The state the cost needs of one set of points: (points, lam, residual weights [b,n,1], w,
    the faces' expression bases [b,n,3,Ke] or None)."""
    lam = np.zeros((fc.b, fc.n)) if lam is None else lam
    return p, lam, (wt * fc.inv_sigma)[..., None], wt, None if basis is None else basis.of_faces(lam)


def _residual(st, r, t, logs, e, fc, prior):
    """(q [b,n,3] rotated points, weighted residuals [b,n,2], cost [b]) of one parameter set."""
    pts, wr, eb = st[0], st[2], st[4]
    if eb is not None:
        pts = pts + np.matmul(eb, e[:, None, :, None])[..., 0]
    q = _rotate(r, pts)
    if fc.cam is None:
        proj = np.exp(logs)[:, None, None] * q[..., :2] + t[:, None]
    else:
        xc = q + t[:, None]
        z = xc[..., 2:]
        z = np.where(z > 1e-9, z, 1e-9)
        proj = fc.f * xc[..., :2] / z + fc.c
    res = (proj - fc.uv) * wr
    cost = np.einsum("bij,bij->b", res, res)
    if eb is not None:
        cost = cost + prior * np.einsum("bk,bk->b", e, e)
    return q, res, cost


_QX_ROWS = np.array([0, 0, 1, 1, 2, 2])  # -[q]x's off-diagonal entries: row, column, q index, sign
_QX_COLS = np.array([1, 2, 0, 2, 0, 1])
_QX_FROM = np.array([2, 1, 2, 0, 1, 0])
_QX_SIGN = np.array([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])


def _jacobian(q, r, t, logs, st, fc):
    """The weighted Jacobian [b, 2n, P] of the residuals (parameter order: rotation (a
    left-multiplied update omega), translation or log scale + 2D translation, expression), as
    fc.jx @ fc.g per point, into fc.jbuf."""
    wr, eb = st[2][..., 0], st[4]
    jx, g = fc.jx, fc.g
    if fc.cam is None:
        s = np.exp(logs)[:, None]
        jx[..., 0, 0] = jx[..., 1, 1] = s * wr
        g[..., 3] = q  # d proj / d log s = s q_xy
        g[..., 0, 4] = g[..., 1, 5] = 1.0 / s  # d proj / d t2 = I (jx carries s)
    else:
        xc = q + t[:, None]
        inv_z = 1.0 / xc[..., 2]
        fz = fc.f[..., 0] * inv_z * wr
        jx[..., 0, 0] = jx[..., 1, 1] = fz
        jx[..., 2] = -(fz * inv_z)[..., None] * xc[..., :2]
    g[..., _QX_ROWS, _QX_COLS] = q[..., _QX_FROM] * _QX_SIGN  # d q / d omega = -[q]x
    if eb is not None:
        np.matmul(r[:, None], eb, out=g[..., 6:])  # d q / d e = R E_i
    np.matmul(jx, g, out=fc.jbuf)
    return fc.jbuf.reshape(fc.b, 2 * fc.n, -1)


def refine(points, uv, w, sigma, *, cam=None, r, t, scale=None, expr=None, lam=None, e=None, prior: float = 1.0,
           iterations: int = 10, select=None, rows=None):
    """Levenberg-Marquardt on the reprojection error, every face of the batch at once: at most
    `iterations` steps, fewer once every face has converged (CONVERGED).

    Perspective (`cam` [B,3] given; t [B,3]) or weak perspective (cam None; `scale` [B], t [B,2]).
    Minimises sum_i w_i^2 ||proj(R (p_i + E_i e) + t) - uv_i||^2 / sigma^2 + prior ||e||^2 over the
    rotation, the translation (and the scale), and with an expression basis the weights e [B,Ke]
    too (standard deviations; `prior` weighs their unit Gaussian prior). sigma [B]: each face's
    landmark noise (px). The basis at point i of a face: E_i = base_i + lam_i * delta_i, with
    `expr` = (base, delta) [Ke,n,3] each, shared by the batch, and lam [B,n] per face (the
    release's jaw points move between two vertices; default 0).
    select: None, or a function of (rotations [b,3,3], rows) giving (points, lam, w) of the faces
    `rows` (indices into the caller's batch) anew: the points a pose uses may depend on the pose
    itself (the release's jaw rule), and then every evaluation of the cost reads them for the
    rotation it evaluates (the Jacobian treats them as fixed); `points`, `lam` and `w` are then
    ignored. It may return the very tuple it returned before when nothing changed.
    After FIRST_PASS iterations the faces that have not converged continue on their own (a batch
    otherwise runs as long as its slowest face), with the points `select` gave them last and the
    damping started afresh; the result's points are then read once more for the final poses.
    One loop for any batch size, each step a fixed number of numpy calls over the whole batch
    (a single face costs the calls' overhead, so the calls are few and fused).
    Returns (r, t, scale, e, rms [B] reprojection error in px over the weighted points, cost [B]:
    the minimised objective, w [B,n]: the point weights of the result)."""
    b = uv.shape[0]
    all_rows = np.arange(b) if rows is None else rows
    weak = cam is None
    basis = None if expr is None else _Basis(expr)
    ke = 0 if basis is None else basis.ke
    npar = 6 + ke  # rotation 3, translation 3 (weak perspective: log scale 1 + 2D translation 2)
    fc = full = _Faces(uv, sigma, cam, npar)
    fixed = None if select is not None else _prepare(points, lam, w, fc, basis)
    cache = [None, None]  # the last tuple `select` gave, and its prepared state

    def state_of(r_):
        if fixed is not None:
            return fixed
        sel = select(r_, all_rows)
        if sel is not cache[0]:
            cache[0], cache[1] = sel, _prepare(*sel, full, basis)
        return cache[1]

    e = np.zeros((b, ke)) if e is None else e
    logs = np.log(scale) if weak else None
    st = state_of(r)
    q, res, cost = _residual(st, r, t, logs, e, fc, prior)
    mu = np.full(b, MU_START)
    reg = np.zeros(npar)
    reg[6:] = prior
    reg = np.diag(reg)
    a = None  # after FIRST_PASS: the indices of the faces going on alone (None: all of them)
    whole = (r, t, logs, e)  # the whole batch's parameters while a subset goes on
    alone = False  # whether some faces went on alone after FIRST_PASS
    unconverged = np.ones(b, bool)  # faces whose last step still lowered their cost by more than CONVERGED
    for it in range(iterations):
        if it == FIRST_PASS:
            if not unconverged.any():
                break
            # The faces still converging go on alone, with their points as selected now (read
            # again at every step, they would keep shifting under a Jacobian that ignores them,
            # and a face near a threshold would crawl).
            alone = True
            if not unconverged.all():
                a = np.flatnonzero(unconverged)
                whole = (r, t, logs, e)
                fc = fc.subset(a, npar)
                st = tuple(None if x is None else x[a] for x in st)
                r, t, e, q, res, cost = r[a], t[a], e[a], q[a], res[a], cost[a]
                logs = logs[a] if weak else None
            fixed = st
            mu = np.full(fc.b, MU_START)
        j = _jacobian(q, r, t, logs, st, fc)
        jt = j.transpose(0, 2, 1)
        jtj = np.matmul(jt, j)
        g = np.matmul(jt, res.reshape(fc.b, -1, 1))
        if ke:
            jtj += reg
            g[:, 6:, 0] += prior * e
        diag = jtj.reshape(fc.b, -1)[:, ::npar + 1]  # a writable view of the diagonals
        diag += mu[:, None] * np.maximum(diag, 1e-9)  # Marquardt's damping, scaled per parameter
        step = -np.linalg.solve(jtj, g)[..., 0]
        r_n = np.matmul(rotation_from_vector(step[:, :3]), r)
        if weak:
            logs_n = logs + step[:, 3]
            t_n = t + step[:, 4:6]
        else:
            logs_n = None
            t_n = t + step[:, 3:6]
        e_n = e + step[:, 6:] if ke else e
        st_n = state_of(r_n)
        q_n, res_n, cost_n = _residual(st_n, r_n, t_n, logs_n, e_n, fc, prior)
        ok = np.isfinite(cost_n) & (cost_n < cost)
        mu = np.where(ok, mu / 3.0, mu * 4.0)
        # Converged: the step (taken or not) no longer moves the rotation by TINY_STEP nor an
        # expression weight by TINY_WEIGHT, or it lowered the cost by less than CONVERGED.
        tiny = np.abs(step[:, :3]).max(-1) < TINY_STEP
        if ke:
            tiny &= np.abs(step[:, 6:]).max(-1) < TINY_WEIGHT
        unconverged = ~tiny & (~ok | ((cost - cost_n) > CONVERGED * cost))
        if ok.all():  # the usual case: every face took its step (no masked copies needed)
            r, t, logs, e, q, res, cost, st = r_n, t_n, logs_n, e_n, q_n, res_n, cost_n, st_n
            if not unconverged.any():
                break
            continue
        if not ok.any():
            continue
        r = np.where(ok[:, None, None], r_n, r)
        t = np.where(ok[:, None], t_n, t)
        if weak:
            logs = np.where(ok, logs_n, logs)
        if ke:
            e = np.where(ok[:, None], e_n, e)
        if fixed is not None:
            q = np.where(ok[:, None, None], q_n, q)
            res = np.where(ok[:, None, None], res_n, res)
            cost = np.where(ok, cost_n, cost)
        else:  # the points depend on the pose: evaluate the merged state again
            st = state_of(r)
            q, res, cost = _residual(st, r, t, logs, e, fc, prior)
    if a is not None:  # back into the whole batch
        r0, t0, logs0, e0 = whole
        r0, t0, e0 = r0.copy(), t0.copy(), e0.copy()
        r0[a], t0[a], e0[a] = r, t, e
        if weak:
            logs0 = logs0.copy()
            logs0[a] = logs
        r, t, logs, e = r0, t0, logs0, e0
    if alone and select is not None:
        # The faces that went on alone: their points read again for the poses they reached.
        fixed = None
        st = state_of(r)
        q, res, cost = _residual(st, r, t, logs, e, full, prior)
    w_out = st[3]
    px = res * sigma[:, None, None]  # back to pixels (the weights stay in)
    rms = np.sqrt(np.einsum("bij,bij->b", px, px) / np.maximum(np.einsum("bn,bn->b", w_out, w_out), 1e-12))
    return r, t, (np.exp(logs) if weak else None), e, rms, cost, w_out
