"""A run's inputs, read and checked before the first stage: a bad frame or mesh ends the run at once with one
message naming the file, instead of after minutes of work."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pla4d.media import load_png
from pla4d.runfolder import sha256_of
from pla4d.runner.core import digest


def read_image(path: str | Path) -> Any:
    """An image file as float32 RGBA; a file that is not a readable image is a ValueError naming it."""
    try:
        return load_png(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow: truncated or not an image at all
        raise ValueError(f"{path} is not a readable image: {exc}") from None


def load_frame(path: str | Path) -> Tensor:
    """A frame as (S, S, 4) straight-alpha RGBA; non-square frames are padded (transparent) to square."""
    rgba = torch.from_numpy(read_image(path))
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


def frame_paths(video: str | Path) -> list[Path]:
    """The frames of a video given as a folder of RGBA PNGs (sorted by name)."""
    video = Path(video)
    if video.is_file():
        raise ValueError(
            f"{video} is a video file: frames need an alpha channel (the object matted), which video files do "
            "not carry; give a folder of RGBA PNG frames, or use `pla4d generate --video` (it mattes them)"
        )
    if not video.is_dir():
        raise FileNotFoundError(f"video frames folder not found: {video}")
    frames = sorted(p for p in video.iterdir() if p.suffix.lower() == ".png")
    if len(frames) < 2:
        raise ValueError(f"{video} holds {len(frames)} PNG frame(s); the 4D stage needs at least 2")
    return frames


def load_frames(paths: Sequence[Path]) -> Tensor:
    """Every frame, checked (readable, matted, one size), as (T, S, S, 4)."""
    frames = [load_frame(p) for p in paths]
    sizes = {tuple(f.shape) for f in frames}
    if len(sizes) != 1:
        first = tuple(frames[0].shape)
        odd = next(p for p, f in zip(paths, frames, strict=True) if tuple(f.shape) != first)
        raise ValueError(f"all frames must have one size: {paths[0].name} is {first[:2]}, {odd.name} is not")
    return torch.stack(frames)


def check_mesh(path: str | Path) -> Any:
    """The mesh file loaded (GLB, glTF, OBJ, ...); unreadable or empty meshes are a ValueError naming the file."""
    from pla4d.render.mesh import load_mesh

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh not found: {path}")
    try:
        mesh = load_mesh(path)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise ValueError(f"{path} is not a readable mesh: {type(exc).__name__}: {exc}") from None
    if mesh.num_faces == 0:
        raise ValueError(f"{path} holds no faces")
    return mesh


def content_key(path: str | Path | None) -> str | None:
    """The hash of a file, or of a folder's files by name (an input's key in the stage cache)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        return digest({p.name: sha256_of(p) for p in sorted(path.iterdir()) if p.is_file()})
    return sha256_of(path)
