"""The 4D stage's deformation field: multi-resolution space-time planes (HexPlane / K-Planes) and a small MLP.

A point ``x`` at time ``t`` samples six planes per resolution level -- three spatial (xy, xz, yz) and three
space-time (xt, yt, zt) -- bilinearly (``grid_sample``, ``align_corners=True``). The six samples of a level are
combined by a **product** (K-Planes' Hadamard product): the time planes start at 1, so at initialisation the
feature is purely spatial and the same at every t; a time plane then scales the spatial feature where and when
the motion needs it, which localises motion in space and time better than a sum (a sum lets one time plane
move every point sharing its coordinate, e.g. the whole slab ``x = const``). The levels' features are
concatenated and go through an MLP with four **zero-initialised** output heads:

* ``d_means`` (N, 3): added to the canonical positions (world units);
* ``d_quats`` (N, 4): added to the canonical unit quaternion (w, x, y, z), then renormalised (4DGaussians' and
  DreamGaussian4D's convention; a small additive delta is a small rotation, and zero is the identity);
* ``d_log_scales`` (N, 3): added to the log scales;
* ``d_opacity`` (N,): added to the opacity logits.

With zero heads the deformation is the identity at every t (a test checks it). Positions are mapped into the
grid's box (``bounds``, default [-1.2, 1.2]^3: the object lies in the unit sphere); points outside are clamped
to the box's border features. Time ``t`` in [0, 1] maps to the time axis with frame ``i`` of ``num_frames`` at
``t = i / (num_frames - 1)``, exactly on a grid row when the time resolution equals the frame count.

Regularisers (K-Planes): total variation of every plane (spatial smoothness of the motion), a second-order
smoothness along t of the space-time planes (smooth motion between frames), and an L1 pull of the space-time
planes towards 1 (no motion where none is needed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pla4d.deform.interp import fill_gap, line_weights
from pla4d.deform.mirror import lift_depth
from pla4d.deform.parts import PartMotion, quaternion_product

__all__ = ["Deltas", "DeformationField", "frame_time"]

SPATIAL_PAIRS = ((0, 1), (0, 2), (1, 2))  # xy, xz, yz
# Space-time planes (x, t), (y, t), (z, t): the plane's width runs along the spatial axis, its height along t.
TIME_AXES = (0, 1, 2)


def frame_time(index: int | Tensor, num_frames: int) -> float | Tensor:
    """Time in [0, 1] of frame ``index`` of ``num_frames`` (frame 0 at 0, the last at 1)."""
    return index / max(num_frames - 1, 1)


@dataclass
class Deltas:
    """Per-Gaussian changes at time t; leading dims (B, N) for B times, or (N,) for one time."""

    d_means: Tensor
    d_quats: Tensor
    d_log_scales: Tensor
    d_opacity: Tensor
    turn: Tensor | None = None  # unit quaternions of the part motion's rotation, applied after d_quats


class DeformationField(nn.Module):
    """HexPlane + MLP deformation ``(x, t) -> Deltas`` (see the module docstring).

    ``spatial_resolutions``: one level per entry (e.g. (32, 64)); ``time_resolution``: rows of the space-time
    planes (default: ``num_frames``); ``channels`` per plane and level; ``hidden``/``layers`` of the MLP trunk.
    ``deform_scales``/``deform_opacity``/``deform_rotations`` switch the heads (off: the delta is zero).
    ``depth_lift`` ({"normal", "eye", "softness"}, or None): the mirror-plane prior of pla4d/deform/mirror.py;
    the position delta's component along the rays from ``eye`` (the input camera) is set so the motion runs
    parallel to the plane with that ``normal``. It is part of :meth:`config`, so a saved field moves points
    the same way when it is loaded again. ``log_scale_bound`` (or None: unbounded): the log-scale delta is
    squashed smoothly into +-bound (``bound * tanh(d / bound)``), so a Gaussian cannot grow into a streak across
    the frame to cover motion it failed to follow (seen on khr_cesiumman: scales x45).
    """

    def __init__(
        self,
        num_frames: int,
        spatial_resolutions: tuple[int, ...] = (32, 64),
        time_resolution: int | None = None,
        channels: int = 32,
        hidden: int = 64,
        layers: int = 1,
        bounds: tuple[float, float] = (-1.2, 1.2),
        deform_rotations: bool = True,
        deform_scales: bool = True,
        deform_opacity: bool = True,
        depth_lift: dict | None = None,
        log_scale_bound: float | None = None,
        parts: int = 0,
        part_neighbours: int = 4,
        part_clustering: str = "kmeans",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {num_frames}")
        if not spatial_resolutions or min(spatial_resolutions) < 2:
            raise ValueError(f"spatial resolutions must be >= 2, got {spatial_resolutions}")
        if not bounds[1] > bounds[0]:
            raise ValueError(f"bounds must be (lo, hi) with lo < hi, got {bounds}")
        self.num_frames = int(num_frames)
        self.time_resolution = int(time_resolution or max(num_frames, 2))
        if self.time_resolution < 2:
            raise ValueError(f"time resolution must be >= 2, got {self.time_resolution}")
        self.spatial_resolutions = tuple(int(r) for r in spatial_resolutions)
        self.channels = int(channels)
        self.register_buffer("bounds", torch.tensor([float(bounds[0]), float(bounds[1])]), persistent=True)
        self.deform_rotations, self.deform_scales, self.deform_opacity = deform_rotations, deform_scales, deform_opacity
        if log_scale_bound is not None and not log_scale_bound > 0:
            raise ValueError(f"log_scale_bound must be positive or None, got {log_scale_bound}")
        self.log_scale_bound = None if log_scale_bound is None else float(log_scale_bound)
        self.depth_lift = (
            None
            if depth_lift is None
            else {
                "normal": [float(x) for x in depth_lift["normal"]],
                "eye": [float(x) for x in depth_lift["eye"]],
                "softness": float(depth_lift.get("softness", 0.3)),
            }
        )

        g = torch.Generator().manual_seed(seed)
        # K-Planes' initialisation: spatial planes uniform in [0.1, 0.5], space-time planes 1 (product identity).
        self.spatial = nn.ParameterList(
            nn.Parameter(torch.rand(3, channels, r, r, generator=g) * 0.4 + 0.1) for r in self.spatial_resolutions
        )
        self.temporal = nn.ParameterList(
            nn.Parameter(torch.ones(3, channels, self.time_resolution, r)) for r in self.spatial_resolutions
        )
        in_dim = channels * len(self.spatial_resolutions)
        trunk: list[nn.Module] = []
        for i in range(layers):
            trunk += [nn.Linear(in_dim if i == 0 else hidden, hidden), nn.ReLU()]
        self.trunk = nn.Sequential(*trunk)
        feat = hidden if layers > 0 else in_dim
        self.head_means = nn.Linear(feat, 3)
        self.head_quats = nn.Linear(feat, 4)
        self.head_scales = nn.Linear(feat, 3)
        self.head_opacity = nn.Linear(feat, 1)
        # Coarse part motion under the fine field (pla4d/deform/parts.py; 0 parts: none).
        self.part_motion = (
            PartMotion(parts, self.time_resolution, part_neighbours, part_clustering) if parts > 0 else None
        )
        for head in (self.head_means, self.head_quats, self.head_scales, self.head_opacity):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    # ------------------------------------------------------------------------------------------ parameters

    def grid_parameters(self) -> list[nn.Parameter]:
        return [*self.spatial, *self.temporal]

    def mlp_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith(("spatial", "temporal", "part_"))]

    def part_parameters(self) -> list[nn.Parameter]:
        return [] if self.part_motion is None else list(self.part_motion.parameters())

    def config(self) -> dict:
        """Constructor arguments (to rebuild the field before loading a state dict)."""
        return {
            "num_frames": self.num_frames,
            "spatial_resolutions": list(self.spatial_resolutions),
            "time_resolution": self.time_resolution,
            "channels": self.channels,
            "hidden": self.head_means.in_features,
            "layers": sum(isinstance(m, nn.Linear) for m in self.trunk),
            "bounds": [float(b) for b in self.bounds],
            "deform_rotations": self.deform_rotations,
            "deform_scales": self.deform_scales,
            "deform_opacity": self.deform_opacity,
            "depth_lift": self.depth_lift,
            "log_scale_bound": self.log_scale_bound,
            "parts": 0 if self.part_motion is None else self.part_motion.parts,
            "part_neighbours": 4 if self.part_motion is None else self.part_motion.neighbours,
            "part_clustering": "kmeans" if self.part_motion is None else self.part_motion.clustering,
        }

    # ------------------------------------------------------------------------------------------ features

    def normalise(self, points: Tensor) -> Tensor:
        lo, hi = self.bounds[0], self.bounds[1]
        return ((points - lo) / (hi - lo) * 2.0 - 1.0).clamp(-1.0, 1.0)

    def features(self, points: Tensor, times: Tensor) -> Tensor:
        """(B, N, C * levels) features of N points at B times (``times`` (B,) in [0, 1]).

        Computed channel-first and returned as a transposed view, so the MLP's matrix products read it without
        a copy (on CPU the copies cost as much as the sampling)."""
        n, b = points.shape[0], times.shape[0]
        x = self.normalise(points)  # (N, 3) in [-1, 1]
        tc = (times.to(x) * 2.0 - 1.0).clamp(-1.0, 1.0)  # (B,)
        # Spatial planes: grid (3, N, 1, 2) with (width, height) = (first axis, second axis).
        sgrid = torch.stack([x[:, [a, c]] for a, c in SPATIAL_PAIRS])[:, :, None, :]
        # Space-time planes: every point of a batch row shares its t, so each plane is first cut at the B times
        # (a (3, C, B, width) set of lines) and the lines are then read at the N points, both as matrix products
        # with linear-interpolation weights. The same numbers as grid_sample over B*N points, in about half the
        # time forward and back on CPU (its backward scatters every point).
        time_weights = line_weights(tc, self.time_resolution)  # (T, B)
        feats = []
        for spatial, temporal in zip(self.spatial, self.temporal, strict=True):
            s = F.grid_sample(spatial, sgrid, mode="bilinear", padding_mode="border", align_corners=True)[..., 0]
            s = s[0] * s[1] * s[2]  # (C, N)
            width = temporal.shape[-1]
            lines = (temporal.transpose(2, 3) @ time_weights).transpose(2, 3)  # (3, C, B, width)
            point_weights = torch.stack([line_weights(x[:, axis], width) for axis in TIME_AXES])  # (3, width, N)
            tt = (lines.reshape(3, self.channels * b, width) @ point_weights).reshape(3, self.channels, b, n)
            tt = tt[0] * tt[1] * tt[2]  # (C, B, N)
            feats.append(tt * s[:, None, :])
        return torch.cat(feats, dim=0).reshape(-1, b * n).t().reshape(b, n, -1)

    # ------------------------------------------------------------------------------------------ deformation

    def forward(self, means: Tensor, t: float | Tensor) -> Deltas:
        """Deltas of Gaussians at canonical ``means`` (N, 3) at time ``t``: a float -> (N, ...) deltas, a (B,)
        tensor -> (B, N, ...) deltas (the spatial planes are sampled once for all B times)."""
        single = not isinstance(t, Tensor) or t.ndim == 0
        times = torch.as_tensor(t, dtype=means.dtype, device=means.device).reshape(-1)
        h = self.trunk(self.features(means, times))
        # The enabled heads run as one matrix product: on CPU, four thin products and the sum of their gradients
        # into ``h`` cost several times one product over all outputs (khr_fox_walk, draft: ~25% of the field).
        heads = [self.head_means]
        heads += [self.head_quats] if self.deform_rotations else []
        heads += [self.head_scales] if self.deform_scales else []
        heads += [self.head_opacity] if self.deform_opacity else []
        weight = torch.cat([head.weight for head in heads])
        bias = torch.cat([head.bias for head in heads])
        parts = iter(torch.split(F.linear(h, weight, bias), [head.out_features for head in heads], dim=-1))
        d_means = next(parts)
        turn = None
        if self.part_motion is not None:
            coarse, turn = self.part_motion(means, times)
            d_means = d_means + coarse
        if self.depth_lift is not None:
            d_means = self._lift(d_means, means)
        d_quats = next(parts) if self.deform_rotations else h.new_zeros(*h.shape[:-1], 4)
        d_scales = next(parts) if self.deform_scales else h.new_zeros(*h.shape[:-1], 3)
        if self.deform_scales and self.log_scale_bound is not None:
            d_scales = self.log_scale_bound * torch.tanh(d_scales / self.log_scale_bound)
        d_opacity = next(parts)[..., 0] if self.deform_opacity else h.new_zeros(h.shape[:-1])
        out = Deltas(d_means, d_quats, d_scales, d_opacity, turn)
        if single:
            out = Deltas(out.d_means[0], out.d_quats[0], out.d_log_scales[0], out.d_opacity[0],
                         None if turn is None else turn[0])  # fmt: skip
        return out

    def _lift(self, d_means: Tensor, points: Tensor) -> Tensor:
        lift = self.depth_lift
        return lift_depth(d_means, points, d_means.new_tensor(lift["normal"]), d_means.new_tensor(lift["eye"]),
                          lift["softness"])  # fmt: skip

    def deform(self, model, t: float | Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The deformed Gaussians of ``model`` (a GaussianModel) at time ``t``, activated and ready for
        :func:`pla4d.render.gaussians.render_gaussians`: (means, unit quats, scales, opacities), each with a
        leading B dim when ``t`` is a (B,) tensor."""
        return self.apply_deltas(model.means, model.quats, model.log_scales, model.opacity_logits, self(model.means, t))

    @staticmethod
    def apply_deltas(
        means: Tensor, quats: Tensor, log_scales: Tensor, opacity_logits: Tensor, d: Deltas
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        q = q + d.d_quats
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        if d.turn is not None:
            q = quaternion_product(d.turn, q)
        return means + d.d_means, q, torch.exp(log_scales + d.d_log_scales), torch.sigmoid(opacity_logits + d.d_opacity)

    def deform_points(self, points: Tensor, t: float | Tensor) -> Tensor:
        """Positions only (e.g. an animated mesh's vertices (V, 3)) moved by the same field at time ``t``."""
        return points + self(points, t).d_means

    @torch.no_grad()
    def hold_gap(self, t_from: float, t_to: float | None) -> None:
        """The rows strictly between times ``t_from`` and ``t_to`` take the (interpolated) row of the nearer of
        the two (``t_to`` None: every row after ``t_from`` takes its row), so training that reaches into the gap
        from either side starts from the motion already found there. When a time falls on a row (the default:
        one row per frame) the frames it fills then deform exactly as that time does."""
        low = self._row_position(t_from)
        high = None if t_to is None else self._row_position(t_to)
        for plane in self.temporal:
            fill_gap(plane, -2, low, high)
        if self.part_motion is not None:
            self.part_motion.hold_gap(low, high)

    def _row_position(self, t: float) -> float:
        position = min(max(float(t), 0.0), 1.0) * (self.time_resolution - 1)
        if abs(position - round(position)) < 1e-6:  # a frame on a row (t = i / (T - 1) is inexact in floats)
            position = float(round(position))
        return position

    # ------------------------------------------------------------------------------------------ regularisers

    def total_variation(self) -> Tensor:
        """Mean squared difference of neighbouring cells of every plane (both directions), K-Planes' TV."""
        total = self.spatial[0].new_zeros(())
        for plane in [*self.spatial, *self.temporal]:
            total = total + (plane[..., 1:, :] - plane[..., :-1, :]).pow(2).mean()
            total = total + (plane[..., :, 1:] - plane[..., :, :-1]).pow(2).mean()
        return total

    def time_smoothness(self) -> Tensor:
        """Mean squared second difference along t of the space-time planes (smooth motion, K-Planes)."""
        total = self.spatial[0].new_zeros(())
        for plane in self.temporal:
            if plane.shape[-2] >= 3:
                total = total + (plane[..., 2:, :] - 2 * plane[..., 1:-1, :] + plane[..., :-2, :]).pow(2).mean()
        if self.part_motion is not None:
            total = total + self.part_motion.time_smoothness()
        return total

    def time_sparsity(self) -> Tensor:
        """Mean |1 - plane| of the space-time planes (no motion where none is needed)."""
        total = self.spatial[0].new_zeros(())
        for plane in self.temporal:
            total = total + (1.0 - plane).abs().mean()
        return total
