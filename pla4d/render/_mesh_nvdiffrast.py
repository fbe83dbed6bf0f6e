"""CUDA mesh rendering with nvdiffrast (``backend="nvdiffrast"``, or ``"auto"`` with the mesh on CUDA).

UNTESTED HERE: nvdiffrast is not on PyPI and the development machines have no GPU, so nothing in the test
suite executes this module; it was written against nvdiffrast's documented torch API
(``RasterizeCudaContext``/``RasterizeGLContext``, ``rasterize``, ``interpolate``, ``texture``,
``antialias``) and is first exercised by a GPU run. Its outputs and colour handling mirror the CPU path:
per-sample linear albedo (factor x vertex colour x decoded texture, bilinear, REPEAT wrap), coverage and
camera z at the supersampled resolution, resolved by the same code in ``pla4d.render.mesh``.

Conventions used to map the project's cameras onto nvdiffrast's OpenGL-style clip space:
- nvdiffrast stores images bottom-up: memory row 0 is NDC y = -1. Mapping OpenCV pixel rows (y down) to
  NDC with ``y_ndc = 2 v / H - 1`` therefore puts pixel row 0 in memory row 0, with no flip.
- Pixel centres sit at NDC ``(2 (j + 0.5) / W - 1)``, i.e. at (j + 0.5, i + 0.5) in pixels, as in
  ``pla4d.cameras``.
- Texture row 0 is the first image row, and glTF UVs have v down, so UVs are passed through unchanged.
- nvdiffrast rasterizes both windings (no culling), matching the two-sided CPU renderer; it clips
  against the near plane in clip space.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pla4d.cameras import Cameras
from pla4d.colour import srgb_to_linear

_CONTEXTS: dict = {}


def _context(device: torch.device):
    import nvdiffrast.torch as dr

    key = (device.type, device.index)
    if key not in _CONTEXTS:
        try:
            _CONTEXTS[key] = dr.RasterizeCudaContext(device=device)
        except Exception:  # old nvdiffrast builds only have the OpenGL rasterizer
            _CONTEXTS[key] = dr.RasterizeGLContext(device=device)
    return _CONTEXTS[key]


def render_samples(mesh, cameras: Cameras, near: float, antialias: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample premultiplied linear colour (C, H, W, 3), coverage (C, H, W) and camera z (inf where empty).

    ``cameras`` are already at the supersampled resolution. With ``antialias`` nvdiffrast's analytic edge
    antialiasing is applied to colour and coverage (it also gives gradients with respect to the vertices at
    silhouettes); the supersample averaging then happens in the caller.
    """
    import nvdiffrast.torch as dr

    device = mesh.device
    if device.type != "cuda":
        raise RuntimeError("the nvdiffrast backend needs the mesh on a CUDA device")
    n_cams, height, width = len(cameras), cameras.height, cameras.width
    if mesh.num_faces == 0:
        nothing = torch.zeros(n_cams, height, width, device=device)
        return torch.zeros(n_cams, height, width, 3, device=device), nothing, torch.full_like(nothing, float("inf"))
    ctx = _context(device)

    clip, z = clip_space(mesh.vertices, cameras, near)
    tri = mesh.faces.to(torch.int32).contiguous()

    rast, _ = dr.rasterize(ctx, clip, tri, resolution=[height, width])
    covered = rast[..., 3] > 0  # triangle_id is stored offset by one, 0 meaning empty
    face = (rast[..., 3].long() - 1).clamp_min(0)

    depth, _ = dr.interpolate(z[..., None].contiguous(), rast, tri)
    depth = torch.where(covered, depth[..., 0], torch.full_like(depth[..., 0], float("inf")))

    materials = mesh.all_materials()
    factors = torch.stack([m.base_color.to(device) for m in materials])  # (M, 3)
    mat_id = torch.zeros_like(face) if mesh.face_material is None else mesh.face_material[face]
    colour = factors[mat_id]  # (C, H, W, 3)
    if mesh.vertex_colors is not None:
        vc, _ = dr.interpolate(mesh.vertex_colors[None].contiguous(), rast, tri)
        colour = colour * vc
    if mesh.uvs is not None and any(m.texture is not None for m in materials):
        uv, _ = dr.interpolate(mesh.uvs[None].contiguous(), rast, tri)
        uv_flat = uv.reshape(1, n_cams * height, width, 2).contiguous()
        for index, material in enumerate(materials):
            if material.texture is None:
                continue
            tex = srgb_to_linear(material.texture.to(device)).unsqueeze(0).contiguous()
            sampled = dr.texture(tex, uv_flat, filter_mode="linear", boundary_mode="wrap")
            sampled = sampled.reshape(n_cams, height, width, 3)
            colour = torch.where((mat_id == index)[..., None], colour * sampled, colour)

    cov = covered.float()
    premult = colour * cov[..., None]
    if antialias:
        stacked = dr.antialias(torch.cat([premult, cov[..., None]], dim=-1).contiguous(), rast, clip, tri)
        premult, cov = stacked[..., :3], stacked[..., 3]
    return premult, cov, depth


def clip_space(vertices: Tensor, cameras: Cameras, near: float) -> tuple[Tensor, Tensor]:
    """OpenGL-style clip coordinates (C, V, 4) for nvdiffrast, and camera-space z (C, V).

    NDC x = 2 u / W - 1 and y = 2 v / H - 1, where (u, v) are the OpenCV pixel coordinates given by ``K``;
    NDC z runs from -1 at ``near`` to 1 at a far plane just past the farthest vertex. Pure torch, so it is
    tested on the CPU even though the rest of this module is not.
    """
    device = vertices.device
    height, width = cameras.height, cameras.width
    viewmats = cameras.viewmats.to(device=device, dtype=torch.float32)
    Ks = cameras.Ks.to(device=device, dtype=torch.float32)
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
    cam = torch.einsum("cij,vj->cvi", rot, vertices.float()) + trans[:, None, :]  # (C, V, 3)
    x, y, z = cam.unbind(-1)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy, skew = Ks[:, 0, 2, None], Ks[:, 1, 2, None], Ks[:, 0, 1, None]
    # A far plane just past the farthest vertex keeps the depth buffer's precision where the mesh is.
    z_max = float(z.detach().max()) if z.numel() else near
    far = max(z_max * 2.0 + 1.0, near * 10.0)
    clip = torch.stack(
        [
            (2.0 * fx / width) * x + (2.0 * skew / width) * y + (2.0 * cx / width - 1.0) * z,
            (2.0 * fy / height) * y + (2.0 * cy / height - 1.0) * z,
            (far + near) / (far - near) * z - 2.0 * far * near / (far - near),
            z,
        ],
        dim=-1,
    ).contiguous()
    return clip, z
