"""Matting and framing: video frames -> square RGBA frames in the focal search's convention.

1. **Alpha**: frames that already carry a transparent background pass through (their alpha is trusted as it
   is: no clean-up); the others go through a rembg
   session chosen by name (u2net, u2netp, isnet-general-use, birefnet-general, ...; paper appendix A.1 uses rembg).
2. **Clean-up** of each mask (alpha > threshold): keep the largest connected component (text-to-video frames
   often hold stray specks the matting network picks up) and fill holes smaller than a fraction of the frame
   (eyes and buttons the network took for background). Alpha stays soft along the kept edges.
3. **Framing**: the focal search (``pla4d.stages.focal``) renders a mesh centred at the origin from a camera on +Z
   looking at it, so the object must sit in the middle of the frame. One similarity transform for the whole clip
   puts frame 1's bounding-box centre at the image centre and scales its larger side to ``fill`` of the frame
   (Zero123 / DreamGaussian's 0.8), shrunk if any later frame would leave the picture. One transform, not one per
   frame, so the object's own motion (a jump, a walk across) is kept for the 4D stage.

Resampling is done on premultiplied colour, so no background colour bleeds into the edges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from pla4d.config import MatteConfig
from pla4d.errors import Cancelled, MissingWeightsError

__all__ = ["Framing", "RembgMatter", "clean_mask", "frame_clip", "has_alpha", "matte_clip"]


def has_alpha(frame: np.ndarray, transparent_fraction: float = 0.01) -> bool:
    """True when an RGBA frame has a background to speak of: at least 1% of its pixels nearly transparent."""
    if frame.ndim != 3 or frame.shape[2] != 4:
        return False
    return float((frame[..., 3] < 0.05).mean()) >= transparent_fraction


class RembgMatter:
    """A rembg session by name; :meth:`alpha` returns the soft foreground mask of an RGB frame."""

    def __init__(self, session: str, providers: list[str] | None = None) -> None:
        try:
            from rembg import new_session
        except ImportError as exc:
            raise MissingWeightsError(
                f"matting needs rembg and onnxruntime: pip install 'pla4d[models]' ({exc})"
            ) from exc
        kwargs: dict[str, Any] = {}
        if providers is not None:
            kwargs["providers"] = providers
        self.name = session
        self.session = new_session(session, **kwargs)

    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) in [0, 1] (or uint8) -> (H, W) float32 alpha in [0, 1]."""
        from PIL import Image

        image = Image.fromarray(_uint8(rgb[..., :3]))
        mask = self.session.predict(image)[0]
        return np.asarray(mask.convert("L"), dtype=np.float32) / 255.0

    def release(self) -> None:
        self.session = None


