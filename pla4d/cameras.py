"""Cameras in the one frame the whole project uses.

World: right-handed, +Y up, the object faces +Z, the front camera sits on +Z looking at the origin.
Cameras: intrinsics ``K`` in pixels, extrinsics as OpenCV world-to-camera 4x4 matrices
(camera x right, y down, z forward). Pixel (i, j) covers [j, j+1) x [i, i+1); its centre is at
(j + 0.5, i + 0.5), as in gsplat.

Orbit position (azimuth ``az``, elevation ``el``, radius ``r``):
``C = r * (sin(az) cos(el), sin(el), cos(az) cos(el))``, looking at the origin with +Y up,
so azimuth 0 is the front view and positive azimuth swings the camera towards +X.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


def focal_from_fov(fov_deg: float, size_px: int) -> float:
    """Focal length in pixels that spans ``size_px`` pixels with a field of view of ``fov_deg``."""
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
    return 0.5 * size_px / math.tan(math.radians(fov_deg) * 0.5)


def fov_from_focal(focal_px: float, size_px: int) -> float:
    """Field of view in degrees of a focal length ``focal_px`` over ``size_px`` pixels."""
    if focal_px <= 0.0:
        raise ValueError(f"focal length must be positive, got {focal_px}")
    return math.degrees(2.0 * math.atan(0.5 * size_px / focal_px))


def intrinsics(focal_px: float, width: int, height: int, fy_px: float | None = None) -> Tensor:
    """3x3 pinhole ``K`` with the principal point at the image centre."""
    fy = focal_px if fy_px is None else fy_px
    return torch.tensor(
        [[focal_px, 0.0, width / 2.0], [0.0, fy, height / 2.0], [0.0, 0.0, 1.0]],
        dtype=torch.float32,
    )


def orbit_position(azimuth_deg: float, elevation_deg: float, radius: float) -> Tensor:
    """Camera centre on the orbit around the origin (see the module docstring)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return torch.tensor(
        [radius * math.sin(az) * math.cos(el), radius * math.sin(el), radius * math.cos(az) * math.cos(el)],
        dtype=torch.float32,
    )


