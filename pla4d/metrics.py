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
