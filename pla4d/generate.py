"""``pla4d generate``: text to 4D, every stage cached in the run folder (paper section 3.2, Fig. 2).

Stages and their folders::

    video/   prompt -> frames (text-to-video), or the user's video (--video)       frames/NNN.png, video.json
    matte/   frames -> square RGBA frames, object centred (rembg; alpha passes)    frames/NNN.png, matte.json
    mesh/    matted frame 1 (or --image) -> normalised coloured mesh (or --mesh)   mesh.glb, mesh.json, preview.png
    static/ motion/ asset/ exports/    focal alignment, static 3D, 4D, export     (pla4d.pipeline.run_video_to_4d)

Each stage's ``stage.json`` holds the hash of everything it depends on; a re-run skips the unchanged ones, and
``force`` redoes a stage and every stage after it. Before any work starts, the models that the stages still to
run will load are checked (:func:`pla4d.models.registry.require`): missing ones end the run at once with one
message naming each and its ``pla4d models pull`` command. Each model is released before the next stage loads
its own, and the summary reports time and peak GPU memory per stage.
"""

from __future__ import annotations

import resource
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pla4d import __version__
from pla4d.config import PresetConfig
from pla4d.errors import raise_if_cancelled
from pla4d.lift import EventSink, pick_device
from pla4d.media import contact_sheet, load_png, save_png, write_video
from pla4d.models import apply_models
from pla4d.pipeline import STAGES as FOURD_STAGES
from pla4d.pipeline import _cached, _key, _mark  # the same stage-cache rules as `pla4d run`
from pla4d.progress import Progress
from pla4d.runfolder import sha256_of, write_json

FRONT_STAGES = ("video", "matte", "mesh")
STAGES = FRONT_STAGES + FOURD_STAGES
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class _Meter:
    """Time and peak memory of one stage: GPU peak via torch's allocator stats, CPU as the process's peak RSS."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda" and torch.cuda.is_available()
        self.records: dict[str, dict[str, Any]] = {}
        self._start: dict[str, float] = {}

    def start(self, stage: str) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._start[stage] = time.perf_counter()

    def stop(self, stage: str, **extra: Any) -> dict[str, Any]:
        record: dict[str, Any] = {"seconds": round(time.perf_counter() - self._start.pop(stage), 2)}
        if self.cuda:
            torch.cuda.synchronize()
            record["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
        record.update(extra)
        self.records[stage] = record
        return record

    def skipped(self, stage: str) -> None:
        self.records[stage] = {"cached": True}


# ------------------------------------------------------------------------------------------------ inputs


def read_user_video(path: str | Path, max_frames: int) -> tuple[list[np.ndarray], float | None, dict[str, Any]]:
    """A user's video: a folder of images (every frame, sorted by name; RGBA kept) or a video file (read with
    ffmpeg, evenly thinned to at most ``max_frames``). Returns float frames, the fps if known, and a note."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 2:
            raise ValueError(f"{path} holds {len(files)} image frame(s); the 4D stage needs at least 2")
        frames = [load_png(p) for p in files]
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


def _frame_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("[0-9][0-9][0-9].png"))


def _write_frames(folder: Path, frames: Sequence[np.ndarray]) -> list[Path]:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return [_save(folder / f"{i:03d}.png", f) for i, f in enumerate(frames)]


def _save(path: Path, image: np.ndarray) -> Path:
    save_png(path, image)
    return path


# ------------------------------------------------------------------------------------------------ run


