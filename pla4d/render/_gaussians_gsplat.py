"""CUDA backend: ``gsplat.rasterization`` as it is (imported here, lazily, so CPU-only installs never load it)."""

from __future__ import annotations

import torch
from torch import Tensor

from pla4d.render.gaussian_types import TILE_SIZE, GaussianRender


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    background: Tensor | None,
    sh_degree: int | None,
    near_plane: float,
    far_plane: float,
    eps2d: float,
) -> GaussianRender:
    """Inputs already validated by :func:`pla4d.render.gaussians.rasterize_gaussians` (CUDA tensors)."""
    from gsplat import rasterization

    n_cams = viewmats.shape[0]
    backgrounds = None if background is None else background.expand(n_cams, 3)
    if sh_degree is not None:
        # gsplat asserts (sh_degree + 1)^2 <= K and reads only those bands; pass exactly them.
        colors = colors[:, : (sh_degree + 1) ** 2]
    render, alpha, meta = rasterization(
        means,
        quats,
        scales,
        opacities,
        colors,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=eps2d,
        sh_degree=sh_degree,
        packed=False,  # keeps (C, N, ...) per-view outputs, the layout the other backends report
        tile_size=TILE_SIZE,
        backgrounds=backgrounds,
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )
    info = {
        "backend": "gsplat",
        "radii": meta["radii"],
        "means2d": meta["means2d"],
        "depths": meta["depths"],
        "conics": meta["conics"],
        "width": width,
        "height": height,
        "tile_size": TILE_SIZE,
        "n_isects": int(meta["isect_ids"].numel()) if "isect_ids" in meta else None,
        "gsplat_meta": meta,
    }
    return GaussianRender(rgb=render[..., :3], alpha=alpha, depth=render[..., 3:4], info=info)


def gsplat_can_rasterize() -> bool:
    """Whether gsplat imports and its CUDA kernels run here (a tiny render on the current CUDA device)."""
    if not torch.cuda.is_available():
        return False
    try:
        from gsplat import rasterization

        dev = torch.device("cuda")
        eye = torch.eye(4, device=dev)[None]
        eye[0, 2, 3] = 3.0
        K = torch.tensor([[[20.0, 0.0, 8.0], [0.0, 20.0, 8.0], [0.0, 0.0, 1.0]]], device=dev)
        rasterization(
            torch.zeros(1, 3, device=dev),
            torch.tensor([[1.0, 0.0, 0.0, 0.0]], device=dev),
            torch.full((1, 3), 0.1, device=dev),
            torch.ones(1, device=dev) * 0.5,
            torch.ones(1, 3, device=dev),
            eye,
            K,
            16,
            16,
        )
        torch.cuda.synchronize()
    except Exception:  # any failure (no extension, no compiler, wrong arch) means "cannot"
        return False
    return True