def _uint8(x: np.ndarray) -> np.ndarray:
    return x if x.dtype == np.uint8 else (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def clean_mask(
    alpha: np.ndarray, threshold: float = 0.5, keep_largest: bool = True, hole_fraction: float = 0.002
) -> np.ndarray:
    """Alpha with every component but the largest removed and small holes filled (see the module docstring)."""
    mask = alpha > threshold
    if not mask.any():
        return np.zeros_like(alpha, dtype=np.float32)
    out = alpha.astype(np.float32).copy()
    if keep_largest:
        labels, count = ndimage.label(mask)
        if count > 1:
            sizes = ndimage.sum(mask, labels, index=np.arange(1, count + 1))
            keep = labels == (1 + int(np.argmax(sizes)))
            # Soft edge pixels below the threshold belong to the kept component when they touch it.
            near = ndimage.binary_dilation(keep, iterations=2)
            out = np.where(near, out, 0.0)
            mask = keep
    if hole_fraction > 0:
        holes = ndimage.binary_fill_holes(mask) & ~mask
        labels, count = ndimage.label(holes)
        if count:
            limit = hole_fraction * mask.size
            sizes = ndimage.sum(holes, labels, index=np.arange(1, count + 1))
            small = np.isin(labels, 1 + np.flatnonzero(sizes <= limit))
            out = np.where(small, 1.0, out)
    return out.astype(np.float32)


@dataclass(frozen=True)
class Framing:
    """Output pixel = (input pixel - centre) * scale + size / 2 (pixel-centre coordinates, x right, y down)."""

    centre_x: float
    centre_y: float
    scale: float
    size: int

    def to_dict(self) -> dict[str, float]:
        return {"centre_x": self.centre_x, "centre_y": self.centre_y, "scale": self.scale, "size": self.size}


def _bbox(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def frame_clip(alphas: list[np.ndarray], size: int, fill: float = 0.8, threshold: float = 0.5) -> Framing:
    """The clip's transform: frame 1's box centred and scaled to ``fill``; every frame's box kept inside."""
    if not 0.1 <= fill <= 1.0:
        raise ValueError(f"fill must lie in [0.1, 1], got {fill}")
    first = _bbox(alphas[0] > threshold)
    if first is None:
        raise ValueError("the matte of frame 1 is empty: no object found to frame (try another matting session)")
    x0, y0, x1, y1 = first
    h, w = alphas[0].shape
    if max(x1 - x0, y1 - y0) < max(4.0, 0.02 * max(h, w)):
        raise ValueError(
            f"the object in frame 1 is only {x1 - x0:.0f}x{y1 - y0:.0f} pixels after matting: no usable object "
            "(is it in view? try another matting session or seed)"
        )
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    scale = fill * size / max(x1 - x0, y1 - y0)
    half = size / 2.0
    for alpha in alphas[1:]:
        box = _bbox(alpha > threshold)
        if box is None:
            continue
        reach = max(cx - box[0], box[2] - cx, cy - box[1], box[3] - cy)
        if reach * scale > half:
            scale = half / reach
    return Framing(cx, cy, scale, size)


def apply_framing(rgba: np.ndarray, framing: Framing) -> np.ndarray:
    """Resample a straight-alpha RGBA frame with the transform (antialiased, premultiplied) -> (S, S, 4)."""
    x = torch.from_numpy(np.ascontiguousarray(rgba, dtype=np.float32))
    premult = torch.cat([x[..., :3] * x[..., 3:], x[..., 3:]], dim=-1).permute(2, 0, 1)[None]
    h, w = rgba.shape[:2]
    new_h, new_w = max(1, round(h * framing.scale)), max(1, round(w * framing.scale))
    scaled = F.interpolate(premult, size=(new_h, new_w), mode="bilinear", align_corners=False,
                           antialias=new_h < h)[0]  # fmt: skip
    sy, sx = new_h / h, new_w / w
    # Integer placement of the scaled frame; the half-pixel rounding is far below what the focal search resolves.
    left = int(round(framing.size / 2.0 - framing.centre_x * sx))
    top = int(round(framing.size / 2.0 - framing.centre_y * sy))
    out = torch.zeros(4, framing.size, framing.size)
    src_x0, src_y0 = max(0, -left), max(0, -top)
    dst_x0, dst_y0 = max(0, left), max(0, top)
    width = min(new_w - src_x0, framing.size - dst_x0)
    height = min(new_h - src_y0, framing.size - dst_y0)
    if width > 0 and height > 0:
        out[:, dst_y0 : dst_y0 + height, dst_x0 : dst_x0 + width] = scaled[
            :, src_y0 : src_y0 + height, src_x0 : src_x0 + width
        ]
    out = out.permute(1, 2, 0).clamp(0.0, 1.0)
    alpha = out[..., 3:]
    straight = torch.where(alpha > 1e-6, out[..., :3] / alpha.clamp_min(1e-6), torch.zeros_like(out[..., :3]))
    return torch.cat([straight.clamp(0.0, 1.0), alpha], dim=-1).numpy()


def matte_clip(
    frames: list[np.ndarray],
    settings: MatteConfig,
    matter: Callable[[np.ndarray], np.ndarray] | None = None,
    on_frame: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Frames ((H, W, 3|4) floats in [0, 1]) -> square straight-alpha RGBA frames and a report.

    ``matter`` maps an RGB frame to its alpha (e.g. ``RembgMatter(...).alpha``); it may be None when every frame
    already has alpha. The report says which path each frame took and the framing used."""
    if not frames:
        raise ValueError("no frames to matte")
    passthrough = all(has_alpha(f) for f in frames)
    if not passthrough and matter is None:
        raise ValueError("these frames have no transparent background and no matting session was given")
    alphas: list[np.ndarray] = []
    rgbs: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        if should_cancel is not None and should_cancel():
            raise Cancelled("cancelled during matting")
        rgb = frame[..., :3].astype(np.float32)
        if passthrough:  # the user's own alpha is trusted as it is
            alphas.append(frame[..., 3].astype(np.float32))
        else:
            raw = matter(rgb)  # type: ignore[misc]
            alphas.append(
                clean_mask(raw, settings.alpha_threshold, settings.keep_largest, settings.fill_holes_fraction)
            )
        rgbs.append(rgb)
        if on_frame is not None:
            on_frame(i + 1, len(frames))
    coverage = [float((a > settings.alpha_threshold).mean()) for a in alphas]
    if settings.reframe:
        framing = frame_clip(alphas, settings.size, settings.fill, settings.alpha_threshold)
    else:
        # Square frames are kept as they are (resized); the caller asserts they already follow the convention.
        h, w = alphas[0].shape
        if h != w:
            raise ValueError(f"reframe is off but the frames are not square ({w}x{h})")
        framing = Framing(w / 2.0, h / 2.0, settings.size / w, settings.size)
    framed = [
        apply_framing(np.concatenate([rgb, a[..., None]], axis=-1), framing)
        for rgb, a in zip(rgbs, alphas, strict=True)
    ]
    # A frame in which the object vanished (out of view, or lost by the matting) cannot guide the 4D stage: it is
    # dropped and reported, as long as frame 1 and at least one other frame remain.
    empty = [i for i, f in enumerate(framed) if float(f[..., 3].max()) < 0.5]
    if 0 in empty:
        raise ValueError("no object left in frame 1 after matting (try another matting session or seed)")
    out = [f for i, f in enumerate(framed) if i not in empty]
    if len(out) < 2:
        raise ValueError(f"only {len(out)} frame(s) show the object after matting; the 4D stage needs at least 2")
    report = {
        "source": "alpha" if passthrough else "rembg",
        "coverage": coverage,
        "framing": framing.to_dict(),
        "empty_frames": empty,
        "kept_frames": [i for i in range(len(framed)) if i not in empty],
    }
    return out, report
