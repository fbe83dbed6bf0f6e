"""``pla4d lift``: frame 1 + its mesh -> static Gaussians in a run folder (focal alignment, then training).

Run folder contents: ``config.json`` (every number used), ``inputs.json``, ``camera.json`` (the matched front
camera and the focal search), ``losses.jsonl`` (one record per iteration, flushed as it goes),
``canonical.ply`` (standard 3DGS layout), ``preview.png`` (frame | ours | mesh, then an orbit),
``timings.json`` and ``summary.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pla4d.cameras import Cameras, front_camera, orbit_cameras
from pla4d.config import PresetConfig
from pla4d.gaussians.model import GaussianModel
from pla4d.gaussians.ply import save_ply
from pla4d.media import contact_sheet, load_png, save_png
from pla4d.progress import Progress
from pla4d.render.mesh import Mesh, load_mesh, render_mesh
from pla4d.runfolder import JsonLines, sha256_of, write_json
from pla4d.stages.focal import align_focal
from pla4d.stages.static3d import StaticResult, train_static


@dataclass
class LiftResult:
    model: GaussianModel
    front: Cameras
    focal: dict[str, Any]
    static: StaticResult
    timings: dict[str, float]


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but this PyTorch build sees no CUDA device")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def load_frame(path: str | Path) -> Tensor:
    """A frame as (S, S, 4) straight-alpha RGBA; non-square frames are padded (transparent) to square."""
    rgba = torch.from_numpy(load_png(path))
    alpha = rgba[..., 3]
    if float(alpha.min()) > 0.99:
        raise ValueError(
            f"{path} has no transparent background: the static stage needs the object matted "
            "(an RGBA image with alpha 0 around it)"
        )
    if float(alpha.max()) < 0.5:
        raise ValueError(f"{path} is (almost) fully transparent: no object to lift")
    h, w = alpha.shape
    if h != w:
        size = max(h, w)
        padded = torch.zeros(size, size, 4)
        top, left = (size - h) // 2, (size - w) // 2
        padded[top : top + h, left : left + w] = rgba
        rgba = padded
    return rgba


def make_perceptual(weight: float, net: str, device: torch.device) -> tuple[Any, str]:
    """A stage's LPIPS network (real weights), or (None, 'off') when its weight is 0."""
    if weight == 0:
        return None, "off"
    from pla4d.losses.perceptual import PerceptualLoss

    loss = PerceptualLoss(net=net).to(device)
    return loss, loss.name


EventSink = Callable[[dict[str, Any]], None]
PREVIEW_EVERY_S = 3.0
PREVIEW_POINTS = 4096


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


