"""The entry points: each starts the one runner at some stage.

``run_lift`` (focal, static), ``run_video_to_4d`` (focal .. exports: ``pla4d run``, ``pla4d eval``, video jobs),
``run_example`` (the built-in example, then the same: ``pla4d demo``, example jobs) and ``run_generate`` (video,
matte, mesh, then the same: ``pla4d generate``, text jobs). Every input is read and checked before the first
stage; every run writes ``config.json`` (the settings) at its start and ``summary.json`` at its end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pla4d.config import PresetConfig
from pla4d.device import pick_device
from pla4d.runfolder import write_json
from pla4d.runner.core import EventSink, Plan, RunContext, Stage, locate_models, plan_stages, run_stages
from pla4d.runner.front import EXAMPLE, MATTE, MESH, VIDEO, frame_files, needs_matting, read_user_video
from pla4d.runner.inputs import check_mesh, content_key, frame_paths, load_frame, load_frames
from pla4d.runner.lift3d import FOCAL, STATIC
from pla4d.runner.motion import ASSET, EXPORTS, MOTION
from pla4d.runner.rig import RIG

LIFT_STAGES = (FOCAL, STATIC)
FOURD_STAGES = (FOCAL, STATIC, MOTION, RIG, ASSET, EXPORTS)
# Every stage in run order: the one stage vocabulary (events, cache folders, summaries, the protocol, the add-on).
STAGES: dict[str, Stage] = {s.name: s for s in (EXAMPLE, VIDEO, MATTE, MESH, *FOURD_STAGES)}


def _context(
    out: str | Path, preset: PresetConfig, seed: int, device: str, values: Mapping[str, Any] | None,
    on_event: EventSink | None, should_cancel: Callable[[], bool] | None, show_progress: bool,
) -> RunContext:  # fmt: skip
    return RunContext(out=Path(out), preset=preset, seed=seed, device=pick_device(device), values=dict(values or {}),
                      on_event=on_event, should_cancel=should_cancel, show_progress=show_progress)  # fmt: skip


def _run(
    ctx: RunContext, stages: Sequence[Stage], force: Sequence[str], extra: dict[str, Any],
    prepare: Callable[[list[Plan]], None] | None = None, finish: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Plan (keys; ``prepare`` sees the plan), write config.json, run, write summary.json (with ``finish()``)."""
    start = time.perf_counter()
    plans = plan_stages(ctx, stages, force)
    if prepare is not None:
        prepare(plans)
    locate_models(ctx, plans)  # a missing model ends the run before anything is written
    ctx.out.mkdir(parents=True, exist_ok=True)
    write_json(ctx.out / "config.json", {"preset": ctx.preset.to_dict(), "seed": ctx.seed, "device": str(ctx.device),
                                         "values": ctx.values, "inputs": extra.get("inputs", {}),
                                         "keys": dict(ctx.keys)})  # fmt: skip
    records = run_stages(ctx, stages, force, plans)
    names = [s.name for s in stages]
    summary: dict[str, Any] = {"run": str(ctx.out), "preset": ctx.preset.name, "seed": ctx.seed, **extra}
    if "focal" in names:
        summary["focal_px"] = ctx.get("front").focal_px
    if "static" in names:
        summary["gaussians"] = ctx.get("canonical").num_gaussians
    if "motion" in names:
        summary.update(ctx.get("motion_notes"))
    if "exports" in names:
        summary["asset"] = str(ctx.folder("asset"))
        # What the folder holds, not a fixed list: the splat formats and rigged.glb depend on settings and the rig.
        summary["exports"] = sorted(str(p) for p in ctx.folder("exports").iterdir() if p.name != "stage.json")
    summary["stages"] = records
    if ctx.device.type == "cuda":
        summary["peak_gpu_mb"] = max((r.get("peak_gpu_mb", 0.0) for r in records.values()), default=None)
    if finish is not None:
        summary.update(finish())
    seconds = time.perf_counter() - start
    summary["timings"] = {**{f"{k}_s": v["seconds"] for k, v in records.items() if "seconds" in v},
                          "total_s": round(seconds, 2)}  # fmt: skip
    summary["seconds"] = round(seconds, 2)
    write_json(ctx.out / "summary.json", summary)
    return summary


