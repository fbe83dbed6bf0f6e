"""Frame-to-3D: static Gaussians from the mesh and frame 1 (paper section 3.3, eq. 5-9, Algorithm 1).

Each iteration renders the front view and ``batch_views`` random views. Texture alignment compares the front
view with frame 1; GS-mesh contrastive learning compares each random view with the mesh rendered from the same
camera. Both use lambda_t * MSE + lambda_t * mask MSE + gamma * LPIPS with lambda_t decaying linearly. Mesh
renders are made once per camera and resolution (the mesh never changes) from a fixed pool of random cameras.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from pla4d.cameras import Cameras, intrinsics, look_at_w2c, orbit_position
from pla4d.config import StaticConfig
from pla4d.errors import Cancelled
from pla4d.gaussians.init import gaussians_from_mesh
from pla4d.gaussians.model import GaussianModel
from pla4d.render.mesh import Mesh, render_mesh
from pla4d.stages.densify import GradientStats, densify_and_prune

PARAM_NAMES = ("means", "quats", "log_scales", "opacity_logits", "sh0")


@dataclass
class StaticResult:
    model: GaussianModel
    history: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def linear_schedule(start: float, end: float, iteration: int, total: int) -> float:
    """Linear from ``start`` at the first of ``total`` iterations to ``end`` at the last."""
    frac = iteration / max(total - 1, 1)
    return start + (end - start) * frac


def resolution_schedule(resolutions: tuple[int, ...], steps: tuple[float, ...], iteration: int, total: int) -> int:
    """``resolutions[k]`` from the fraction ``steps[k - 1]`` of training on (``resolutions[0]`` before)."""
    frac = iteration / max(total, 1)
    level = sum(frac >= step for step in steps)
    return resolutions[min(level, len(resolutions) - 1)]


def lambda_at(cfg: StaticConfig, iteration: int) -> float:
    """lambda_t: linear from lambda_start at the first iteration to lambda_end at the last."""
    return linear_schedule(cfg.lambda_start, cfg.lambda_end, iteration, cfg.iterations)


def resolution_at(cfg: StaticConfig, iteration: int, scale: float = 1.0) -> int:
    """The training resolution at ``iteration`` (128 -> 256 at 50% -> 512 at 70% in the paper)."""
    size = resolution_schedule(cfg.resolutions, cfg.resolution_steps, iteration, cfg.iterations)
    return max(16, round(size * scale))


def sample_orbit_views(
    front: Cameras,
    size: int,
    elevation_range_deg: tuple[float, float],
    focal_jitter: float,
    radius: float,
    generator: torch.Generator,
) -> tuple[Cameras, list[float], list[float]]:
    """``size`` random cameras on the front camera's orbit, each with a slightly perturbed focal length, and
    their azimuths and elevations in degrees."""
    if size == 0:
        return front[0:0], [], []
    base_focal = float(front.Ks[0, 0, 0])
    lo, hi = elevation_range_deg
    # Uniform on the sphere's band, so high elevations are not over-sampled.
    s_lo, s_hi = math.sin(math.radians(lo)), math.sin(math.radians(hi))
    viewmats, Ks, azimuths, elevations = [], [], [], []
    for _ in range(size):
        az = float(torch.rand((), generator=generator)) * 360.0
        el = math.degrees(math.asin(s_lo + (s_hi - s_lo) * float(torch.rand((), generator=generator))))
        jitter = 1.0 + focal_jitter * (2.0 * float(torch.rand((), generator=generator)) - 1.0)
        viewmats.append(look_at_w2c(orbit_position(az, el, radius)))
        Ks.append(intrinsics(base_focal * jitter, front.width, front.height))
        azimuths.append(az)
        elevations.append(el)
    return Cameras(torch.stack(viewmats), torch.stack(Ks), front.width, front.height), azimuths, elevations


def random_view_pool(
    front: Cameras, size: int, cfg: StaticConfig, radius: float, generator: torch.Generator
) -> Cameras:
    """``size`` random cameras on the front camera's orbit (see :func:`sample_orbit_views`)."""
    return sample_orbit_views(front, size, cfg.elevation_range_deg, cfg.focal_jitter, radius, generator)[0]


def select_cameras(pool: Cameras, idx: Tensor, size: int) -> Cameras:
    """Cameras ``idx`` of ``pool``, scaled to ``size`` pixels."""
    return Cameras(pool.viewmats[idx], pool.Ks[idx], pool.width, pool.height).scaled(size / pool.width)


