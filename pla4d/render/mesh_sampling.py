"""Uniform surface samples of a mesh, with the colour the mesh renderer shows at each of them.

A sample's colour follows ``pla4d.render.mesh``'s shading exactly: linear albedo
``material factor x interpolated linear vertex colour x bilinear(texture decoded to linear)`` (texel centres at
``(k + 0.5) / size``, REPEAT wrap, glTF UVs with v down), then encoded to display sRGB. Lighting is unlit, so this
is what every view of an opaque, unoccluded surface point shows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from pla4d.colour import linear_to_srgb, srgb_to_linear
from pla4d.render.mesh_data import Mesh

__all__ = ["SurfaceSamples", "face_areas", "sample_barycentric", "sample_surface", "surface_colors"]


class SurfaceSamples(NamedTuple):
    """``points`` (n, 3) and unit ``normals`` (n, 3) (the face's geometric normal, by its winding) in the world
    frame, ``colors_srgb`` (n, 3) display colours in [0, 1] (float32) and ``face_idx`` (n,) int64; all on CPU."""

    points: Tensor
    normals: Tensor
    colors_srgb: Tensor
    face_idx: Tensor


def face_areas(mesh: Mesh) -> Tensor:
    """(F,) float64 triangle areas."""
    v = mesh.vertices.detach().cpu().double()
    tri = v[mesh.faces.cpu()]
    return 0.5 * torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)


def sample_barycentric(mesh: Mesh, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` area-uniform surface locations as (face_idx (n,) int64, barycentrics (n, 3) float64): faces picked
    with probability proportional to area, points uniform in the triangle. These are the locations
    :func:`sample_surface` uses for the same ``seed``; they stay attached to the surface when the vertices move."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of samples must be a positive int, got {n!r}")
    areas = face_areas(mesh)
    total = float(areas.sum()) if areas.numel() else 0.0
    if not total > 0.0 or not np.isfinite(total):
        raise ValueError("the mesh has no surface area to sample (no faces, or only degenerate ones)")
    rng = np.random.default_rng(seed)
    face_idx = torch.from_numpy(rng.choice(len(areas), size=n, p=(areas / total).numpy())).long()
    # Uniform in the triangle: fold the unit square's upper half back onto the lower one.
    uv = rng.random((n, 2))
    flip = uv.sum(axis=1) > 1.0
    uv[flip] = 1.0 - uv[flip]
    return face_idx, torch.from_numpy(np.column_stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]]))


def sample_surface(mesh: Mesh, n: int, seed: int = 0) -> SurfaceSamples:
    """``n`` points uniformly distributed over the mesh's surface area, with normals, renderer-matching sRGB
    colours and face indices. Deterministic for a ``seed``."""
    face_idx, bary = sample_barycentric(mesh, n, seed)
    tri = mesh.vertices.detach().cpu().double()[mesh.faces.cpu()[face_idx]]  # (n, 3 corners, 3)
    points = (bary[:, :, None] * tri).sum(dim=1)
    normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return SurfaceSamples(points.float(), normals.float(), surface_colors(mesh, face_idx, bary), face_idx)


def surface_colors(mesh: Mesh, face_idx: Tensor, bary: Tensor, srgb: bool = True) -> Tensor:
    """(n, 3) colour at barycentrics ``bary`` (n, 3) of faces ``face_idx`` (n,), as the renderer shades it:
    display sRGB (default) or the linear albedo (``srgb=False``)."""
    face_idx = torch.as_tensor(face_idx).long().cpu()
    bary = torch.as_tensor(bary).double().cpu()
    if face_idx.ndim != 1 or bary.shape != (face_idx.shape[0], 3):
        raise ValueError(f"need face_idx (n,) and bary (n, 3), got {tuple(face_idx.shape)} and {tuple(bary.shape)}")
    n = face_idx.shape[0]
    corners = mesh.faces.cpu()[face_idx]  # (n, 3)
    fm = torch.zeros(n, dtype=torch.long) if mesh.face_material is None else mesh.face_material.cpu()[face_idx]
    materials = mesh.all_materials()
    factors = torch.stack([m.base_color.detach().cpu().double() for m in materials])
    linear = factors[fm]
    if mesh.vertex_colors is not None:
        vc = mesh.vertex_colors.detach().cpu().double()[corners]  # (n, 3 corners, 3)
        linear = linear * (bary[:, :, None] * vc).sum(dim=1)
    if mesh.uvs is not None:
        uv = (bary[:, :, None] * mesh.uvs.detach().cpu().double()[corners]).sum(dim=1)
        uv = torch.where(torch.isfinite(uv).all(dim=1, keepdim=True), uv, torch.zeros_like(uv))
        for m_idx, material in enumerate(materials):
            if material.texture is None:
                continue
            sel = fm == m_idx
            if bool(sel.any()):
                linear[sel] = linear[sel] * _bilinear_linear(material.texture, uv[sel])
    out = linear.float()
    return linear_to_srgb(out) if srgb else out


def _bilinear_linear(texture: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of the linear-decoded sRGB ``texture`` (Ht, Wt, 3) at glTF ``uv`` (n, 2), REPEAT wrap."""
    tex = srgb_to_linear(texture.detach().cpu().double())
    th, tw = tex.shape[0], tex.shape[1]
    x = uv[:, 0] * tw - 0.5
    y = uv[:, 1] * th - 0.5
    xf, yf = torch.floor(x), torch.floor(y)
    ax, ay = (x - xf)[:, None], (y - yf)[:, None]
    x0 = torch.remainder(xf.long(), tw)
    y0 = torch.remainder(yf.long(), th)
    x1 = torch.remainder(x0 + 1, tw)
    y1 = torch.remainder(y0 + 1, th)
    return (
        (1 - ax) * (1 - ay) * tex[y0, x0]
        + ax * (1 - ay) * tex[y0, x1]
        + (1 - ax) * ay * tex[y1, x0]
        + ax * ay * tex[y1, x1]
    )
