"""Coarse part-level motion: a few rigid parts of the canonical Gaussians, each turned and moved per frame, blended
at their borders (linear blend skinning), under the fine HexPlane field (issue 21).

Why: a limb that swings further than its own width leaves no overlap between its render and the frame at its
tip, so the photometric loss pulls only the few Gaussians still overlapping; a field that moves each point on its
own then follows the part's root and leaves the rest (the example's waving forearm: 16-22 px off a 23-32 px
motion; the HexPlane's cells are also shared by the arm and the head beside it). A rigid part is moved by the
gradient of every one of its Gaussians, so whatever still overlaps turns the whole part.

Parts are ``k``-means clusters of the canonical positions (seeded by farthest-point sampling; deterministic). A
point takes its ``neighbours`` nearest part centres, weighted ``exp(-d^2 / (2 sigma^2))`` with ``sigma`` half the
median distance between neighbouring centres, so it follows one part inside it and a blend at a border. Each
part has per time row an axis-angle rotation about its centre and a translation (zero at t = 0: frame 0 is the
canonical pose), read at time t by linear interpolation between rows, as the field's space-time planes are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from pla4d.deform.graph_parts import geodesic_parts
from pla4d.deform.interp import fill_gap, line_weights

__all__ = ["PartMotion", "axis_angle_quaternion", "kmeans_centres", "quaternion_matrix", "quaternion_product"]


def axis_angle_quaternion(v: Tensor) -> Tensor:
    """(..., 4) unit quaternions (w, x, y, z) of axis-angle vectors ``v`` (..., 3); smooth through zero."""
    theta = (v.pow(2).sum(-1, keepdim=True) + 1e-12).sqrt()
    half = 0.5 * theta
    # sin(theta / 2) / theta = sinc(theta / (2 pi)) / 2, finite with a finite gradient at 0.
    return torch.cat([torch.cos(half), v * 0.5 * torch.sinc(theta / (2.0 * torch.pi))], dim=-1)


def quaternion_matrix(q: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrices of unit quaternions (..., 4) (w, x, y, z)."""
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def quaternion_product(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of (..., 4) quaternions (w, x, y, z): the rotation b, then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


@torch.no_grad()
def kmeans_centres(points: Tensor, k: int, iterations: int = 15) -> Tensor:
    """(k, 3) centres of ``points`` (N, 3): farthest-point seeds (from the point nearest the mean), then Lloyd
    steps. Deterministic; an emptied cluster keeps its centre."""
    points = points.detach().float()
    k = min(k, points.shape[0])
    first = int((points - points.mean(0)).norm(dim=1).argmin())
    chosen = [first]
    dist = (points - points[first]).norm(dim=1)
    for _ in range(k - 1):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, (points - points[nxt]).norm(dim=1))
    centres = points[chosen].clone()
    for _ in range(iterations):
        label = torch.cdist(points, centres).argmin(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, label, points)
        counts = torch.bincount(label, minlength=k).to(points)[:, None]
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
    return centres


