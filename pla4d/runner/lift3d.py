"""The focal and static stages (paper section 3.3): frame 1 + its mesh -> the matched front camera -> static
Gaussians. Folders: ``focal/camera.json``; ``static/canonical.ply`` (standard 3DGS PLY), ``preview.png``,
``losses.jsonl`` (one record per iteration, flushed as it goes) and ``static.json``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pla4d.cameras import FrontCamera, front_camera, orbit_cameras
from pla4d.gaussians.model import GaussianModel
from pla4d.media import contact_sheet, save_png
from pla4d.progress import Progress
from pla4d.render.mesh import Mesh, render_mesh
from pla4d.runfolder import JsonLines, write_json
from pla4d.runner.core import RunContext, Stage

PREVIEW_EVERY_S = 3.0
PREVIEW_POINTS = 4096


def match_front(mesh: Mesh, frame: Tensor, ctx: RunContext) -> FrontCamera:
    """Focal alignment (eq. 4), or the initial fov when it is switched off."""
    from pla4d.stages.focal import align_focal

    cfg = ctx.preset.focal
    size = frame.shape[0]
    if not cfg.enabled:
        cams = front_camera(cfg.radius, cfg.init_fov_deg, size, size)
        return FrontCamera.from_cameras(cams, cfg.radius, fov_deg=cfg.init_fov_deg, enabled=False)
    return front_from_match(align_focal(mesh, frame, radius=cfg.radius, init_fov_deg=cfg.init_fov_deg), cfg.radius)


def front_from_match(match: Any, radius: float) -> FrontCamera:
    """A focal search's result (:class:`pla4d.stages.focal.FocalMatch`) as the run's front camera."""
    return FrontCamera.from_cameras(
        match.cameras, radius, focal_px=match.focal_px, fov_deg=match.fov_deg, mse=match.mse, mask_iou=match.iou,
        search=[[float(f), float(e)] for f, e in match.curve],
    )  # fmt: skip


def _focal_run(ctx: RunContext, folder: Path) -> dict[str, Any]:
    # The mesh stage may have matched the focal already while choosing the mesh's turn (the same search on the
    # same mesh and frame): it is reused, so focal alignment runs once per run.
    front = ctx.get("front") if ctx.has("front") else match_front(ctx.get("mesh"), ctx.get("frame0"), ctx)
    write_json(folder / "camera.json", front.to_json())
    ctx.put("front", front)
    return {"focal_px": front.focal_px}


def _focal_load(ctx: RunContext, folder: Path) -> None:
    ctx.lazy("front", lambda: FrontCamera.from_json(json.loads((folder / "camera.json").read_text())))


FOCAL = Stage(
    name="focal",
    needs=("frame0", "mesh"),
    makes=("front",),
    settings=lambda ctx: asdict(ctx.preset.focal),
    run=_focal_run,
    load=_focal_load,
)


def preview_points(model: GaussianModel, count: int = PREVIEW_POINTS) -> dict[str, Any]:
    """A subsample of the Gaussians (positions, display colours, opacities) as float32 numpy arrays."""
    with torch.no_grad():
        n = model.num_gaussians
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:count] if n > count else torch.arange(n)
        idx = idx.to(model.means.device)
        return {
            "positions": model.means[idx].detach().float().cpu().numpy(),
            "colors": model.rgb[idx].detach().clamp(0, 1).float().cpu().numpy(),
            "opacities": model.opacities[idx].detach().float().cpu().numpy(),
        }


def preview_image(
    model: GaussianModel, front: FrontCamera, frame_rgba: Tensor, mesh: Mesh, views: int = 8, size: int = 192
) -> np.ndarray:
    """Row 1: frame | Gaussians | mesh from the matched front camera. Row 2: an orbit of the Gaussians."""
    white = torch.ones(3)
    cams = front.cameras()
    cams = cams.scaled(size / cams.width)
    device = model.means.device
    with torch.no_grad():
        ours = model.render(cams.to(device), background=white.to(device))
    mesh_front = render_mesh(mesh, cams, background=white)
    frame = torch.nn.functional.interpolate(
        frame_rgba.permute(2, 0, 1)[None], size=(size, size), mode="bilinear", antialias=True
    )[0].permute(1, 2, 0)
    frame_rgb = frame[..., :3] * frame[..., 3:] + (1 - frame[..., 3:])
    orbit = orbit_cameras([i * 360.0 / views for i in range(views)], 15.0, front.radius, front.fov_deg, size)
    with torch.no_grad():
        ring = model.render(orbit.to(device), background=white.to(device))
    rows = [
        [frame_rgb.numpy(), ours.rgb[0].cpu().numpy(), mesh_front.rgb[0].numpy()],
        [img.cpu().numpy() for img in ring.rgb],
    ]
    return contact_sheet(rows)


def _static_run(ctx: RunContext, folder: Path) -> dict[str, Any]:
    from pla4d.gaussians.ply import save_ply
    from pla4d.losses.perceptual import make_perceptual
    from pla4d.stages.static3d import train_static

    cfg = ctx.preset.static
    frame, mesh, front = ctx.get("frame0"), ctx.get("mesh"), ctx.get("front")
    perceptual, perceptual_name = make_perceptual(cfg.perceptual_weight, cfg.perceptual_net, ctx.device)
    total = cfg.iterations
    progress = Progress("static 3D", total) if ctx.show_progress else None
    began = time.perf_counter()
    last_preview = [-PREVIEW_EVERY_S]

    def on_iteration(record: dict[str, float], model: GaussianModel) -> None:
        log.write(record)
        if progress is not None:
            progress.update(note=f"loss {record['loss']:.4f} res {record['resolution']} n {record['gaussians']}")
        if ctx.on_event is None:
            return
        elapsed = time.perf_counter() - began
        done = record["iteration"] + 1
        losses = {k: v for k, v in record.items() if k not in ("iteration", "resolution", "seconds")}
        ctx.emit({"type": "progress", "stage": "static", "iteration": done, "total": total, "losses": losses,
                  "eta_s": elapsed / done * (total - done)})  # fmt: skip
        if elapsed - last_preview[0] >= PREVIEW_EVERY_S or done == total:
            last_preview[0] = elapsed
            ctx.emit({"type": "preview", "stage": "static", "iteration": done, "points": preview_points(model)})

    with JsonLines(folder / "losses.jsonl") as log:
        result = train_static(
            mesh, frame, front.cameras(), cfg, front.radius, perceptual, seed=ctx.seed, device=ctx.device,
            on_iteration=on_iteration, should_cancel=ctx.should_cancel,
        )  # fmt: skip
    save_ply(result.model, folder / "canonical.ply")
    save_png(folder / "preview.png", preview_image(result.model, front, frame, mesh))
    last = result.history[-1]
    write_json(folder / "static.json", {"gaussians": result.model.num_gaussians, "final_loss": last["loss"],
                                        "perceptual": perceptual_name, "timings": result.timings})  # fmt: skip
    ctx.put("canonical", result.model)
    return {"gaussians": result.model.num_gaussians}


def _static_load(ctx: RunContext, folder: Path) -> None:
    from pla4d.gaussians.ply import load_ply

    ctx.lazy("canonical", lambda: load_ply(folder / "canonical.ply").to(ctx.device))


STATIC = Stage(
    name="static",
    needs=("frame0", "mesh", "front"),
    makes=("canonical",),
    settings=lambda ctx: {"static": asdict(ctx.preset.static), "seed": ctx.seed},
    run=_static_run,
    load=_static_load,
)
