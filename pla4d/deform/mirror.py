"""A mirror-plane prior for the motion the input view cannot see.

A single view fixes each point's motion across the image but not along the camera ray: depth motion leaves no
trace in the front-view loss. Most animated things (animals, people, robots) are mirror symmetric, and their
limbs and bodies move mostly parallel to the mirror plane (a gait swings legs fore and aft, it does not splay
them). So where the object has a mirror plane, the motion's component along the ray is chosen to keep the
motion parallel to that plane; the image-plane motion, which the video does show, is never pulled.

The plane is searched among planes containing the up axis (objects stand upright in the video) through the
object: the one whose reflection maps the most points onto the object (within ``tolerance``) wins, and the
prior is used only if that fraction is high enough. The field applies it (``DeformationField(depth_lift=...)``,
pla4d/deform/hexplane.py): only the component of the motion along the input camera's rays is replaced, so
the image-plane motion that the video shows is never pulled. Where a ray runs along the plane (a front view of
a face) the depth cannot make the motion parallel to it, and there the prior leaves the depth alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

__all__ = ["MirrorPlane", "find_mirror_plane", "lift_depth"]


@dataclass(frozen=True)
class MirrorPlane:
    normal: tuple[float, float, float]  # unit, perpendicular to the up axis
    offset: float  # the plane is {x : normal . x = offset}
    inlier_fraction: float  # points whose reflection lands within the tolerance of the object

    def to_dict(self) -> dict[str, object]:
        return {"normal": list(self.normal), "offset": self.offset, "inlier_fraction": self.inlier_fraction}


def _in_plane_basis(up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    up = up / np.linalg.norm(up)
    helper = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    a = np.cross(up, helper)
    a /= np.linalg.norm(a)
    return a, np.cross(up, a)


def find_mirror_plane(
    points: Tensor | np.ndarray,
    up: Tensor | np.ndarray,
    tolerance: float | None = None,
    min_inliers: float = 0.25,
    angle_step_deg: float = 2.0,
    max_queries: int = 4000,
) -> MirrorPlane | None:
    """The best mirror plane containing ``up``, or None when fewer than ``min_inliers`` of the points reflect
    onto the object. ``tolerance`` (world units) defaults to 2.5 times the median spacing of the points, so the
    fraction means the same for 2k and 40k Gaussians."""
    pts = torch.as_tensor(points).detach().cpu().double().numpy()
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < 8:
        raise ValueError(f"points must be (N >= 8, 3), got {tuple(pts.shape)}")
    up_np = torch.as_tensor(up).detach().cpu().double().numpy()
    centre = pts.mean(axis=0)
    rel = pts - centre
    tree = cKDTree(rel)
    queries = rel[:: max(1, len(rel) // max_queries)]
    if tolerance is None:
        tolerance = 2.5 * float(np.median(tree.query(queries, k=2)[0][:, 1]))
    a, b = _in_plane_basis(up_np)

    def score(angle: float) -> tuple[float, float, np.ndarray]:
        normal = math.cos(angle) * a + math.sin(angle) * b
        proj = queries @ normal
        best = (-1.0, 0.0)
        # The plane need not pass through the centroid (a raised paw shifts it): try offsets around the median.
        for offset in np.median(proj) + np.linspace(-4, 4, 9) * tolerance:
            reflected = queries - 2.0 * (proj - offset)[:, None] * normal
            fraction = float((tree.query(reflected, distance_upper_bound=tolerance)[0] < tolerance).mean())
            if fraction > best[0]:
                best = (fraction, float(offset))
        return best[0], best[1], normal

    coarse = max(np.arange(0.0, 180.0, angle_step_deg), key=lambda d: score(math.radians(d))[0])
    fine = coarse + np.linspace(-angle_step_deg, angle_step_deg, 5)
    fraction, offset, normal = max((score(math.radians(d)) for d in fine), key=lambda r: r[0])
    if fraction < min_inliers:
        return None
    return MirrorPlane(
        normal=tuple(float(x) for x in normal),
        offset=float(offset + normal @ centre),
        inlier_fraction=round(fraction, 4),
    )


def lift_depth(displacement: Tensor, points: Tensor, normal: Tensor, eye: Tensor, softness: float = 0.3) -> Tensor:
    """``displacement`` (..., N, 3) of ``points`` (N, 3) with its component along the rays from ``eye`` replaced
    by the one that makes it parallel to the plane with unit ``normal``.

    That depth is ``-(across . n) / cos`` with ``cos = ray . n``. Where the ray runs along the plane it would grow
    without bound from motion that is simply not in the plane, so it is weighted by
    ``cos^4 / (cos^4 + softness^4)``: ~1 where the ray crosses the plane clearly, ~0 where it grazes it (no depth
    motion there, as without the prior). The image-plane part (``across``) is returned unchanged."""
    rays = torch.nn.functional.normalize(points - eye, dim=-1)
    along = (displacement * rays).sum(dim=-1, keepdim=True)
    across = displacement - along * rays
    cos = rays @ normal  # (N,)
    gain = (cos**3 / (cos**4 + softness**4))[..., None]
    return across - gain * (across @ normal)[..., None] * rays
