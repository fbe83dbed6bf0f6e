"""Skinning decomposition with rigid bones (Le and Deng, "Smooth Skinning Decomposition with Rigid Bones", 2012).

Given point trajectories ``Y`` (T, P, 3) whose frame 0 is the rest pose, find K rigid bone transforms per frame
``M`` (T, K, 3, 4) and sparse linear-blend weights (at most ``influences`` bones per point, non-negative, summing
to one) so that ``Y[t, v] ~ sum_j w[v, j] M[t, j] [Y[0, v], 1]``. Frame 0's transforms are the identity, so the
rest pose is reproduced exactly.

The fit alternates, as in the paper, a weight solve per point (a small quadratic programme on the simplex over
the point's candidate bones, solved for all points at once by accelerated projected gradient) and a weighted
Procrustes (Kabsch) per bone with the other bones held. It starts from k-means over the trajectories refined by
rigid reassignment (each point to the bone whose rigid motion explains its trajectory best).

Everything works on the "Q trick": with homogeneous rest points p~ = [p, 1] and Q[j, k] = sum_t M_j(t)^T M_k(t)
(4 x 4), the Gram matrix of a point's bone predictions is p~^T Q[j, k] p~, so no (P, K, T, 3) tensor is formed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["RigError", "SkinFit", "fit_skinning", "project_simplex", "reconstruct"]

_CHUNK = 8192  # points per block of the weight solve (bounds the (chunk, K, K) Gram matrices)


class RigError(ValueError):
    """The motion cannot be rigged as asked (no motion, one frame, more bones than points, non-finite input)."""


@dataclass
class SkinFit:
    """``transforms`` (T, K, 3, 4) rigid, frame 0 the identity; ``joints`` (P, I) bone indices and ``weights``
    (P, I) their weights (zero-padded, each row non-negative and summing to one); ``history``: the rms error
    after each iteration (world units)."""

    transforms: np.ndarray
    joints: np.ndarray
    weights: np.ndarray
    history: list[float] = field(default_factory=list)

    @property
    def num_bones(self) -> int:
        return int(self.transforms.shape[1])


def check_points(points: Any, bones: int) -> np.ndarray:
    """The trajectories as float64 (T, P, 3), or RigError saying why they cannot be rigged with ``bones``."""
    y = np.asarray(points, dtype=np.float64)
    if y.ndim != 3 or y.shape[2] != 3:
        raise RigError(f"the rig needs point trajectories of shape (frames, points, 3), got {y.shape}")
    if y.shape[0] < 2:
        raise RigError(f"the rig needs motion: this result has {y.shape[0]} frame, at least 2 are needed")
    if not np.isfinite(y).all():
        raise RigError("the motion holds non-finite positions; it cannot be rigged")
    if int(bones) < 1:
        raise RigError(f"the rig needs at least 1 bone, got {bones}")
    if int(bones) > y.shape[1]:
        raise RigError(f"{bones} bones asked for but the motion has only {y.shape[1]} points; choose fewer bones")
    return y


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Each row of ``v`` (..., C) projected onto the probability simplex (Duchi et al. 2008), vectorised."""
    c = v.shape[-1]
    u = -np.sort(-v, axis=-1)
    css = np.cumsum(u, axis=-1) - 1.0
    ind = np.arange(1, c + 1, dtype=v.dtype)  # (float32 in, float32 out)
    cond = u - css / ind > 0
    rho = c - 1 - np.argmax(cond[..., ::-1], axis=-1)
    theta = np.take_along_axis(css, rho[..., None], axis=-1) / (rho[..., None] + 1.0)
    return np.maximum(v - theta, 0.0)


def _homogeneous(p: np.ndarray) -> np.ndarray:
    return np.concatenate([p, np.ones((p.shape[0], 1), p.dtype)], axis=1)


