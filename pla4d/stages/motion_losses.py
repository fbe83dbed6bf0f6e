"""The loss terms of the motion stage (paper eq. 10-11 and the stage's own regularisers), each on one
iteration's deformed Gaussians.

Each term returns its weighted contribution to the loss and the figures it logs. Renders and targets are
composited over a random colour per view and iteration (drawn from the stage's generator), as the static
stage does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pla4d.cameras import Cameras
from pla4d.config import MotionConfig
from pla4d.deform.hexplane import DeformationField
from pla4d.gaussians.model import GaussianModel
from pla4d.render.gaussians import GaussianRender, render_gaussians
from pla4d.stages.motion_sampling import MotionBatch, ViewPool
from pla4d.stages.static3d import _view_losses, frame_target, pick_backgrounds

__all__ = [
    "DeformedBatch",
    "DepthAnchor",
    "FirstFrameConsistency",
    "FrontAlignment",
    "Guidance",
    "LocalRigidity",
    "Perceptual",
    "ReferenceRefinement",
    "knn_pairs",
    "plane_regularisers",
    "render_pose",
    "rigidity_loss",
]

Guidance = Callable[[Tensor, Tensor, dict[str, Any]], Tensor]
Perceptual = Callable[[Tensor, Tensor], Tensor]


def render_pose(
    model: GaussianModel,
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    cameras: Cameras,
    background: Tensor | None,
) -> GaussianRender:
    """Render ``model``'s colours on activated Gaussians (one pose, no leading time dim)."""
    return render_gaussians(
        means, quats, scales, opacities, model.sh, cameras, background=background, sh_degree=model.sh_degree
    )


@dataclass
class DeformedBatch:
    """The model deformed to each of a batch's times: (B, N, ...) activated means, unit quats, scales and
    opacities, row k for ``MotionBatch.times[k]``."""

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor

    @classmethod
    def of(cls, field_: DeformationField, model: GaussianModel, times: list[float], device: torch.device):
        d = field_(model.means, torch.tensor(times, device=device))
        return cls(*field_.apply_deltas(model.means, model.quats, model.log_scales, model.opacity_logits, d))

    def render(self, model: GaussianModel, k: int, cameras: Cameras, background: Tensor) -> GaussianRender:
        return render_pose(model, self.means[k], self.quats[k], self.scales[k], self.opacities[k], cameras, background)


class FrontAlignment:
    """Motion alignment (eq. 10, first term): the deformed model's front view at frame t against frame t,
    ``lambda_t * MSE(rgb) + lambda_t * MSE(alpha) + gamma * LPIPS(rgb)``. The frames' targets are made once per
    resolution."""

    def __init__(
        self,
        frames_rgba: Tensor,
        front: Cameras,
        cfg: MotionConfig,
        perceptual: Perceptual | None,
        device: torch.device,
    ):
        self.frames_rgba, self.front, self.cfg, self.perceptual, self.device = (
            frames_rgba, front, cfg, perceptual, device
        )  # fmt: skip
        self._targets: dict[int, tuple[Tensor, Tensor]] = {}

    def targets(self, size: int) -> tuple[Tensor, Tensor]:
        """Every frame at ``size`` pixels: (T, size, size, 3) premultiplied rgb and (T, size, size, 1) alpha."""
        if size not in self._targets:
            pairs = [frame_target(self.frames_rgba[i], size) for i in range(self.frames_rgba.shape[0])]
            self._targets[size] = (
                torch.stack([p[0] for p in pairs]).to(self.device),
                torch.stack([p[1] for p in pairs]).to(self.device),
            )
        return self._targets[size]

    def loss(
        self,
        model: GaussianModel,
        deformed: DeformedBatch,
        batch: MotionBatch,
        size: int,
        lam: float,
        generator: torch.Generator,
    ) -> tuple[Tensor, dict[str, float]]:
        cfg, device = self.cfg, self.device
        camera = self.front.scaled(size / self.front.width).to(device)
        bg = pick_backgrounds(cfg.background, batch.n_front, generator).to(device)
        rgbs, alphas = [], []
        for k in range(batch.n_front):
            out = deformed.render(model, k, camera, bg[k])
            rgbs.append(out.rgb)
            alphas.append(out.alpha)
        rgb, alpha = torch.cat(rgbs), torch.cat(alphas)
        targets = self.targets(size)
        t_rgb, t_alpha = targets[0][batch.frames], targets[1][batch.frames]
        t_rgb = t_rgb + (1.0 - t_alpha) * bg[:, None, None, :]
        mse, mask, lp = _view_losses(rgb, alpha, t_rgb, t_alpha, self.perceptual, cfg.perceptual_max_size)
        loss = (lam * mse + lam * mask + cfg.perceptual_weight * lp).mean()
        return loss, {
            "front_mse": float(mse.detach().mean()),
            "front_mask": float(mask.detach().mean()),
            "front_lpips": float(lp.detach().mean()),
        }