def look_at_w2c(eye: Tensor, target: Tensor | None = None, up: Tensor | None = None) -> Tensor:
    """OpenCV world-to-camera 4x4 for a camera at ``eye`` looking at ``target`` with ``up`` roughly up."""
    eye = torch.as_tensor(eye, dtype=torch.float64)
    target = torch.zeros(3, dtype=torch.float64) if target is None else torch.as_tensor(target, dtype=torch.float64)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64) if up is None else torch.as_tensor(up, dtype=torch.float64)
    forward = target - eye
    if forward.norm() < 1e-12:
        raise ValueError("camera eye and target coincide")
    z = forward / forward.norm()
    x = torch.linalg.cross(z, up)
    if x.norm() < 1e-9:
        # Looking straight along the up axis: any horizontal right vector will do.
        x = torch.linalg.cross(z, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    rot = torch.stack([x, y, z])  # rows: camera axes in world coordinates
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = rot
    w2c[:3, 3] = -rot @ eye
    return w2c.float()


@dataclass(frozen=True)
class Cameras:
    """A batch of ``C`` pinhole cameras sharing one image size.

    ``viewmats``: (C, 4, 4) OpenCV world-to-camera; ``Ks``: (C, 3, 3) in pixels.
    """

    viewmats: Tensor
    Ks: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.viewmats.ndim != 3 or self.viewmats.shape[1:] != (4, 4):
            raise ValueError(f"viewmats must be (C, 4, 4), got {tuple(self.viewmats.shape)}")
        if self.Ks.ndim != 3 or self.Ks.shape[1:] != (3, 3):
            raise ValueError(f"Ks must be (C, 3, 3), got {tuple(self.Ks.shape)}")
        if self.viewmats.shape[0] != self.Ks.shape[0]:
            raise ValueError("viewmats and Ks must hold the same number of cameras")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    def __len__(self) -> int:
        return int(self.viewmats.shape[0])

    def __getitem__(self, index: int | slice) -> Cameras:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Cameras(self.viewmats[index], self.Ks[index], self.width, self.height)

    def to(self, device: torch.device | str) -> Cameras:
        return Cameras(self.viewmats.to(device), self.Ks.to(device), self.width, self.height)

    def scaled(self, factor: float) -> Cameras:
        """The same cameras at ``factor`` times the resolution (the field of view is kept)."""
        width, height = round(self.width * factor), round(self.height * factor)
        Ks = self.Ks.clone()
        Ks[:, 0, :] *= width / self.width
        Ks[:, 1, :] *= height / self.height
        return Cameras(self.viewmats, Ks, width, height)

    def centers(self) -> Tensor:
        """(C, 3) camera centres in world coordinates."""
        rot = self.viewmats[:, :3, :3]
        trans = self.viewmats[:, :3, 3:]
        return -(rot.transpose(1, 2) @ trans)[..., 0]

    @staticmethod
    def cat(batches: list[Cameras]) -> Cameras:
        if not batches:
            raise ValueError("no cameras to concatenate")
        sizes = {(b.width, b.height) for b in batches}
        if len(sizes) != 1:
            raise ValueError(f"cameras of different image sizes cannot share a batch: {sorted(sizes)}")
        return Cameras(
            torch.cat([b.viewmats for b in batches]),
            torch.cat([b.Ks for b in batches]),
            batches[0].width,
            batches[0].height,
        )


def orbit_cameras(
    azimuths_deg: list[float] | tuple[float, ...],
    elevations_deg: list[float] | tuple[float, ...] | float = 0.0,
    radius: float = 3.0,
    fov_deg: float = 49.1,
    width: int = 256,
    height: int | None = None,
) -> Cameras:
    """Cameras on the orbit around the origin, one per azimuth, looking at the origin with +Y up.

    ``fov_deg`` is the field of view across the image width.
    """
    height = width if height is None else height
    if isinstance(elevations_deg, (int, float)):
        elevations_deg = [float(elevations_deg)] * len(azimuths_deg)
    if len(elevations_deg) != len(azimuths_deg):
        raise ValueError("give one elevation per azimuth, or a single elevation")
    if radius <= 0:
        raise ValueError(f"orbit radius must be positive, got {radius}")
    focal = focal_from_fov(fov_deg, width)
    viewmats = torch.stack(
        [look_at_w2c(orbit_position(a, e, radius)) for a, e in zip(azimuths_deg, elevations_deg, strict=True)]
    )
    Ks = intrinsics(focal, width, height).expand(len(azimuths_deg), 3, 3).clone()
    return Cameras(viewmats, Ks, width, height)


def front_camera(radius: float = 3.0, fov_deg: float = 49.1, width: int = 256, height: int | None = None) -> Cameras:
    """The input-video camera: on +Z looking at the origin."""
    return orbit_cameras([0.0], 0.0, radius, fov_deg, width, height)


@dataclass(frozen=True)
class FrontCamera:
    """The input video's camera as focal alignment matched it: what the static and motion stages train against.

    Written as the focal stage's ``camera.json``; ``K`` and ``w2c_opencv`` are the float32 values as lists, so the
    camera read back is bit-identical to the one handed over in memory."""

    focal_px: float
    fov_deg: float
    radius: float
    width: int
    height: int
    K: list[list[float]]
    w2c_opencv: list[list[float]]
    enabled: bool = True  # False: the initial fov was kept (the ablation without focal alignment)
    mse: float | None = None
    mask_iou: float | None = None
    search: list[list[float]] | None = None  # every (focal, mse) the search evaluated

    @classmethod
    def from_cameras(cls, cams: Cameras, radius: float, focal_px: float | None = None, **extra: Any) -> FrontCamera:
        """``focal_px``: the search's own value (a float64; ``K`` holds it rounded to float32)."""
        focal = float(cams.Ks[0, 0, 0]) if focal_px is None else float(focal_px)
        return cls(focal_px=focal, radius=radius, width=cams.width, height=cams.height, K=cams.Ks[0].tolist(),
                   w2c_opencv=cams.viewmats[0].tolist(), **extra)  # fmt: skip

    def cameras(self) -> Cameras:
        return Cameras(torch.tensor([self.w2c_opencv]), torch.tensor([self.K]), self.width, self.height)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FrontCamera:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
