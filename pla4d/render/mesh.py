"""Unlit rendering of triangle meshes (CPU numba rasterizer or nvdiffrast), and the mesh API in one place.

The mesh types live in :mod:`pla4d.render.mesh_data` and file loading in :mod:`pla4d.render.mesh_io`; they are
importable from here too (``from pla4d.render.mesh import Mesh, load_mesh, render_mesh``).

Anti-aliasing: the image is rendered at ``supersample`` times the resolution and the samples are averaged
in linear, premultiplied space; the result is encoded to sRGB and composited over the background:
``rgb = srgb(sum(c * a) / sum(a)) * alpha + (1 - alpha) * background`` (background in sRGB display values).
A sample's colour is the mesh's linear albedo (see :mod:`pla4d.render.mesh_data`); surfaces render opaque.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pla4d.cameras import Cameras
from pla4d.colour import linear_to_srgb, srgb_to_linear
from pla4d.render.mesh_data import Material, Mesh, mesh_from_arrays
from pla4d.render.mesh_io import MESH_SUFFIXES, load_mesh

__all__ = [
    "BACKENDS",
    "MESH_SUFFIXES",
    "Material",
    "Mesh",
    "MeshRender",
    "load_mesh",
    "mesh_from_arrays",
    "render_mesh",
]

BACKENDS = ("auto", "cpu", "nvdiffrast")


@dataclass
class MeshRender:
    """Output of ``render_mesh`` for C cameras."""

    rgb: Tensor  # (C, H, W, 3) sRGB display colours composited over the background
    alpha: Tensor  # (C, H, W, 1) coverage
    depth: Tensor  # (C, H, W, 1) camera-space z of the nearest covered sample, 0 where empty


def render_mesh(
    mesh: Mesh,
    cameras: Cameras,
    background: Tensor | None = None,
    supersample: int = 3,
    backend: str = "auto",
    near: float = 1e-2,
) -> MeshRender:
    """Unlit render of ``mesh`` from every camera in ``cameras`` (one batch, one call).

    ``background``: sRGB display colour(s) behind the mesh: (3,), (H, W, 3) or (C, H, W, 3); None is black,
    i.e. ``rgb`` is then premultiplied by ``alpha``. ``supersample``: anti-aliasing factor per axis.
    ``backend``: "cpu" (numba rasterizer), "nvdiffrast" (CUDA), or "auto" (nvdiffrast when the mesh is on
    CUDA and nvdiffrast imports, else cpu). Geometry closer than ``near`` to a camera is clipped away.
    """
    if not isinstance(supersample, int) or supersample < 1:
        raise ValueError(f"supersample must be a positive integer, got {supersample!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not near > 0:
        raise ValueError(f"near must be positive, got {near}")
    if backend == "auto":
        backend = "nvdiffrast" if mesh.device.type == "cuda" and _nvdiffrast_available() else "cpu"
    elif backend == "nvdiffrast":
        if not _nvdiffrast_available():
            raise RuntimeError(
                "backend='nvdiffrast' needs nvdiffrast (built from source on a CUDA machine: "
                "https://github.com/NVlabs/nvdiffrast); use backend='cpu' or 'auto' without it"
            )
        if mesh.device.type != "cuda":
            raise RuntimeError("backend='nvdiffrast' needs the mesh on a CUDA device (mesh.to('cuda'))")
    device = mesh.device
    n, height, width = len(cameras), cameras.height, cameras.width
    work_device = device if backend == "nvdiffrast" else torch.device("cpu")
    bg = _background(background, n, height, width, work_device)
    if n == 0:
        empty = torch.zeros(0, height, width, 1, device=device)
        return MeshRender(torch.zeros(0, height, width, 3, device=device), empty, empty.clone())
    big = cameras.scaled(supersample) if supersample > 1 else cameras
    if backend == "nvdiffrast":
        from pla4d.render import _mesh_nvdiffrast

        premult, cov, z = _mesh_nvdiffrast.render_samples(mesh, big.to(device), near)
        return _resolve(premult, cov, z, supersample, bg)

    rgbs, alphas, depths = [], [], []
    packed = _pack_for_cpu(mesh)
    for c in range(len(cameras)):
        premult, cov, z = _cpu_samples(mesh, packed, big[c], near)
        out = _resolve(premult, cov, z, supersample, bg[c : c + 1])
        rgbs.append(out.rgb)
        alphas.append(out.alpha)
        depths.append(out.depth)
    return MeshRender(torch.cat(rgbs).to(device), torch.cat(alphas).to(device), torch.cat(depths).to(device))


def _nvdiffrast_available() -> bool:
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA/GL build that fails at import time
        return False
    return True


def _background(background: Tensor | None, n: int, height: int, width: int, device: torch.device) -> Tensor:
    if background is None:
        return torch.zeros(n, 1, 1, 3, device=device)
    bg = torch.as_tensor(background, dtype=torch.float32, device=device)
    if bg.ndim == 1 and bg.shape[0] == 3:
        return bg.view(1, 1, 1, 3).expand(n, 1, 1, 3)
    if bg.ndim == 3 and bg.shape == (height, width, 3):
        return bg.unsqueeze(0).expand(n, -1, -1, -1)
    if bg.ndim == 4 and bg.shape == (n, height, width, 3):
        return bg
    raise ValueError(
        f"background must be (3,), ({height}, {width}, 3) or ({n}, {height}, {width}, 3), got {tuple(bg.shape)}"
    )


def _resolve(premult: Tensor, cov: Tensor, z: Tensor, s: int, bg: Tensor) -> MeshRender:
    """Average s x s samples (linear, premultiplied), encode to sRGB, composite; nearest depth per pixel.

    premult: (C, Hs, Ws, 3) linear colour times coverage; cov: (C, Hs, Ws) in [0, 1]; z: (C, Hs, Ws), inf
    where empty.
    """
    n, hs, ws = cov.shape
    h, w = hs // s, ws // s
    premult = premult.reshape(n, h, s, w, s, 3).mean(dim=(2, 4))
    alpha = cov.reshape(n, h, s, w, s).mean(dim=(2, 4)).unsqueeze(-1)
    colour = premult / alpha.clamp_min(1e-12)
    display = torch.where(alpha > 0, linear_to_srgb(colour), torch.zeros_like(colour))
    rgb = display * alpha + (1.0 - alpha) * bg
    depth = z.reshape(n, h, s, w, s).amin(dim=(2, 4)).unsqueeze(-1)
    depth = torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth))
    return MeshRender(rgb, alpha, depth)


def _pack_for_cpu(mesh: Mesh) -> dict:
    """numpy arrays for the numba kernels; the linear-decoded texture buffer is cached on the mesh."""
    materials = mesh.all_materials()
    key = tuple(
        (m.texture.data_ptr(), tuple(m.texture.shape), m.texture._version) if m.texture is not None else None
        for m in materials
    )
    cached = mesh._cache.get("cpu_textures")
    if cached is None or cached[0] != key:
        offsets, heights, widths, chunks, total = [], [], [], [], 0
        for m in materials:
            if m.texture is None:
                offsets.append(0)
                heights.append(0)
                widths.append(0)
                continue
            lin = srgb_to_linear(m.texture.detach().cpu().float()).reshape(-1, 3).numpy()
            offsets.append(total)
            heights.append(m.texture.shape[0])
            widths.append(m.texture.shape[1])
            chunks.append(lin)
            total += lin.shape[0]
        tex_buf = np.concatenate(chunks) if chunks else np.zeros((1, 3), np.float32)
        cached = (
            key,
            np.asarray(offsets, np.int64),
            np.asarray(heights, np.int64),
            np.asarray(widths, np.int64),
            np.ascontiguousarray(tex_buf, np.float32),
        )
        mesh._cache["cpu_textures"] = cached
    _, offsets, heights, widths, tex_buf = cached
    n_faces = mesh.num_faces
    fm = mesh.face_material
    return {
        "faces": np.ascontiguousarray(mesh.faces.detach().cpu().numpy(), np.int64),
        "vertex_colors": (
            np.zeros((0, 3), np.float32)
            if mesh.vertex_colors is None
            else np.ascontiguousarray(mesh.vertex_colors.detach().cpu().numpy(), np.float32)
        ),
        "uvs": (
            np.zeros((0, 2), np.float32)
            if mesh.uvs is None
            else np.ascontiguousarray(mesh.uvs.detach().cpu().numpy(), np.float32)
        ),
        "face_material": (
            np.zeros(n_faces, np.int32) if fm is None else np.ascontiguousarray(fm.detach().cpu().numpy(), np.int32)
        ),
        "mat_factor": np.stack([m.base_color.detach().cpu().numpy() for m in materials]).astype(np.float32),
        "mat_tex_offset": offsets,
        "mat_tex_h": heights,
        "mat_tex_w": widths,
        "tex_buf": tex_buf,
    }


def _cpu_samples(mesh: Mesh, packed: dict, camera: Cameras, near: float) -> tuple[Tensor, Tensor, Tensor]:
    from pla4d.render import _mesh_cpu

    viewmat = camera.viewmats[0].detach().cpu().double().numpy()
    K = camera.Ks[0].detach().cpu().double().numpy()
    verts = mesh.vertices.detach().cpu().double().numpy()
    cam_verts = np.ascontiguousarray(verts @ viewmat[:3, :3].T + viewmat[:3, 3])
    rgb, covered, zbuf = _mesh_cpu.render_view(
        cam_verts,
        packed["faces"],
        K,
        camera.width,
        camera.height,
        near,
        packed["vertex_colors"],
        packed["uvs"],
        packed["face_material"],
        packed["mat_factor"],
        packed["mat_tex_offset"],
        packed["mat_tex_h"],
        packed["mat_tex_w"],
        packed["tex_buf"],
    )
    return (
        torch.from_numpy(rgb).unsqueeze(0),
        torch.from_numpy(covered).float().unsqueeze(0),
        torch.from_numpy(zbuf).unsqueeze(0),
    )
