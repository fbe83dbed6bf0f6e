"""sRGB <-> linear with the exact piecewise sRGB transfer curve (IEC 61966-2-1), and the degree-0 SH colour.

numpy arrays and Python floats only (this package is copied into the Blender add-on, which has no torch);
``pla4d.colour`` adds the torch tensor case for the engine's differentiable render paths, with the same formula.
Values are not clamped above 1 (HDR-ish values survive a round trip); negative inputs are treated as 0.

Where colours live in this project:
- image files (PNG/JPEG frames, base-colour textures) hold sRGB-encoded values;
- glTF base-colour factors and COLOR_0 vertex colours are linear, and so are Blender's colour attributes;
- the Gaussians' SH DC coefficients encode sRGB colours: ``colour = 0.5 + SH_C0 * f_dc`` (docs/conventions.md).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

__all__ = [
    "LINEAR_KNEE",
    "SH_C0",
    "SRGB_KNEE",
    "linear_rgb_to_sh_dc",
    "linear_to_srgb",
    "linear_to_srgb8",
    "sh_dc_to_linear_rgb",
    "srgb8_to_linear",
    "srgb_to_linear",
]

ArrayOrFloat = TypeVar("ArrayOrFloat", np.ndarray, float)

SH_C0 = 0.28209479177387814  # the degree-0 spherical harmonic
# The curve's breakpoints; the linear one is the encoded one divided by the slope 12.92.
SRGB_KNEE = 0.04045
LINEAR_KNEE = 0.0031308


def _float_array(x: np.ndarray) -> np.ndarray:
    """``x`` as a float array (float32 unless it already is a float type), negatives clamped to 0."""
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    return np.maximum(x.astype(dtype, copy=False), 0.0)


def srgb_to_linear(x: ArrayOrFloat) -> ArrayOrFloat:
    """Decode sRGB-encoded values in [0, 1] to linear light (arrays keep a float dtype, ints become float32)."""
    if isinstance(x, np.ndarray):
        a = _float_array(x)
        curved = ((np.maximum(a, SRGB_KNEE) + 0.055) / 1.055) ** 2.4
        return np.where(a <= SRGB_KNEE, a / 12.92, curved).astype(a.dtype, copy=False)
    v = max(float(x), 0.0)
    return v / 12.92 if v <= SRGB_KNEE else ((v + 0.055) / 1.055) ** 2.4


def linear_to_srgb(x: ArrayOrFloat) -> ArrayOrFloat:
    """Encode linear-light values in [0, 1] with the sRGB curve (for display or saving to 8-bit files)."""
    if isinstance(x, np.ndarray):
        a = _float_array(x)
        curved = 1.055 * np.maximum(a, LINEAR_KNEE) ** (1.0 / 2.4) - 0.055
        return np.where(a <= LINEAR_KNEE, a * 12.92, curved).astype(a.dtype, copy=False)
    v = max(float(x), 0.0)
    return v * 12.92 if v <= LINEAR_KNEE else 1.055 * v ** (1.0 / 2.4) - 0.055


def srgb8_to_linear(x: np.ndarray | int | float) -> np.ndarray | float:
    """Decode 8-bit sRGB codes (0..255) to linear floats in [0, 1]."""
    if isinstance(x, np.ndarray):
        return srgb_to_linear(x.astype(np.float32) / 255.0)
    return srgb_to_linear(float(x) / 255.0)


def linear_to_srgb8(x: np.ndarray | float) -> np.ndarray | int:
    """Encode linear floats to rounded 8-bit sRGB codes (a uint8 array, or an int for a float)."""
    if isinstance(x, np.ndarray):
        return np.round(np.clip(linear_to_srgb(x), 0.0, 1.0) * 255.0).astype(np.uint8)
    return int(round(min(max(linear_to_srgb(x), 0.0), 1.0) * 255.0))


def sh_dc_to_linear_rgb(sh_dc: np.ndarray) -> np.ndarray:
    """Degree-0 SH coefficients -> linear RGB in [0, 1], float32 (the Gaussians' colours are sRGB-encoded)."""
    return srgb_to_linear(np.clip(0.5 + SH_C0 * np.asarray(sh_dc, dtype=np.float32), 0.0, 1.0))


def linear_rgb_to_sh_dc(rgb: np.ndarray) -> np.ndarray:
    """Inverse of :func:`sh_dc_to_linear_rgb` (linear RGB is clamped to [0, 1] first), float32."""
    srgb = linear_to_srgb(np.clip(np.asarray(rgb, dtype=np.float32), 0.0, 1.0))
    return ((srgb - 0.5) / SH_C0).astype(np.float32)
