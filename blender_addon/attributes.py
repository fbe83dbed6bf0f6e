"""Point attributes of pla4d objects: the asset's attribute names and Blender's, the value conversion of one frame,
and writing an attribute with ``foreach_set``. Shared by import, playback, bake, export and the live preview.

Gaussians are a PointCloud with ``splat_rgb`` (linear colour; not ``color``, which Cycles renders black on
points), ``splat_opacity`` (0..1), ``splat_scale`` (real per-axis scales) and ``splat_rotation`` (quaternion,
Blender axes); the asset's storage convention is converted by :mod:`.asset_io`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import asset_io

ATTR_RGB = "splat_rgb"
ATTR_OPACITY = "splat_opacity"
ATTR_SCALE = "splat_scale"
ATTR_ROTATION = "splat_rotation"
ATTR_K = "splat_k"
# Asset attribute -> (Blender attribute, attribute type, foreach key, components).
BLENDER_ATTR = {
    "positions": ("position", "FLOAT_VECTOR", "vector", 3),
    "rotations": (ATTR_ROTATION, "QUATERNION", "value", 4),
    "scales": (ATTR_SCALE, "FLOAT_VECTOR", "vector", 3),
    "opacities": (ATTR_OPACITY, "FLOAT", "value", 1),
}
MESH_ANIMATED = ("positions",)


def to_blender(name: str, src: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """One attribute of one frame (storage convention, asset axes) -> Blender values (float32)."""
    if name == "positions":
        return asset_io.positions_to_blender(src, out)
    if name == "rotations":
        return asset_io.rotations_to_blender(src, out)
    if name == "scales":
        return asset_io.scales_to_blender(src, out)
    if name == "opacities":
        return asset_io.opacities_to_blender(src, out)
    raise KeyError(name)


def set_attribute(data: Any, name: str, values: np.ndarray, kind: str = "FLOAT_VECTOR", key: str = "vector") -> None:
    """Write a point attribute (created, or recreated when its type or domain differs)."""
    attr = data.attributes.get(name)
    if attr is not None and (attr.data_type != kind or attr.domain != "POINT"):
        data.attributes.remove(attr)
        attr = None
    if attr is None:
        attr = data.attributes.new(name, kind, "POINT")
    attr.data.foreach_set(key, np.ascontiguousarray(values, dtype=np.float32).ravel())


def read_attribute(data: Any, name: str, key: str, width: int) -> np.ndarray:
    """A point attribute's values as float32, (N, width) or (N,)."""
    attr = data.attributes[name]
    n = len(attr.data)
    out = np.empty(n * width, dtype=np.float32)
    attr.data.foreach_get(key, out)
    return out.reshape(n, width) if width > 1 else out
