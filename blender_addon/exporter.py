"""Export pla4d Gaussians: a sequence of standard 3DGS PLY files (written by :mod:`.asset_io`, the asset's +Y-up
axes), ``KHR_gaussian_splatting`` GLB (frame 0 + POSITION morph targets, or one GLB per frame) and SPZ (one
frame, or one file per frame) through the vendored ``pla4d_formats`` writers the engine uses, and a USD point
cache (Blender's own exporter, one time sample per frame).

All work from the asset folder or from a bake (:func:`.playback.frame_values` reads either).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from . import asset_io
from .attributes import ATTR_RGB, BLENDER_ATTR, read_attribute
from .pla4d_formats.khr_gltf import write_khr_glb
from .pla4d_formats.sequences import write_sequence
from .pla4d_formats.spz import write_spz
from .playback import ImportFailedError, frame_values

USD_POINTS_MIN_BLENDER = (4, 5, 0)  # 4.2 writes only an empty Xform for a point cloud; 4.3 / 4.4 untested


def _gaussians_at(obj: Any) -> Callable[[int], dict[str, np.ndarray]]:
    """Frame t of a pla4d Gaussian object as arrays in the asset's storage convention and axes."""
    props = obj.pla4d
    if props.kind != "GAUSSIANS":
        raise ImportFailedError(f"{obj.name} is not a pla4d Gaussian object")
    data = obj.data
    sh_dc = asset_io.linear_rgb_to_sh_dc(read_attribute(data, ATTR_RGB, "vector", 3))
    animated = [a for a in props.animated.split(",") if a]

    def gaussians_at(t: int) -> dict[str, np.ndarray]:
        values = {}
        for name, (target, _kind, key, width) in BLENDER_ATTR.items():
            values[name] = frame_values(obj, name, t) if name in animated else read_attribute(data, target, key, width)
        return {
            "positions": asset_io.positions_from_blender(values["positions"]),
            "rotations": asset_io.rotations_from_blender(values["rotations"]),
            "scales": asset_io.scales_from_blender(values["scales"]),
            "opacities": asset_io.opacities_from_blender(values["opacities"]),
            "sh_dc": sh_dc,
        }

    return gaussians_at


def export_ply_sequence(obj: Any, folder: str | os.PathLike[str]) -> list[Path]:
    """Write ``frame_000.ply`` ... (standard 3DGS PLY, the asset's +Y-up axes) with :mod:`.asset_io`'s sequence
    writer, the one the engine's exports use."""
    gaussians_at = _gaussians_at(obj)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    return asset_io.write_ply_sequence(out, obj.pla4d.frame_count, gaussians_at)


def _fps(context: Any) -> float:
    render = context.scene.render
    return float(render.fps) / float(render.fps_base or 1.0)


def export_khr_glb(context: Any, obj: Any, path: str | os.PathLike[str]) -> Path:
    """One KHR_gaussian_splatting GLB: frame 0 as the base, every frame's positions as a morph target, a weights
    animation at the scene's frame rate (``pla4d_formats.khr_gltf``, the engine's writer)."""
    gaussians_at = _gaussians_at(obj)
    count = obj.pla4d.frame_count
    positions = np.stack([gaussians_at(t)["positions"] for t in range(count)]) if count > 1 else None
    return write_khr_glb(path, gaussians_at(0), positions, _fps(context), name=obj.name, generator="pla4d add-on")


def export_splat_sequence(context: Any, obj: Any, folder: str | os.PathLike[str], kind: str) -> list[Path]:
    """One file per frame (``frame_000.glb`` / ``.spz`` ...): ``kind`` is ``KHR_GLB`` or ``SPZ``."""
    fps = _fps(context)

    def glb(path: Path, **gaussians: np.ndarray) -> Path:
        return write_khr_glb(path, gaussians, fps=fps, name=obj.name, generator="pla4d add-on")

    writer, suffix = (glb, ".glb") if kind == "KHR_GLB" else (write_spz, ".spz")
    return write_sequence(folder, obj.pla4d.frame_count, _gaussians_at(obj), writer, suffix)


def export_spz(context: Any, obj: Any, path: str | os.PathLike[str]) -> Path:
    """The object's Gaussians at the scene's current frame as one SPZ file (through gsply)."""
    from .playback import asset_frame

    return write_spz(path, **_gaussians_at(obj)(asset_frame(obj, context.scene.frame_current)))


def export_usd(context: Any, obj: Any, path: str | os.PathLike[str]) -> Path:
    """A USD point cache of ``obj`` (UsdGeomPoints with time-sampled points and primvars) for the scene range.

    The splat instancing is switched off during the export so the file holds the points and their attributes,
    not thousands of sphere instances; the ``pla4d Frames`` Scene Time read makes the exporter sample every frame.
    """
    if bpy.app.version < USD_POINTS_MIN_BLENDER:
        raise ImportFailedError(
            f"Blender {bpy.app.version_string}'s USD exporter writes no point clouds (an empty file): use Blender "
            "4.5 or later for the USD point cache, or export a PLY sequence"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    splats = obj.modifiers.get("pla4d Splats")
    saved = (splats.show_viewport, splats.show_render) if splats else None
    if splats:
        splats.show_viewport = splats.show_render = False
    selection = [o for o in context.view_layer.objects if o.select_get()]
    active = context.view_layer.objects.active
    try:
        for other in selection:
            other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        kwargs: dict[str, Any] = {"filepath": str(path), "selected_objects_only": True, "export_animation": True}
        with context.temp_override(active_object=obj, selected_objects=[obj]):
            result = bpy.ops.wm.usd_export(**kwargs)
        if "FINISHED" not in result:
            raise ImportFailedError(f"Blender's USD export of {obj.name} did not finish")
    finally:
        if splats and saved:
            splats.show_viewport, splats.show_render = saved
        obj.select_set(False)
        for other in selection:
            other.select_set(True)
        context.view_layer.objects.active = active
    return path
