"""Image metrics for comparing renders with reference frames (both already composited, display sRGB)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def _as_tensor(x: Tensor | np.ndarray) -> Tensor:
    return x.detach().double() if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x, np.float64))


def psnr(a: Tensor | np.ndarray, b: Tensor | np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all elements (inf for identical inputs)."""
    ta, tb = _as_tensor(a), _as_tensor(b)
    if ta.shape != tb.shape:
        raise ValueError(f"psnr needs inputs of one shape, got {tuple(ta.shape)} and {tuple(tb.shape)}")
    if ta.numel() == 0:
        raise ValueError("psnr of empty inputs")
    mse = float(((ta.cpu() - tb.cpu()) ** 2).mean())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def mask_iou(alpha_a: Tensor | np.ndarray, alpha_b: Tensor | np.ndarray, threshold: float = 0.5) -> float:
    """Intersection over union of the masks ``alpha > threshold`` (1.0 when both are empty)."""
    ta, tb = _as_tensor(alpha_a).cpu(), _as_tensor(alpha_b).cpu()
    if ta.shape != tb.shape:
        raise ValueError(f"mask_iou needs inputs of one shape, got {tuple(ta.shape)} and {tuple(tb.shape)}")
    ma, mb = ta > threshold, tb > threshold
    union = int((ma | mb).sum())
    if union == 0:
        return 1.0
    return int((ma & mb).sum()) / union


# SSIM as Wang et al. (2004) define it and scikit-image computes it with ``gaussian_weights=True, sigma=1.5,
# use_sample_covariance=False``: an 11-tap Gaussian window (radius int(3.5 sigma + 0.5) = 5), population
# (co)variances, and the map averaged over the pixels at least 5 from every border and over the channels.
_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def _gaussian_taps(dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / _SSIM_SIGMA) ** 2)
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim_tensor(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Differentiable SSIM of (H, W, C) images (a 0-d tensor) or (B, H, W, C) batches (a (B,) tensor).

    Same value as ``skimage.metrics.structural_similarity(a, b, channel_axis=-1, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=data_range)``, computed in the inputs' dtype. Both sides
    must be at least 11 pixels; 1.0 means identical.
    """
    if a.shape != b.shape:
        raise ValueError(f"ssim needs inputs of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim not in (3, 4):
        raise ValueError(f"ssim needs (H, W, C) or (B, H, W, C) images, got shape {tuple(a.shape)}")
    if min(a.shape[-3:-1]) < 2 * _SSIM_RADIUS + 1:
        raise ValueError(f"ssim needs images of at least {2 * _SSIM_RADIUS + 1} pixels a side, got {tuple(a.shape)}")
    single = a.ndim == 3
    if not a.is_floating_point():
        a = a.double()
    b = b.to(a.dtype)
    # (B, H, W, C) -> (B*C, 1, H, W): every channel is filtered on its own.
    x = (a[None] if single else a).permute(0, 3, 1, 2)
    y = (b[None] if single else b).permute(0, 3, 1, 2)
    batch, channels, height, width = x.shape
    x = x.reshape(batch * channels, 1, height, width)
    y = y.reshape(batch * channels, 1, height, width)
    g = _gaussian_taps(x.dtype, x.device)
    # One stacked pass of the separable window over the five maps. Unpadded ("valid") filtering gives exactly the
    # pixels that skimage keeps after cropping the radius at each border, so its padding mode never matters.
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    k = 2 * _SSIM_RADIUS + 1
    f = torch.nn.functional.conv2d(stack, g.view(1, 1, 1, k).expand(5, 1, 1, k), groups=5)
    f = torch.nn.functional.conv2d(f, g.view(1, 1, k, 1).expand(5, 1, k, 1), groups=5)
    ux, uy, uxx, uyy, uxy = f.unbind(dim=1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (_SSIM_K1 * data_range) ** 2, (_SSIM_K2 * data_range) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    per_image = s.reshape(batch, -1).mean(dim=1)
    return per_image[0] if single else per_image


def ssim(a: Tensor | np.ndarray, b: Tensor | np.ndarray, data_range: float = 1.0) -> float:
    """SSIM (float64) of two (H, W, C) images, or the mean over two (B, H, W, C) batches; see ``ssim_tensor``."""
    ta, tb = _as_tensor(a).cpu(), _as_tensor(b).cpu()
    return float(ssim_tensor(ta, tb, data_range).mean())
