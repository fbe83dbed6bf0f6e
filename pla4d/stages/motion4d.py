"""3D-to-4D: motion alignment of a deformation field to the video (paper section 3.4, eq. 10-11, Algorithm 2).

Only the field trains; the canonical (static) Gaussians stay fixed unless ``train_canonical`` asks for a joint
fine-tune. Each iteration:

* **motion alignment** (eq. 10, first term): a batch of frames t; the deformed model's front view at t against
  frame t, ``lambda_t * MSE(rgb) + lambda_t * MSE(alpha) + gamma * LPIPS(rgb)`` with lambda_t decaying 0.5 ->
  0.02 (DreamGaussian4D's schedule, the paper's appendix A);
* **first-frame consistency** (eq. 10, second term): the deformed model at t = 0 (the first frame) against the
  static model, both from random cameras of a fixed pool, ``consistency_weight * (MSE(rgb) + MSE(alpha))``;
  the static renders are made once per camera and resolution (the canonical model never changes);
* **reference refinement** (eq. 11), when a ``guidance`` callable is given: the deformed model at a random
  frame from a random view, with the static model's render from that view as the reference;
* **local rigidity** (not in the paper): the distances from each Gaussian to its k nearest canonical neighbours
  should not change (an isometry term against tearing: the front view does not see motion in depth, and
  without it Gaussians scatter along the view direction).

Renders and targets are composited over a random colour per view and iteration, as the static stage does.
The field's plane regularisers (total variation, temporal smoothness, time sparsity) are added with small
weights. Frame ``i`` of ``T`` sits at ``t = i / (T - 1)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pla4d.cameras import Cameras
from pla4d.config import MotionConfig
from pla4d.deform.hexplane import DeformationField, frame_time
from pla4d.deform.mirror import MirrorPlane, find_mirror_plane
from pla4d.errors import Cancelled
from pla4d.gaussians.model import GaussianModel
from pla4d.render.gaussians import render_gaussians
from pla4d.stages.static3d import (
    _view_losses,
    frame_target,
    linear_schedule,
    pick_backgrounds,
    resolution_schedule,
    sample_orbit_views,
    select_cameras,
)

__all__ = [
    "MotionResult",
    "ViewPool",
    "build_field",
    "frames_reached",
    "lambda_at",
    "render_deformed",
    "resolution_at",
    "train_motion",
]

Guidance = Callable[[Tensor, Tensor, dict[str, Any]], Tensor]


@dataclass
class MotionResult:
    field: DeformationField
    history: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    model: GaussianModel | None = None  # the canonical model (changed only by a joint fine-tune)
    guidance_used: bool = False
    mirror_plane: MirrorPlane | None = None  # the mirror plane found (None: prior off or no plane); the field
    # uses it (``field.depth_lift``) only when the input camera looks across it
    frame_curriculum: float = 0.0  # the curriculum fraction used (0: frames in epochs from the start)


def lambda_at(cfg: MotionConfig, iteration: int, total: int) -> float:
    return linear_schedule(cfg.lambda_start, cfg.lambda_end, iteration, total)


def resolution_at(cfg: MotionConfig, iteration: int, total: int) -> int:
    return resolution_schedule(cfg.resolutions, cfg.resolution_steps, iteration, total)


def frames_reached(curriculum: float, iteration: int, total: int, num_frames: int) -> int:
    """How many frames (from the first) training draws from at ``iteration``: with a ``curriculum`` fraction
    f > 0 the count grows from 2 to all over the first f of the iterations, else all frames from the start."""
    if curriculum <= 0 or num_frames <= 2:
        return num_frames
    span = curriculum * total
    return min(num_frames, 2 + int((num_frames - 2) * iteration / max(span, 1.0)))


def build_field(cfg: MotionConfig, num_frames: int, seed: int = 0) -> DeformationField:
    return DeformationField(
        num_frames,
        spatial_resolutions=cfg.spatial_resolutions,
        time_resolution=cfg.time_resolution,
        channels=cfg.channels,
        hidden=cfg.hidden,
        layers=cfg.layers,
        bounds=cfg.bounds,
        deform_rotations=cfg.deform_rotations,
        deform_scales=cfg.deform_scales,
        deform_opacity=cfg.deform_opacity,
        log_scale_bound=cfg.log_scale_bound,
        seed=seed,
    )


class ViewPool:
    """Random cameras on the front camera's orbit (with their angles), and the static model's renders from
    them, made once per resolution (premultiplied rgb, alpha) and on white (the guidance reference)."""

    def __init__(self, front: Cameras, size: int, cfg: MotionConfig, radius: float, generator: torch.Generator):
        self.cameras, self.azimuths, self.elevations = sample_orbit_views(
            front, size, cfg.elevation_range_deg, cfg.focal_jitter, radius, generator
        )
        self.radius = radius
        self._cache: dict[int, tuple[Tensor, Tensor]] = {}

    def __len__(self) -> int:
        return len(self.cameras)

    def at(self, idx: Tensor, size: int) -> Cameras:
        return select_cameras(self.cameras, idx, size)

    def static_renders(self, model: GaussianModel, size: int) -> tuple[Tensor, Tensor]:
        if size not in self._cache:
            cams = self.cameras.scaled(size / self.cameras.width).to(model.means.device)
            rgbs, alphas = [], []
            with torch.no_grad():
                for i in range(0, len(cams), 8):
                    out = model.render(cams[i : i + 8])  # black background: premultiplied
                    rgbs.append(out.rgb)
                    alphas.append(out.alpha)
            self._cache[size] = (torch.cat(rgbs), torch.cat(alphas))
        return self._cache[size]


def render_deformed(
    field_: DeformationField, model: GaussianModel, t: float | Tensor, cameras: Cameras, background: Tensor | None
):
    """Render ``model`` deformed by the field at one time ``t`` into ``cameras`` (differentiable)."""
    means, quats, scales, opacities = field_.deform(model, t)
    return _render(model, means, quats, scales, opacities, cameras, background)


def _render(model, means, quats, scales, opacities, cameras, background):
    return render_gaussians(
        means, quats, scales, opacities, model.sh, cameras, background=background, sh_degree=model.sh_degree
    )


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


def _optimizer(field_: DeformationField, model: GaussianModel, cfg: MotionConfig, static_lrs: dict | None):
    groups = [
        {"params": field_.grid_parameters(), "lr": cfg.lr_grid, "name": "grid"},
        {"params": field_.mlp_parameters(), "lr": cfg.lr_mlp, "name": "mlp"},
    ]
    if cfg.train_canonical:
        for name, lr in (static_lrs or {}).items():
            groups.append({"params": [getattr(model, name)], "lr": lr * cfg.canonical_lr_scale, "name": name})
    return torch.optim.Adam(groups, eps=1e-15)


def train_motion(
    canonical: GaussianModel,
    frames_rgba: Tensor,
    front: Cameras,
    cfg: MotionConfig,
    perceptual: Callable[[Tensor, Tensor], Tensor] | None = None,
    radius: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    on_iteration: Callable[[dict[str, float], DeformationField], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    guidance: Guidance | None = None,
    field_: DeformationField | None = None,
) -> MotionResult:
    """Train a deformation field so the canonical model follows ``frames_rgba`` (T, H, W, 4) straight-alpha
    front-view frames, seen by the matched front camera ``front`` (Algorithm 2).

    ``perceptual(x, y)`` takes (B, 3, H, W) in [0, 1] and returns (B,) distances (None: no LPIPS term).
    ``radius``: the random views' orbit radius (default: the front camera's distance). ``guidance(rendered,
    reference, info)`` (optional, eq. 11) gets (B, 3, H, W) renders of the deformed model and of the static
    model from the same random views, both on white, and ``info`` = {"cameras", "azimuth_deg", "elevation_deg",
    "radius", "times"}; it returns a scalar loss (weighted by ``guidance_weight``). ``on_iteration(record,
    field)`` gets each iteration's log record; ``should_cancel()`` is polled every iteration and raises
    :class:`pla4d.errors.Cancelled` when it answers True.
    """
    if frames_rgba.ndim != 4 or frames_rgba.shape[-1] != 4:
        raise ValueError(f"frames must be (T, H, W, 4) RGBA, got {tuple(frames_rgba.shape)}")
    num_frames = frames_rgba.shape[0]
    total = cfg.total_iterations(num_frames)
    if total < 1 or cfg.batch_frames < 1:
        raise ValueError("motion training needs at least one iteration and one frame per batch")
    device = torch.device(device)
    timings: dict[str, float] = {}
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    start = time.perf_counter()

    model = canonical.to(device)
    grad_flags = [p.requires_grad for p in model.parameters()]
    static_lrs = None
    if cfg.train_canonical:
        from pla4d.config import StaticConfig

        sc = StaticConfig()
        static_lrs = {"means": sc.lr_means, "quats": sc.lr_quats, "log_scales": sc.lr_scales,
                      "opacity_logits": sc.lr_opacity, "sh0": sc.lr_sh0}  # fmt: skip
        reference = model.detach()
    else:
        model.requires_grad_(False)
        reference = model
    field_ = (field_ or build_field(cfg, num_frames, seed=seed)).to(device)
    if radius is None:
        radius = float(front.centers()[0].norm())
    pool = ViewPool(front, cfg.view_pool, cfg, radius, generator)
    optimizer = _optimizer(field_, model, cfg, static_lrs)
    decay = cfg.lr_final_ratio ** (1.0 / max(total, 1))
    targets: dict[int, tuple[Tensor, Tensor]] = {}
    use_consistency = cfg.first_frame_consistency and cfg.consistency_weight > 0 and cfg.consistency_views > 0
    use_guidance = guidance is not None and cfg.guidance_weight > 0 and cfg.guidance_views > 0
    history: list[dict[str, float]] = []
    order: list[int] = []
    if cfg.rigidity_weight > 0 and cfg.rigidity_neighbours > 0 and model.num_gaussians > 1:
        with torch.no_grad():
            neighbours, rest = knn_pairs(model.means.detach(), cfg.rigidity_neighbours)
    else:
        neighbours = rest = None
    mirror_plane = None
    if cfg.mirror_prior:
        # The plane is a property of the canonical shape; the field keeps it (and the input camera's eye) so
        # every later use (asset, mesh, eval) sets the depth of the motion the same way.
        rotation = front.viewmats[0, :3, :3].detach().cpu()
        # OpenCV cameras: y points down, so the world's up is minus the camera's second axis.
        mirror_plane = find_mirror_plane(model.means, -rotation[1], cfg.mirror_tolerance, cfg.mirror_min_inliers)
        # Seen almost edge-on (a face from the front), the plane says nothing about depth that the video does
        # not already show, and dividing by the small angle would only amplify noise: leave the depth alone.
        axis_cos = 0.0 if mirror_plane is None else abs(float(rotation[2] @ torch.tensor(mirror_plane.normal)))
        if mirror_plane is not None and axis_cos >= cfg.mirror_min_cos:
            field_.depth_lift = {"normal": list(mirror_plane.normal), "eye": front.centers()[0].tolist(),
                                 "softness": cfg.mirror_softness}  # fmt: skip
    # Holding a frame's motion for the next also holds its depth along the input rays, which the video cannot
    # correct; with nothing setting that depth it accumulates frame after frame (khr_cesiumman: 22.10 dB without
    # the curriculum, 21.46 with). So the curriculum runs only where the depth prior sets the depth.
    curriculum = cfg.frame_curriculum if field_.depth_lift is not None else 0.0
    reached = frames_reached(curriculum, 0, total, num_frames)
    timings["setup_s"] = time.perf_counter() - start
    loop_start = time.perf_counter()
    render_s = field_s = 0.0

    for it in range(total):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"4D motion training cancelled at iteration {it}")
        size = resolution_at(cfg, it, total)
        lam = lambda_at(cfg, it, total)
        if size not in targets:
            pairs = [frame_target(frames_rgba[i], size) for i in range(num_frames)]
            targets[size] = (
                torch.stack([p[0] for p in pairs]).to(device),
                torch.stack([p[1] for p in pairs]).to(device),
            )
        reach = frames_reached(curriculum, it, total, num_frames)
        if reach > reached:
            # The frames just reached start from the motion of the last frame trained so far, a few pixels
            # away, instead of from rest, which may be further than the photometric loss can pull.
            field_.hold_after(float(frame_time(reached - 1, num_frames)))
            reached = reach
        batch: list[int] = []
        if reached < num_frames:
            # Growing: the newest frame, and others drawn from those reached.
            batch.append(reached - 1)
            others = torch.randperm(reached - 1, generator=generator).tolist()
            batch += others[: min(cfg.batch_frames, reached) - 1]
        else:
            # Frames in epochs: every frame is seen once before any is seen twice.
            while len(batch) < min(cfg.batch_frames, num_frames):
                if not order:
                    order = torch.randperm(num_frames, generator=generator).tolist()
                batch.append(order.pop())
        times = [float(frame_time(i, num_frames)) for i in batch]
        n_front = len(times)
        cons_idx = torch.randint(len(pool), (cfg.consistency_views,), generator=generator) if use_consistency else None
        if use_consistency:
            times.append(0.0)
        do_guidance = use_guidance and it % max(cfg.guidance_every, 1) == 0
        if do_guidance:
            guide_idx = torch.randint(len(pool), (cfg.guidance_views,), generator=generator)
            guide_frames = torch.randint(num_frames, (cfg.guidance_views,), generator=generator).tolist()
            times += [float(frame_time(i, num_frames)) for i in guide_frames]

        t0 = time.perf_counter()
        d = field_(model.means, torch.tensor(times, device=device))
        means, quats, scales, opacities = field_.apply_deltas(
            model.means, model.quats, model.log_scales, model.opacity_logits, d
        )
        field_s += time.perf_counter() - t0

        t0 = time.perf_counter()
        # Motion alignment: front view at frame t vs frame t.
        front_cam = front.scaled(size / front.width).to(device)
        bg = pick_backgrounds(cfg.background, n_front, generator).to(device)
        rgbs, alphas = [], []
        for k in range(n_front):
            out = _render(model, means[k], quats[k], scales[k], opacities[k], front_cam, bg[k])
            rgbs.append(out.rgb)
            alphas.append(out.alpha)
        rgb, alpha = torch.cat(rgbs), torch.cat(alphas)
        t_rgb, t_alpha = targets[size][0][batch], targets[size][1][batch]
        t_rgb = t_rgb + (1.0 - t_alpha) * bg[:, None, None, :]
        mse, mask, lp = _view_losses(rgb, alpha, t_rgb, t_alpha, perceptual, cfg.perceptual_max_size)
        loss_ma = (lam * mse + lam * mask + cfg.perceptual_weight * lp).mean()
        loss = loss_ma
        record: dict[str, float] = {}

        if use_consistency:
            k = n_front
            cams = pool.at(cons_idx, size).to(device)
            cbg = pick_backgrounds(cfg.background, len(cams), generator).to(device)
            s_rgb, s_alpha = pool.static_renders(reference, size)
            s_rgb, s_alpha = s_rgb[cons_idx.to(device)], s_alpha[cons_idx.to(device)]
            s_rgb = s_rgb + (1.0 - s_alpha) * cbg[:, None, None, :]
            c_mse = c_mask = torch.zeros((), device=device)
            for j in range(len(cams)):
                out = _render(model, means[k], quats[k], scales[k], opacities[k], cams[j], cbg[j])
                c_mse = c_mse + ((out.rgb[0] - s_rgb[j]) ** 2).mean()
                c_mask = c_mask + ((out.alpha[0] - s_alpha[j]) ** 2).mean()
            loss = loss + cfg.consistency_weight * (c_mse + c_mask) / len(cams)
            record.update(
                consistency_mse=float(c_mse.detach()) / len(cams), consistency_mask=float(c_mask.detach()) / len(cams)
            )

        if do_guidance:
            k0 = n_front + (1 if use_consistency else 0)
            cams = pool.at(guide_idx, size).to(device)
            white = torch.ones(3, device=device)
            rendered = []
            for j in range(len(cams)):
                k = k0 + j
                out = _render(model, means[k], quats[k], scales[k], opacities[k], cams[j], white)
                rendered.append(out.rgb)
            with torch.no_grad():
                ref = reference.render(cams, background=white).rgb
            info = {
                "cameras": cams,
                "azimuth_deg": [pool.azimuths[i] for i in guide_idx.tolist()],
                "elevation_deg": [pool.elevations[i] for i in guide_idx.tolist()],
                "radius": pool.radius,
                "times": times[k0:],
            }
            g_loss = guidance(torch.cat(rendered).permute(0, 3, 1, 2), ref.permute(0, 3, 1, 2), info)
            loss = loss + cfg.guidance_weight * g_loss
            record["guidance"] = float(g_loss.detach())

        if neighbours is not None:
            rigid = rigidity_loss(means[:n_front], neighbours, rest)
            loss = loss + cfg.rigidity_weight * rigid
            record["rigidity"] = float(rigid.detach())
        reg = (
            cfg.tv_weight * field_.total_variation()
            + cfg.time_smooth_weight * field_.time_smoothness()
            + cfg.time_sparsity_weight * field_.time_sparsity()
        )
        loss = loss + reg
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] *= decay
        if cfg.train_canonical:
            with torch.no_grad():
                model.quats.data = model.quats.data / model.quats.data.norm(dim=1, keepdim=True).clamp_min(1e-12)
        render_s += time.perf_counter() - t0

        record = {
            "iteration": it,
            "resolution": size,
            "lambda": lam,
            "loss": float(loss.detach()),
            "front_mse": float(mse.detach().mean()),
            "front_mask": float(mask.detach().mean()),
            "front_lpips": float(lp.detach().mean()),
            **record,
            "regulariser": float(reg.detach()),
            "seconds": time.perf_counter() - loop_start,
        }
        history.append(record)
        if on_iteration is not None:
            on_iteration(record, field_)

    timings["train_s"] = time.perf_counter() - loop_start
    timings["field_s"] = field_s
    timings["render_loss_backward_s"] = render_s
    timings["total_s"] = time.perf_counter() - start
    for p, flag in zip(model.parameters(), grad_flags, strict=True):
        p.requires_grad_(flag)
    return MotionResult(
        field=field_,
        history=history,
        timings=timings,
        model=model,
        guidance_used=use_guidance,
        mirror_plane=mirror_plane,
        frame_curriculum=curriculum,
    )
