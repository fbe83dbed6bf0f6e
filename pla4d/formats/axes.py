"""Gaussian attributes between the asset's storage convention (+Y up) and Blender's (+Z up, activated values).

docs/asset-format.md section 6: the asset is +Y up with the front on +Z; Blender is +Z up, so a point
``(x, y, z)`` becomes ``(x, -z, y)`` and a Gaussian's orientation ``q`` becomes ``q_C q`` (C: +90 degrees about X,
see :func:`rotations_to_blender`). The asset stores
log-scales, opacity logits and unnormalised quaternions (as ``canonical.ply`` does); Blender's attributes hold
real scales, opacities in [0, 1] and unit quaternions. The ``*_to_blender`` functions write into ``out`` when
given, so the add-on's per-frame playback reuses one buffer. Negations go through a temporary column:
``np.negative`` from one strided column into another gives wrong values for float32 in numpy 2.4.6.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "opacities_from_blender",
    "opacities_to_blender",
    "positions_from_blender",
    "positions_to_blender",
    "rotations_from_blender",
    "rotations_to_blender",
    "scales_from_blender",
    "scales_to_blender",
]

_MIN_SCALE = 1e-30  # log of a zero scale is -inf; a viewer needs a finite log-scale
_OPACITY_EPS = 1e-6  # keeps the logit of an opacity of 0 or 1 finite


def positions_to_blender(src: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) asset-axes points -> Blender axes ``(x, -z, y)`` as float32 (into ``out`` when given)."""
    if out is None:
        out = np.empty((src.shape[0], 3), dtype=np.float32)
    out[:, 0] = src[:, 0]
    out[:, 1] = -src[:, 2]
    out[:, 2] = src[:, 1]
    return out


def positions_from_blender(src: np.ndarray) -> np.ndarray:
    """Inverse of :func:`positions_to_blender`: Blender ``(x, y, z)`` -> asset ``(x, z, -y)``."""
    out = np.empty((src.shape[0], 3), dtype=np.float32)
    out[:, 0] = src[:, 0]
    out[:, 1] = src[:, 2]
    out[:, 2] = -src[:, 1]
    return out


def rotations_to_blender(src: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(N, 4) quaternions (w, x, y, z), asset axes, unnormalised -> normalised Blender-axes quaternions.

    The change of axes is a +90 degree rotation C about X. A Gaussian's quaternion turns its local axes (the
    ones its scales belong to) into world axes, so it becomes C R (``q_C q``): its local axes, and so its scales,
    stay as they are. (C R C^-1, the rule for a rotation acting on world points, would swap the roles of the
    second and third scale.) With ``q_C = (1, 1, 0, 0) / sqrt 2`` that is ``(w - x, x + w, y - z, z + y)``,
    normalised. A zero quaternion becomes the identity."""
    if out is None:
        out = np.empty((src.shape[0], 4), dtype=np.float32)
    w, x, y, z = src[:, 0], src[:, 1], src[:, 2], src[:, 3]
    np.subtract(w, x, out=out[:, 0])  # ufuncs into the columns: no temporaries on the add-on's per-frame path
    np.add(x, w, out=out[:, 1])
    np.subtract(y, z, out=out[:, 2])
    np.add(z, y, out=out[:, 3])
    norm = np.sqrt(np.einsum("ij,ij->i", out, out))
    bad = norm < 1e-12
    if bad.any():
        out[bad] = (1.0, 0.0, 0.0, 0.0)
        norm[bad] = 1.0
    out /= norm[:, None]
    return out


def rotations_from_blender(src: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rotations_to_blender` (``q_C^-1 q``; normalised (w, x, y, z) in asset axes)."""
    w, x, y, z = (src[:, i].astype(np.float32) for i in range(4))
    out = np.stack([w + x, x - w, y + z, z - y], axis=1).astype(np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def scales_to_blender(log_scales: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Log-scales -> real per-axis scales (per local axis, so the change of axes leaves them alone)."""
    if out is None:
        out = np.empty(log_scales.shape, dtype=np.float32)
    np.exp(log_scales, out=out, casting="unsafe")
    return out


def scales_from_blender(scales: np.ndarray) -> np.ndarray:
    """Real per-axis scales -> log-scales (a zero scale becomes log(1e-30), finite)."""
    return np.log(np.maximum(scales, _MIN_SCALE))


def opacities_to_blender(logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Opacity logits -> opacities in [0, 1] (sigmoid)."""
    if out is None:
        out = np.empty(logits.shape, dtype=np.float32)
    np.negative(logits, out=out, casting="unsafe")
    np.exp(out, out=out)
    out += 1.0
    np.reciprocal(out, out=out)
    return out


def opacities_from_blender(opacities: np.ndarray) -> np.ndarray:
    """Opacities in [0, 1] -> logits (clamped to [1e-6, 1 - 1e-6] first, so 0 and 1 stay finite)."""
    opacity = np.clip(opacities, _OPACITY_EPS, 1 - _OPACITY_EPS)
    return np.log(opacity / (1.0 - opacity))