def run_generate(
    prompt: str | None,
    out: str | Path,
    preset: PresetConfig,
    seed: int = 0,
    device: str = "auto",
    video: str | Path | None = None,
    image: str | Path | None = None,
    mesh: str | Path | None = None,
    force: Sequence[str] = (),
    on_event: EventSink | None = None,
    should_cancel: Callable[[], bool] | None = None,
    show_progress: bool = True,
    models: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """Text (or the user's video / image / mesh) -> 4D asset in ``out``; returns the run summary (summary.json).

    ``prompt``: the text (required unless ``video`` is given; kept in the asset's metadata either way).
    ``video``: a folder of frames or a video file, instead of text-to-video. ``image``: the image-to-mesh input
    instead of the matted frame 1 (needs ``video``: a still has no motion). ``mesh``: a mesh file instead of
    image-to-mesh (+Y up, front towards +Z). ``force``: stage names to redo (with every later stage).
    ``models``: see :func:`apply_models`. ``on_event`` receives ``stage_started`` / ``stage_finished`` (with
    ``seconds`` and ``peak_gpu_mb``) / ``stage_skipped`` / ``progress`` dicts for every stage, as in
    :func:`pla4d.pipeline.run_video_to_4d`; ``should_cancel()`` is polled between steps (raises Cancelled).
    """
    from pla4d.models import needed_models, require

    preset = apply_models(preset, models)
    prompt = (prompt or "").strip() or None
    if prompt is None and video is None:
        raise ValueError("give a prompt, or --video with the frames to lift")
    if image is not None and video is None:
        raise ValueError("--image is the image-to-mesh input for frame 1 of a video: give --video as well")
    for path, what in ((video, "video"), (image, "image"), (mesh, "mesh")):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"{what} not found: {path}")
    unknown = set(force) - set(STAGES)
    if unknown:
        raise ValueError(f"--force takes stage names {', '.join(STAGES)}; got {sorted(unknown)}")
    forced = set(force)
    for i, stage in enumerate(STAGES):
        if stage in forced:
            forced.update(STAGES[i:])
    if preset.mesh.model == "external" and mesh is None:
        _check_external(preset)
    out = Path(out)
    dev = pick_device(device)
    emit = on_event or (lambda event: None)
    meter = _Meter(dev)
    start = time.perf_counter()

    # ---- plan: which stages will run, and so which models must be here (checked before any work).
    video_key = _key(
        {"prompt": prompt if video is None else None, "video": _input_hash(video), "settings": asdict(preset.video),
         "seed": seed, "version": __version__}
    )  # fmt: skip
    video_dir, matte_dir, mesh_dir = out / "video", out / "matte", out / "mesh"
    video_cached = _cached(video_dir, video_key, forced, "video")
    matte_known = None
    if video_cached:
        matte_known = _matte_key(_frame_files(video_dir / "frames"), preset, image)
    matte_cached = matte_known is not None and _cached(matte_dir, matte_known, forced, "matte")
    needs_matting = _needs_matting(video, image, video_cached, video_dir) and not matte_cached
    mesh_cached = False
    if matte_cached:
        mesh_cached = _cached(mesh_dir, _mesh_key(matte_dir, preset, mesh, image, seed), forced, "mesh")
    specs = needed_models(
        preset, video=video is None and not video_cached, matte=needs_matting,
        mesh=mesh is None and not mesh_cached,
        guidance=False,  # optional: without Zero123 the 4D stage says refinement is off and goes on
    )  # fmt: skip
    found = require(specs)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "generate.json", {"prompt": prompt, "video": video, "image": image, "mesh": mesh, "seed": seed,
                                       "preset": preset.to_dict(), "device": str(dev)})  # fmt: skip

    # ---- video
    if video_cached:
        emit({"type": "stage_skipped", "stage": "video"})
        meter.skipped("video")
    else:
        raise_if_cancelled(should_cancel, "text-to-video")
        emit({"type": "stage_started", "stage": "video"})
        meter.start("video")
        t0 = time.perf_counter()
        info = _video_stage(prompt, video, video_dir, preset, seed, dev, found, emit, should_cancel, show_progress)
        _mark(video_dir, video_key, time.perf_counter() - t0)
        emit({"type": "stage_finished", "stage": "video", **meter.stop("video", frames=info["frames"])})
    video_info = _read_json(video_dir / "video.json")

    # ---- matte
    matte_key = _matte_key(_frame_files(video_dir / "frames"), preset, image)
    if _cached(matte_dir, matte_key, forced, "matte"):
        emit({"type": "stage_skipped", "stage": "matte"})
        meter.skipped("matte")
    else:
        raise_if_cancelled(should_cancel, "matting")
        emit({"type": "stage_started", "stage": "matte"})
        meter.start("matte")
        t0 = time.perf_counter()
        report = _matte_stage(video_dir, matte_dir, preset, image, found, emit, should_cancel, show_progress)
        _mark(matte_dir, matte_key, time.perf_counter() - t0)
        emit({"type": "stage_finished", "stage": "matte", **meter.stop("matte", source=report["source"])})

    # ---- mesh
    mesh_key = _mesh_key(matte_dir, preset, mesh, image, seed)
    if _cached(mesh_dir, mesh_key, forced, "mesh"):
        emit({"type": "stage_skipped", "stage": "mesh"})
        meter.skipped("mesh")
    else:
        raise_if_cancelled(should_cancel, "image-to-mesh")
        emit({"type": "stage_started", "stage": "mesh"})
        meter.start("mesh")
        t0 = time.perf_counter()
        mesh_info = _mesh_stage(matte_dir, mesh_dir, preset, mesh, seed, dev, found)
        _mark(mesh_dir, mesh_key, time.perf_counter() - t0)
        emit({"type": "stage_finished", "stage": "mesh", **meter.stop("mesh", source=mesh_info["source"])})
    mesh_info = _read_json(mesh_dir / "mesh.json")

    # ---- focal, static 3D, 4D, export (pla4d run), with per-stage memory from its events.
    from pla4d.pipeline import run_video_to_4d

    def relay(event: dict[str, Any]) -> None:
        stage = event.get("stage")
        if event.get("type") == "stage_started" and stage:
            meter.start(stage)
        elif event.get("type") == "stage_finished" and stage and stage in meter._start:
            event = {**event, **{k: v for k, v in meter.stop(stage).items() if k != "seconds"}}
        elif event.get("type") == "stage_skipped" and stage:
            meter.skipped(stage)
        emit(event)

    summary = run_video_to_4d(
        matte_dir / "frames", mesh_dir / "mesh.glb", out, preset, seed=seed, device=str(dev),
        fps=video_info.get("fps") or preset.video.fps, force=[s for s in FOURD_STAGES if s in forced],
        on_event=relay, should_cancel=should_cancel, show_progress=show_progress, prompt=prompt,
    )  # fmt: skip
    summary.update(
        prompt=prompt,
        seed=seed,
        video=video_info,
        matte=_read_json(matte_dir / "matte.json").get("source"),
        mesh={k: mesh_info.get(k) for k in ("source", "model", "orientation", "vertices", "faces")},
        stages=meter.records,
        peak_gpu_mb=max((r.get("peak_gpu_mb", 0.0) for r in meter.records.values()), default=None)
        if meter.cuda
        else None,
        seconds=round(time.perf_counter() - start, 2),
        frames_dir=str(matte_dir / "frames"),
        mesh_path=str(mesh_dir / "mesh.glb"),
    )
    write_json(out / "summary.json", summary)
    return summary


