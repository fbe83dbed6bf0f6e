"""Import a 4D asset into Blender: the animated Gaussians (a PointCloud drawn as splats by the ``pla4d Splats``
nodes), the animated mesh, and the scene set-up (frame rate and range, view transform, Cycles bounces).

Both kinds of object carry the ``pla4d Frames`` modifier and are driven frame by frame by :mod:`.playback`.
"""

from __future__ import annotations

import os
from typing import Any

import bpy
import numpy as np

from . import asset_io
from .asset_io import Asset
from .attributes import ATTR_RGB, BLENDER_ATTR, set_attribute, to_blender
from .nodes import add_modifiers, mesh_material, splat_material
from .playback import ImportFailedError, apply_frame, forget_asset, get_asset, prefill


def link_object(context: Any, obj: Any, collection: Any = None) -> None:
    """Link ``obj`` into ``collection``, else the context's collection, else the scene's."""
    (collection or context.collection or context.scene.collection).objects.link(obj)


def new_pointcloud(context: Any, name: str, count: int, collection: Any = None) -> Any:
    """A PointCloud object with ``count`` points. Python cannot size a PointCloud, and Blender 4.2 cannot convert a
    mesh into one, so a throw-away geometry-nodes modifier (a Points node) makes the points and is applied."""
    obj = bpy.data.objects.new(name, bpy.data.pointclouds.new(name))
    link_object(context, obj, collection)
    sizer = bpy.data.node_groups.new("pla4d sizer", "GeometryNodeTree")
    try:
        sizer.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
        sizer.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
        points = sizer.nodes.new("GeometryNodePoints")
        points.inputs["Count"].default_value = int(count)
        sizer.links.new(points.outputs[0], sizer.nodes.new("NodeGroupOutput").inputs[0])
        mod = obj.modifiers.new("pla4d sizer", "NODES")
        mod.node_group = sizer
        with context.temp_override(object=obj, active_object=obj, scene=context.scene):
            result = bpy.ops.object.modifier_apply(modifier=mod.name)
    finally:
        bpy.data.node_groups.remove(sizer)
    if "FINISHED" not in result or len(obj.data.points) != count:
        data = obj.data
        bpy.data.objects.remove(obj)
        bpy.data.pointclouds.remove(data)
        raise ImportFailedError("Blender could not create a point cloud object")
    return obj


def setup_scene(scene: Any, asset: Asset, start: int) -> None:
    """Frame rate and range for the asset, the Standard view transform (splat colours are display colours),
    and enough transparent bounces in Cycles for overlapping splats."""
    fps = asset.fps
    scene.render.fps = max(1, round(fps))
    scene.render.fps_base = scene.render.fps / fps
    scene.frame_start = start
    scene.frame_end = max(start + asset.frame_count - 1, start)
    scene.view_settings.view_transform = "Standard"
    cycles = getattr(scene, "cycles", None)
    if cycles is not None:
        cycles.transparent_max_bounces = max(cycles.transparent_max_bounces, 256)
        cycles.max_bounces = max(cycles.max_bounces, 256)


def import_gaussians(
    context: Any, path: str | os.PathLike[str], name: str | None = None, start: int | None = None,
    collection: Any = None, verify: bool = True, job_id: str = "",
) -> Any:  # fmt: skip
    """Import a 4D asset as an animated Gaussian PointCloud object; returns the object."""
    forget_asset(path)  # a re-import re-reads the folder (it may have been replaced)
    asset = get_asset(path, verify=verify)
    scene = context.scene
    start = scene.frame_start if start is None else int(start)
    label = name or _label(asset)
    obj = new_pointcloud(context, label, asset.num_gaussians, collection)
    data = obj.data
    can = asset.canonical
    set_attribute(data, ATTR_RGB, asset_io.sh_dc_to_linear_rgb(can["sh_dc"]))
    for attr in ("positions", "rotations", "scales", "opacities"):
        target, kind, key, _width = BLENDER_ATTR[attr]
        set_attribute(data, target, to_blender(attr, asset.frame(attr, 0)), kind, key)
    data.materials.append(splat_material())
    props = obj.pla4d
    props.kind = "GAUSSIANS"
    props.asset_path = str(asset.path)
    props.frame_count = asset.frame_count
    props.animated = ",".join(asset.animated)
    props.job_id = job_id
    props["start_frame"] = start  # no update callback yet: the modifiers do not exist
    add_modifiers(obj, start, asset.frame_count, splats=True)
    apply_frame(obj, scene.frame_current)
    prefill(obj)
    return obj


