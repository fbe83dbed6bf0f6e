"""``pla4d run``: video-to-4D end to end, every stage cached in the run folder.

Stages and their folders: ``static/`` (focal alignment + static Gaussians, :func:`pla4d.lift.run_lift`),
``motion/`` (the deformation field, ``field.pt`` state dict + ``field.json``), ``asset/`` (the 4D asset,
docs/asset-format.md) and ``exports/`` (animated-mesh GLB, preview MP4, contact sheet). A stage's
``stage.json`` records the hash of everything it depends on (input files, settings, seed, code version);
re-running skips every stage whose hash is unchanged, and ``force`` names stages to redo.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pla4d import __version__
from pla4d.asset.export import export_glb, write_contact_sheet, write_preview_video
from pla4d.asset.format import AnimatedMesh, Asset4D, write_asset
from pla4d.config import MotionConfig, PresetConfig
from pla4d.deform.hexplane import DeformationField, frame_time
from pla4d.errors import raise_if_cancelled
from pla4d.gaussians.ply import load_ply
from pla4d.lift import EventSink, load_frame, make_perceptual, pick_device, run_lift
from pla4d.progress import Progress
from pla4d.render.mesh import load_mesh
from pla4d.runfolder import sha256_of, write_json

if TYPE_CHECKING:  # the motion stage is imported where it runs
    from pla4d.stages.motion4d import MotionResult

STAGES = ("static", "motion", "asset", "exports")


def frame_paths(video: str | Path) -> list[Path]:
    """The frames of a video given as a folder of RGBA PNGs (sorted by name)."""
    video = Path(video)
    if video.is_file():
        raise ValueError(
            f"{video} is a video file: frames need an alpha channel (the object matted), which video files do "
            "not carry; give a folder of RGBA PNG frames (automatic matting arrives with the text front end)"
        )
    if not video.is_dir():
        raise FileNotFoundError(f"video frames folder not found: {video}")
    frames = sorted(p for p in video.iterdir() if p.suffix.lower() == ".png")
    if len(frames) < 2:
        raise ValueError(f"{video} holds {len(frames)} PNG frame(s); the 4D stage needs at least 2")
    return frames


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _cached(folder: Path, key: str, force: set[str], stage: str) -> bool:
    marker = folder / "stage.json"
    if stage in force or not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("key") == key
    except (OSError, json.JSONDecodeError):
        return False


def _mark(folder: Path, key: str, seconds: float) -> None:
    write_json(folder / "stage.json", {"key": key, "seconds": seconds, "version": __version__})


def _load_frames(paths: Sequence[Path]) -> torch.Tensor:
    frames = [load_frame(p) for p in paths]
    sizes = {tuple(f.shape) for f in frames}
    if len(sizes) != 1:
        raise ValueError(f"all frames must have one size, got {sorted(sizes)}")
    return torch.stack(frames)


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


def run_video_to_4d(
    video: str | Path,
    mesh_path: str | Path,
    out: str | Path,
    preset: PresetConfig,
    seed: int = 0,
    device: str = "auto",
    fps: float | None = None,
    time_multiplier: int | None = None,
    force: Sequence[str] = (),
    on_event: EventSink | None = None,
    should_cancel: Callable[[], bool] | None = None,
    show_progress: bool = True,
    prompt: str | None = None,
) -> dict[str, Any]:
    """Frames (a folder of RGBA PNGs; frame 1 first) + frame 1's mesh -> static Gaussians, deformation field,
    4D asset and exports in ``out``. Returns the run summary (also written to ``summary.json``)."""
    time_multiplier = preset.motion.export_frame_factor if time_multiplier is None else time_multiplier
    unknown = set(force) - set(STAGES)
    if unknown:
        raise ValueError(f"--force takes stage names {', '.join(STAGES)}; got {sorted(unknown)}")
    if time_multiplier < 1:
        raise ValueError(f"time multiplier must be at least 1, got {time_multiplier}")
    force_set = set(force)
    # A forced stage invalidates every stage after it.
    for i, stage in enumerate(STAGES):
        if stage in force_set:
            force_set.update(STAGES[i:])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    paths = frame_paths(video)
    mesh_path = Path(mesh_path)
    if not mesh_path.is_file():
        raise FileNotFoundError(f"mesh not found: {mesh_path}")
    emit = on_event or (lambda event: None)

    timings: dict[str, float] = {}
    start = time.perf_counter()
    frame_hashes = [sha256_of(p) for p in paths]
    mesh_hash = sha256_of(mesh_path)
    write_json(out / "config.json", {"preset": preset.to_dict(), "seed": seed, "device": str(dev)})

    static_key = _key(
        {"frame0": frame_hashes[0], "mesh": mesh_hash, "focal": asdict(preset.focal), "static": asdict(preset.static),
         "seed": seed, "version": __version__}
    )  # fmt: skip
    static_dir = out / "static"
    if _cached(static_dir, static_key, force_set, "static"):
        emit({"type": "stage_skipped", "stage": "static"})
    else:
        t0 = time.perf_counter()
        run_lift(paths[0], mesh_path, static_dir, preset, seed=seed, device=str(dev), on_event=on_event,
                 should_cancel=should_cancel, show_progress=show_progress)  # fmt: skip
        _mark(static_dir, static_key, time.perf_counter() - t0)
        timings["static_s"] = time.perf_counter() - t0
    canonical = load_ply(static_dir / "canonical.ply").to(dev)
    camera = json.loads((static_dir / "camera.json").read_text())

    raise_if_cancelled(should_cancel, "the motion stage")
    motion_key = _key({"static": static_key, "frames": frame_hashes, "motion": asdict(preset.motion), "seed": seed})
    motion_dir = out / "motion"
    if _cached(motion_dir, motion_key, force_set, "motion"):
        emit({"type": "stage_skipped", "stage": "motion"})
        field = load_field(motion_dir, dev)
        motion_meta = json.loads((motion_dir / "field.json").read_text())
        guidance_note, depth_note = motion_meta.get("guidance", ""), motion_meta.get("depth_prior", "")
    else:
        t0 = time.perf_counter()
        field, guidance_note, depth_note = _train_motion_stage(
            canonical, _load_frames(paths), camera, preset, seed, dev, emit, should_cancel, show_progress
        )
        motion_dir.mkdir(parents=True, exist_ok=True)
        torch.save(field.state_dict(), motion_dir / "field.pt")
        write_json(
            motion_dir / "field.json", {"config": field.config(), "guidance": guidance_note, "depth_prior": depth_note}
        )
        _mark(motion_dir, motion_key, time.perf_counter() - t0)
        timings["motion_s"] = time.perf_counter() - t0

    raise_if_cancelled(should_cancel, "the asset")
    fps = float(fps) if fps else 8.0
    asset_key = _key({"motion": motion_key, "multiplier": time_multiplier, "fps": fps, "prompt": prompt})
    asset_dir = out / "asset"
    if _cached(asset_dir, asset_key, force_set, "asset"):
        emit({"type": "stage_skipped", "stage": "asset"})
    else:
        t0 = time.perf_counter()
        emit({"type": "stage_started", "stage": "asset"})
        asset = build_asset(canonical, field, load_mesh(mesh_path), len(paths), time_multiplier, fps * time_multiplier)
        asset.meta.update(
            prompt=prompt, seed=seed, preset=preset.name, guidance=guidance_note, depth_prior=depth_note,
            focal_px=camera["focal_px"], source_frames=len(paths),
        )  # fmt: skip
        write_asset(asset_dir, asset)
        _mark(asset_dir, asset_key, time.perf_counter() - t0)
        timings["asset_s"] = time.perf_counter() - t0
        emit({"type": "stage_finished", "stage": "asset", "seconds": timings["asset_s"]})

    raise_if_cancelled(should_cancel, "the exports")
    exports_dir = out / "exports"
    if _cached(exports_dir, asset_key, force_set, "exports"):
        emit({"type": "stage_skipped", "stage": "exports"})
    else:
        t0 = time.perf_counter()
        emit({"type": "stage_started", "stage": "exports"})
        from pla4d.asset.format import read_asset

        asset = read_asset(asset_dir)
        export_glb(asset, exports_dir / "animated_mesh.glb")
        write_preview_video(asset, exports_dir / "preview.mp4", size=256, radius=camera["radius"])
        write_contact_sheet(asset, exports_dir / "contact_sheet.png", radius=camera["radius"])
        _mark(exports_dir, asset_key, time.perf_counter() - t0)
        timings["exports_s"] = time.perf_counter() - t0
        emit({"type": "stage_finished", "stage": "exports", "seconds": timings["exports_s"]})

    raise_if_cancelled(should_cancel, "the end")
    timings["total_s"] = time.perf_counter() - start
    summary = {
        "run": str(out),
        "preset": preset.name,
        "frames": len(paths),
        "asset_frames": len(paths) * time_multiplier if time_multiplier > 1 else len(paths),
        "gaussians": canonical.num_gaussians,
        "focal_px": camera["focal_px"],
        "guidance": guidance_note,
        "depth_prior": depth_note,
        "asset": str(asset_dir),
        "exports": [str(exports_dir / n) for n in ("animated_mesh.glb", "preview.mp4", "contact_sheet.png")],
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    write_json(out / "summary.json", summary)
    return summary


def _train_motion_stage(
    canonical: Any,
    frames: torch.Tensor,
    camera: dict[str, Any],
    preset: PresetConfig,
    seed: int,
    device: torch.device,
    emit: EventSink,
    should_cancel: Callable[[], bool] | None,
    show_progress: bool,
) -> tuple[DeformationField, str, str]:
    """Train the deformation field; returns it with a line on the Zero123 guidance and one on the depth prior."""
    from pla4d.cameras import Cameras
    from pla4d.stages.motion4d import train_motion

    size = frames.shape[1]
    viewmat, K = torch.tensor([camera["w2c_opencv"]]), torch.tensor([camera["K"]])
    front = Cameras(viewmat, K, camera["width"], camera["height"])
    if front.width != size:
        front = front.scaled(size / front.width)
    perceptual, _ = make_perceptual(preset.motion.perceptual_weight, preset.motion.perceptual_net, device)
    total = preset.motion.total_iterations(frames.shape[0])
    guidance, note = make_guidance(preset, device, total)
    if guidance is None:
        print(f"pla4d: {note}", file=sys.stderr, flush=True)
    emit({"type": "stage_started", "stage": "motion", "guidance": note})
    progress = Progress("motion 4D", total) if show_progress else None
    began = time.perf_counter()

    def on_iteration(record: dict[str, float], field: DeformationField) -> None:
        done = int(record.get("iteration", 0)) + 1
        if progress is not None:
            progress.update(note=f"loss {record.get('loss', float('nan')):.4f}")
        elapsed = time.perf_counter() - began
        emit({"type": "progress", "stage": "motion", "iteration": done, "total": total,
              "losses": {k: v for k, v in record.items() if isinstance(v, float)},
              "eta_s": elapsed / done * max(total - done, 0)})  # fmt: skip

    result = train_motion(
        canonical, frames, front, preset.motion, perceptual, radius=camera["radius"], seed=seed, device=device,
        on_iteration=on_iteration, should_cancel=should_cancel, guidance=guidance,
    )  # fmt: skip
    emit({"type": "stage_finished", "stage": "motion", "seconds": result.timings.get("train_s", 0.0)})
    return result.field, note, _depth_prior_note(preset.motion, result)


def _depth_prior_note(cfg: MotionConfig, result: MotionResult) -> str:
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
            depth += "; the input camera looks along it, so the depth of the motion is left to the video alone"
        else:
            depth += ": the motion's depth is set parallel to it"
    if cfg.frame_curriculum <= 0:
        return depth
    if result.frame_curriculum > 0:
        return f"{depth}; frames trained first to last (frame curriculum)"
    return f"{depth}; frames trained in random order (the frame curriculum needs the depth prior)"


def load_field(folder: Path, device: torch.device | str = "cpu") -> DeformationField:
    """The deformation field a run saved in ``folder`` (``field.json`` + ``field.pt``: a run's ``motion/``)."""
    meta = json.loads((folder / "field.json").read_text())
    field = DeformationField(**meta["config"])
    field.load_state_dict(torch.load(folder / "field.pt", map_location="cpu", weights_only=True))
    return field.to(device)


@torch.no_grad()
def build_asset(
    canonical: Any, field: DeformationField, mesh: Any, num_frames: int, time_multiplier: int, fps: float
) -> Asset4D:
    """Sample the field at every output frame: Gaussians (storage convention) and the mesh's vertices.

    With ``time_multiplier`` k the asset carries (num_frames - 1) * k + 1 frames (the field is continuous in t).
    """
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