def _check_external(preset: PresetConfig) -> None:
    import shlex

    from pla4d.image_to_mesh.external import check_template

    if not preset.mesh.command:
        raise ValueError("mesh model 'external' needs a command template (--mesh-command)")
    check_template(preset.mesh.command)
    program = shlex.split(preset.mesh.command)[0]
    cwd = Path(preset.mesh.command_cwd) if preset.mesh.command_cwd else Path.cwd()
    if shutil.which(program) is None and not (cwd / program).is_file():
        raise ValueError(f"image-to-mesh command not found: {program!r}")


def _input_hash(path: str | Path | None) -> str | None:
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        return _key({p.name: sha256_of(p) for p in sorted(path.iterdir()) if p.is_file()})
    return sha256_of(path)


def _matte_key(frames: list[Path], preset: PresetConfig, image: str | Path | None) -> str:
    return _key({"frames": [sha256_of(p) for p in frames], "image": _input_hash(image), "matte": asdict(preset.matte),
                 "version": __version__})  # fmt: skip


def _mesh_key(matte_dir: Path, preset: PresetConfig, mesh: str | Path | None, image: Any, seed: int) -> str:
    first = matte_dir / "frames" / "000.png"
    reference = matte_dir / "image.png" if image is not None else first
    return _key(
        {"reference": sha256_of(reference) if reference.is_file() else None, "frame0": sha256_of(first)
         if first.is_file() else None, "mesh_file": _input_hash(mesh), "mesh": asdict(preset.mesh),
         "focal": asdict(preset.focal), "seed": seed, "version": __version__}
    )  # fmt: skip