class FirstFrameConsistency:
    """First-frame consistency (eq. 10, second term): the deformed model at t = 0 against the static model
    ``reference``, both from random cameras of the pool, ``consistency_weight * (MSE(rgb) + MSE(alpha))``."""

    def __init__(self, pool: ViewPool, reference: GaussianModel, cfg: MotionConfig, device: torch.device):
        self.pool, self.reference, self.cfg, self.device = pool, reference, cfg, device

    def loss(
        self,
        model: GaussianModel,
        deformed: DeformedBatch,
        batch: MotionBatch,
        size: int,
        generator: torch.Generator,
    ) -> tuple[Tensor, dict[str, float]]:
        cfg, device, views = self.cfg, self.device, batch.consistency_views
        cams = self.pool.at(views, size).to(device)
        bg = pick_backgrounds(cfg.background, len(cams), generator).to(device)
        # The canonical model never changes (but in a joint fine-tune, where the reference is its detached copy
        # at the start), so its renders are made once per camera and resolution.
        s_rgb, s_alpha = self.pool.static_renders(self.reference, size)
        s_rgb, s_alpha = s_rgb[views.to(device)], s_alpha[views.to(device)]
        s_rgb = s_rgb + (1.0 - s_alpha) * bg[:, None, None, :]
        c_mse = c_mask = torch.zeros((), device=device)
        for j in range(len(cams)):
            out = deformed.render(model, batch.first_frame_slot, cams[j], bg[j])
            c_mse = c_mse + ((out.rgb[0] - s_rgb[j]) ** 2).mean()
            c_mask = c_mask + ((out.alpha[0] - s_alpha[j]) ** 2).mean()
        term = cfg.consistency_weight * (c_mse + c_mask) / len(cams)
        return term, {
            "consistency_mse": float(c_mse.detach()) / len(cams),
            "consistency_mask": float(c_mask.detach()) / len(cams),
        }


class ReferenceRefinement:
    """Reference refinement (eq. 11): the deformed model at random frames from random views, on white, with the
    static model's render from the same views as the reference, scored by ``guidance(rendered, reference,
    info)`` (e.g. Zero123 SDS) and weighted by ``guidance_weight``."""

    def __init__(
        self, guidance: Guidance, pool: ViewPool, reference: GaussianModel, cfg: MotionConfig, device: torch.device
    ):
        self.guidance, self.pool, self.reference, self.cfg, self.device = guidance, pool, reference, cfg, device

    def loss(
        self, model: GaussianModel, deformed: DeformedBatch, batch: MotionBatch, size: int
    ) -> tuple[Tensor, dict[str, float]]:
        pool, views, k0 = self.pool, batch.guidance_views, batch.guidance_slot
        cams = pool.at(views, size).to(self.device)
        white = torch.ones(3, device=self.device)
        rendered = [deformed.render(model, k0 + j, cams[j], white).rgb for j in range(len(cams))]
        with torch.no_grad():
            ref = self.reference.render(cams, background=white).rgb
        info = {
            "cameras": cams,
            "azimuth_deg": [pool.azimuths[i] for i in views.tolist()],
            "elevation_deg": [pool.elevations[i] for i in views.tolist()],
            "radius": pool.radius,
            "times": batch.times[k0:],
        }
        g_loss = self.guidance(torch.cat(rendered).permute(0, 3, 1, 2), ref.permute(0, 3, 1, 2), info)
        return self.cfg.guidance_weight * g_loss, {"guidance": float(g_loss.detach())}