class PartMotion(nn.Module):
    """Per-part rigid motion blended over the points (see the module docstring). ``parts`` centres and
    ``time_resolution`` rows; :meth:`place` puts the centres on a model's canonical positions before training
    (a loaded field gets them from its state dict).

    ``clustering``: "kmeans" (parts and blend weights by straight distance) or "graph" (by geodesic distance over
    the Gaussians' k-NN graph, pla4d/deform/graph_parts.py). A geodesic weight is defined only on the graph, so
    "graph" keeps the canonical positions it was placed on as anchors with their weights, and any other point
    (a mesh vertex) takes the weights of its nearest anchor."""

    CLUSTERINGS = ("kmeans", "graph")

    def __init__(self, parts: int, time_resolution: int, neighbours: int = 4, clustering: str = "kmeans") -> None:
        super().__init__()
        if parts < 1 or time_resolution < 2:
            raise ValueError(f"part motion needs >= 1 part and >= 2 time rows, got {parts}, {time_resolution}")
        if clustering not in self.CLUSTERINGS:
            raise ValueError(f"part clustering must be one of {self.CLUSTERINGS}, got {clustering!r}")
        self.parts, self.time_resolution = int(parts), int(time_resolution)
        self.neighbours = int(min(max(neighbours, 1), parts))
        self.clustering = clustering
        self.register_buffer("centres", torch.zeros(self.parts, 3), persistent=True)
        self.register_buffer("sigma", torch.ones(()), persistent=True)
        if clustering == "graph":
            self.register_buffer("anchors", torch.zeros(0, 3), persistent=True)
            self.register_buffer("anchor_parts", torch.zeros(0, self.neighbours, dtype=torch.int32), persistent=True)
            self.register_buffer("anchor_weights", torch.zeros(0, self.neighbours), persistent=True)
        # (anchors' data pointer, their KD-tree, the last query and its answer)
        self._tree: tuple[int, object, tuple | None] | None = None
        self.rotations = nn.Parameter(torch.zeros(self.time_resolution, self.parts, 3))
        self.translations = nn.Parameter(torch.zeros(self.time_resolution, self.parts, 3))

    @torch.no_grad()
    def place(self, points: Tensor) -> None:
        """Centres from ``points`` (N, 3), the canonical positions; the blend width from their spacing."""
        if self.clustering == "graph":
            self._place_on_graph(points)
            return
        centres = kmeans_centres(points, self.parts).to(self.centres)
        self.centres.copy_(centres)
        if self.parts > 1:
            gaps = torch.cdist(centres, centres) + torch.eye(self.parts, device=centres.device) * 1e9
            self.sigma.fill_(0.5 * float(gaps.min(dim=1).values.median()))

    def _place_on_graph(self, points: Tensor) -> None:
        pts = points.detach().cpu().double().numpy()
        seeds, geodesic = geodesic_parts(pts, self.parts)  # (K,), (K, N)
        k = len(seeds)
        self.centres.zero_()
        self.centres[:k] = torch.as_tensor(pts[seeds]).to(self.centres)
        if k > 1:
            gaps = geodesic[:, seeds] + np.eye(k) * 1e9
            self.sigma.fill_(0.5 * float(np.median(gaps.min(axis=1))))
        m = min(self.neighbours, k)
        idx = np.argsort(geodesic, axis=0, kind="stable")[:m].T  # (N, m) nearest centres along the graph
        near = torch.as_tensor(np.take_along_axis(geodesic.T, idx, axis=1))
        w = torch.softmax(-(near.pow(2) - near[:, :1].pow(2)) / (2.0 * float(self.sigma) ** 2), dim=1)
        if m < self.neighbours:  # fewer points than parts: pad with zero weights on part 0
            idx = np.pad(idx, ((0, 0), (0, self.neighbours - m)))
            w = torch.nn.functional.pad(w, (0, self.neighbours - m))
        device = self.centres.device
        self.anchors = points.detach().to(device=device, dtype=self.centres.dtype).clone()
        self.anchor_parts = torch.as_tensor(idx, dtype=torch.int32, device=device)
        self.anchor_weights = w.to(device=device, dtype=self.centres.dtype)
        self._tree = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        # The anchors' count is the canonical model's, known only from the saved state: take its shapes.
        for name in ("anchors", "anchor_parts", "anchor_weights"):
            if name in self._buffers and prefix + name in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name], device=self.centres.device)
        self._tree = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def weights(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """(N, m) indices of each point's nearest part centres and (N, m) their blend weights (rows sum to 1)."""
        if self.clustering == "graph":
            return self._anchor_weights(points)
        d2 = torch.cdist(points.detach(), self.centres).pow(2)
        near, idx = d2.topk(self.neighbours, dim=1, largest=False)
        w = torch.softmax(-(near - near[:, :1]) / (2.0 * self.sigma**2), dim=1)
        return idx, w

    def _anchor_weights(self, points: Tensor) -> tuple[Tensor, Tensor]:
        from scipy.spatial import cKDTree

        if self.anchors.shape[0] == 0:
            raise RuntimeError("graph part motion used before place(): it has no anchors")
        key = self.anchors.data_ptr()
        if self._tree is None or self._tree[0] != key:
            self._tree = (key, cKDTree(self.anchors.detach().cpu().numpy()), None)
        # Training asks again and again for the same canonical positions: keep the last answer.
        # The same tensor object, unchanged since (its version counter), so the answer is the same.
        last = self._tree[2]
        if last is not None and last[0] is points and last[1] == points._version:
            return last[2], last[3].to(points.dtype)
        _, nearest = self._tree[1].query(points.detach().cpu().numpy())
        nearest = torch.as_tensor(nearest, device=self.anchors.device)
        idx, w = self.anchor_parts[nearest].long(), self.anchor_weights[nearest]
        self._tree = (key, self._tree[1], (points, points._version, idx, w))
        return idx, w.to(points.dtype)

    def rows(self, times: Tensor) -> tuple[Tensor, Tensor]:
        """(B, K, 3) rotations and translations at ``times`` (B,) in [0, 1], row 0 held at zero."""
        tc = (times * 2.0 - 1.0).clamp(-1.0, 1.0)
        weights = line_weights(tc, self.time_resolution).t()  # (B, R)
        keep = torch.ones(self.time_resolution, 1, 1, device=times.device)
        keep[0] = 0.0
        rot = torch.einsum("br,rkc->bkc", weights, self.rotations * keep)
        trans = torch.einsum("br,rkc->bkc", weights, self.translations * keep)
        return rot, trans

    def forward(self, points: Tensor, times: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N, 3) displacement of ``points`` (N, 3) at ``times`` (B,) and (B, N, 4) the blended unit
        quaternion each point turns by."""
        idx, w = self.weights(points)
        dense = points.new_zeros(points.shape[0], self.parts).scatter_(1, idx, w)  # (N, K), m non-zeros a row
        rot, trans = self.rows(times)
        quats = axis_angle_quaternion(rot)  # (B, K, 4)
        mats = quaternion_matrix(quats)  # (B, K, 3, 3)
        # A part moves x to R x + (c + tau - R c): blending the parts' affine maps by the weights and applying
        # the blend is the blend of the moved points, as one (N, K) @ (K, 12) product per time.
        offset = self.centres + trans - torch.einsum("bkij,kj->bki", mats, self.centres)
        affine = torch.cat([mats.flatten(2), offset], dim=2)  # (B, K, 12)
        blended = torch.matmul(dense, affine)  # (B, N, 12)
        moved = torch.einsum("bnij,nj->bni", blended[..., :9].unflatten(-1, (3, 3)), points) + blended[..., 9:]
        # The parts' rotations stay near one another across a border, so a weighted sum of their quaternions (on
        # one hemisphere), normalised, is their blend.
        quats = torch.where(quats[..., :1] < 0, -quats, quats)
        turn = torch.matmul(dense, quats)
        return moved - points, turn / turn.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def hold_gap(self, low: float, high: float | None) -> None:
        """Rows strictly between fractional row positions ``low`` and ``high`` take the interpolated row of the
        nearer end (``high`` None: every row after ``low`` takes ``low``'s)."""
        for table in (self.rotations, self.translations):
            fill_gap(table, 0, low, high)

    def time_smoothness(self) -> Tensor:
        """Mean squared second difference along t of the rotations and translations."""
        total = self.rotations.new_zeros(())
        if self.time_resolution >= 3:
            for table in (self.rotations, self.translations):
                total = total + (table[2:] - 2 * table[1:-1] + table[:-2]).pow(2).mean()
        return total