def _needs_matting(video: Any, image: Any, video_cached: bool, video_dir: Path) -> bool:
    """Whether a matting model will be loaded: frames (or the image) without a transparent background."""
    from pla4d.stages.matte import has_alpha

    if video is None and not video_cached:
        return True  # generated frames have no alpha
    frames = _frame_files(video_dir / "frames") if video_cached else None
    if frames is None:
        path = Path(video)
        if path.is_file():
            return True  # video files carry no alpha
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not all(has_alpha(load_png(p)) for p in frames):
        return True
    return image is not None and not has_alpha(load_png(image))


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text()) if path.is_file() else {}


def _video_stage(
    prompt: str | None, video: Any, folder: Path, preset: PresetConfig, seed: int, dev: torch.device,
    found: dict[str, Path], emit: EventSink, should_cancel: Callable[[], bool] | None, show_progress: bool,
) -> dict[str, Any]:  # fmt: skip
    if video is not None:
        frames, fps, note = read_user_video(video, max(preset.video.num_frames, 2))
        _write_frames(folder / "frames", frames)
        info = {"source": "user", **note, "fps": fps or preset.video.fps}
        write_json(folder / "video.json", info)
        return info
    from pla4d.textvideo import load_text_to_video

    settings = preset.video
    model = load_text_to_video(settings.model, found[settings.model], dev, settings.dtype, settings.cpu_offload,
                               settings.vae_tiling)  # fmt: skip
    progress = Progress("text-to-video", settings.steps) if show_progress else None
    began = time.perf_counter()

    def on_step(step: int, total: int) -> None:
        if progress is not None:
            progress.update()
        elapsed = time.perf_counter() - began
        emit({"type": "progress", "stage": "video", "iteration": step, "total": total,
              "eta_s": elapsed / step * max(total - step, 0)})  # fmt: skip

    try:
        result = model.generate(prompt or "", settings, seed=seed, on_step=on_step, should_cancel=should_cancel)
    finally:
        model.release()  # before the matting and mesh models load
    _write_frames(folder / "frames", list(result.frames))
    h, w = result.frames.shape[1:3]
    even = result.frames[:, : h - h % 2, : w - w % 2]
    write_video(folder / "video.mp4", list(even), result.fps)
    info = {"source": "text-to-video", "model": result.model, "prompt": result.prompt,
            "negative_prompt": result.negative_prompt, "frames": int(result.frames.shape[0]),
            "generated_frames": result.generated_frames, "fps": result.fps, "size": [int(w), int(h)],
            "seconds": round(result.seconds, 2)}  # fmt: skip
    write_json(folder / "video.json", info)
    return info