def knn_pairs(points: Tensor, k: int, chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """(N, k) indices of each point's k nearest other points and (N, k) their distances (chunked cdist)."""
    k = min(k, points.shape[0] - 1)
    idx, dist = [], []
    for i in range(0, points.shape[0], chunk):
        d = torch.cdist(points[i : i + chunk], points)
        vals, ids = d.topk(k + 1, dim=1, largest=False)
        idx.append(ids[:, 1:])
        dist.append(vals[:, 1:])
    return torch.cat(idx), torch.cat(dist)


def rigidity_loss(deformed: Tensor, neighbours: Tensor, rest: Tensor) -> Tensor:
    """Local isometry: mean squared change of the distances to each Gaussian's canonical neighbours (world
    units^2). ``deformed`` (B, N, 3); articulated motion keeps it small, tearing and scattering do not."""
    d = (deformed[:, :, None, :] - deformed[:, neighbours, :]).norm(dim=-1)  # (B, N, k)
    return ((d - rest) ** 2).mean()


class LocalRigidity:
    """Local rigidity (not in the paper): the distances from each Gaussian to its k nearest canonical
    neighbours should not change in the front frames' poses. An isometry term against tearing: the front view
    does not see motion in depth, and without it Gaussians scatter along the view direction."""

    def __init__(self, model: GaussianModel, cfg: MotionConfig):
        self.weight = cfg.rigidity_weight
        with torch.no_grad():
            self.neighbours, self.rest = knn_pairs(model.means.detach(), cfg.rigidity_neighbours)

    @classmethod
    def wanted(cls, model: GaussianModel, cfg: MotionConfig) -> LocalRigidity | None:
        """The term for ``model``, or None when it is off (or the model has one Gaussian)."""
        if cfg.rigidity_weight > 0 and cfg.rigidity_neighbours > 0 and model.num_gaussians > 1:
            return cls(model, cfg)
        return None

    def loss(self, deformed: DeformedBatch, batch: MotionBatch) -> tuple[Tensor, dict[str, float]]:
        rigid = rigidity_loss(deformed.means[: batch.n_front], self.neighbours, self.rest)
        return self.weight * rigid, {"rigidity": float(rigid.detach())}


class DepthAnchor:
    """Depth anchor (not in the paper; issue 21): where the mirror plane is seen edge-on, so the prior sets no
    depth, the motion's depth along the input camera's rays is pulled towards rest by ``weight * mean(along^2)``
    over the front frames' poses (the motion stage decides where; see ``train_motion``).

    The front view does not see it, so without the anchor it drifts freely, and the frame curriculum, which
    starts each new frame from the motion of the last, accumulates that drift frame after frame. Depth that the
    other terms ask for (a limb swung towards the camera keeps its length only by moving in depth) costs far
    more in rigidity than the anchor charges, so it stays; only the depth nothing asks for goes."""

    def __init__(self, model: GaussianModel, eye: Tensor, weight: float):
        self.weight = weight
        with torch.no_grad():
            self.rays = torch.nn.functional.normalize(model.means.detach() - eye.to(model.means), dim=-1)

    def loss(
        self, model: GaussianModel, deformed: DeformedBatch, batch: MotionBatch
    ) -> tuple[Tensor, dict[str, float]]:
        along = ((deformed.means[: batch.n_front] - model.means) * self.rays).sum(dim=-1)
        depth = along.pow(2).mean()
        return self.weight * depth, {"depth_anchor": float(depth.detach())}


def plane_regularisers(field_: DeformationField, cfg: MotionConfig) -> Tensor:
    """The field's plane regularisers (K-Planes): total variation, temporal smoothness, time sparsity."""
    return (
        cfg.tv_weight * field_.total_variation()
        + cfg.time_smooth_weight * field_.time_smoothness()
        + cfg.time_sparsity_weight * field_.time_sparsity()
    )
