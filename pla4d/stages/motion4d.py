"""3D-to-4D: motion alignment of a deformation field to the video (paper section 3.4, eq. 10-11, Algorithm 2).

Only the field trains; the canonical (static) Gaussians stay fixed unless ``train_canonical`` asks for a joint
fine-tune. Each iteration (:func:`train_motion`):

* **curriculum step and batch** (:mod:`pla4d.stages.motion_sampling`): the frames reached so far grow from the
  first two to all when the frame curriculum runs; a batch of frames t, random views for the consistency term and
  random views and frames for the refinement term;
* **motion alignment** (eq. 10, first term): the deformed model's front view at t against frame t,
  ``lambda_t * MSE(rgb) + lambda_t * MSE(alpha) + gamma * LPIPS(rgb)`` with lambda_t decaying 0.5 -> 0.02
  (DreamGaussian4D's schedule, the paper's appendix A);
* **first-frame consistency** (eq. 10, second term): the deformed model at t = 0 (the first frame) against the
  static model, both from random cameras of a fixed pool, ``consistency_weight * (MSE(rgb) + MSE(alpha))``;
  the static renders are made once per camera and resolution (the canonical model never changes);
* **reference refinement** (eq. 11), when a ``guidance`` callable is given: the deformed model at a random
  frame from a random view, with the static model's render from that view as the reference;
* **local rigidity** (not in the paper): the distances from each Gaussian to its k nearest canonical neighbours
  should not change (an isometry term against tearing: the front view does not see motion in depth, and
  without it Gaussians scatter along the view direction);
* **plane regularisers**: the field's total variation, temporal smoothness and time sparsity, small weights;
* **optimiser step**: Adam, learning rates decayed exponentially to ``lr_final_ratio`` of the start.

The terms live in :mod:`pla4d.stages.motion_losses`. Renders and targets are composited over a random colour per
view and iteration, as the static stage does. Frame ``i`` of ``T`` sits at ``t = i / (T - 1)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pla4d.cameras import Cameras
from pla4d.config import MotionConfig, StaticConfig
from pla4d.deform.hexplane import DeformationField, frame_time
from pla4d.deform.mirror import MirrorPlane, find_mirror_plane
from pla4d.errors import Cancelled
from pla4d.gaussians.model import GaussianModel
from pla4d.losses.tracks import TrackLoss
from pla4d.render.gaussians import GaussianRender
from pla4d.stages.motion_losses import (
    DeformedBatch,
    DepthAnchor,
    FirstFrameConsistency,
    FrontAlignment,
    Guidance,
    LocalRigidity,
    Perceptual,
    ReferenceRefinement,
    knn_pairs,
    plane_regularisers,
    render_pose,
    rigidity_loss,
)
from pla4d.stages.motion_sampling import MotionSampler, ViewPool, frames_reached, returns_to_start
from pla4d.stages.static3d import linear_schedule, resolution_schedule

__all__ = [
    "Guidance",
    "MotionResult",
    "ViewPool",
    "build_field",
    "frames_reached",
    "knn_pairs",
    "lambda_at",
    "render_deformed",
    "resolution_at",
    "rigidity_loss",
    "train_motion",
]


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
    curriculum_both_ends: bool = False  # whether it grew from the first and the last frame


def lambda_at(cfg: MotionConfig, iteration: int, total: int) -> float:
    return linear_schedule(cfg.lambda_start, cfg.lambda_end, iteration, total)


def resolution_at(cfg: MotionConfig, iteration: int, total: int) -> int:
    return resolution_schedule(cfg.resolutions, cfg.resolution_steps, iteration, total)


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
        parts=cfg.parts,
        part_neighbours=cfg.part_neighbours,
        part_clustering=cfg.part_clustering,
        seed=seed,
    )


def render_deformed(
    field_: DeformationField, model: GaussianModel, t: float | Tensor, cameras: Cameras, background: Tensor | None
) -> GaussianRender:
    """Render ``model`` deformed by the field at one time ``t`` into ``cameras`` (differentiable)."""
    means, quats, scales, opacities = field_.deform(model, t)
    return render_pose(model, means, quats, scales, opacities, cameras, background)


class MotionOptimizer:
    """Adam on the field's planes and MLP (and, in a joint fine-tune, the canonical Gaussians at a fraction of
    the static stage's rates), every rate decayed exponentially to ``lr_final_ratio`` of its start over
    ``total`` steps."""

    def __init__(self, field_: DeformationField, model: GaussianModel, cfg: MotionConfig, total: int):
        groups = [
            {"params": field_.grid_parameters(), "lr": cfg.lr_grid, "name": "grid"},
            {"params": field_.mlp_parameters(), "lr": cfg.lr_mlp, "name": "mlp"},
        ]
        if field_.part_motion is not None:
            groups.append({"params": field_.part_parameters(), "lr": cfg.lr_parts, "name": "parts"})
        if cfg.train_canonical:
            sc = StaticConfig()
            static_lrs = {"means": sc.lr_means, "quats": sc.lr_quats, "log_scales": sc.lr_scales,
                          "opacity_logits": sc.lr_opacity, "sh0": sc.lr_sh0}  # fmt: skip
            for name, lr in static_lrs.items():
                groups.append({"params": [getattr(model, name)], "lr": lr * cfg.canonical_lr_scale, "name": name})
        self.adam = torch.optim.Adam(groups, eps=1e-15)
        self.decay = cfg.lr_final_ratio ** (1.0 / max(total, 1))
        self.model = model if cfg.train_canonical else None
        # Coarse first: over the first ``parts_first`` of the iterations only the part motion trains.
        self.fine_from = int(cfg.parts_first * total) if field_.part_motion is not None else 0
        self.iteration = 0

    def step(self, loss: Tensor) -> None:
        self.adam.zero_grad(set_to_none=True)
        loss.backward()
        if self.iteration < self.fine_from:
            for group in self.adam.param_groups:
                if group["name"] != "parts":
                    for p in group["params"]:
                        p.grad = None  # Adam skips a parameter without a gradient
        self.iteration += 1
        self.adam.step()
        for group in self.adam.param_groups:
            group["lr"] *= self.decay
        if self.model is not None:
            with torch.no_grad():
                quats = self.model.quats
                quats.data = quats.data / quats.data.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _static_reference(model: GaussianModel, cfg: MotionConfig) -> GaussianModel:
    """The static model of the consistency and refinement terms: ``model`` itself, frozen, or in a joint
    fine-tune (where ``model`` trains) a frozen copy of it as it starts."""
    if cfg.train_canonical:
        return model.detach()
    model.requires_grad_(False)
    return model


def _apply_mirror_prior(
    model: GaussianModel, front: Cameras, field_: DeformationField, cfg: MotionConfig
) -> MirrorPlane | None:
    """Find the canonical shape's mirror plane and, when the input camera looks across it, have the field set
    the depth of the motion from it (``field_.depth_lift``). Returns the plane found (None: prior off or none)."""
    if not cfg.mirror_prior:
        return None
    # The plane is a property of the canonical shape; the field keeps it (and the input camera's eye) so
    # every later use (asset, mesh, eval) sets the depth of the motion the same way.
    rotation = front.viewmats[0, :3, :3].detach().cpu()
    # OpenCV cameras: y points down, so the world's up is minus the camera's second axis.
    plane = find_mirror_plane(model.means, -rotation[1], cfg.mirror_tolerance, cfg.mirror_min_inliers)
    # Seen almost edge-on (a face from the front), the plane says nothing about depth that the video does
    # not already show, and dividing by the small angle would only amplify noise: leave the depth alone.
    axis_cos = 0.0 if plane is None else abs(float(rotation[2] @ torch.tensor(plane.normal)))
    if plane is not None and axis_cos >= cfg.mirror_min_cos:
        field_.depth_lift = {"normal": list(plane.normal), "eye": front.centers()[0].tolist(),
                             "softness": cfg.mirror_softness}  # fmt: skip
    return plane


def train_motion(
    canonical: GaussianModel,
    frames_rgba: Tensor,
    front: Cameras,
    cfg: MotionConfig,
    perceptual: Perceptual | None = None,
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
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    start = time.perf_counter()

    # Set-up: the model and its static reference, the field, the view pool, the optimiser and the loss terms.
    model = canonical.to(device)
    grad_flags = [p.requires_grad for p in model.parameters()]  # the caller's, given back at the end
    reference = _static_reference(model, cfg)
    if field_ is None:
        field_ = build_field(cfg, num_frames, seed=seed)
        if field_.part_motion is not None:
            field_.part_motion.place(model.means)
    field_ = field_.to(device)
    if radius is None:
        radius = float(front.centers()[0].norm())
    pool = ViewPool(front, cfg.view_pool, cfg, radius, generator)
    optimizer = MotionOptimizer(field_, model, cfg, total)
    alignment = FrontAlignment(frames_rgba, front, cfg, perceptual, device)
    consistency = None
    if cfg.first_frame_consistency and cfg.consistency_weight > 0 and cfg.consistency_views > 0:
        consistency = FirstFrameConsistency(pool, reference, cfg, device)
    refinement = None
    if guidance is not None and cfg.guidance_weight > 0 and cfg.guidance_views > 0:
        refinement = ReferenceRefinement(guidance, pool, reference, cfg, device)
    rigidity = LocalRigidity.wanted(model, cfg)
    # The tracks reach across swings the photometric terms cannot, but drift where the flow is wrong: their
    # weight falls linearly to 0, so the photometric terms have the last word.
    tracks = None
    if cfg.track_weight > 0:
        tracks = TrackLoss.from_video(frames_rgba, model.means, model.opacities, reference.render, front,
                                      cfg.track_size, cfg.track_weight, cfg.track_method,
                                      cfg.track_mode == "step").to(device)  # fmt: skip
    mirror_plane = _apply_mirror_prior(model, front, field_, cfg)

    def before(points: Tensor, frames: list[int]) -> Tensor:  # the stepwise tracks' positions at earlier frames
        times = torch.tensor([float(frame_time(f, num_frames)) for f in frames], device=device)
        return points + field_(points, times).d_means

    # Where the plane is found but seen edge-on (a subject facing the camera), the anchor holds the depth along the
    # input rays near rest. Not where no plane is found: on khr_cesiumman without its plane the anchor and the
    # curriculum it brings lost the limbs' depth (LPIPS 0.085 -> 0.119).
    anchor = None
    if mirror_plane is not None and field_.depth_lift is None and cfg.depth_anchor_weight > 0:
        anchor = DepthAnchor(model, front.centers()[0], cfg.depth_anchor_weight)
    # Holding a frame's motion for the next also holds its depth along the input rays, which the video cannot
    # correct; with nothing setting that depth it accumulates frame after frame (khr_cesiumman: 22.10 dB without
    # the curriculum, 21.46 with). So the curriculum runs only where the prior sets the depth or the anchor holds it.
    depth_held = field_.depth_lift is not None or anchor is not None
    curriculum = cfg.frame_curriculum if depth_held or not cfg.curriculum_needs_prior else 0.0
    both_ends = cfg.frame_curriculum_ends == "both" or (
        cfg.frame_curriculum_ends == "auto" and returns_to_start(frames_rgba, cfg.cycle_ratio)
    )
    sampler = MotionSampler(
        cfg, num_frames, total, curriculum, pool, generator, consistency is not None, refinement is not None,
        both_ends,
    )  # fmt: skip
    timings = {"setup_s": time.perf_counter() - start}
    loop_start = time.perf_counter()
    render_s = field_s = 0.0
    history: list[dict[str, float]] = []

    for it in range(total):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"4D motion training cancelled at iteration {it}")
        size = resolution_at(cfg, it, total)
        lam = lambda_at(cfg, it, total)
        alignment.targets(size)  # made once per resolution, outside the timed part
        sampler.grow(it, field_)  # the frame curriculum
        batch = sampler.draw(it)

        t0 = time.perf_counter()
        deformed = DeformedBatch.of(field_, model, batch.times, device)
        field_s += time.perf_counter() - t0

        t0 = time.perf_counter()
        loss, record = alignment.loss(model, deformed, batch, size, lam, generator)
        if consistency is not None:
            term, figures = consistency.loss(model, deformed, batch, size, generator)
            loss = loss + term
            record.update(figures)
        if refinement is not None and batch.guidance_views is not None:  # every ``guidance_every`` iterations
            term, figures = refinement.loss(model, deformed, batch, size)
            loss = loss + term
            record.update(figures)
        if rigidity is not None:
            term, figures = rigidity.loss(deformed, batch)
            loss = loss + term
            record.update(figures)
        if anchor is not None:
            term, figures = anchor.loss(model, deformed, batch)
            loss = loss + term
            record.update(figures)
        if tracks is not None:
            term, figures = tracks.loss(deformed.means[: batch.n_front], batch.frames, 1.0 - it / total, before)
            loss = loss + term
            record.update(figures)
        reg = plane_regularisers(field_, cfg)
        loss = loss + reg
        optimizer.step(loss)
        render_s += time.perf_counter() - t0

        record = {
            "iteration": it,
            "resolution": size,
            "lambda": lam,
            "loss": float(loss.detach()),
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
        guidance_used=refinement is not None,
        mirror_plane=mirror_plane,
        frame_curriculum=curriculum,
        curriculum_both_ends=sampler.both_ends,
    )