def _matte_stage(
    video_dir: Path, folder: Path, preset: PresetConfig, image: Any, found: dict[str, Path], emit: EventSink,
    should_cancel: Callable[[], bool] | None, show_progress: bool,
) -> dict[str, Any]:  # fmt: skip
    from pla4d.stages.matte import RembgMatter, has_alpha, matte_clip

    frames = [load_png(p) for p in _frame_files(video_dir / "frames")]
    frames = [f if has_alpha(f) else f[..., :3] for f in frames]
    extra = [load_png(image)] if image is not None else []
    matter = None
    if not all(has_alpha(f) for f in frames + extra):
        matter = RembgMatter(preset.matte.session)
    progress = Progress("matte", len(frames)) if show_progress else None

    def on_frame(done: int, total: int) -> None:
        if progress is not None:
            progress.update()
        emit({"type": "progress", "stage": "matte", "iteration": done, "total": total})

    try:
        out, report = matte_clip(frames, preset.matte, None if matter is None else matter.alpha, on_frame,
                                 should_cancel)  # fmt: skip
        if image is not None:
            still = extra[0] if has_alpha(extra[0]) else extra[0][..., :3]
            image_out, image_report = matte_clip([still], preset.matte, None if matter is None else matter.alpha)
            report["image"] = image_report
    finally:
        if matter is not None:
            matter.release()
    if report["empty_frames"]:
        print(f"pla4d: warning: no object in frame(s) {report['empty_frames']} after matting; dropped", file=sys.stderr)
    _write_frames(folder / "frames", out)
    if image is not None:
        save_png(folder / "image.png", image_out[0])
    report.update(session=preset.matte.session if matter is not None else None, frames=len(out))
    write_json(folder / "matte.json", report)
    return report


def _mesh_stage(
    matte_dir: Path, folder: Path, preset: PresetConfig, mesh: Any, seed: int, dev: torch.device,
    found: dict[str, Path],
) -> dict[str, Any]:  # fmt: skip
    from pla4d.image_to_mesh import choose_turn, normalise_mesh, orient_matrix, write_mesh_glb
    from pla4d.render.mesh import load_mesh

    folder.mkdir(parents=True, exist_ok=True)
    frame0 = load_png(matte_dir / "frames" / "000.png")
    reference = load_png(matte_dir / "image.png") if (matte_dir / "image.png").is_file() else frame0
    cfg = preset.mesh
    if mesh is not None:
        raw, source, model_name, up, orient = load_mesh(mesh), "user", None, cfg.up or "y", "none"
    else:
        if cfg.model == "external":
            from pla4d.image_to_mesh.external import ExternalImageToMesh

            adapter: Any = ExternalImageToMesh(cfg.command or "", folder / "external", cfg.command_cwd,
                                               cfg.command_timeout_s, up=cfg.up or "y")  # fmt: skip
        else:
            from pla4d.image_to_mesh.shap_e import ShapEImageToMesh

            adapter = ShapEImageToMesh.load(
                cfg.model, found[cfg.model], dev, cfg.dtype, steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                grid_size=cfg.grid_size, image_size=cfg.image_size,
            )  # fmt: skip
        try:
            raw = adapter(reference, seed=seed)
        finally:
            adapter.release()  # before the static stage needs the GPU
        source, model_name, up, orient = "model", adapter.name, cfg.up or adapter.up, cfg.orient
    if orient == "auto":
        orientation = choose_turn(raw, frame0, up, radius=preset.focal.radius)
        turn, scores = orientation.turn_deg, orientation.scores
    else:
        turn, scores = (0.0 if orient == "none" else float(orient)), {}
    normalised, matrix = normalise_mesh(raw, orient_matrix(up, turn))
    write_mesh_glb(normalised, folder / "mesh.glb")
    _mesh_preview(normalised, frame0, folder / "preview.png", preset.focal.radius)
    info = {"source": source, "model": model_name, "input": str(mesh) if mesh is not None else None,
            "orientation": {"up": up, "turn_deg": turn, "scores": scores}, "transform": matrix.tolist(),
            "vertices": normalised.num_vertices, "faces": normalised.num_faces}  # fmt: skip
    write_json(folder / "mesh.json", info)
    return info


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
