"""The bone tree of a skinning fit: a spanning tree over the bones, joints where two bones' motions agree, bones
ordered root first, and names a person can read in Blender.

Two bones are joined where a ball joint explains both motions: the point m minimising sum_t |M_j(t) m - M_k(t) m|^2
(regularised towards the midpoint of the bones' centres) is their joint, and the rms of that residual over the
frames is how much their motions disagree. The tree is the minimum spanning tree of that disagreement plus a small
distance term, with bones that share no point made dearer; its root is the bone nearest the middle of the object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Skeleton", "build_skeleton"]

_DISTANCE_WEIGHT = 0.05  # metres of joint residual a metre of distance between bone centres costs
_APART_FACTOR = 4.0  # cost factor of joining two bones that share no point


@dataclass
class Skeleton:
    """Bones in tree order (every parent before its children; ``parents[0] == -1``): ``heads`` (B, 3) joint
    positions at rest, ``tails`` (B, 3) where each bone points (Blender draws bones head to tail), ``names``, and
    ``order``: the fit's bone index of each bone here (``order[new] = old``)."""

    names: list[str]
    parents: np.ndarray
    heads: np.ndarray
    tails: np.ndarray
    order: np.ndarray

    @property
    def rest_matrices(self) -> np.ndarray:
        """(B, 4, 4) rest matrices: a frame at each head with the world's axes (no rest rotation)."""
        rest = np.tile(np.eye(4), (len(self.names), 1, 1))
        rest[:, :3, 3] = self.heads
        return rest


def _dense(joints: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((joints.shape[0], k))
    rows = np.arange(joints.shape[0])
    for i in range(joints.shape[1]):
        np.add.at(out, (rows, joints[:, i]), weights[:, i])
    return out


def _joint_points(transforms: np.ndarray, centres: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(K, K, 3) joint points and (K, K) rms disagreement of every pair of bones."""
    t = transforms.shape[0]
    r, tr = transforms[:, :, :, :3], transforms[:, :, :, 3]
    d_r = r[:, :, None] - r[:, None, :]  # (T, K, K, 3, 3)
    d_t = tr[:, :, None] - tr[:, None, :]  # (T, K, K, 3)
    ata = np.einsum("tjkci,tjkcl->jkil", d_r, d_r)
    atb = -np.einsum("tjkci,tjkc->jki", d_r, d_t)
    mid = 0.5 * (centres[:, None] + centres[None, :])
    lam = 1e-3 * t  # weak pull to the midpoint: a pair that moves alike has no single joint point
    m = np.linalg.solve(ata + lam * np.eye(3), (atb + lam * mid)[..., None])[..., 0]
    # Joints far from both bones are unstable (nearly parallel motions): the midpoint is used instead.
    far = np.linalg.norm(m - mid, axis=-1) > np.maximum(np.linalg.norm(centres[:, None] - centres[None], axis=-1),
                                                         0.05 * scale)  # fmt: skip
    m[far] = mid[far]
    res = np.einsum("tjkci,jki->tjkc", d_r, m) + d_t
    return m, np.sqrt((res**2).sum(-1).mean(0))


def _name(i: int, head: np.ndarray, root: np.ndarray, scale: float) -> str:
    if i == 0:
        return "bone_00_root"
    d = (head - root) / max(scale, 1e-12)
    # The object faces +Z with +Y up, so its left is +X; Blender mirrors names ending in .L / .R.
    side = ".L" if d[0] > 0.05 else ".R" if d[0] < -0.05 else ""
    depth = "front" if d[2] > 0.1 else "back" if d[2] < -0.1 else "mid"
    height = "upper" if d[1] > 0.1 else "lower" if d[1] < -0.1 else "centre"
    return f"bone_{i:02d}_{depth}_{height}{side}"


def build_skeleton(rest: np.ndarray, transforms: np.ndarray, joints: np.ndarray, weights: np.ndarray) -> Skeleton:
    """The bone tree of a fit (``transforms`` (T, K, 3, 4), weights of the points ``rest`` (P, 3))."""
    k = transforms.shape[1]
    scale = float(np.linalg.norm(rest.max(0) - rest.min(0))) or 1.0
    dense = _dense(joints, weights, k)
    mass = dense.sum(0)
    centres = np.where(mass[:, None] > 0, dense.T @ rest / np.maximum(mass, 1e-12)[:, None], rest.mean(0))
    points, disagree = _joint_points(transforms, centres, scale)
    shared = (dense > 0).astype(np.float64)
    shared = shared.T @ shared
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    cost = (disagree + _DISTANCE_WEIGHT * dist) * np.where(shared > 0, 1.0, _APART_FACTOR)
    middle = (mass[:, None] * centres).sum(0) / max(mass.sum(), 1e-12)
    root = int(np.argmin(np.linalg.norm(centres - middle, axis=1) - 1e-9 * mass))
    # Prim's algorithm from the root; bones are numbered in the order they join (parents first).
    parent_old = np.full(k, -1)
    best = cost[root].copy()
    best_from = np.full(k, root)
    inside = np.zeros(k, bool)
    inside[root] = True
    order = [root]
    for _ in range(k - 1):
        cand = np.where(inside, np.inf, best)
        j = int(np.argmin(cand))
        inside[j] = True
        parent_old[j] = best_from[j]
        order.append(j)
        closer = cost[j] < best
        best = np.where(closer, cost[j], best)
        best_from = np.where(closer, j, best_from)
    order_arr = np.array(order)
    new_of = np.empty(k, np.int64)
    new_of[order_arr] = np.arange(k)
    parents = np.array([-1 if parent_old[o] < 0 else new_of[parent_old[o]] for o in order_arr], np.int64)
    heads = np.array([centres[root] if parent_old[o] < 0 else points[parent_old[o], o] for o in order_arr])
    tails = centres[order_arr].copy()
    short = np.linalg.norm(tails - heads, axis=1) < 0.02 * scale
    tails[short] = heads[short] + np.array([0.0, 0.05 * scale, 0.0])
    names = [_name(i, heads[i], heads[0], scale) for i in range(k)]
    return Skeleton(names, parents, heads, tails, order_arr)