def run_lift(
    image: str | Path, mesh: str | Path, out: str | Path, preset: PresetConfig, seed: int = 0, device: str = "auto",
    on_event: EventSink | None = None, should_cancel: Callable[[], bool] | None = None, show_progress: bool = True,
    force: Sequence[str] = (),
) -> dict[str, Any]:  # fmt: skip
    """Frame 1 (an RGBA PNG) + its mesh -> ``out/focal/camera.json`` and ``out/static/canonical.ply``."""
    ctx = _context(out, preset, seed, device, None, on_event, should_cancel, show_progress)
    frame, mesh_loaded = load_frame(image), check_mesh(mesh)
    ctx.put("frame0", frame)
    ctx.put("mesh", mesh_loaded)
    ctx.keys.update(frame0=content_key(image), mesh=content_key(mesh))
    return _run(ctx, LIFT_STAGES, force, {"inputs": {"image": str(image), "mesh": str(mesh)}})


def run_video_to_4d(
    video: str | Path, mesh: str | Path, out: str | Path, preset: PresetConfig, seed: int = 0, device: str = "auto",
    fps: float | None = None, force: Sequence[str] = (), on_event: EventSink | None = None,
    should_cancel: Callable[[], bool] | None = None, show_progress: bool = True, prompt: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Frames (a folder of RGBA PNGs; frame 1 first) + frame 1's mesh -> static Gaussians, deformation field,
    4D asset and exports in ``out``. Returns the run summary (also written to ``summary.json``)."""
    ctx = _context(out, preset, seed, device, {"asset.fps": fps}, on_event, should_cancel, show_progress)
    paths = frame_paths(video)
    frames = load_frames(paths)
    ctx.put("frames", frames)
    ctx.put("frame0", frames[0])
    ctx.put("mesh", check_mesh(mesh))
    ctx.inputs["prompt"] = prompt
    ctx.keys.update(frames=content_key(video), frame0=content_key(paths[0]), mesh=content_key(mesh))
    extra = {"frames": len(paths), "asset_frames": (len(paths) - 1) * preset.motion.export_frame_factor + 1,
             "inputs": {"video": str(video), "mesh": str(mesh)}}  # fmt: skip
    return _run(ctx, FOURD_STAGES, force, extra)


def run_example(
    out: str | Path, preset: PresetConfig, values: Mapping[str, Any], seed: int = 0, device: str = "auto",
    render_only: bool = False, novel_views: bool = False, force: Sequence[str] = (), on_event: EventSink | None = None,
    should_cancel: Callable[[], bool] | None = None, show_progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """The built-in example clip (``values``: example.frames / resolution / supersample, asset.fps), then
    video-to-4D on its frames and frame-1 mesh unless ``render_only``."""
    ctx = _context(out, preset, seed, device, values, on_event, should_cancel, show_progress)
    ctx.inputs["example_novel_views"] = novel_views
    ctx.inputs["video_fps"] = ctx.values.get("asset.fps") or 16.0  # the example clip's own rate
    stages = (EXAMPLE,) if render_only else (EXAMPLE, *FOURD_STAGES)
    frames = int(ctx.values["example.frames"])
    extra = {"frames": frames, "asset_frames": (frames - 1) * preset.motion.export_frame_factor + 1,
             "clip": str(ctx.folder("example"))}  # fmt: skip
    return _run(ctx, stages, force, extra)


def run_generate(
    prompt: str | None, out: str | Path, preset: PresetConfig, seed: int = 0, device: str = "auto",
    video: str | Path | None = None, image: str | Path | None = None, mesh: str | Path | None = None,
    force: Sequence[str] = (), on_event: EventSink | None = None, should_cancel: Callable[[], bool] | None = None,
    show_progress: bool = True, models: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Text (or the user's video / image / mesh) -> 4D asset in ``out``; returns the run summary (summary.json).

    ``prompt``: the text (required unless ``video`` is given; kept in the asset's metadata either way).
    ``video``: a folder of frames or a video file, instead of text-to-video. ``image``: the image-to-mesh input
    instead of the matted frame 1 (needs ``video``: a still has no motion). ``mesh``: a mesh file instead of
    image-to-mesh (+Y up, front towards +Z). ``force``: stage names to redo (with every later stage).
    ``models``: see :func:`pla4d.models.apply_models`. Before any work, every input is read and checked and the
    models that the stages still to run will load are located; a missing one ends the run with one message.
    """
    from pla4d.models import apply_models

    preset = apply_models(preset, models)
    prompt = (prompt or "").strip() or None
    if prompt is None and video is None:
        raise ValueError("give a prompt, or --video with the frames to lift")
    if image is not None and video is None:
        raise ValueError("--image is the image-to-mesh input for frame 1 of a video: give --video as well")
    for path, what in ((video, "video"), (image, "image"), (mesh, "mesh")):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"{what} not found: {path}")
    if preset.mesh.model == "external" and mesh is None:
        _check_external(preset)
    ctx = _context(out, preset, seed, device, None, on_event, should_cancel, show_progress)
    ctx.inputs.update(prompt=prompt, video=video, image=image, mesh=mesh)
    if video is not None:
        ctx.inputs["user_video"] = read_user_video(video, max(preset.video.num_frames, 2))
    ctx.inputs["video_fps"] = (ctx.inputs["user_video"][1] if video is not None else None) or preset.video.fps
    if image is not None:
        from pla4d.runner.inputs import read_image

        ctx.inputs["image_rgba"] = read_image(image)
    if mesh is not None:
        ctx.put("user_mesh", check_mesh(mesh))
    ctx.keys.update(prompt=None if video is not None else prompt, user_video=content_key(video),
                    image=content_key(image), user_mesh=content_key(mesh))  # fmt: skip

    def prepare(plans: list[Plan]) -> None:
        # The matting model is needed only for frames without alpha, which a cached video stage shows.
        ctx.inputs["needs_matting"] = not plans[1].cached and needs_matting(ctx, plans[0].cached)

    inputs = {"prompt": prompt, "video": video, "image": image, "mesh": mesh}
    return _run(ctx, (VIDEO, MATTE, MESH, *FOURD_STAGES), force, {"prompt": prompt, "inputs": inputs}, prepare,
                lambda: _front_summary(ctx))  # fmt: skip