def frame_target(frame_rgba: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Frame (H, W, 4) straight alpha -> (premultiplied rgb, alpha) at ``size`` x ``size``."""
    premult = torch.cat([frame_rgba[..., :3] * frame_rgba[..., 3:], frame_rgba[..., 3:]], dim=-1)
    x = premult.permute(2, 0, 1)[None]
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = x[0].permute(1, 2, 0).clamp(0.0, 1.0)
    return x[..., :3], x[..., 3:]


def pick_backgrounds(setting: str | tuple[float, ...], n: int, generator: torch.Generator) -> Tensor:
    """(n, 3) background colours: random per view, or the fixed colour."""
    if setting == "random":
        return torch.rand(n, 3, generator=generator)
    if isinstance(setting, str):
        raise ValueError(f"background must be 'random' or an (r, g, b) colour, got {setting!r}")
    return torch.tensor(setting, dtype=torch.float32).expand(n, 3)


class MeshRenderCache:
    """Mesh renders (premultiplied rgb, alpha) of the view pool, one batch per resolution, made on first use."""

    def __init__(self, mesh: Mesh, pool: Cameras) -> None:
        self.mesh = mesh
        self.pool = pool
        self._cache: dict[int, tuple[Tensor, Tensor]] = {}

    def get(self, size: int) -> tuple[Tensor, Tensor]:
        if size not in self._cache:
            cams = self.pool.scaled(size / self.pool.width)
            out = render_mesh(self.mesh, cams)
            self._cache[size] = (out.rgb, out.alpha)
        return self._cache[size]


def _view_losses(
    rgb: Tensor,
    alpha: Tensor,
    target_rgb: Tensor,
    target_alpha: Tensor,
    perceptual: Callable | None,
    perceptual_max_size: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-view MSE, mask MSE and perceptual distance: three (B,) tensors."""
    mse = ((rgb - target_rgb) ** 2).mean(dim=(1, 2, 3))
    mask = ((alpha - target_alpha) ** 2).mean(dim=(1, 2, 3))
    if perceptual is None:
        return mse, mask, torch.zeros_like(mse)
    x, y = rgb.permute(0, 3, 1, 2), target_rgb.permute(0, 3, 1, 2)
    if perceptual_max_size is not None and x.shape[-1] > perceptual_max_size:
        # LPIPS's cost grows faster than the pixel count on CPU; presets may cap its input size.
        factor = -(-x.shape[-1] // perceptual_max_size)
        x, y = F.avg_pool2d(x, factor), F.avg_pool2d(y, factor)
    return mse, mask, perceptual(x, y).reshape(-1)


def _optimizer(model: GaussianModel, cfg: StaticConfig) -> torch.optim.Adam:
    lrs = {
        "means": cfg.lr_means,
        "quats": cfg.lr_quats,
        "log_scales": cfg.lr_scales,
        "opacity_logits": cfg.lr_opacity,
        "sh0": cfg.lr_sh0,
    }
    groups = [{"params": [getattr(model, name)], "lr": lrs[name], "name": name} for name in PARAM_NAMES]
    return torch.optim.Adam(groups, eps=1e-15)


def train_static(
    mesh: Mesh,
    frame_rgba: Tensor,
    front: Cameras,
    cfg: StaticConfig,
    radius: float,
    perceptual: Callable[[Tensor, Tensor], Tensor] | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    on_iteration: Callable[[dict[str, float], GaussianModel], None] | None = None,
    model: GaussianModel | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> StaticResult:
    """Train static Gaussians (Algorithm 1). ``front`` is the matched front camera (focal alignment).

    ``perceptual(x, y)`` takes (B, 3, H, W) images in [0, 1] and returns (B,) distances; None skips it (only
    for tests and ablations: the presets use LPIPS). ``on_iteration(record, model)`` receives each iteration's
    log record and the model; ``should_cancel()`` is polled every iteration and raises
    :class:`pla4d.errors.Cancelled` when it answers True.
    """
    if cfg.iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {cfg.iterations}")
    if cfg.batch_views < 0:
        raise ValueError(f"batch_views must be >= 0, got {cfg.batch_views}")
    device = torch.device(device)
    timings: dict[str, float] = {}
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    start = time.perf_counter()
    if model is None:
        model = gaussians_from_mesh(mesh, n=cfg.num_gaussians, seed=seed)
    model = model.to(device)
    timings["init_s"] = time.perf_counter() - start

    top = max(cfg.resolutions)
    front_top = front.scaled(top / front.width)
    pool = random_view_pool(front_top, cfg.view_pool, cfg, radius, generator)
    mesh_cache = MeshRenderCache(mesh, pool)
    optimizer = _optimizer(model, cfg)
    means_lr_decay = cfg.lr_means_final_ratio ** (1.0 / max(cfg.iterations, 1))
    stats = GradientStats.zeros(model.num_gaussians, device)
    densify_start = int(cfg.densify_from * cfg.iterations)
    densify_stop = int(cfg.densify_until * cfg.iterations)
    history: list[dict[str, float]] = []
    frame_targets: dict[int, tuple[Tensor, Tensor]] = {}
    mesh_seconds = 0.0
    loop_start = time.perf_counter()

    for it in range(cfg.iterations):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"static 3D training cancelled at iteration {it}")
        size = resolution_at(cfg, it)
        lam = lambda_at(cfg, it)
        t0 = time.perf_counter()
        if size not in frame_targets:
            frame_targets[size] = frame_target(frame_rgba, size)
        target_rgb, target_alpha = frame_targets[size]
        targets_rgb, targets_alpha = [target_rgb[None]], [target_alpha[None]]
        cams = [front.scaled(size / front.width)]
        if cfg.batch_views > 0 and len(pool) > 0:
            pool_rgb, pool_alpha = mesh_cache.get(size)
            idx = torch.randperm(len(pool), generator=generator)[: cfg.batch_views]
            cams.append(select_cameras(pool, idx, size))
            targets_rgb.append(pool_rgb[idx])
            targets_alpha.append(pool_alpha[idx])
        mesh_seconds += time.perf_counter() - t0
        batch = Cameras.cat(cams).to(device)
        bg = pick_backgrounds(cfg.background, len(batch), generator)
        target_alpha_b = torch.cat(targets_alpha)
        target_rgb_b = torch.cat(targets_rgb) + (1.0 - target_alpha_b) * bg[:, None, None, :]
        target_rgb_b, target_alpha_b = target_rgb_b.to(device), target_alpha_b.to(device)

        out = model.render(batch, background=bg.to(device))
        means2d = out.info.get("means2d")
        if means2d is not None and means2d.requires_grad:
            means2d.retain_grad()
        mse, mask, lp = _view_losses(
            out.rgb, out.alpha, target_rgb_b, target_alpha_b, perceptual, cfg.perceptual_max_size
        )
        per_view = lam * mse + lam * mask + cfg.perceptual_weight * lp
        loss_ta = per_view[0]
        loss_ga = per_view[1:].sum() * cfg.geometry_weight
        loss = loss_ta + loss_ga
        optimizer.zero_grad(set_to_none=True)
        loss.backward()

        if densify_start <= it < densify_stop and means2d is not None and means2d.grad is not None:
            stats.accumulate(means2d, out.info["radii"], batch.width, batch.height)
        optimizer.step()
        for group in optimizer.param_groups:
            if group["name"] == "means":
                group["lr"] *= means_lr_decay
        with torch.no_grad():
            model.quats.data = model.quats.data / model.quats.data.norm(dim=1, keepdim=True).clamp_min(1e-12)

        mse, mask, lp = mse.detach(), mask.detach(), lp.detach()
        record = {
            "iteration": it,
            "resolution": size,
            "lambda": lam,
            "loss": float(loss.detach()),
            "texture_mse": float(mse[0]),
            "texture_mask": float(mask[0]),
            "texture_lpips": float(lp[0]),
            "geometry_mse": float(mse[1:].mean()) if len(mse) > 1 else 0.0,
            "geometry_mask": float(mask[1:].mean()) if len(mask) > 1 else 0.0,
            "geometry_lpips": float(lp[1:].mean()) if len(lp) > 1 else 0.0,
            "gaussians": model.num_gaussians,
            "seconds": time.perf_counter() - loop_start,
        }
        if (
            densify_start < it < densify_stop
            and cfg.densify_every > 0
            and (it - densify_start) % cfg.densify_every == 0
        ):
            result = densify_and_prune(
                model,
                optimizer,
                stats,
                cfg.densify_grad_threshold,
                cfg.densify_size_threshold,
                cfg.prune_opacity,
                cfg.max_gaussians,
                generator=None,
            )
            record.update(cloned=result.cloned, split=result.split, pruned=result.pruned)
            stats = GradientStats.zeros(model.num_gaussians, device)
        history.append(record)
        if on_iteration is not None:
            on_iteration(record, model)

    timings["train_s"] = time.perf_counter() - loop_start
    timings["mesh_render_s"] = mesh_seconds
    return StaticResult(model=model, history=history, timings=timings)