def lift(
    frame_rgba: Tensor,
    mesh: Mesh,
    preset: PresetConfig,
    seed: int = 0,
    device: torch.device | str = "cpu",
    losses_log: JsonLines | None = None,
    show_progress: bool = True,
    on_event: EventSink | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> LiftResult:
    """Focal alignment then static training; pure computation (no files written).

    ``on_event`` receives dicts: ``{"type": "stage_started"|"stage_finished", "stage": ...}``,
    ``{"type": "progress", "stage": "static3d", "iteration", "total", "losses", "eta_s"}`` every iteration and
    ``{"type": "preview", "stage": "static3d", "points": preview_points(...)}`` every few seconds.
    ``should_cancel()`` is polled between iterations; a True answer raises :class:`pla4d.errors.Cancelled`.
    """
    device = torch.device(device)
    timings: dict[str, float] = {}
    size = frame_rgba.shape[0]
    radius = preset.focal.radius
    emit = on_event or (lambda event: None)

    emit({"type": "stage_started", "stage": "focal"})
    start = time.perf_counter()
    if preset.focal.enabled:
        match = align_focal(mesh, frame_rgba, radius=radius, init_fov_deg=preset.focal.init_fov_deg)
        front = match.cameras
        focal = {
            "focal_px": match.focal_px,
            "fov_deg": match.fov_deg,
            "mse": match.mse,
            "mask_iou": match.iou,
            "search": [[float(f), float(e)] for f, e in match.curve],
        }
    else:
        front = front_camera(radius, preset.focal.init_fov_deg, size, size)
        focal = {"focal_px": float(front.Ks[0, 0, 0]), "fov_deg": preset.focal.init_fov_deg, "search": None}
    focal.update(radius=radius, width=size, height=size, enabled=preset.focal.enabled)
    timings["focal_s"] = time.perf_counter() - start
    emit({"type": "stage_finished", "stage": "focal", "seconds": timings["focal_s"], "focal_px": focal["focal_px"]})

    perceptual, perceptual_name = make_perceptual(preset.static.perceptual_weight, preset.static.perceptual_net, device)
    focal["perceptual"] = perceptual_name
    total = preset.static.iterations
    progress = Progress("static 3D", total) if show_progress else None
    train_start = time.perf_counter()
    last_preview = [-PREVIEW_EVERY_S]

    def on_iteration(record: dict[str, float], model: GaussianModel) -> None:
        if losses_log is not None:
            losses_log.write(record)
        if progress is not None:
            progress.update(note=f"loss {record['loss']:.4f} res {record['resolution']} n {record['gaussians']}")
        if on_event is None:
            return
        elapsed = time.perf_counter() - train_start
        done = record["iteration"] + 1
        losses = {k: v for k, v in record.items() if k not in ("iteration", "resolution", "seconds")}
        emit({"type": "progress", "stage": "static3d", "iteration": done, "total": total, "losses": losses,
              "eta_s": elapsed / done * (total - done)})  # fmt: skip
        if elapsed - last_preview[0] >= PREVIEW_EVERY_S or done == total:
            last_preview[0] = elapsed
            emit({"type": "preview", "stage": "static3d", "iteration": done, "points": preview_points(model)})

    emit({"type": "stage_started", "stage": "static3d"})
    result = train_static(
        mesh, frame_rgba, front, preset.static, radius, perceptual, seed=seed, device=device,
        on_iteration=on_iteration, should_cancel=should_cancel,
    )  # fmt: skip
    timings.update(result.timings)
    emit({"type": "stage_finished", "stage": "static3d", "seconds": result.timings["train_s"]})
    return LiftResult(model=result.model, front=front, focal=focal, static=result, timings=timings)


def preview_image(result: LiftResult, frame_rgba: Tensor, mesh: Mesh, views: int = 8, size: int = 192) -> np.ndarray:
    """Row 1: frame | Gaussians | mesh from the matched front camera. Row 2: an orbit of the Gaussians."""
    white = torch.ones(3)
    front = result.front.scaled(size / result.front.width)
    with torch.no_grad():
        ours = result.model.render(front.to(result.model.means.device), background=white.to(result.model.means.device))
    mesh_front = render_mesh(mesh, front, background=white)
    frame = torch.nn.functional.interpolate(
        frame_rgba.permute(2, 0, 1)[None], size=(size, size), mode="bilinear", antialias=True
    )[0].permute(1, 2, 0)
    frame_rgb = frame[..., :3] * frame[..., 3:] + (1 - frame[..., 3:])
    radius = result.focal["radius"]
    orbit = orbit_cameras([i * 360.0 / views for i in range(views)], 15.0, radius, result.focal["fov_deg"], size)
    with torch.no_grad():
        ring = result.model.render(orbit.to(result.model.means.device), background=white.to(result.model.means.device))
    rows = [
        [frame_rgb.numpy(), ours.rgb[0].cpu().numpy(), mesh_front.rgb[0].numpy()],
        [img.cpu().numpy() for img in ring.rgb],
    ]
    return contact_sheet(rows)


def run_lift(
    image: str | Path,
    mesh_path: str | Path,
    out: str | Path,
    preset: PresetConfig,
    seed: int = 0,
    device: str = "auto",
    on_event: EventSink | None = None,
    should_cancel: Callable[[], bool] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """The ``pla4d lift`` command: inputs -> run folder. Returns the summary written to summary.json.

    ``on_event`` and ``should_cancel`` as in :func:`lift` (the backend's workers use them)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    start = time.perf_counter()
    frame = load_frame(image)
    mesh = load_mesh(mesh_path)
    write_json(out / "config.json", {"preset": preset.to_dict(), "seed": seed, "device": str(dev)})
    write_json(
        out / "inputs.json",
        {
            "image": str(image),
            "image_sha256": sha256_of(image),
            "mesh": str(mesh_path),
            "mesh_sha256": sha256_of(mesh_path),
        },
    )
    with JsonLines(out / "losses.jsonl") as log:
        result = lift(
            frame, mesh, preset, seed=seed, device=dev, losses_log=log, show_progress=show_progress,
            on_event=on_event, should_cancel=should_cancel,
        )  # fmt: skip
    camera = dict(result.focal)
    camera.update(K=result.front.Ks[0].tolist(), w2c_opencv=result.front.viewmats[0].tolist())
    write_json(out / "camera.json", camera)
    save_ply(result.model, out / "canonical.ply")
    save_png(out / "preview.png", preview_image(result, frame, mesh))
    timings = dict(result.timings)
    timings["total_s"] = time.perf_counter() - start
    write_json(out / "timings.json", timings)
    last = result.static.history[-1]
    summary = {
        "run": str(out),
        "preset": preset.name,
        "gaussians": result.model.num_gaussians,
        "focal_px": result.focal["focal_px"],
        "fov_deg": result.focal["fov_deg"],
        "final_loss": last["loss"],
        "perceptual": result.focal["perceptual"],
        "seconds": round(timings["total_s"], 2),
        "files": ["canonical.ply", "camera.json", "preview.png", "losses.jsonl", "config.json", "timings.json"],
    }
    write_json(out / "summary.json", summary)
    return summary
