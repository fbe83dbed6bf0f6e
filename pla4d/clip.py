"""Benchmark clip folders (the Consistent4D-style layout of ``shared/bench/<clip>/``).

A clip folder holds ``cameras.json`` (resolution, K, per-view OpenCV w2c), ``input/000..NNN.png`` (the
front view), ``novel/<azimuth>/000..NNN.png`` (held-out views), ``first_frame.glb``/``.obj`` (the posed
first-frame mesh) and ``gt_verts.npz``. Frames are RGBA PNGs with straight alpha, sRGB.

Views are named as in ``cameras.json``: ``"input"`` and ``"novel/045"``, ``"novel/135"``, ...
The product never reads the shared benchmark at run time; this loader is for development and evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pla4d.cameras import Cameras
from pla4d.media import load_png
from pla4d.metrics import mask_iou, psnr

__all__ = ["Clip", "load_clip", "load_rgba", "composite_on_white", "psnr", "mask_iou"]


@dataclass(frozen=True)
class Clip:
    path: Path
    name: str
    views: tuple[str, ...]  # "input" first, then the novel views in cameras.json order
    cameras: dict[str, Cameras] = field(repr=False)  # one camera per view
    width: int
    height: int
    n_frames: int
    times: tuple[float, ...]  # seconds into the source animation of each frame
    fps: float  # cameras.json "fps" if given, else the rate at which ``times`` sample the animation
    azimuths_deg: dict[str, float] = field(repr=False)
    elevations_deg: dict[str, float] = field(repr=False)
    meta: dict = field(repr=False)  # the whole cameras.json

    @property
    def novel_views(self) -> tuple[str, ...]:
        return tuple(v for v in self.views if v != "input")

    @property
    def mesh_path(self) -> Path:
        return self.path / "first_frame.glb"

    @property
    def obj_path(self) -> Path:
        return self.path / "first_frame.obj"

    @property
    def gt_verts_path(self) -> Path:
        return self.path / "gt_verts.npz"

    def camera(self, view: str) -> Cameras:
        self._check_view(view)
        return self.cameras[view]

    def camera_batch(self, views: list[str] | tuple[str, ...] | None = None) -> Cameras:
        """The cameras of ``views`` (default: all, in ``self.views`` order) as one batch."""
        return Cameras.cat([self.camera(v) for v in (self.views if views is None else views)])

    def frame_path(self, view: str, frame: int) -> Path:
        self._check_view(view)
        if not 0 <= frame < self.n_frames:
            raise IndexError(f"frame {frame} out of range [0, {self.n_frames}) for clip {self.name}")
        return self.path / view / f"{frame:03d}.png"

    def load_frame(self, view: str, frame: int) -> Tensor:
        """(H, W, 4) float RGBA in [0, 1], straight alpha, sRGB."""
        return load_rgba(self.frame_path(view, frame))

    def load_frames(self, view: str, frames: list[int] | range | None = None) -> Tensor:
        """(T, H, W, 4) float RGBA of ``frames`` (default: all) of one view."""
        frames = range(self.n_frames) if frames is None else frames
        return torch.stack([self.load_frame(view, t) for t in frames])

    def _check_view(self, view: str) -> None:
        if view not in self.cameras:
            raise KeyError(f"clip {self.name} has no view {view!r}; views: {', '.join(self.views)}")


def load_clip(path: str | Path) -> Clip:
    """Read a clip folder's ``cameras.json`` (frames are loaded on demand)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"clip folder not found: {path}")
    cameras_file = path / "cameras.json"
    if not cameras_file.is_file():
        raise ValueError(f"not a benchmark clip folder (no cameras.json): {path}")
    try:
        meta = json.loads(cameras_file.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"unreadable cameras.json in {path}: {exc}") from exc
    missing = [k for k in ("resolution", "K", "views") if k not in meta]
    if missing:
        raise ValueError(f"cameras.json in {path} lacks {', '.join(missing)}: not a benchmark clip")
    width, height = (int(x) for x in meta["resolution"])
    view_entries = meta["views"]
    if "input" not in view_entries:
        raise ValueError(f"cameras.json in {path} has no 'input' view")
    views = ("input", *[v for v in view_entries if v != "input"])
    cameras, azimuths, elevations = {}, {}, {}
    for view in views:
        entry = view_entries[view]
        if "w2c_opencv" not in entry:
            raise ValueError(f"view {view!r} in {cameras_file} has no w2c_opencv")
        viewmat = torch.tensor(entry["w2c_opencv"], dtype=torch.float32).reshape(1, 4, 4)
        K = torch.tensor(entry.get("K", meta["K"]), dtype=torch.float32).reshape(1, 3, 3)
        cameras[view] = Cameras(viewmat, K, width, height)
        azimuths[view] = float(entry.get("azimuth_deg", float("nan")))
        elevations[view] = float(entry.get("elevation_deg", float("nan")))
    n_frames = int(meta.get("n_frames", 0)) or len(sorted((path / "input").glob("*.png")))
    if n_frames <= 0:
        raise ValueError(f"clip {path} has no frames (no n_frames in cameras.json and no input/*.png)")
    times = tuple(float(t) for t in meta.get("times_sec", [])) or tuple(float(t) for t in range(n_frames))
    if "fps" in meta:
        fps = float(meta["fps"])
    elif len(times) > 1 and times[-1] > times[0]:
        fps = (len(times) - 1) / (times[-1] - times[0])
    else:
        fps = 24.0
    return Clip(path, path.name, views, cameras, width, height, n_frames, times, fps, azimuths, elevations, meta)


def load_rgba(path: str | Path) -> Tensor:
    """An image file as (H, W, 4) float RGBA in [0, 1] (alpha 1 where the file has none)."""
    return torch.from_numpy(load_png(path))


def composite_on_white(rgba: Tensor | np.ndarray) -> Tensor:
    """(..., 4) straight-alpha RGBA -> (..., 3) RGB over white, in display (sRGB) space as the protocol scores."""
    t = rgba if isinstance(rgba, Tensor) else torch.from_numpy(np.asarray(rgba, np.float32))
    if t.shape[-1] != 4:
        raise ValueError(f"expected RGBA in the last axis, got shape {tuple(t.shape)}")
    alpha = t[..., 3:4]
    return t[..., :3] * alpha + (1.0 - alpha)
