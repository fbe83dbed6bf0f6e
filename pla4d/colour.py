"""sRGB <-> linear conversions with the exact piecewise sRGB transfer curve (IEC 61966-2-1).

Every function takes a torch tensor, a numpy array or a Python float and returns the same kind. One formula, two
array types: numpy arrays and floats go to :mod:`pla4d.formats.colour` (which the Blender add-on shares); the
tensor branches below write the same curve in torch, because the differentiable render paths need gradients
(and stay on the GPU). Values are not clamped above 1 (so HDR-ish values survive a round trip); negative inputs
are treated as 0.

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

from pla4d.formats import colour as _np
from pla4d.formats.colour import LINEAR_KNEE, SRGB_KNEE

ArrayLike = TypeVar("ArrayLike", Tensor, np.ndarray, float)

__all__ = ["linear_to_srgb", "linear_to_srgb8", "srgb8_to_linear", "srgb_to_linear"]


def srgb_to_linear(x: ArrayLike) -> ArrayLike:
    """Decode sRGB-encoded values in [0, 1] to linear light."""
    if isinstance(x, Tensor):
        x = x.clamp_min(0.0)
        # Clamping inside the power branch keeps its (unused) gradient finite at 0.
        curved = ((x.clamp_min(SRGB_KNEE) + 0.055) / 1.055) ** 2.4
        return torch.where(x <= SRGB_KNEE, x / 12.92, curved)
    return _np.srgb_to_linear(x)


def linear_to_srgb(x: ArrayLike) -> ArrayLike:
    """Encode linear-light values in [0, 1] with the sRGB curve (for display or saving to 8-bit files)."""
    if isinstance(x, Tensor):
        x = x.clamp_min(0.0)
        curved = 1.055 * x.clamp_min(LINEAR_KNEE) ** (1.0 / 2.4) - 0.055
        return torch.where(x <= LINEAR_KNEE, x * 12.92, curved)
    return _np.linear_to_srgb(x)


def srgb8_to_linear(x: ArrayLike) -> ArrayLike:
    """Decode 8-bit sRGB codes (0..255) to linear floats in [0, 1]."""
    if isinstance(x, Tensor):
        return srgb_to_linear(x.float() / 255.0)
    return _np.srgb8_to_linear(x)


def linear_to_srgb8(x: ArrayLike) -> ArrayLike:
    """Encode linear floats to rounded 8-bit sRGB codes (uint8 arrays/tensors, int for a float)."""
    if isinstance(x, Tensor):
        return (linear_to_srgb(x).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return _np.linear_to_srgb8(x)
