"""Render the built-in example creature into a clip folder laid out like the benchmark clips.

Layout (the same as ``../shared/bench/<clip>/``, so every tool that reads a clip reads this one):
``input/000.png ...`` (front view, RGBA, straight alpha), ``novel/<AAA>/000.png ...`` (held-out views),
``cameras.json``, ``first_frame.glb`` (the frame-1 mesh with linear vertex colours, as glTF wants) and
``gt_verts.npz`` (per-frame vertices).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pla4d.cameras import Cameras, focal_from_fov, orbit_cameras
from pla4d.colour import srgb_to_linear
from pla4d.example.creature import CreatureAnimation, animate_creature
from pla4d.media import save_png
from pla4d.progress import Progress
from pla4d.render.mesh import Mesh, mesh_from_arrays, render_mesh

NOVEL_AZIMUTHS = (45.0, 135.0, 225.0, 315.0)
CAMERA_RADIUS = 3.0
FOV_DEG = 40.0


@dataclass(frozen=True)
class ExampleSettings:
    num_frames: int = 32
    fps: float = 16.0
    resolution: int = 256
    supersample: int = 3
    novel_azimuths: tuple[float, ...] = NOVEL_AZIMUTHS

    def validate(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"frame count must be at least 1, got {self.num_frames}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if not 16 <= self.resolution <= 2048:
            raise ValueError(f"resolution must be between 16 and 2048 pixels, got {self.resolution}")
        if not 1 <= self.supersample <= 8:
            raise ValueError(f"supersample must be between 1 and 8, got {self.supersample}")


def creature_mesh(animation: CreatureAnimation, frame: int = 0) -> Mesh:
    """The creature at ``frame`` as a vertex-coloured mesh."""
    return mesh_from_arrays(
        animation.vertices[frame], animation.faces, vertex_colors=animation.colors_srgb, color_space="srgb"
    )


def example_cameras(settings: ExampleSettings) -> dict[str, Cameras]:
    """View name -> camera, the front ("input") view first."""
    views = {"input": orbit_cameras([0.0], 0.0, CAMERA_RADIUS, FOV_DEG, settings.resolution)}
    for az in settings.novel_azimuths:
        views[f"novel/{az:03.0f}"] = orbit_cameras([az], 0.0, CAMERA_RADIUS, FOV_DEG, settings.resolution)
    return views


def render_example_frames(
    animation: CreatureAnimation, cameras: Cameras, supersample: int = 3, progress: Progress | None = None
) -> np.ndarray:
    """(T, C, H, W, 4) straight-alpha RGBA renders of every frame from every camera."""
    base = creature_mesh(animation, 0)
    frames = []
    for t in range(len(animation.vertices)):
        mesh = base.with_vertices(torch.from_numpy(animation.vertices[t]))
        out = render_mesh(mesh, cameras, supersample=supersample)
        alpha = out.alpha
        # render_mesh composites over black, i.e. premultiplied; undo it for straight-alpha PNGs.
        straight = torch.where(alpha > 0, out.rgb / alpha.clamp_min(1e-8), torch.zeros_like(out.rgb))
        frames.append(torch.cat([straight.clamp(0, 1), alpha], dim=-1).numpy())
        if progress is not None:
            progress.update()
    return np.stack(frames)


def write_example_clip(out_dir: str | Path, settings: ExampleSettings | None = None) -> Path:
    """Render the example creature into ``out_dir`` in the benchmark-clip layout; returns the folder."""
    settings = settings or ExampleSettings()
    settings.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    animation = animate_creature(settings.num_frames, settings.fps)
    views = example_cameras(settings)
    names = list(views)
    batch = Cameras.cat([views[n] for n in names])

    with Progress("render example", settings.num_frames) as progress:
        renders = render_example_frames(animation, batch, settings.supersample, progress)
    for c, name in enumerate(names):
        for t in range(settings.num_frames):
            save_png(out / name / f"{t:03d}.png", renders[t, c])

    _write_first_frame_glb(animation, out / "first_frame.glb")
    np.savez_compressed(
        out / "gt_verts.npz",
        verts=animation.vertices,
        faces=animation.faces,
        times=animation.times,
    )
    focal = focal_from_fov(FOV_DEG, settings.resolution)
    cameras_json = {
        "asset": "pla4d built-in example creature",
        "n_frames": settings.num_frames,
        "fps": settings.fps,
        "times_sec": animation.times.tolist(),
        "resolution": [settings.resolution, settings.resolution],
        "fov_deg": FOV_DEG,
        "focal_px": focal,
        "K": views["input"].Ks[0].tolist(),
        "camera_radius": CAMERA_RADIUS,
        "world_frame": "+Y up, object faces +Z, front camera on +Z (pla4d convention)",
        "camera_position_formula": "C = R*(sin(az)cos(el), sin(el), cos(az)cos(el)); looks at origin, up +Y",
        "views": {
            name: {
                "azimuth_deg": 0.0 if name == "input" else float(name.split("/")[1]),
                "elevation_deg": 0.0,
                "w2c_opencv": views[name].viewmats[0].tolist(),
                "c2w_opencv": torch.linalg.inv(views[name].viewmats[0]).tolist(),
            }
            for name in names
        },
        "normalization": {"bound": "bbox centre of all frames at origin; max vertex radius over all frames = 1"},
        "render": {"engine": "pla4d CPU mesh renderer (unlit albedo)", "supersample": settings.supersample},
    }
    (out / "cameras.json").write_text(json.dumps(cameras_json, indent=1))
    return out


def _write_first_frame_glb(animation: CreatureAnimation, path: Path) -> None:
    import trimesh  # only needed for export

    linear = srgb_to_linear(torch.from_numpy(animation.colors_srgb)).numpy()
    rgba = np.concatenate([linear, np.ones((len(linear), 1))], axis=1)
    mesh = trimesh.Trimesh(
        vertices=animation.vertices[0],
        faces=animation.faces,
        vertex_colors=(np.clip(rgba, 0, 1) * 255.0 + 0.5).astype(np.uint8),
        process=False,
    )
    mesh.export(path)
