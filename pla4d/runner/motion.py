"""The motion, asset and exports stages (paper section 3.4): the deformation field trained on the frames, the 4D
asset sampled from it (docs/asset-format.md) and the exports (animated-mesh GLB, preview MP4, contact sheet).
Folders: ``motion/`` (``field.pt`` state dict + ``field.json``), ``asset/``, ``exports/``."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pla4d.config import MotionConfig, PresetConfig
from pla4d.deform.hexplane import DeformationField, frame_time
from pla4d.progress import Progress
from pla4d.runfolder import write_json
from pla4d.runner.core import RunContext, Stage

if TYPE_CHECKING:
    from pla4d.asset.format import Asset4D
    from pla4d.stages.motion4d import MotionResult


def make_guidance(preset: PresetConfig, device: torch.device, total_iterations: int) -> tuple[Any, str]:
    """Zero123 reference refinement as ``train_motion`` expects it, or (None, why it is off)."""
    model_id = preset.motion.guidance_model
    if not model_id or preset.motion.guidance_weight == 0:
        return None, "reference refinement off in this preset"
    from pla4d.guidance.zero123 import load_zero123_or_none

    guidance, message = load_zero123_or_none(model_id, device)
    if guidance is None:
        return None, message
    calls = [0]

    def refine(rendered: torch.Tensor, reference: torch.Tensor, info: dict[str, Any]) -> torch.Tensor:
        calls[0] += 1
        n = rendered.shape[0]
        zeros = torch.zeros(n)
        return guidance.loss(
            rendered,
            reference,
            delta_elevation_deg=torch.as_tensor(info["elevation_deg"], dtype=torch.float32).reshape(-1).expand(n),
            delta_azimuth_deg=torch.as_tensor(info["azimuth_deg"], dtype=torch.float32).reshape(-1).expand(n),
            delta_radius=zeros,
            step_ratio=min(calls[0] / max(total_iterations, 1), 1.0),
        )

    return refine, f"reference refinement on ({model_id})"


def _motion_run(ctx: RunContext, folder: Path) -> dict[str, Any]:
    from pla4d.losses.perceptual import make_perceptual
    from pla4d.stages.motion4d import train_motion

    cfg = ctx.preset.motion
    frames, front, canonical = ctx.get("frames"), ctx.get("front"), ctx.get("canonical")
    cams = front.cameras()
    size = frames.shape[1]
    if cams.width != size:
        cams = cams.scaled(size / cams.width)
    perceptual, _ = make_perceptual(cfg.perceptual_weight, cfg.perceptual_net, ctx.device)
    total = cfg.total_iterations(frames.shape[0])
    guidance, note = make_guidance(ctx.preset, ctx.device, total)
    if guidance is None:
        print(f"pla4d: {note}", file=sys.stderr, flush=True)
    progress = Progress("motion 4D", total) if ctx.show_progress else None
    began = time.perf_counter()

    def on_iteration(record: dict[str, float], field: DeformationField) -> None:
        done = int(record.get("iteration", 0)) + 1
        if progress is not None:
            progress.update(note=f"loss {record.get('loss', float('nan')):.4f}")
        elapsed = time.perf_counter() - began
        ctx.emit({"type": "progress", "stage": "motion", "iteration": done, "total": total,
                  "losses": {k: v for k, v in record.items() if isinstance(v, float)},
                  "eta_s": elapsed / done * max(total - done, 0)})  # fmt: skip

    result = train_motion(
        canonical, frames, cams, cfg, perceptual, radius=front.radius,
        seed=ctx.seed, device=ctx.device, on_iteration=on_iteration, should_cancel=ctx.should_cancel,
        guidance=guidance,
    )  # fmt: skip
    depth = depth_prior_note(cfg, result)
    torch.save(result.field.state_dict(), folder / "field.pt")
    write_json(folder / "field.json", {"config": result.field.config(), "guidance": note, "depth_prior": depth})
    ctx.put("field", result.field)
    ctx.put("motion_notes", {"guidance": note, "depth_prior": depth})
    return {"guidance": note}


def _motion_load(ctx: RunContext, folder: Path) -> None:
    ctx.lazy("field", lambda: load_field(folder, ctx.device))

    def notes() -> dict[str, str]:
        meta = json.loads((folder / "field.json").read_text())
        return {"guidance": meta.get("guidance", ""), "depth_prior": meta.get("depth_prior", "")}

    ctx.lazy("motion_notes", notes)


def depth_prior_note(cfg: MotionConfig, result: MotionResult) -> str:
    """One line on how the depth of the motion was set (the mirror-plane prior, pla4d/deform/mirror.py) and, as
    the curriculum depends on it, in which order the frames were trained."""
    plane = result.mirror_plane
    if not cfg.mirror_prior:
        depth = "mirror-plane prior off: the depth of the motion is left to the video alone"
    elif plane is None:
        depth = (f"no mirror plane (fewer than {cfg.mirror_min_inliers:.0%} of the Gaussians reflect onto the "
                 "object): the depth of the motion is left to the video alone")  # fmt: skip
    else:
        n = ", ".join(f"{x:.2f}" for x in plane.normal)
        depth = f"mirror plane with normal ({n}), {plane.inlier_fraction:.0%} of the Gaussians reflect onto the object"
        if result.field.depth_lift is None:
            # Seen edge-on, the depth anchor (when on) holds the depth near rest.
            free = "held near rest (depth anchor)" if cfg.depth_anchor_weight > 0 else "left to the video alone"
            depth += f"; the input camera looks along it, so the depth of the motion is {free}"
        else:
            depth += ": the motion's depth is set parallel to it"
    if cfg.frame_curriculum <= 0:
        return depth
    if result.frame_curriculum > 0 and result.curriculum_both_ends:
        return (
            f"{depth}; frames trained from the first and the last towards the middle (frame curriculum; the clip "
            "returns to its first pose)"
        )
    if result.frame_curriculum > 0:
        return f"{depth}; frames trained first to last (frame curriculum)"
    return f"{depth}; frames trained in random order (the frame curriculum needs the depth prior or the depth anchor)"


def load_field(folder: Path, device: torch.device | str = "cpu") -> DeformationField:
    """The deformation field a run saved in ``folder`` (``field.json`` + ``field.pt``: a run's ``motion/``)."""
    meta = json.loads((folder / "field.json").read_text())
    field = DeformationField(**meta["config"])
    field.load_state_dict(torch.load(folder / "field.pt", map_location="cpu", weights_only=True))
    return field.to(device)


def _training_settings(cfg: MotionConfig) -> dict[str, Any]:
    """The motion settings the field depends on: how many frames the asset samples from it does not."""
    return {k: v for k, v in asdict(cfg).items() if k != "export_frame_factor"}


MOTION = Stage(
    name="motion",
    needs=("canonical", "front", "frames"),
    makes=("field",),
    settings=lambda ctx: {"motion": _training_settings(ctx.preset.motion), "seed": ctx.seed},
    run=_motion_run,
    load=_motion_load,
)


@torch.no_grad()
def build_asset(
    canonical: Any, field: DeformationField, mesh: Any, num_frames: int, time_multiplier: int, fps: float
) -> Asset4D:
    """Sample the field at every output frame: Gaussians (storage convention) and the mesh's vertices.

    With ``time_multiplier`` k the asset carries (num_frames - 1) * k + 1 frames (the field is continuous in t).
    """
    from pla4d.asset.format import AnimatedMesh, Asset4D

    count = (num_frames - 1) * time_multiplier + 1
    field = field.eval()
    positions, rotations, scales, opacities, mesh_positions = [], [], [], [], []
    verts = mesh.vertices.to(canonical.means.device)
    for i in range(count):
        t = frame_time(i, count)
        means, quats, sc, op = field.deform(canonical, t)
        positions.append(means.cpu().numpy())
        rotations.append(quats.cpu().numpy())
        scales.append(torch.log(sc).cpu().numpy())
        opacities.append(torch.logit(op.clamp(1e-6, 1 - 1e-6)).cpu().numpy())
        mesh_positions.append(field.deform_points(verts, t).cpu().numpy())
    colors = None if mesh.vertex_colors is None else mesh.vertex_colors.cpu().numpy()
    animated = AnimatedMesh(
        faces=mesh.faces.cpu().numpy().astype(np.uint32),
        positions=np.stack(mesh_positions).astype(np.float32),
        vertex_colors=colors,
    )
    return Asset4D(
        canonical=canonical.detach().cpu() if hasattr(canonical, "detach") else canonical,
        positions=np.stack(positions).astype(np.float32),
        rotations=np.stack(rotations).astype(np.float32) if field.deform_rotations else None,
        scales=np.stack(scales).astype(np.float32) if field.deform_scales else None,
        opacities=np.stack(opacities).astype(np.float32) if field.deform_opacity else None,
        fps=fps,
        meta={"times": [frame_time(i, count) for i in range(count)], "time_multiplier": time_multiplier},
        mesh=animated,
    )


def _asset_settings(ctx: RunContext) -> dict[str, Any]:
    return {"multiplier": ctx.preset.motion.export_frame_factor, "fps": asset_fps(ctx),
            "prompt": ctx.inputs.get("prompt"), "preset": ctx.preset.name}  # fmt: skip


def asset_fps(ctx: RunContext) -> float:
    """The result's frame rate: the user's, else the video's, else 8."""
    return float(ctx.values.get("asset.fps") or ctx.inputs.get("video_fps") or 8.0)


def _asset_run(ctx: RunContext, folder: Path) -> dict[str, Any]:
    from pla4d.asset.format import write_asset

    k = ctx.preset.motion.export_frame_factor
    frames, front = ctx.get("frames"), ctx.get("front")
    asset = build_asset(ctx.get("canonical"), ctx.get("field"), ctx.get("mesh"), frames.shape[0], k,
                        asset_fps(ctx) * k)  # fmt: skip
    asset.meta.update(prompt=ctx.inputs.get("prompt"), seed=ctx.seed, preset=ctx.preset.name, focal_px=front.focal_px,
                      source_frames=int(frames.shape[0]), **ctx.get("motion_notes"))  # fmt: skip
    asset.rig = ctx.get("rig")  # the rig stage's fit (None when it is off): the asset's rig block
    write_asset(folder, asset)
    ctx.put("asset", asset)
    return {}


def _asset_load(ctx: RunContext, folder: Path) -> None:
    from pla4d.asset.format import read_asset

    ctx.lazy("asset", lambda: read_asset(folder))


ASSET = Stage(
    name="asset",
    needs=("field", "canonical", "mesh", "front", "frames", "rig"),
    makes=("asset",),
    settings=_asset_settings,
    run=_asset_run,
    load=_asset_load,
)


def _exports_run(ctx: RunContext, folder: Path) -> dict[str, Any]:
    from pla4d.asset.export import export_glb, export_splat_formats, write_contact_sheet, write_preview_video
    from pla4d.asset.format import read_asset
    from pla4d.asset.rig_gltf import write_rigged_glb

    # The files as written (float16 storage, if chosen, shows in the previews as it will in Blender).
    asset = read_asset(ctx.folder("asset"))
    radius = ctx.get("front").radius
    export_glb(asset, folder / "animated_mesh.glb")
    write_preview_video(asset, folder / "preview.mp4", size=256, radius=radius)
    write_contact_sheet(asset, folder / "contact_sheet.png", radius=radius)
    write_rigged_glb(asset, folder / "rigged.glb")  # only when the asset carries a rig (issue 23)
    export_splat_formats(asset, folder, _splat_exports(ctx))
    return {}


def _splat_exports(ctx: RunContext) -> list[str]:
    """The setting ``asset.exports`` (a comma list of pla4d.formats.exports names), checked when the run is planned."""
    from pla4d.formats.exports import parse_formats

    value = ctx.values.get("asset.exports")
    return parse_formats("spz" if value is None else value)


EXPORTS = Stage(
    name="exports",
    needs=("asset", "front"),
    makes=(),
    settings=lambda ctx: {"formats": _splat_exports(ctx)},
    run=_exports_run,
    load=lambda ctx, folder: None,
)
