"""The stages before the 3D ones: the built-in example clip, text-to-video (or the user's video), matting and
image-to-mesh (paper section 3.2). Folders::

    example/  the example creature rendered like a benchmark clip        input/NNN.png, first_frame.glb, cameras.json
    video/    prompt -> frames (text-to-video), or the user's video      frames/NNN.png, video.json
    matte/    frames -> square RGBA frames, object centred (rembg)       frames/NNN.png, matte.json
    mesh/     matted frame 1 (or --image) -> normalised coloured mesh   mesh.glb, mesh.json, preview.png

Each model is released before the next stage loads its own.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pla4d.media import contact_sheet, load_png, save_png, write_video
from pla4d.progress import Progress
from pla4d.runfolder import write_json
from pla4d.runner.core import RunContext, Stage
from pla4d.runner.inputs import check_mesh, frame_paths, load_frames

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def provide_clip(ctx: RunContext, frames_dir: Path, mesh_path: Path | None) -> None:
    """Register a clip's frames (all, and frame 1 alone) and mesh as this run's results, read when asked for."""
    ctx.lazy("frames", lambda: load_frames(frame_paths(frames_dir)))
    ctx.lazy("frame0", lambda: ctx.get("frames")[0])
    if mesh_path is not None:
        ctx.lazy("mesh", lambda: check_mesh(mesh_path))


# ------------------------------------------------------------------------------------------------ example


def example_settings(ctx: RunContext) -> Any:
    from pla4d.example.clip import ExampleSettings

    return ExampleSettings(
        num_frames=ctx.values["example.frames"], fps=float(ctx.values.get("asset.fps") or 16.0),
        resolution=ctx.values["example.resolution"], supersample=ctx.values["example.supersample"],
        **({} if ctx.inputs.get("example_novel_views") else {"novel_azimuths": ()}),
    )  # fmt: skip


def _example_run(ctx: RunContext, folder: Path) -> dict[str, Any]:
    from pla4d.example.clip import write_example_clip

    write_example_clip(folder, example_settings(ctx))
    _example_load(ctx, folder)
    return {"frames": ctx.values["example.frames"]}


def _example_load(ctx: RunContext, folder: Path) -> None:
    provide_clip(ctx, folder / "input", folder / "first_frame.glb")


EXAMPLE = Stage(
    name="example",
    needs=(),
    makes=("frames", "frame0", "mesh"),
    settings=lambda ctx: asdict(example_settings(ctx)),
    run=_example_run,
    load=_example_load,
)


# ------------------------------------------------------------------------------------------------ video


def read_user_video(path: str | Path, max_frames: int) -> tuple[list[np.ndarray], float | None, dict[str, Any]]:
    """A user's video: a folder of images (every frame, sorted by name; RGBA kept) or a video file (read with
    ffmpeg, evenly thinned to at most ``max_frames``). Returns float frames, the fps if known, and a note."""
    from pla4d.runner.inputs import read_image

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 2:
            raise ValueError(f"{path} holds {len(files)} image frame(s); the 4D stage needs at least 2")
        frames = [read_image(p) for p in files]
        sizes = {f.shape for f in frames}
        if len(sizes) != 1:
            raise ValueError(f"the frames in {path} have different sizes: {sorted(sizes)}")
        return frames, None, {"path": str(path), "frames": len(frames), "stride": 1}
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(
            f"unsupported video {path.name}: give a folder of frames or one of {', '.join(VIDEO_SUFFIXES)}"
        )
    import imageio.v2 as imageio

    try:
        reader = imageio.get_reader(path)
        fps = reader.get_meta_data().get("fps")
        frames = [np.asarray(f) for f in reader]
        reader.close()
    except Exception as exc:  # ffmpeg/Pillow errors for corrupt or unsupported files
        raise ValueError(f"could not read video {path}: {exc}") from None
    if len(frames) < 2:
        raise ValueError(f"{path} holds {len(frames)} frame(s); the 4D stage needs at least 2")
    stride = max(1, -(-len(frames) // max_frames))
    kept = frames[::stride][:max_frames]
    out = []
    for f in kept:
        f = f.astype(np.float32) / 255.0 if f.dtype == np.uint8 else f.astype(np.float32)
        out.append(f[..., :4] if f.shape[-1] >= 3 else np.repeat(f[..., :1], 3, axis=-1))
    return out, (float(fps) / stride if fps else None), {"path": str(path), "frames": len(out), "stride": stride}


def frame_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("[0-9][0-9][0-9].png"))


def write_frames(folder: Path, frames: Sequence[np.ndarray]) -> list[Path]:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    paths = []
    for i, frame in enumerate(frames):
        save_png(folder / f"{i:03d}.png", frame)
        paths.append(folder / f"{i:03d}.png")
    return paths


def _video_models(ctx: RunContext) -> list[Any]:
    from pla4d.models import spec_for

    return [] if ctx.inputs.get("video") is not None else [spec_for(ctx.preset.video.model, "text-to-video")]


def _video_run(ctx: RunContext, folder: Path) -> dict[str, Any]:
    settings = ctx.preset.video
    user = ctx.inputs.get("user_video")
    if user is not None:
        frames, fps, note = user
        write_frames(folder / "frames", frames)
        info = {"source": "user", **note, "fps": fps or settings.fps}
        write_json(folder / "video.json", info)
        return {"frames": info["frames"], "source": "user"}
    from pla4d.textvideo import load_text_to_video

    model = load_text_to_video(settings.model, ctx.found[settings.model], ctx.device, settings.dtype,
                               settings.cpu_offload, settings.vae_tiling)  # fmt: skip
    progress = Progress("text-to-video", settings.steps) if ctx.show_progress else None
    began = time.perf_counter()

    def on_step(step: int, total: int) -> None:
        if progress is not None:
            progress.update()
        elapsed = time.perf_counter() - began
        ctx.emit({"type": "progress", "stage": "video", "iteration": step, "total": total,
                  "eta_s": elapsed / step * max(total - step, 0)})  # fmt: skip

    try:
        result = model.generate(ctx.inputs.get("prompt") or "", settings, seed=ctx.seed, on_step=on_step,
                                should_cancel=ctx.should_cancel)  # fmt: skip
    finally:
        model.release()  # before the matting and mesh models load
    write_frames(folder / "frames", list(result.frames))
    h, w = result.frames.shape[1:3]
    even = result.frames[:, : h - h % 2, : w - w % 2]
    write_video(folder / "video.mp4", list(even), result.fps)
    info = {"source": "text-to-video", "model": result.model, "prompt": result.prompt,
            "negative_prompt": result.negative_prompt, "frames": int(result.frames.shape[0]),
            "generated_frames": result.generated_frames, "fps": result.fps, "size": [int(w), int(h)],
            "seconds": round(result.seconds, 2)}  # fmt: skip
    write_json(folder / "video.json", info)
    return {"frames": info["frames"], "source": "text-to-video"}


VIDEO = Stage(
    name="video",
    needs=("prompt", "user_video"),
    makes=("video_frames",),
    settings=lambda ctx: {"video": asdict(ctx.preset.video), "seed": ctx.seed},
    run=_video_run,
    load=lambda ctx, folder: None,
    models=_video_models,
)


# ------------------------------------------------------------------------------------------------ matte


def needs_matting(ctx: RunContext, video_cached: bool) -> bool:
    """Whether the matte stage will load a matting model: frames (or the image) without a transparent background."""
    from pla4d.stages.matte import has_alpha

    if ctx.inputs.get("video") is None and not video_cached:
        return True  # generated frames have no alpha
    if video_cached:
        frames = [load_png(p) for p in frame_files(ctx.folder("video") / "frames")]
    else:
        frames = ctx.inputs["user_video"][0]
    if not all(has_alpha(f) for f in frames):
        return True
    image = ctx.inputs.get("image_rgba")
    return image is not None and not has_alpha(image)


def _matte_models(ctx: RunContext) -> list[Any]:
    from pla4d.models import spec_for

    return [spec_for(ctx.preset.matte.session, "matting")] if ctx.inputs.get("needs_matting") else []


def _matte_run(ctx: RunContext, folder: Path) -> dict[str, Any]:
    from pla4d.stages.matte import RembgMatter, has_alpha, matte_clip

    cfg = ctx.preset.matte
    frames = [load_png(p) for p in frame_files(ctx.folder("video") / "frames")]
    frames = [f if has_alpha(f) else f[..., :3] for f in frames]
    image = ctx.inputs.get("image_rgba")
    extra = [image] if image is not None else []
    matter = None
    if not all(has_alpha(f) for f in frames + extra):
        matter = RembgMatter(cfg.session)
    progress = Progress("matte", len(frames)) if ctx.show_progress else None

    def on_frame(done: int, total: int) -> None:
        if progress is not None:
            progress.update()
        ctx.emit({"type": "progress", "stage": "matte", "iteration": done, "total": total})

    alpha = None if matter is None else matter.alpha
    try:
        out, report = matte_clip(frames, cfg, alpha, on_frame, ctx.should_cancel)
        if image is not None:
            still = image if has_alpha(image) else image[..., :3]
            image_out, report["image"] = matte_clip([still], cfg, alpha)
    finally:
        if matter is not None:
            matter.release()
    if report["empty_frames"]:
        print(f"pla4d: warning: no object in frame(s) {report['empty_frames']} after matting; dropped", file=sys.stderr)
    write_frames(folder / "frames", out)
    if image is not None:
        save_png(folder / "image.png", image_out[0])
    report.update(session=cfg.session if matter is not None else None, frames=len(out))
    write_json(folder / "matte.json", report)
    _matte_load(ctx, folder)
    return {"frames": len(out), "source": report["source"]}


def _matte_load(ctx: RunContext, folder: Path) -> None:
    provide_clip(ctx, folder / "frames", None)


MATTE = Stage(
    name="matte",
    needs=("video_frames", "image"),
    makes=("frames", "frame0", "matted_image"),
    settings=lambda ctx: asdict(ctx.preset.matte),
    run=_matte_run,
    load=_matte_load,
    models=_matte_models,
)


# ------------------------------------------------------------------------------------------------ mesh


def _mesh_models(ctx: RunContext) -> list[Any]:
    from pla4d.models import spec_for

    if ctx.inputs.get("mesh") is not None or ctx.preset.mesh.model == "external":
        return []
    return [spec_for(ctx.preset.mesh.model, "image-to-mesh")]


def _mesh_run(ctx: RunContext, folder: Path) -> dict[str, Any]:
    from pla4d.image_to_mesh import choose_turn, normalise_mesh, orient_matrix, write_mesh_glb

    matte_dir = ctx.folder("matte")
    frame0 = load_png(matte_dir / "frames" / "000.png")
    reference = load_png(matte_dir / "image.png") if (matte_dir / "image.png").is_file() else frame0
    cfg = ctx.preset.mesh
    user_mesh = ctx.inputs.get("mesh")
    if user_mesh is not None:
        raw, source, model_name, up, orient = ctx.get("user_mesh"), "user", None, cfg.up or "y", "none"
    else:
        adapter = _mesh_adapter(ctx, folder)
        try:
            raw = adapter(reference, seed=ctx.seed)
        finally:
            adapter.release()  # before the static stage needs the GPU
        source, model_name, up, orient = "model", adapter.name, cfg.up or adapter.up, cfg.orient
    match = None
    if orient == "auto":
        orientation = choose_turn(raw, frame0, up, radius=ctx.preset.focal.radius,
                                  init_fov_deg=ctx.preset.focal.init_fov_deg)  # fmt: skip
        turn, scores, match = orientation.turn_deg, orientation.scores, orientation.match
    else:
        turn, scores = (0.0 if orient == "none" else float(orient)), {}
    normalised, matrix = normalise_mesh(raw, orient_matrix(up, turn))
    write_mesh_glb(normalised, folder / "mesh.glb")
    _mesh_preview(normalised, frame0, folder / "preview.png", ctx.preset.focal.radius)
    info = {"source": source, "model": model_name, "input": str(user_mesh) if user_mesh is not None else None,
            "orientation": {"up": up, "turn_deg": turn, "scores": scores}, "transform": matrix.tolist(),
            "vertices": normalised.num_vertices, "faces": normalised.num_faces}  # fmt: skip
    write_json(folder / "mesh.json", info)
    _mesh_load(ctx, folder)
    if match is not None and ctx.preset.focal.enabled:
        from pla4d.runner.lift3d import front_from_match

        # The turn was chosen by the focal stage's own search on this mesh: hand its match over.
        ctx.put("front", front_from_match(match, ctx.preset.focal.radius))
    return {"source": source}


def _mesh_adapter(ctx: RunContext, folder: Path) -> Any:
    cfg = ctx.preset.mesh
    if cfg.model == "external":
        from pla4d.image_to_mesh.external import ExternalImageToMesh

        return ExternalImageToMesh(cfg.command or "", folder / "external", cfg.command_cwd, cfg.command_timeout_s,
                                   up=cfg.up or "y")  # fmt: skip
    from pla4d.image_to_mesh.shap_e import ShapEImageToMesh

    return ShapEImageToMesh.load(
        cfg.model, ctx.found[cfg.model], ctx.device, cfg.dtype, steps=cfg.steps, guidance_scale=cfg.guidance_scale,
        grid_size=cfg.grid_size, image_size=cfg.image_size,
    )  # fmt: skip


def _mesh_load(ctx: RunContext, folder: Path) -> None:
    ctx.lazy("mesh", lambda: check_mesh(folder / "mesh.glb"))


def _mesh_preview(mesh: Any, frame0: np.ndarray, path: Path, radius: float) -> None:
    """Frame 1 beside the mesh's front view and three turns (at the initial fov; the focal search comes later)."""
    from pla4d.cameras import orbit_cameras
    from pla4d.render.mesh import render_mesh

    size = 128
    cams = orbit_cameras([0.0, 90.0, 180.0, 270.0], 10.0, radius, 49.1, size)
    renders = render_mesh(mesh, cams, background=torch.ones(3)).rgb.numpy()
    frame = torch.from_numpy(frame0).permute(2, 0, 1)[None]
    small = torch.nn.functional.interpolate(frame, size=(size, size), mode="bilinear", antialias=True)[0]
    small = small.permute(1, 2, 0).numpy()
    on_white = small[..., :3] * small[..., 3:] + (1 - small[..., 3:])
    save_png(path, contact_sheet([[on_white, *list(renders)]]))


MESH = Stage(
    name="mesh",
    needs=("frame0", "matted_image", "user_mesh"),
    makes=("mesh",),
    settings=lambda ctx: {"mesh": asdict(ctx.preset.mesh), "focal": asdict(ctx.preset.focal), "seed": ctx.seed},
    run=_mesh_run,
    load=_mesh_load,
    models=_mesh_models,
)