def import_mesh(
    context: Any, path: str | os.PathLike[str], name: str | None = None, start: int | None = None,
    collection: Any = None, verify: bool = True, job_id: str = "",
) -> Any:  # fmt: skip
    """Import the asset's animated mesh as a mesh object (vertex positions per frame); returns the object."""
    asset = get_asset(path, verify=verify)
    mesh_data = asset.mesh
    if mesh_data is None:
        raise ImportFailedError(f"{asset.path} has no animated mesh (import it as Gaussians)")
    scene = context.scene
    start = scene.frame_start if start is None else int(start)
    label = (name or _label(asset)) + " mesh"
    me = bpy.data.meshes.new(label)
    faces = np.asarray(mesh_data.faces, dtype=np.int32)
    me.vertices.add(mesh_data.num_vertices)
    me.vertices.foreach_set("co", asset_io.positions_to_blender(mesh_data.positions[0]).ravel())
    me.loops.add(faces.size)
    me.loops.foreach_set("vertex_index", faces.ravel())
    me.polygons.add(faces.shape[0])
    me.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    if mesh_data.uvs is not None:
        uv = me.uv_layers.new(name="UVMap")
        corner = mesh_data.uvs[faces.ravel()].copy()
        corner[:, 1] = 1.0 - corner[:, 1]  # glTF v runs down the image, Blender's up
        uv.data.foreach_set("uv", corner.ravel())
    if mesh_data.vertex_colors is not None:
        colors = np.ones((mesh_data.num_vertices, 4), dtype=np.float32)
        colors[:, :3] = mesh_data.vertex_colors
        attr = me.color_attributes.new("pla4d_rgb", "FLOAT_COLOR", "POINT")
        attr.data.foreach_set("color", colors.ravel())
    me.update()
    me.validate()
    me.shade_smooth() if hasattr(me, "shade_smooth") else None
    me.materials.append(mesh_material(mesh_data.texture))
    obj = bpy.data.objects.new(label, me)
    link_object(context, obj, collection)
    props = obj.pla4d
    props.kind = "MESH"
    props.asset_path = str(asset.path)
    props.frame_count = asset.frame_count
    props.animated = "positions"
    props.job_id = job_id
    props["start_frame"] = start
    add_modifiers(obj, start, asset.frame_count, splats=False)
    apply_frame(obj, scene.frame_current)
    prefill(obj)
    return obj


def _label(asset: Asset) -> str:
    prompt = asset.meta.get("prompt")
    if prompt:
        return "pla4d " + str(prompt)[:40]
    return "pla4d " + (asset.path.parent.name if asset.path.name == "asset" else asset.path.stem)


def import_asset(context: Any, path: str, import_as: str = "GAUSSIANS", job_id: str = "") -> list[Any]:
    """Import a 4D asset (``GAUSSIANS``, ``MESH`` or ``BOTH``), set the scene up and select the result."""
    asset = get_asset(path, verify=True) if not job_id else get_asset(path, verify=False)
    scene = context.scene
    start = scene.frame_start
    created = []
    if import_as in ("GAUSSIANS", "BOTH") or asset.mesh is None:
        created.append(import_gaussians(context, path, start=start, verify=False, job_id=job_id))
    if import_as in ("MESH", "BOTH") and asset.mesh is not None:
        created.append(import_mesh(context, path, start=start, verify=False, job_id=job_id))
    setup_scene(scene, asset, start)
    for obj in created:
        try:
            obj.select_set(True)
        except RuntimeError:  # not in the current view layer
            pass
    if created and context.view_layer is not None and created[0].name in context.view_layer.objects:
        context.view_layer.objects.active = created[0]
    return created
