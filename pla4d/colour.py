"""sRGB <-> linear conversions with the exact piecewise sRGB transfer curve (IEC 61966-2-1).

Every function takes a torch tensor, a numpy array or a Python float and returns the same kind.
Values are not clamped above 1 (so HDR-ish values survive a round trip); negative inputs are treated as 0.

Where colours live in this project:
- image files (PNG/JPEG frames, base-colour textures) hold sRGB-encoded values;
- glTF base-colour factors and COLOR_0 vertex colours are linear;
- blending, filtering and anti-aliasing happen in linear space, and the result is encoded for display.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

ArrayLike = TypeVar("ArrayLike", Tensor, np.ndarray, float)

# The curve's breakpoints; the linear one is the encoded one divided by the slope 12.92.
_SRGB_KNEE = 0.04045
_LINEAR_KNEE = 0.0031308


def srgb_to_linear(x: ArrayLike) -> ArrayLike:
    """Decode sRGB-encoded values in [0, 1] to linear light."""
    if isinstance(x, Tensor):
        x = x.clamp_min(0.0)
        # Clamping inside the power branch keeps its (unused) gradient finite at 0.
        curved = ((x.clamp_min(_SRGB_KNEE) + 0.055) / 1.055) ** 2.4
        return torch.where(x <= _SRGB_KNEE, x / 12.92, curved)
    if isinstance(x, np.ndarray):
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        a = np.maximum(x.astype(dtype, copy=False), 0.0)
        curved = ((np.maximum(a, _SRGB_KNEE) + 0.055) / 1.055) ** 2.4
        return np.where(a <= _SRGB_KNEE, a / 12.92, curved).astype(dtype, copy=False)
    v = max(float(x), 0.0)
    return v / 12.92 if v <= _SRGB_KNEE else ((v + 0.055) / 1.055) ** 2.4


def linear_to_srgb(x: ArrayLike) -> ArrayLike:
    """Encode linear-light values in [0, 1] with the sRGB curve (for display or saving to 8-bit files)."""
    if isinstance(x, Tensor):
        x = x.clamp_min(0.0)
        curved = 1.055 * x.clamp_min(_LINEAR_KNEE) ** (1.0 / 2.4) - 0.055
        return torch.where(x <= _LINEAR_KNEE, x * 12.92, curved)
    if isinstance(x, np.ndarray):
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        a = np.maximum(x.astype(dtype, copy=False), 0.0)
        curved = 1.055 * np.maximum(a, _LINEAR_KNEE) ** (1.0 / 2.4) - 0.055
        return np.where(a <= _LINEAR_KNEE, a * 12.92, curved).astype(dtype, copy=False)
    v = max(float(x), 0.0)
    return v * 12.92 if v <= _LINEAR_KNEE else 1.055 * v ** (1.0 / 2.4) - 0.055


def srgb8_to_linear(x: ArrayLike) -> ArrayLike:
    """Decode 8-bit sRGB codes (0..255) to linear floats in [0, 1]."""
    if isinstance(x, Tensor):
        return srgb_to_linear(x.float() / 255.0)
    if isinstance(x, np.ndarray):
        return srgb_to_linear(x.astype(np.float32) / 255.0)
    return srgb_to_linear(float(x) / 255.0)


def linear_to_srgb8(x: ArrayLike) -> ArrayLike:
    """Encode linear floats to rounded 8-bit sRGB codes (uint8 arrays/tensors, int for a float)."""
    if isinstance(x, Tensor):
        return (linear_to_srgb(x).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    if isinstance(x, np.ndarray):
        return np.round(np.clip(linear_to_srgb(x), 0.0, 1.0) * 255.0).astype(np.uint8)
    return int(round(min(max(linear_to_srgb(x), 0.0), 1.0) * 255.0))