def _kabsch(a: np.ndarray) -> np.ndarray:
    """Rotations (T, 3, 3) maximising sum_v <R a_v, b_tv> for covariances H (T, 3, 3) = sum_v a_v b_tv^T."""
    u, _, vt = np.linalg.svd(a)
    d = np.sign(np.linalg.det(np.swapaxes(vt, 1, 2) @ np.swapaxes(u, 1, 2)))
    d[d == 0] = 1.0
    fix = np.ones((a.shape[0], 3))
    fix[:, 2] = d
    return np.swapaxes(vt, 1, 2) @ (fix[:, :, None] * np.swapaxes(u, 1, 2))


def _procrustes(rest: np.ndarray, target: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Rigid (T, 3, 4) minimising sum_v || target[v, t] - w_v (R rest_v + t) ||^2 (SSDR's weighted Procrustes);
    ``target`` is point-major (V, T, 3)."""
    w2 = w * w
    total = max(float(w2.sum()), 1e-12)
    p_bar = (w2[:, None] * rest).sum(0) / total
    q_bar = np.tensordot(w, target, axes=([0], [0])) / total
    a = w[:, None] * (rest - p_bar)
    b = target - w[:, None, None] * q_bar[None]
    h = np.tensordot(a, b, axes=([0], [0])).transpose(1, 0, 2)
    r = _kabsch(h)
    out = np.empty((target.shape[1], 3, 4))
    out[:, :, :3] = r
    out[:, :, 3] = q_bar - r @ p_bar
    return out


def _rigid_fits(rest: np.ndarray, y: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    m = np.zeros((y.shape[1], k, 3, 4))
    m[:, :, :, :3] = np.eye(3)
    for j in range(k):
        idx = np.flatnonzero(labels == j)
        if idx.size:
            m[:, j] = _procrustes(rest[idx], y[idx], np.ones(idx.size))
    m[0] = np.eye(3, 4)
    return m


def _single_bone_errors(ph: np.ndarray, y: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(P, K): sum_t || M_k(t) p~ - y_t ||^2, through b = p~ . sum_t M_k^T y and the diagonal of Q."""
    q_diag = np.einsum("tkci,tkcj->kij", m, m)
    b = _cross_terms(ph, y, m)
    g = np.einsum("vi,kij,vj->vk", ph, q_diag, ph)
    yy = (y * y).sum((1, 2))
    return np.maximum(yy[:, None] - 2.0 * b + g, 0.0)


def _cross_terms(ph: np.ndarray, y: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(P, K): sum_t <M_k(t) p~_v, y_v(t)> as one matrix product (P, T*3) @ (T*3, K*4)."""
    t, k = m.shape[0], m.shape[1]
    yv = y.reshape(y.shape[0], t * 3)
    mm = np.transpose(m, (0, 2, 1, 3)).reshape(t * 3, k * 4)
    return np.einsum("vkd,vd->vk", (yv @ mm).reshape(-1, k, 4), ph)


def _initial_labels(y: np.ndarray, k: int, rng: np.random.Generator, sample: int = 4000) -> np.ndarray:
    """k-means (k-means++ seeding) over whole trajectories, on a sample, then every point to its nearest centre."""
    p = y.shape[0]
    feats = y.reshape(p, -1)
    pick = rng.choice(p, size=min(p, sample), replace=False)
    x = feats[pick]
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        prob = d2 / d2.sum() if d2.sum() > 0 else np.full(len(x), 1.0 / len(x))
        c = x[rng.choice(len(x), p=prob)]
        centres.append(c)
        d2 = np.minimum(d2, ((x - c) ** 2).sum(1))
    c = np.stack(centres)
    for _ in range(15):
        lab = _nearest(x, c)
        for j in range(k):
            members = x[lab == j]
            if len(members):
                c[j] = members.mean(0)
    return _nearest(feats, c)


def _nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None]
    return np.argmin(d, axis=1)


def _fill_empty(labels: np.ndarray, err: np.ndarray, k: int) -> np.ndarray:
    """Bones left without points take the points their current bones explain worst (so every bone is used)."""
    worst = np.argsort(-err)
    used = 0
    for j in range(k):
        if not np.any(labels == j):
            labels[worst[used]] = j
            used += 1
    return labels


def _qp_simplex(g: np.ndarray, b: np.ndarray, w0: np.ndarray, iterations: int) -> np.ndarray:
    """min_w w^T G w - 2 b^T w on the simplex, per row (FISTA with step 1 / (2 L), L >= lambda_max(G))."""
    lip = np.abs(g).sum(-1).max(-1)[:, None] * 2.0 + np.float32(1e-12)
    w = w0.copy()
    z = w.copy()
    s = 1.0
    for _ in range(iterations):
        grad = 2.0 * (np.matmul(g, z[:, :, None])[:, :, 0] - b)
        w_next = project_simplex(z - grad / lip)
        s_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * s * s))
        z = w_next + np.float32((s - 1.0) / s_next) * (w_next - w)
        w, s = w_next, s_next
    return w


def _solve_weights(
    ph: np.ndarray, y: np.ndarray, m: np.ndarray, joints: np.ndarray, weights: np.ndarray, influences: int,
    candidates: int, iterations: int,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Sparse weights: the QP over each point's ``candidates`` best single bones (and its current ones), the
    ``influences`` largest kept, then the QP again over those."""
    k = m.shape[1]
    c = min(candidates, k)
    q = np.einsum("tjci,tkcd->jkid", m, m).reshape(k * k, 16)  # Q[j, k] flattened
    out_j = np.empty((ph.shape[0], influences), np.int64)
    out_w = np.empty((ph.shape[0], influences))

    def solve(s: int) -> None:
        sl = slice(s, s + _CHUNK)
        p = ph[sl]
        outer = (p[:, :, None] * p[:, None, :]).reshape(-1, 16)
        gram = (outer @ q.T).reshape(-1, k, k)
        b = _cross_terms(p, y[sl], m)
        single = np.einsum("vkk->vk", gram) - 2.0 * b
        # Candidates: the best single bones; the current bones are kept among them (the warm start stays valid).
        full = np.zeros((p.shape[0], k))
        rows = np.arange(p.shape[0])
        for i in range(joints.shape[1]):  # padded slots add 0 (a put would let them overwrite a real weight)
            np.add.at(full, (rows, joints[sl, i]), weights[sl, i])
        rank = np.where(full > 0, -np.inf, single)
        cand = np.argsort(rank, axis=1)[:, :c]
        g_c = np.take_along_axis(np.take_along_axis(gram, cand[:, :, None], 1), cand[:, None, :], 2)
        b_c = np.take_along_axis(b, cand, 1)
        # float32 is ample for the weights (they are kept to 1e-6) and halves the QP's time.
        g_c, b_c = g_c.astype(np.float32), b_c.astype(np.float32)
        w_c = project_simplex(np.take_along_axis(full, cand, 1).astype(np.float32))
        w_c = _qp_simplex(g_c, b_c, w_c, iterations)
        keep = np.argsort(-w_c, axis=1)[:, :influences]
        sel = np.take_along_axis(cand, keep, 1)
        g_s = np.take_along_axis(np.take_along_axis(g_c, keep[:, :, None], 1), keep[:, None, :], 2)
        w_s = _qp_simplex(g_s, np.take_along_axis(b_c, keep, 1), project_simplex(np.take_along_axis(w_c, keep, 1)),
                          iterations // 2)  # fmt: skip
        out_j[sl], out_w[sl] = sel, w_s.astype(np.float64)

    # The blocks are independent (same numbers in any order): two threads, as numpy lets go of the GIL in its loops.
    starts = range(0, ph.shape[0], _CHUNK)
    if len(starts) > 1:
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(solve, starts))
    else:
        solve(0)
    return out_j, out_w


def reconstruct(rest: np.ndarray, transforms: np.ndarray, joints: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Linear blend skinning: (T, P, 3) = sum_i weights[:, i] * transforms[t, joints[:, i]] @ [rest, 1]."""
    return _blend(_homogeneous(np.asarray(rest, np.float64)), np.asarray(transforms, np.float64), joints,
                  weights).transpose(1, 0, 2)  # fmt: skip


def _blend(ph: np.ndarray, m: np.ndarray, joints: np.ndarray, weights: np.ndarray) -> np.ndarray:
    out = np.zeros((ph.shape[0], m.shape[0], 3))
    for j in range(m.shape[1]):
        rows, slot = np.nonzero((joints == j) & (weights > 0))
        if rows.size:
            out[rows] += weights[rows, slot, None, None] * _apply(m[:, j], ph[rows])
    return out


def _apply(m: np.ndarray, ph: np.ndarray) -> np.ndarray:
    """(V, T, 3): the transforms ``m`` (T, 3, 4) applied to homogeneous points ``ph`` (V, 4), as one matmul."""
    return (ph @ m.reshape(-1, 4).T).reshape(ph.shape[0], m.shape[0], 3)


def _update_transforms(
    rest: np.ndarray, y: np.ndarray, m: np.ndarray, joints: np.ndarray, weights: np.ndarray, recon: np.ndarray
) -> None:
    """SSDR's bone update, one bone at a time against the residual of the others; ``m`` and ``recon`` in place."""
    ph = _homogeneous(rest)
    for j in range(m.shape[1]):
        rows, slot = np.nonzero((joints == j) & (weights > 0))
        if rows.size == 0:
            continue
        w = weights[rows, slot]
        own = w[:, None, None] * _apply(m[:, j], ph[rows])
        target = y[rows] - recon[rows] + own
        m[1:, j] = _procrustes(rest[rows], target[:, 1:], w)
        recon[rows] += w[:, None, None] * _apply(m[:, j], ph[rows]) - own


def fit_skinning(
    points: Any, bones: int = 24, influences: int = 4, iterations: int = 12, candidates: int = 8,
    qp_iterations: int = 40, seed: int = 0, tolerance: float = 1e-3,
) -> SkinFit:  # fmt: skip
    """SSDR of the trajectories ``points`` (T, P, 3; frame 0 the rest pose) with ``bones`` rigid bones and at most
    ``influences`` weights per point. Stops after ``iterations`` alternations or when the rms error improves by less
    than ``tolerance`` (relative). Raises :class:`RigError` for input that cannot be rigged."""
    y = np.ascontiguousarray(check_points(points, bones).transpose(1, 0, 2))  # point-major (P, T, 3)
    k, influences = int(bones), max(1, min(int(influences), int(bones)))
    rest = y[:, 0]
    ph = _homogeneous(rest)
    rng = np.random.default_rng(seed)
    labels = _initial_labels(y, k, rng)
    m = _rigid_fits(rest, y, labels, k)
    for _ in range(4):  # rigid k-means: each point to the bone whose motion explains it best
        err = _single_bone_errors(ph, y, m)
        labels = _fill_empty(np.argmin(err, axis=1), err.min(axis=1), k)
        m = _rigid_fits(rest, y, labels, k)
    joints = np.zeros((rest.shape[0], influences), np.int64)
    joints[:, 0] = labels
    weights = np.zeros((rest.shape[0], influences))
    weights[:, 0] = 1.0
    recon = _blend(ph, m, joints, weights)
    history = [float(np.sqrt(((recon - y) ** 2).sum(-1).mean()))]
    for _ in range(iterations):
        joints, weights = _solve_weights(ph, y, m, joints, weights, influences, candidates, qp_iterations)
        recon = _blend(ph, m, joints, weights)
        _update_transforms(rest, y, m, joints, weights, recon)
        history.append(float(np.sqrt(((recon - y) ** 2).sum(-1).mean())))
        if history[-2] - history[-1] < tolerance * history[-2]:
            break
    order = np.argsort(-weights, axis=1)
    joints, weights = np.take_along_axis(joints, order, 1), np.take_along_axis(weights, order, 1)
    weights = np.where(weights > 1e-6, weights, 0.0)
    weights /= weights.sum(1, keepdims=True)
    joints = np.where(weights > 0, joints, 0)
    return SkinFit(m, joints.astype(np.int64), weights, history)
