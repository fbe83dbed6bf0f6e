"""Dense pure-torch compositing of projected Gaussians: every pixel against every Gaussian, autograd for gradients.

It implements the same per-pixel rule as the CPU kernel and gsplat (front to back, alpha clamped to 0.999,
skipped below 1/255 or when sigma < 0, stopping before the Gaussian that takes the transmittance to <= 1e-4) but
none of their machinery: no tiles, no bounding boxes, no hand-written backward. Memory is O(H * W * N) per
camera, so it is for tests on small scenes only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pla4d.render.gaussian_types import ALPHA_THRESHOLD, ProjectedGaussians

_MAX_DENSE = 50_000_000  # pixel-Gaussian pairs per camera: beyond this the reference is the wrong tool


def _composite_view(
    means2d: Tensor,
    conics: Tensor,
    colors: Tensor,
    opacities: Tensor,
    depths: Tensor,
    background: Tensor | None,
    width: int,
    height: int,
) -> tuple[Tensor, Tensor, Tensor]:
    dtype, device = means2d.dtype, means2d.device
    py, px = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device) + 0.5,
        torch.arange(width, dtype=dtype, device=device) + 0.5,
        indexing="ij",
    )
    dx = means2d[None, :, 0] - px.reshape(-1, 1)  # (P, M): delta = mean - pixel centre, as gsplat
    dy = means2d[None, :, 1] - py.reshape(-1, 1)
    a, b, c = conics[None, :, 0], conics[None, :, 1], conics[None, :, 2]
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp_max(opacities[None, :] * torch.exp(-sigma), 0.999)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
    one_minus = 1.0 - alpha
    t_incl = torch.cumprod(one_minus, dim=1)
    t_excl = torch.cat([torch.ones_like(t_incl[:, :1]), t_incl[:, :-1]], dim=1)
    # A pixel stops before the first Gaussian whose compositing would leave T <= 1e-4; T never grows, so
    # "not stopped yet" is simply T_incl > 1e-4.
    keep = (t_incl > 1e-4).detach()
    weights = torch.where(keep, alpha * t_excl, torch.zeros_like(alpha))
    t_final = torch.prod(torch.where(keep, one_minus, torch.ones_like(one_minus)), dim=1)  # (P,)
    rgb = weights @ colors  # (P, 3)
    if background is not None:
        rgb = rgb + t_final[:, None] * background[None, :]
    acc_depth = weights @ depths[:, None]
    return (
        rgb.reshape(height, width, 3),
        (1.0 - t_final).reshape(height, width, 1),
        acc_depth.reshape(height, width, 1),
    )


def rasterize_projected_dense(
    proj: ProjectedGaussians,
    colors: Tensor,
    opacities: Tensor,
    background: Tensor | None,
    width: int,
    height: int,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]]:
    """Same contract as :func:`pla4d.render._gaussians_cpu.rasterize_projected_cpu`."""
    n_cams = proj.means2d.shape[0]
    rgbs, alphas, depths = [], [], []
    for c in range(n_cams):
        visible = (proj.radii[c] > 0).all(dim=-1)
        idx = torch.nonzero(visible)[:, 0]
        # Stable depth order breaks ties by index, like gsplat's radix sort.
        order = idx[torch.sort(proj.depths[c, idx].detach(), stable=True).indices]
        if order.numel() * width * height > _MAX_DENSE:
            raise ValueError(
                f"the dense reference would hold {order.numel() * width * height} pixel-Gaussian pairs per view;"
                " use it on small scenes only"
            )
        col = colors[0 if colors.shape[0] == 1 else c]
        rgb, alpha, acc_depth = _composite_view(
            proj.means2d[c, order],
            proj.conics[c, order],
            col[order],
            opacities[order],
            proj.depths[c, order],
            None if background is None else background[c],
            width,
            height,
        )
        rgbs.append(rgb)
        alphas.append(alpha)
        depths.append(acc_depth)
    return torch.stack(rgbs), torch.stack(alphas), torch.stack(depths), {}
