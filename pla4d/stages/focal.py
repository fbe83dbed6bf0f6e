"""Focal alignment (PLA4D section 3.3, eq. 4): find the focal length at which the mesh's front view matches frame 0.

The camera sits on +Z at a fixed distance (the project's convention: radius 3 around a unit-sphere object) and
only the focal length is searched: ``f' = argmin_f sum_{H,W} ||x_f - I||^2`` with ``x_f`` the mesh rendered at
focal ``f``.

What keeps the objective well behaved:

* both images are compared as premultiplied RGBA (colour times alpha, plus alpha as a fourth channel), so the
  arbitrary colour of fully transparent frame pixels never counts, and a dark object on a dark background still
  contributes through its silhouette;
* renders are anti-aliased (supersampled), so the silhouette area, and with it the MSE, changes continuously
  with ``f`` instead of in one-pixel steps; the curve is then a clean "V" around the match;
* the coarse stage compares box-filtered (area-averaged) images at low resolution, which widens the basin and
  makes a log-spaced grid over a wide range cheap; the fine stage is a golden-section search at full
  resolution inside the coarse grid's best bracket (the V is unimodal there).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pla4d.cameras import Cameras, focal_from_fov, fov_from_focal, look_at_w2c, orbit_position
from pla4d.metrics import mask_iou
from pla4d.render.mesh import Mesh, render_mesh

__all__ = ["FocalMatch", "align_focal", "front_view_mse"]

_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class FocalMatch:
    """Result of :func:`align_focal`.

    ``focal_px``: matched focal in pixels of the frame (fx = fy); ``fov_deg``: the field of view it spans across
    the frame's width; ``cameras``: the matched front camera at the frame's resolution; ``mse``: premultiplied-RGBA
    MSE of the full-resolution render at ``focal_px``; ``iou``: mask IoU (alpha > 0.5) of that render with the
    frame's alpha; ``curve``: every (focal, mse) evaluated, sorted by focal, with ``curve_level`` telling which
    stage each came from ("coarse": low resolution, so not comparable with "fine" values);
    ``at_range_edge``: the best coarse focal was at an end of the searched range (widen ``fov_range_deg``).
    """

    focal_px: float
    fov_deg: float
    cameras: Cameras = field(repr=False)
    mse: float
    iou: float
    curve: tuple[tuple[float, float], ...] = field(repr=False)
    curve_level: tuple[str, ...] = field(repr=False)
    at_range_edge: bool
    seconds: float
    renders: int


def _front_camera(focal_px: float, width: int, height: int, radius: float, down: int = 1) -> Cameras:
    """Front camera at ``focal_px`` (full-resolution pixels), seen at 1/``down`` resolution.

    Low-resolution pixel ``j`` covers full-resolution pixels ``[j * down, (j + 1) * down)``, so ``K`` is divided by
    ``down`` exactly (principal point included) and the image is ``width // down`` wide: the frame's remainder
    columns/rows are dropped on both sides of the comparison alike.
    """
    K = torch.tensor(
        [[focal_px / down, 0.0, width / (2.0 * down)], [0.0, focal_px / down, height / (2.0 * down)], [0.0, 0.0, 1.0]],
        dtype=torch.float32,
    )
    viewmat = look_at_w2c(orbit_position(0.0, 0.0, radius))
    return Cameras(viewmat[None], K[None], width // down, height // down)


def _premultiplied(frame_rgba: Tensor) -> Tensor:
    alpha = frame_rgba[..., 3:4]
    return torch.cat([frame_rgba[..., :3] * alpha, alpha], dim=-1)


def _downsample(img: Tensor, down: int) -> Tensor:
    """(H, W, C) -> (H // down, W // down, C) box filter (drops the remainder rows/columns)."""
    if down == 1:
        return img
    return F.avg_pool2d(img.permute(2, 0, 1)[None], down)[0].permute(1, 2, 0).contiguous()


def _check_frame(frame_rgba: Tensor | np.ndarray) -> Tensor:
    frame = torch.as_tensor(frame_rgba)
    if frame.dtype == torch.uint8:
        frame = frame.float() / 255.0
    if not frame.is_floating_point():
        raise ValueError(f"frame_rgba must be float RGBA in [0, 1] (or uint8), got dtype {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 4:
        raise ValueError(f"frame_rgba must be (H, W, 4) straight-alpha RGBA, got shape {tuple(frame.shape)}")
    if frame.shape[0] < 8 or frame.shape[1] < 8:
        raise ValueError(f"frame is too small for focal alignment: {frame.shape[1]}x{frame.shape[0]}")
    frame = frame.detach().float().cpu()
    if not bool(torch.isfinite(frame).all()):
        raise ValueError("frame_rgba holds non-finite values")
    if float(frame.min()) < -1e-6 or float(frame.max()) > 1.0 + 1e-6:
        raise ValueError("frame_rgba values must lie in [0, 1]")
    if not bool((frame[..., 3] > 0.5).any()):
        raise ValueError("the frame's alpha is empty (no pixel with alpha > 0.5): nothing to align the focal to")
    return frame.clamp(0.0, 1.0)


def front_view_mse(
    mesh: Mesh,
    target_premult: Tensor,
    focal_px: float,
    width: int,
    height: int,
    radius: float = 3.0,
    down: int = 1,
    supersample: int = 3,
    alpha_weight: float = 1.0,
    backend: str = "auto",
) -> tuple[float, Tensor]:
    """MSE between the mesh's front view at ``focal_px`` and ``target_premult`` ((H/down, W/down, 4) premultiplied
    RGBA); also returns the render as premultiplied RGBA. ``alpha_weight`` scales the alpha channel's share."""
    cam = _front_camera(focal_px, width, height, radius, down).to(mesh.device)
    out = render_mesh(mesh, cam, supersample=supersample, backend=backend)
    rendered = torch.cat([out.rgb[0], out.alpha[0]], dim=-1).float().cpu()  # black background: premultiplied
    diff = (rendered - target_premult) ** 2
    mse = (diff[..., :3].sum(-1) + alpha_weight * diff[..., 3]).mean() / (3.0 + alpha_weight)
    return float(mse), rendered


def align_focal(
    mesh: Mesh,
    frame_rgba: Tensor | np.ndarray,
    radius: float = 3.0,
    init_fov_deg: float = 49.1,
    fov_range_deg: tuple[float, float] = (10.0, 90.0),
    coarse_size: int = 64,
    coarse_ratio: float = 1.04,
    rel_tol: float = 5e-4,
    supersample: int = 3,
    alpha_weight: float = 1.0,
    backend: str = "auto",
) -> FocalMatch:
    """Search the focal length at which ``mesh``'s front view best matches ``frame_rgba`` (paper eq. 4).

    ``frame_rgba``: (H, W, 4) straight-alpha RGBA in [0, 1] (sRGB), the first video frame. The camera is on +Z at
    ``radius`` looking at the origin, +Y up. Focals are searched over the fields of view ``fov_range_deg``
    (across the width; widened to contain ``init_fov_deg`` if needed) on a log-spaced grid anchored at
    ``init_fov_deg``'s focal with step ratio ``coarse_ratio``, rendered at about ``coarse_size`` pixels; then a
    golden-section search at full resolution narrows the best bracket to ``rel_tol`` (relative focal).
    Costs about 40 low-resolution and 20 full-resolution renders (well under a second for a few thousand faces
    at 256 px on a CPU). Raises ValueError for a frame that is not (H, W, 4), has an empty alpha, or for
    settings out of range.
    """
    start = time.perf_counter()
    if not isinstance(mesh, Mesh):
        raise ValueError(f"mesh must be a pla4d Mesh, got {type(mesh).__name__}")
    if mesh.num_faces == 0:
        raise ValueError("the mesh has no faces")
    frame = _check_frame(frame_rgba)
    if not radius > 0.0:
        raise ValueError(f"radius must be positive, got {radius}")
    lo_fov, hi_fov = (float(x) for x in fov_range_deg)
    if not 0.0 < lo_fov < hi_fov < 180.0:
        raise ValueError(f"fov_range_deg must satisfy 0 < low < high < 180, got {fov_range_deg}")
    if not 0.0 < init_fov_deg < 180.0:
        raise ValueError(f"init_fov_deg must lie in (0, 180), got {init_fov_deg}")
    if not coarse_ratio > 1.0:
        raise ValueError(f"coarse_ratio must be > 1, got {coarse_ratio}")
    if not 0.0 < rel_tol < 0.1:
        raise ValueError(f"rel_tol must lie in (0, 0.1), got {rel_tol}")
    if not alpha_weight >= 0.0:
        raise ValueError(f"alpha_weight must be >= 0, got {alpha_weight}")

    height, width = int(frame.shape[0]), int(frame.shape[1])
    target = _premultiplied(frame)
    lo_fov, hi_fov = min(lo_fov, init_fov_deg), max(hi_fov, init_fov_deg)
    f_init = focal_from_fov(init_fov_deg, width)
    f_min, f_max = focal_from_fov(hi_fov, width), focal_from_fov(lo_fov, width)
    log_step = math.log(coarse_ratio)
    k_lo = -math.floor(math.log(f_init / f_min) / log_step + 1e-9)
    k_hi = math.floor(math.log(f_max / f_init) / log_step + 1e-9)
    grid = [f_init * coarse_ratio**k for k in range(k_lo, k_hi + 1)]

    def mse_at(focal: float, down: int, tgt: Tensor) -> float:
        return front_view_mse(mesh, tgt, focal, width, height, radius, down, supersample, alpha_weight, backend)[0]

    # Coarse: the whole grid at low resolution (area-averaged frame; renders supersampled to match the box filter).
    down = max(1, round(max(width, height) / coarse_size)) if coarse_size > 0 else 1
    down = min(down, max(1, min(width, height) // 8))
    coarse_target = _downsample(target, down)
    coarse = [mse_at(f, down, coarse_target) for f in grid]
    best = int(np.argmin(coarse))
    at_edge = best in (0, len(grid) - 1) and len(grid) > 1
    lo = grid[max(best - 1, 0)]
    hi = grid[min(best + 1, len(grid) - 1)]

    # Fine: golden section on log focal at full resolution within the best coarse bracket.
    fine: dict[float, float] = {}

    def fine_at(log_f: float) -> float:
        focal = math.exp(log_f)
        if focal not in fine:
            fine[focal] = mse_at(focal, 1, target)
        return fine[focal]

    a, b = math.log(lo), math.log(hi)
    c, d = b - _INV_PHI * (b - a), a + _INV_PHI * (b - a)
    fc, fd = fine_at(c), fine_at(d)
    while b - a > rel_tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _INV_PHI * (b - a)
            fc = fine_at(c)
        else:
            a, c, fc = c, d, fd
            d = a + _INV_PHI * (b - a)
            fd = fine_at(d)
    fine_at(a)
    fine_at(b)
    focal = min(fine, key=fine.__getitem__)
    mse, rendered = front_view_mse(mesh, target, focal, width, height, radius, 1, supersample, alpha_weight, backend)
    iou = mask_iou(rendered[..., 3], frame[..., 3])

    points = sorted(
        [(f, m, "coarse") for f, m in zip(grid, coarse, strict=True)] + [(f, m, "fine") for f, m in fine.items()]
    )
    return FocalMatch(
        focal_px=focal,
        fov_deg=fov_from_focal(focal, width),
        cameras=_front_camera(focal, width, height, radius),
        mse=mse,
        iou=iou,
        curve=tuple((f, m) for f, m, _ in points),
        curve_level=tuple(level for _, _, level in points),
        at_range_edge=at_edge,
        seconds=time.perf_counter() - start,
        renders=len(grid) + len(fine) + 1,
    )