def _front_summary(ctx: RunContext) -> dict[str, Any]:
    import json

    def read(path: Path) -> dict[str, Any]:
        return json.loads(path.read_text()) if path.is_file() else {}

    mesh_info = read(ctx.folder("mesh") / "mesh.json")
    return {
        "video": read(ctx.folder("video") / "video.json"),
        "matte": read(ctx.folder("matte") / "matte.json").get("source"),
        "mesh": {k: mesh_info.get(k) for k in ("source", "model", "orientation", "vertices", "faces")},
        "frames": len(frame_files(ctx.folder("matte") / "frames")),
        "frames_dir": str(ctx.folder("matte") / "frames"),
        "mesh_path": str(ctx.folder("mesh") / "mesh.glb"),
    }


def _check_external(preset: PresetConfig) -> None:
    import shlex
    import shutil

    from pla4d.image_to_mesh.external import check_template

    if not preset.mesh.command:
        raise ValueError("mesh model 'external' needs a command template (--mesh-command)")
    check_template(preset.mesh.command)
    program = shlex.split(preset.mesh.command)[0]
    cwd = Path(preset.mesh.command_cwd) if preset.mesh.command_cwd else Path.cwd()
    if shutil.which(program) is None and not (cwd / program).is_file():
        raise ValueError(f"image-to-mesh command not found: {program!r}")
