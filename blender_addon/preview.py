"""The live preview of a training job: the points of the backend's ``preview`` events (up to a few thousand,
every few seconds) shown as one object, ``pla4d preview JOBID``, updated in place and removed at import."""

from __future__ import annotations

from typing import Any

import bpy
import numpy as np

from . import asset_io
from .attributes import ATTR_OPACITY, ATTR_RGB, set_attribute
from .importer import link_object
from .nodes import preview_group


def update_preview(context: Any, job_id: str, points: dict[str, np.ndarray]) -> Any:
    """Create or update (in place) the preview object of a training job from a ``preview`` event's arrays."""
    positions = np.asarray(points["positions"], dtype=np.float32).reshape(-1, 3)
    n = positions.shape[0]
    name = f"pla4d preview {job_id[:8]}"
    obj = bpy.data.objects.get(name)
    if obj is None or obj.type != "MESH":
        me = bpy.data.meshes.new(name)
        obj = bpy.data.objects.new(name, me)
        link_object(context, obj)
        obj.pla4d.kind = "PREVIEW"
        obj.pla4d.job_id = job_id
        mod = obj.modifiers.new("pla4d Preview", "NODES")
        mod.node_group = preview_group()
    me = obj.data
    if len(me.vertices) != n:
        me.clear_geometry()
        me.vertices.add(n)
    me.vertices.foreach_set("co", asset_io.positions_to_blender(positions).ravel())
    if "colors" in points:
        set_attribute(me, ATTR_RGB, asset_io.srgb_to_linear(np.asarray(points["colors"], np.float32).reshape(-1, 3)))
    if "opacities" in points:
        set_attribute(me, ATTR_OPACITY, np.asarray(points["opacities"], np.float32).reshape(-1), "FLOAT", "value")
    me.update()
    return obj


def remove_preview(job_id: str) -> None:
    """Delete the preview object of a job (its result was imported, or it failed or was cancelled)."""
    obj = bpy.data.objects.get(f"pla4d preview {job_id[:8]}")
    if obj is not None:
        me = obj.data
        bpy.data.objects.remove(obj)
        if me is not None and me.users == 0:
            bpy.data.meshes.remove(me)
