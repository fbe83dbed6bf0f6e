"""Reading and writing images and videos (PNG frames, MP4 via the ffmpeg that imageio-ffmpeg ships)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 with rounding; uint8 passes through."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Save an (H, W, 3|4) image in [0, 1] (or uint8) as PNG; RGBA is written with straight alpha."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(np.asarray(image))).save(path)


def load_png(path: str | Path) -> np.ndarray:
    """Load an image as float32 (H, W, 4) RGBA in [0, 1]; images without alpha get alpha 1."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None


def composite(rgba: np.ndarray, background: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Straight-alpha RGBA over a solid background -> RGB."""
    alpha = rgba[..., 3:4]
    return rgba[..., :3] * alpha + np.asarray(background, dtype=rgba.dtype) * (1.0 - alpha)


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Write RGB frames (H, W, 3) in [0, 1] or uint8 as an H.264 MP4 (yuv420p, plays everywhere)."""
    import imageio.v2 as imageio  # heavy import, only where a video is written

    if not frames:
        raise ValueError("no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = np.asarray(frames[0])
    height, width = first.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
    with imageio.get_writer(
        path, fps=fps, codec="libx264", quality=8, pixelformat="yuv420p", macro_block_size=1
    ) as writer:
        for frame in frames:
            writer.append_data(to_uint8(np.asarray(frame)[..., :3]))
    return path


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], pad: int = 4, background: float = 1.0) -> np.ndarray:
    """Tile equally sized RGB images into a grid (rows of columns) with padding."""
    if not rows or not rows[0]:
        raise ValueError("no images to tile")
    height, width = rows[0][0].shape[:2]
    n_cols = max(len(r) for r in rows)
    sheet = np.full((len(rows) * (height + pad) + pad, n_cols * (width + pad) + pad, 3), background, dtype=np.float32)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            y, x = pad + i * (height + pad), pad + j * (width + pad)
            sheet[y : y + height, x : x + width] = np.asarray(image, dtype=np.float32)[..., :3]
    return sheet
