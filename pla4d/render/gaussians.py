"""Differentiable 3D Gaussian splat rasterisation with one API over three backends.

The algorithm is gsplat's (1.5.3, ``rasterize_mode="classic"``, ``render_mode="RGB+ED"``, ``packed=False``):

* projection: EWA splatting with the pinhole Jacobian clamped to 1.3x the field of view, ``eps2d`` added to the
  diagonal of the 2D covariance, culling by ``near_plane <= z <= far_plane``, ``det > 0``, opacity >= 1/255 and
  the image rectangle; per-axis radii ``ceil(extend * sqrt(cov2d_ii))`` with the opacity-aware
  ``extend = min(3.33, sqrt(2 log(255 opacity)))`` that gsplat's ``rasterization()`` uses;
* 16x16 tiles, Gaussians depth-sorted per tile;
* front-to-back compositing with ``alpha = min(0.999, opacity exp(-sigma))``, skipped below 1/255, stopping
  before the Gaussian that would take the transmittance to <= 1e-4;
* colours composited over ``background``; depth is the expected depth (accumulated z over alpha).

Backends: ``"gsplat"`` (CUDA, calls ``gsplat.rasterization`` as it is), ``"cpu"`` (numba tile kernel with a
hand-written backward), ``"reference"`` (dense pure-torch autograd, for tests on small scenes).
Projection and spherical harmonics of the CPU and reference backends live here, in torch, so both share them.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pla4d.render.gaussian_types import (
    ALPHA_THRESHOLD,
    MAX_SH_DEGREE,
    TILE_SIZE,
    GaussianRender,
    ProjectedGaussians,
)

if TYPE_CHECKING:
    from pla4d.cameras import Cameras

__all__ = [
    "ALPHA_THRESHOLD",
    "BACKENDS",
    "MAX_SH_DEGREE",
    "TILE_SIZE",
    "GaussianRender",
    "ProjectedGaussians",
    "gsplat_available",
    "project_gaussians",
    "rasterize_gaussians",
    "render_gaussians",
    "sh_colors",
]

BACKENDS = ("auto", "gsplat", "cpu", "reference")


def gsplat_available() -> bool:
    """Whether gsplat can be imported (without importing it: that compiles or loads its CUDA extension)."""
    return importlib.util.find_spec("gsplat") is not None


def _check_float(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be float32 or float64, got {t.dtype}")


def _validate(
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
    backend: str,
) -> None:
    for name, t in (("means", means), ("quats", quats), ("scales", scales), ("opacities", opacities)):
        _check_float(name, t)
    _check_float("colors", colors)
    _check_float("viewmats", viewmats)
    _check_float("Ks", Ks)
    if means.ndim != 2 or means.shape[1] != 3:
        raise ValueError(f"means must be (N, 3), got {tuple(means.shape)}")
    n = means.shape[0]
    if quats.shape != (n, 4):
        raise ValueError(f"quats must be (N, 4) = ({n}, 4), got {tuple(quats.shape)}")
    if scales.shape != (n, 3):
        raise ValueError(f"scales must be (N, 3) = ({n}, 3), got {tuple(scales.shape)}")
    if opacities.shape != (n,):
        raise ValueError(f"opacities must be (N,) = ({n},), got {tuple(opacities.shape)}")
    if sh_degree is None:
        if colors.shape != (n, 3):
            raise ValueError(f"colors must be (N, 3) = ({n}, 3) RGB without sh_degree, got {tuple(colors.shape)}")
    else:
        if not isinstance(sh_degree, int) or not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise ValueError(f"sh_degree must be an int in [0, {MAX_SH_DEGREE}], got {sh_degree!r}")
        k_needed = (sh_degree + 1) ** 2
        if colors.ndim != 3 or colors.shape[0] != n or colors.shape[2] != 3 or colors.shape[1] < k_needed:
            raise ValueError(
                f"colors must be (N, K, 3) SH coefficients with N={n} and K >= {k_needed} for sh_degree={sh_degree},"
                f" got {tuple(colors.shape)}"
            )
    dtypes = {t.dtype for t in (means, quats, scales, opacities, colors)}
    if len(dtypes) != 1:
        raise ValueError(
            f"means, quats, scales, opacities and colors must share one dtype, got {sorted(map(str, dtypes))}"
        )
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4) or viewmats.shape[0] == 0:
        raise ValueError(f"viewmats must be (C, 4, 4) with C >= 1, got {tuple(viewmats.shape)}")
    c = viewmats.shape[0]
    if Ks.shape != (c, 3, 3):
        raise ValueError(f"Ks must be (C, 3, 3) = ({c}, 3, 3), got {tuple(Ks.shape)}")
    if isinstance(width, bool) or isinstance(height, bool) or not isinstance(width, int) or not isinstance(height, int):
        raise ValueError(f"width and height must be ints, got {width!r} and {height!r}")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    tensors = [means, quats, scales, opacities, colors, viewmats, Ks]
    if background is not None:
        _check_float("background", background)
        if background.shape not in ((3,), (c, 3)):
            raise ValueError(f"background must be (3,) or (C, 3) = ({c}, 3), got {tuple(background.shape)}")
        tensors.append(background)
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}")
    if not near_plane > 0.0 or not far_plane > near_plane:
        raise ValueError(f"need 0 < near_plane < far_plane, got near={near_plane}, far={far_plane}")
    if not eps2d >= 0.0:
        raise ValueError(f"eps2d must be >= 0, got {eps2d}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _quat_scale_to_rs(quats: Tensor, scales: Tensor) -> Tensor:
    """(N, 3, 3) ``R @ diag(scales)`` from unnormalised (w, x, y, z) quaternions, so that covariance = M M^T."""
    q = quats * torch.rsqrt((quats * quats).sum(-1, keepdim=True))
    w, x, y, z = q.unbind(-1)
    r = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)
    return r * scales[:, None, :]


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
) -> ProjectedGaussians:
    """gsplat's fused EWA projection (pinhole, classic) in differentiable torch, for ``C`` cameras at once."""
    dtype = means.dtype
    rs = _quat_scale_to_rs(quats, scales)  # (N, 3, 3)
    rot = viewmats[:, :3, :3]  # (C, 3, 3)
    means_c = torch.matmul(means, rot.transpose(1, 2)) + viewmats[:, None, :3, 3]  # (C, N, 3)
    x, y, z = means_c.unbind(-1)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]

    # Culled views still flow through autograd (with zero incoming gradient); a safe z keeps them finite so that
    # 0 * inf never turns into NaN.
    z_ok = (z >= near_plane) & (z <= far_plane)
    zs = torch.where(z_ok, z, torch.ones((), dtype=dtype, device=z.device))
    rz = 1.0 / zs
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    u = torch.minimum(torch.maximum(x * rz, -lim_x_neg), lim_x_pos)
    v = torch.minimum(torch.maximum(y * rz, -lim_y_neg), lim_y_pos)

    # J @ R_view, row by row: J = [[fx/z, 0, -fx u/z], [0, fy/z, -fy v/z]] with u, v the clamped x/z, y/z.
    r0, r1, r2 = rot[:, None, 0, :], rot[:, None, 1, :], rot[:, None, 2, :]  # (C, 1, 3)
    a0 = (fx * rz)[..., None] * (r0 - u[..., None] * r2)  # (C, N, 3)
    a1 = (fy * rz)[..., None] * (r1 - v[..., None] * r2)
    b = torch.matmul(torch.stack([a0, a1], dim=-2), rs)  # (C, N, 2, 3) = J R_view R S
    cov00 = (b[..., 0, :] * b[..., 0, :]).sum(-1) + eps2d
    cov01 = (b[..., 0, :] * b[..., 1, :]).sum(-1)
    cov11 = (b[..., 1, :] * b[..., 1, :]).sum(-1) + eps2d
    det = cov00 * cov11 - cov01 * cov01
    det_ok = det > 0
    inv_det = 1.0 / torch.where(det_ok, det, torch.ones((), dtype=dtype, device=det.device))
    conics = torch.stack([cov11 * inv_det, -cov01 * inv_det, cov00 * inv_det], dim=-1)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    with torch.no_grad():
        op = opacities.detach()
        op_ok = op >= ALPHA_THRESHOLD
        # Opacity-aware bounding box (gsplat passes opacities to the projection in rasterization()).
        extend = torch.sqrt(2.0 * torch.log(op.clamp(min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp(max=3.33)
        rx = torch.ceil(extend * torch.sqrt(cov00.detach().clamp(min=0)))
        ry = torch.ceil(extend * torch.sqrt(cov11.detach().clamp(min=0)))
        m2 = means2d.detach()
        inside = (m2[..., 0] + rx > 0) & (m2[..., 0] - rx < width) & (m2[..., 1] + ry > 0) & (m2[..., 1] - ry < height)
        valid = z_ok & det_ok & op_ok & inside & ((rx > 0) | (ry > 0))
        radii = torch.stack([rx, ry], dim=-1).mul_(valid[..., None]).to(torch.int32)
    return ProjectedGaussians(means2d=means2d, conics=conics, depths=z, radii=radii)


# Real spherical harmonics up to degree 4 in the convention of gsplat / the Inria 3DGS code (Sloan's layout).
_SH_C0 = 0.2820947917738781
_SH_C1 = 0.48860251190292


def _sh_bases(degree: int, d: Tensor) -> list[Tensor]:
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, _SH_C0)]
    if degree >= 1:
        out += [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
    if degree >= 2:
        z2 = z * z
        c1, s1 = x * x - y * y, 2 * x * y
        out += [
            0.5462742152960395 * s1,
            -1.092548430592079 * z * y,
            0.9461746957575601 * z2 - 0.3153915652525201,
            -1.092548430592079 * z * x,
            0.5462742152960395 * c1,
        ]
    if degree >= 3:
        tc = -2.285228997322329 * z2 + 0.4570457994644658
        c2, s2 = x * c1 - y * s1, x * s1 + y * c1
        out += [
            -0.5900435899266435 * s2,
            1.445305721320277 * z * s1,
            tc * y,
            z * (1.865881662950577 * z2 - 1.119528997770346),
            tc * x,
            1.445305721320277 * z * c1,
            -0.5900435899266435 * c2,
        ]
    if degree >= 4:
        td = z * (-4.683325804901025 * z2 + 2.007139630671868)
        tc4 = 3.31161143515146 * z2 - 0.47308734787878
        c3, s3 = x * c2 - y * s2, x * s2 + y * c2
        out += [
            0.6258357354491763 * s3,
            -1.770130769779931 * z * s2,
            tc4 * s1,
            td * y,
            1.984313483298443 * z2 * (1.865881662950577 * z2 - 1.119528997770346)
            - 1.006230589874905 * (0.9461746957575601 * z2 - 0.3153915652525201),
            td * x,
            tc4 * c1,
            -1.770130769779931 * z * c2,
            0.6258357354491763 * c3,
        ]
    return out


def sh_colors(sh_degree: int, coeffs: Tensor, means: Tensor, viewmats: Tensor) -> Tensor:
    """(C, N, 3) view-dependent RGB as gsplat's ``rasterization()`` makes it: SH + 0.5, clamped at 0."""
    campos = -torch.matmul(viewmats[:, :3, :3].transpose(1, 2), viewmats[:, :3, 3:])[..., 0]  # (C, 3)
    dirs = means[None, :, :] - campos[:, None, :]
    dirs = dirs * torch.rsqrt((dirs * dirs).sum(-1, keepdim=True).clamp(min=1e-30))
    bases = _sh_bases(sh_degree, dirs)  # list of (C, N)
    rgb = bases[0][..., None] * coeffs[None, :, 0, :]
    for k in range(1, len(bases)):
        rgb = rgb + bases[k][..., None] * coeffs[None, :, k, :]
    return torch.clamp_min(rgb + 0.5, 0.0)


def _resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    if backend == "auto":
        # gsplat's rasterisation kernels are float32-only; float64 (gradient checks) goes to the CPU kernel.
        return "gsplat" if device.type == "cuda" and dtype == torch.float32 and gsplat_available() else "cpu"
    if backend == "gsplat":
        if device.type != "cuda":
            raise ValueError(f"backend 'gsplat' needs CUDA tensors, got tensors on {device}")
        if dtype != torch.float32:
            raise ValueError(f"backend 'gsplat' needs float32 tensors, got {dtype}")
        if not gsplat_available():
            raise ValueError("backend 'gsplat' needs the gsplat package (pip install 'pla4d[gpu]')")
    return backend


def rasterize_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    background: Tensor | None = None,
    sh_degree: int | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    backend: str = "auto",
) -> GaussianRender:
    """Render ``N`` Gaussians into ``C`` cameras (see the module docstring for the exact algorithm).

    ``means`` (N, 3) world; ``quats`` (N, 4) w, x, y, z (normalised inside); ``scales`` (N, 3) actual scales;
    ``opacities`` (N,) in [0, 1]; ``colors`` (N, 3) RGB, or (N, K, 3) SH coefficients when ``sh_degree`` is given;
    ``viewmats`` (C, 4, 4) OpenCV world-to-camera; ``Ks`` (C, 3, 3) in pixels; ``background`` (3,) or (C, 3),
    black when None. Camera tensors are cast to the Gaussians' dtype. Gradients flow to all Gaussian parameters
    (and to ``background`` when it requires them).

    ``backend``: ``"auto"`` (gsplat for float32 CUDA tensors when it is installed, else the CPU kernel), ``"gsplat"``,
    ``"cpu"`` (CUDA tensors are copied to the CPU and the results copied back) or ``"reference"``.
    """
    _validate(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, background, sh_degree, near_plane,
        far_plane, eps2d, backend,
    )  # fmt: skip
    backend = _resolve_backend(backend, means.device, means.dtype)
    dtype = means.dtype
    viewmats = viewmats.to(dtype)
    Ks = Ks.to(dtype)
    n_cams = viewmats.shape[0]
    if background is not None:
        background = background.to(dtype)

    if backend == "gsplat":
        from pla4d.render._gaussians_gsplat import rasterize_gsplat

        return rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, background, sh_degree,
            near_plane, far_plane, eps2d,
        )  # fmt: skip

    device = means.device
    if backend == "cpu" and device.type != "cpu":
        # The numba kernel reads host memory; .to() keeps the autograd graph across the copy.
        means, quats, scales, opacities, colors, viewmats, Ks = (
            t.to("cpu") for t in (means, quats, scales, opacities, colors, viewmats, Ks)
        )
        background = None if background is None else background.to("cpu")

    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane, eps2d)
    if sh_degree is None:
        rgb_in = colors[None]  # (1, N, 3): one colour for all views, the kernel broadcasts it
    else:
        rgb_in = sh_colors(sh_degree, colors, means, viewmats)
    bg = None if background is None else background.expand(n_cams, 3)

    if backend == "cpu":
        from pla4d.render._gaussians_cpu import rasterize_projected_cpu

        rgb, alpha, acc_depth, extra = rasterize_projected_cpu(proj, rgb_in, opacities, bg, width, height)
    else:
        from pla4d.render._gaussians_reference import rasterize_projected_dense

        rgb, alpha, acc_depth, extra = rasterize_projected_dense(proj, rgb_in, opacities, bg, width, height)
    depth = acc_depth / alpha.clamp(min=1e-10)
    info = {
        "backend": backend,
        "radii": proj.radii,
        "means2d": proj.means2d,
        "depths": proj.depths,
        "conics": proj.conics,
        "width": width,
        "height": height,
        "tile_size": TILE_SIZE,
        **extra,
    }
    if device.type != "cpu" and backend == "cpu":
        rgb, alpha, depth = rgb.to(device), alpha.to(device), depth.to(device)
    return GaussianRender(rgb=rgb, alpha=alpha, depth=depth, info=info)


def render_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    cameras: Cameras,
    background: Tensor | None = None,
    sh_degree: int | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    backend: str = "auto",
) -> GaussianRender:
    """:func:`rasterize_gaussians` for a :class:`pla4d.cameras.Cameras` batch (moved to the Gaussians' device)."""
    cams = cameras.to(means.device)
    return rasterize_gaussians(
        means, quats, scales, opacities, colors, cams.viewmats, cams.Ks, cams.width, cams.height,
        background=background, sh_degree=sh_degree, near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
        backend=backend,
    )  # fmt: skip
