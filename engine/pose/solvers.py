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
TINY_STEP = 1e-4  # radians (0.006 degrees): a smaller rotation step changes no reported angle
TINY_WEIGHT = 1e-3  # standard deviations: a smaller expression step is as good as none
CONVERGED = 1e-5  # refine stops early once no face's cost falls by more than this fraction


def _weighted_mean(x, w):
    return (w[..., None] * x).sum(-2) / np.maximum(w.sum(-1), 1e-12)[..., None]


def _lstsq(a, y):
    """Least-squares x [B,k] of a [B,6,k] x = y [B,6] (pinv: rank-deficient systems stay finite)."""
    return np.matmul(np.linalg.pinv(a), y[..., None])[..., 0]


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
    rho = np.stack([((ctrl[:, i] - ctrl[:, j]) ** 2).sum(-1) for i, j in _PAIRS], -1)
    dv = np.stack([v[:, :, i] - v[:, :, j] for i, j in _PAIRS], 1)  # [B, 6, k, 3]
    dot = np.einsum("bpkx,bplx->bpkl", dv, dv)
    cols = [(0, 0, 1), (0, 1, 2), (1, 1, 1), (0, 2, 2), (1, 2, 2), (2, 2, 1), (0, 3, 2), (1, 3, 2), (2, 3, 2),
            (3, 3, 1)]
    lmat = np.stack([dot[:, :, i, j] * f for i, j, f in cols], -1)
    candidates = []
    # N = 4 linearised (B11 B12 B13 B14), N = 2 (B11 B12 B22), N = 3 (B11 B12 B22 B13 B23).
    b4 = _lstsq(lmat[:, :, [0, 1, 3, 6]], rho)
    s4 = np.sign(b4[:, 0])
    beta0 = np.sqrt(np.abs(b4[:, 0]))
    safe = np.where(beta0 > 1e-12, beta0, 1.0)
    candidates.append(np.stack([beta0, s4 * b4[:, 1] / safe, s4 * b4[:, 2] / safe, s4 * b4[:, 3] / safe], -1))
    b3 = _lstsq(lmat[:, :, :3], rho)
    beta0 = np.sqrt(np.abs(b3[:, 0]))
    beta1 = np.where(np.sign(b3[:, 2]) == np.sign(b3[:, 0]), np.sqrt(np.abs(b3[:, 2])), 0.0)
    beta0 = np.where(b3[:, 1] < 0, -beta0, beta0)
    candidates.append(np.stack([beta0, beta1, np.zeros(b), np.zeros(b)], -1))
    b5 = _lstsq(lmat[:, :, :5], rho)
    beta0 = np.sqrt(np.abs(b5[:, 0]))
    beta1 = np.where(np.sign(b5[:, 2]) == np.sign(b5[:, 0]), np.sqrt(np.abs(b5[:, 2])), 0.0)
    beta0 = np.where(b5[:, 1] < 0, -beta0, beta0)
    safe = np.where(np.abs(beta0) > 1e-12, beta0, 1.0)
    candidates.append(np.stack([beta0, beta1, b5[:, 3] / safe, np.zeros(b)], -1))

    # The three candidates of every face in one batch of 3B: [candidate, face] order.
    betas = np.concatenate(candidates)  # [3B, 4]
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
    otherwise runs as long as its slowest face), with the points `select` gave them last.
    Returns (r, t, scale, e, rms [B] reprojection error in px over the weighted points, cost [B]:
    the minimised objective, w [B,n]: the point weights of the result)."""
    b, n = uv.shape[:2]
    rows = np.arange(b) if rows is None else rows
    weak = cam is None
    f = None if weak else cam[:, None, 0]
    ke = 0 if expr is None else expr[0].shape[0]
    if ke:  # the shared basis, laid out once: [Ke, 3n] for e @ E, [n, 3, Ke] for the Jacobian
        base, delta = (np.asarray(x, np.float64) for x in expr)
        base_flat, delta_flat = base.reshape(ke, n * 3), delta.reshape(ke, n * 3)
        base_t = np.ascontiguousarray(base.transpose(1, 2, 0))
        jaw = np.flatnonzero(np.abs(delta).sum((0, 2)) > 0)  # the points whose basis moves with lam
        delta_t = np.ascontiguousarray(delta[:, jaw].transpose(1, 2, 0))

    def prepare(p, lam_, wt):
        """What the cost needs of one set of points: (points, lam, residual weights [B,n,1], w)."""
        return p, (np.zeros((b, n)) if lam_ is None else lam_), (wt / sigma[:, None])[..., None], wt

    fixed = None if select is not None else prepare(points, lam, w)
    cache = [None, None]  # the last tuple `select` gave, and its prepared state

    def state_of(r_):
        if fixed is not None:
            return fixed
        sel = select(r_, rows)
        if sel is not cache[0]:
            cache[0], cache[1] = sel, prepare(*sel)
        return cache[1]

    if e is None:
        e = np.zeros((b, ke))
    logs = np.log(scale) if weak else None

    def residual(r_, t_, logs_, e_):
        st = state_of(r_)
        pts, lam_, wr, _ = st
        if ke:
            pts = pts + (e_ @ base_flat).reshape(b, n, 3) + lam_[..., None] * (e_ @ delta_flat).reshape(b, n, 3)
        q = _rotate(r_, pts)
        if weak:
            proj = np.exp(logs_)[:, None, None] * q[..., :2] + t_[:, None]
        else:
            xc = q + t_[:, None]
            z = np.where(xc[..., 2] > 1e-9, xc[..., 2], 1e-9)
            proj = f[..., None] * xc[..., :2] / z[..., None] + cam[:, None, 1:]
        res = (proj - uv) * wr
        cost = (res ** 2).sum((-1, -2))
        if ke:
            cost = cost + prior * (e_ ** 2).sum(-1)
        return q, res, cost, st

    npar = 6 + ke  # rotation 3, translation 3 (weak perspective: log scale 1 + 2D translation 2)
    jbuf = np.empty((b, n, 2, npar))

    def jacobian(q, r_, t_, logs_, st):
        """The weighted Jacobian [B, 2n, P], written into one buffer (parameter order: rotation,
        translation or log scale + 2D translation, expression)."""
        lam_, wr = st[1], st[2]
        # jx: d proj / d (camera-frame point) [B,n,2,3], the residual weights already in.
        jx = np.zeros((b, n, 2, 3))
        if weak:
            s = np.exp(logs_)[:, None] * wr[..., 0]
            jx[..., 0, 0] = s
            jx[..., 1, 1] = s
            jbuf[..., 3] = s[..., None] * q[..., :2]  # d proj / d log s
            jbuf[..., 4:6] = 0.0
            jbuf[..., 0, 4] = wr[..., 0]
            jbuf[..., 1, 5] = wr[..., 0]
        else:
            xc = q + t_[:, None]
            inv_z = 1.0 / xc[..., 2]
            fz = f * inv_z * wr[..., 0]
            jx[..., 0, 0] = jx[..., 1, 1] = fz
            jx[..., 0, 2] = -fz * xc[..., 0] * inv_z
            jx[..., 1, 2] = -fz * xc[..., 1] * inv_z
            jbuf[..., 3:6] = jx  # d xc / d t = I
        # Left-multiplied rotation update: d q / d omega = -[q]x, so jx @ -[q]x, written out.
        qx, qy, qz = q[..., 0, None], q[..., 1, None], q[..., 2, None]
        jbuf[..., 0] = jx[..., 2] * qy - jx[..., 1] * qz
        jbuf[..., 1] = jx[..., 0] * qz - jx[..., 2] * qx
        jbuf[..., 2] = jx[..., 1] * qx - jx[..., 0] * qy
        if ke:  # d proj / d e = jx @ R @ (base + lam * delta) (matmuls: the fastest numpy form here)
            a = np.matmul(jx, r_[:, None])
            jbuf[..., 6:] = np.matmul(a, base_t)
            if jaw.size:
                jbuf[:, jaw, :, 6:] += lam_[:, jaw, None, None] * np.matmul(a[:, jaw], delta_t)
        return jbuf.reshape(b, 2 * n, npar)

    mu = np.full(b, 1e-3)
    q, res, cost, st = residual(r, t, logs, e)
    eye = np.eye(npar)
    reg = np.zeros(npar)
    reg[6:] = prior
    unconverged = np.ones(b, bool)  # faces whose last step still lowered their cost by more than CONVERGED
    done_iterations = 0
    for _ in range(min(iterations, FIRST_PASS)):
        done_iterations += 1
        j = jacobian(q, r, t, logs, st)
        jt = j.transpose(0, 2, 1)
        jtj = np.matmul(jt, j)
        g = np.matmul(jt, res.reshape(b, -1, 1))[..., 0]
        if ke:
            jtj += np.diag(reg)
            g[:, 6:] += prior * e
        diag = np.maximum(np.diagonal(jtj, axis1=1, axis2=2), 1e-9)
        step = -np.linalg.solve(jtj + mu[:, None, None] * (eye * diag[:, None, :]), g[..., None])[..., 0]
        r_n = np.matmul(rotation_from_vector(step[:, :3]), r)
        if weak:
            logs_n = logs + step[:, 3]
            t_n = t + step[:, 4:6]
        else:
            logs_n = None
            t_n = t + step[:, 3:6]
        e_n = e + step[:, 6:] if ke else e
        q_n, res_n, cost_n, st_n = residual(r_n, t_n, logs_n, e_n)
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
            q, res, cost, st = residual(r, t, logs, e)
    left = iterations - done_iterations
    if left > 0 and unconverged.any():  # the faces still converging go on alone
        a = np.flatnonzero(unconverged)
        # With their points as selected now (read again at every step, they would keep shifting
        # under a Jacobian that ignores it, and a face near a threshold would crawl).
        out = refine(st[0][a], uv[a], st[3][a], sigma[a], cam=None if weak else cam[a], r=r[a], t=t[a],
                     scale=np.exp(logs[a]) if weak else None, expr=expr, lam=st[1][a], e=e[a], prior=prior,
                     iterations=left, rows=rows[a])
        r, t, e = r.copy(), t.copy(), e.copy()
        r[a], t[a], e[a] = out[0], out[1], out[3]
        if weak:
            logs = logs.copy()
            logs[a] = np.log(out[2])
        q, res, cost, st = residual(r, t, logs, e)
    w_out = st[3]
    px = res * (sigma[:, None, None])  # back to pixels (the weights stay in)
    rms = np.sqrt((px ** 2).sum((-1, -2)) / np.maximum((w_out ** 2).sum(-1), 1e-12))
    return r, t, (np.exp(logs) if weak else None), e, rms, cost, w_out
