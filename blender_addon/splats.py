"""Blender objects for 4D assets: animated Gaussians (a PointCloud drawn as splats), the animated mesh, the live
preview, the per-frame update, the bake and the exports.

Design (docs/blender-addon.md has the reasons at length):

- **Gaussians** are a PointCloud object with per-point attributes ``splat_rgb`` (linear colour; not ``color``,
  which Cycles renders black on points), ``splat_opacity`` (0..1), ``splat_scale`` (real per-axis scales),
  ``splat_rotation`` (quaternion, Blender axes). A geometry-nodes modifier (``pla4d Splats``) instances a smooth
  ico-sphere per point, rotated and scaled to ``Splat Size`` standard deviations; the ``pla4d Splat`` material
  makes it a soft Gaussian: emission ``splat_rgb`` with alpha ``opacity * exp(-d^2 / 2)``, where ``d`` (in
  standard deviations) is the ray's closest distance to the centre, recovered from the facing ratio. The same
  nodes work in EEVEE and Cycles.
- **Playback**: a ``frame_change_pre`` handler writes the current frame's animated attributes with
  ``foreach_set`` from the memory-mapped asset files (asset frame ``t`` = scene frame ``start + t``).
- **Time for exporters**: every pla4d object carries the ``pla4d Frames`` modifier, which reads Scene Time, so
  exporters (USD) treat the object as animated and sample every frame.
- **Bake**: copies each frame into per-frame attributes (``pla4d_position_7`` ...); the ``pla4d Frames``
  modifier then picks the current frame's attributes by name, so a saved file plays without the asset folder,
  the add-on's handler or the backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from . import asset_io
from .asset_io import Asset

NODES_VERSION = 2  # bump when the node groups change; older groups are rebuilt
SPLATS_GROUP = "pla4d Splats"
FRAMES_GROUP = "pla4d Frames"
PREVIEW_GROUP = "pla4d Preview Points"
SPLAT_MATERIAL = "pla4d Splat"
PREVIEW_MATERIAL = "pla4d Preview"
MESH_MATERIAL = "pla4d Mesh"
ATTR_RGB = "splat_rgb"
ATTR_OPACITY = "splat_opacity"
ATTR_SCALE = "splat_scale"
ATTR_ROTATION = "splat_rotation"
ATTR_K = "splat_k"
DEFAULT_SPLAT_SIZE = 3.0  # the splat shell's radius in standard deviations (3DGS culls at 3 sigma too)
# Asset attribute -> (Blender attribute, attribute type, foreach key, components).
BLENDER_ATTR = {
    "positions": ("position", "FLOAT_VECTOR", "vector", 3),
    "rotations": (ATTR_ROTATION, "QUATERNION", "value", 4),
    "scales": (ATTR_SCALE, "FLOAT_VECTOR", "vector", 3),
    "opacities": (ATTR_OPACITY, "FLOAT", "value", 1),
}
MESH_ANIMATED = ("positions",)

_assets: dict[str, Asset] = {}  # resolved asset path -> opened (memory-mapped) asset
_buffers: dict[tuple[int, str], np.ndarray] = {}  # (data session_uid, attribute) -> float32 scratch buffer


class ImportFailedError(Exception):
    """An import or bake that cannot proceed; the message is for the user (shown by the operator)."""


# ------------------------------------------------------------------------------------------------ assets


def get_asset(path: str | os.PathLike[str], verify: bool = False) -> Asset:
    """The opened asset at ``path``, cached (memory maps stay open while the add-on runs)."""
    key = str(Path(path).resolve())
    asset = _assets.get(key)
    if asset is None:
        asset = asset_io.open_asset(key, verify=verify)
        _assets[key] = asset
    return asset


def forget_assets() -> None:
    """Drop cached assets and buffers (after loading a file, or when an asset folder was replaced)."""
    _assets.clear()
    _buffers.clear()


def _buffer(data: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    key = (data.session_uid, name)
    buf = _buffers.get(key)
    if buf is None or buf.shape != shape:
        buf = np.empty(shape, dtype=np.float32)
        _buffers[key] = buf
    return buf


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


def _set_attr(data: Any, name: str, values: np.ndarray, kind: str = "FLOAT_VECTOR", key: str = "vector") -> None:
    attr = data.attributes.get(name)
    if attr is not None and (attr.data_type != kind or attr.domain != "POINT"):
        data.attributes.remove(attr)
        attr = None
    if attr is None:
        attr = data.attributes.new(name, kind, "POINT")
    attr.data.foreach_set(key, np.ascontiguousarray(values, dtype=np.float32).ravel())


# ------------------------------------------------------------------------------------------------ node groups


def _socket(ng: Any, name: str, in_out: str, kind: str, default: Any = None, lo: Any = None, hi: Any = None) -> Any:
    sock = ng.interface.new_socket(name, in_out=in_out, socket_type=kind)
    if default is not None:
        sock.default_value = default
    if lo is not None:
        sock.min_value = lo
    if hi is not None:
        sock.max_value = hi
    return sock


def _fresh_group(name: str) -> tuple[Any, bool]:
    ng = bpy.data.node_groups.get(name)
    if ng is not None and ng.get("pla4d_nodes_version") == NODES_VERSION:
        return ng, False
    if ng is None:
        ng = bpy.data.node_groups.new(name, "GeometryNodeTree")
    else:
        ng.nodes.clear()
        ng.interface.clear()
    ng["pla4d_nodes_version"] = NODES_VERSION
    return ng, True


def _math(ng: Any, op: str, a: Any, b: Any = None, loc: tuple[float, float] = (0, 0)) -> Any:
    node = ng.nodes.new("ShaderNodeMath")
    node.operation = op
    node.location = loc
    for index, value in ((0, a), (1, b)):
        if value is None:
            continue
        if isinstance(value, int | float):
            node.inputs[index].default_value = value
        else:
            ng.links.new(value, node.inputs[index])
    return node.outputs[0]


def _named(ng: Any, name: str, kind: str, loc: tuple[float, float] = (0, 0)) -> Any:
    node = ng.nodes.new("GeometryNodeInputNamedAttribute")
    node.data_type = kind
    node.inputs["Name"].default_value = name
    node.location = loc
    return node


def splats_group() -> Any:
    """Geometry nodes that turn the Gaussian points into oriented, scaled, soft splats (instanced spheres)."""
    ng, fresh = _fresh_group(SPLATS_GROUP)
    if not fresh:
        return ng
    _socket(ng, "Geometry", "INPUT", "NodeSocketGeometry")
    _socket(ng, "Splat Size", "INPUT", "NodeSocketFloat", DEFAULT_SPLAT_SIZE, 0.5, 6.0)
    _socket(ng, "Min Opacity", "INPUT", "NodeSocketFloat", 1.0 / 255.0, 0.0, 1.0)
    _socket(ng, "Detail", "INPUT", "NodeSocketInt", 1, 1, 4)
    _socket(ng, "Geometry", "OUTPUT", "NodeSocketGeometry")
    gi, go = ng.nodes.new("NodeGroupInput"), ng.nodes.new("NodeGroupOutput")
    gi.location, go.location = (-900, 0), (700, 0)
    # Drop nearly transparent Gaussians: they cost render time and show nothing.
    opacity = _named(ng, ATTR_OPACITY, "FLOAT", (-700, -250))
    faint = _math(ng, "LESS_THAN", opacity.outputs[0], gi.outputs["Min Opacity"], (-500, -250))
    delete = ng.nodes.new("GeometryNodeDeleteGeometry")
    delete.domain = "POINT"
    delete.location = (-300, 0)
    ng.links.new(gi.outputs["Geometry"], delete.inputs["Geometry"])
    ng.links.new(faint, delete.inputs["Selection"])
    # One smooth sphere of radius 1 per point, scaled by scale * Splat Size: the shell at that many sigmas.
    ico = ng.nodes.new("GeometryNodeMeshIcoSphere")
    ico.location = (-500, 250)
    ico.inputs["Radius"].default_value = 1.0
    ng.links.new(gi.outputs["Detail"], ico.inputs["Subdivisions"])
    smooth = ng.nodes.new("GeometryNodeSetShadeSmooth")
    smooth.location = (-300, 250)
    ng.links.new(ico.outputs["Mesh"], smooth.inputs[0])
    set_mat = ng.nodes.new("GeometryNodeSetMaterial")
    set_mat.location = (-100, 250)
    set_mat.inputs["Material"].default_value = splat_material()
    ng.links.new(smooth.outputs[0], set_mat.inputs["Geometry"])
    rotation = _named(ng, ATTR_ROTATION, "QUATERNION", (-500, -450))
    scale = _named(ng, ATTR_SCALE, "FLOAT_VECTOR", (-500, -600))
    scaled = ng.nodes.new("ShaderNodeVectorMath")
    scaled.operation = "SCALE"
    scaled.location = (-300, -600)
    ng.links.new(scale.outputs[0], scaled.inputs[0])
    ng.links.new(gi.outputs["Splat Size"], scaled.inputs["Scale"])
    inst = ng.nodes.new("GeometryNodeInstanceOnPoints")
    inst.location = (100, 0)
    ng.links.new(delete.outputs[0], inst.inputs["Points"])
    ng.links.new(set_mat.outputs[0], inst.inputs["Instance"])
    ng.links.new(rotation.outputs[0], inst.inputs["Rotation"])
    ng.links.new(scaled.outputs[0], inst.inputs["Scale"])
    # The material needs the shell radius (in sigmas) to turn the facing ratio into a Gaussian falloff.
    store = ng.nodes.new("GeometryNodeStoreNamedAttribute")
    store.data_type, store.domain = "FLOAT", "INSTANCE"
    store.location = (400, 0)
    store.inputs["Name"].default_value = ATTR_K
    ng.links.new(inst.outputs[0], store.inputs["Geometry"])
    ng.links.new(gi.outputs["Splat Size"], store.inputs["Value"])
    ng.links.new(store.outputs[0], go.inputs[0])
    return ng


def frames_group() -> Any:
    """Geometry nodes that read Scene Time and, when the object is baked, pick the frame's attributes.

    Baked attributes are named ``pla4d_<attribute>_<t>``; ``t = clamp(floor(frame) - Start Frame, 0, Count - 1)``
    is turned into a string that replaces ``#`` in the name. Unbaked objects have no such attributes ("Exists" is
    false), so the nodes change nothing, but the Scene Time read still marks the object as animated."""
    ng, fresh = _fresh_group(FRAMES_GROUP)
    if not fresh:
        return ng
    _socket(ng, "Geometry", "INPUT", "NodeSocketGeometry")
    _socket(ng, "Start Frame", "INPUT", "NodeSocketInt", 1)
    _socket(ng, "Frame Count", "INPUT", "NodeSocketInt", 1, 1)
    _socket(ng, "Geometry", "OUTPUT", "NodeSocketGeometry")
    gi, go = ng.nodes.new("NodeGroupInput"), ng.nodes.new("NodeGroupOutput")
    gi.location, go.location = (-1000, 0), (1200, 0)
    time = ng.nodes.new("GeometryNodeInputSceneTime")
    time.location = (-1000, 300)
    t = _math(ng, "SUBTRACT", _math(ng, "FLOOR", time.outputs["Frame"], None, (-800, 300)), gi.outputs["Start Frame"])
    last = _math(ng, "SUBTRACT", gi.outputs["Frame Count"], 1.0, (-800, 100))
    t = _math(ng, "MINIMUM", _math(ng, "MAXIMUM", t, 0.0, (-600, 300)), last, (-400, 300))
    text = ng.nodes.new("FunctionNodeValueToString")
    text.location = (-200, 300)
    text.inputs["Decimals"].default_value = 0
    ng.links.new(t, text.inputs["Value"])
    geometry = gi.outputs["Geometry"]
    x = 0
    for name, (target, kind, _key, _width) in BLENDER_ATTR.items():
        replace = ng.nodes.new("FunctionNodeReplaceString")
        replace.location = (x, 500)
        replace.inputs["String"].default_value = f"pla4d_{target}_#"
        replace.inputs["Find"].default_value = "#"
        ng.links.new(text.outputs[0], replace.inputs["Replace"])
        named = _named(ng, "", kind, (x, 300))
        ng.links.new(replace.outputs[0], named.inputs["Name"])
        if name == "positions":
            node = ng.nodes.new("GeometryNodeSetPosition")
            ng.links.new(named.outputs[0], node.inputs["Position"])
        else:
            node = ng.nodes.new("GeometryNodeStoreNamedAttribute")
            node.data_type, node.domain = kind, "POINT"
            node.inputs["Name"].default_value = target
            ng.links.new(named.outputs[0], node.inputs["Value"])
        node.location = (x, 0)
        ng.links.new(geometry, node.inputs["Geometry"])
        ng.links.new(named.outputs["Exists"], node.inputs["Selection"])
        geometry = node.outputs[0]
        x += 250
    # The baked frames stay on the original data only: exporters and renderers see one clean frame.
    remove = ng.nodes.new("GeometryNodeRemoveAttribute")
    remove.location = (x, 0)
    wildcard = True
    if "Pattern Mode" in remove.inputs:  # Blender 5.0: a menu socket
        remove.inputs["Pattern Mode"].default_value = "Wildcard"
    elif hasattr(remove, "pattern_mode"):  # Blender 4.2 .. 4.5: a node property
        remove.pattern_mode = "WILDCARD"
    else:
        wildcard = False
    if wildcard:
        remove.inputs["Name"].default_value = "pla4d_*"
        ng.links.new(geometry, remove.inputs["Geometry"])
        geometry = remove.outputs[0]
    else:
        ng.nodes.remove(remove)
    ng.links.new(geometry, go.inputs[0])
    return ng


def preview_group() -> Any:
    """Mesh vertices -> points with a fixed radius and the preview material (the live training preview)."""
    ng, fresh = _fresh_group(PREVIEW_GROUP)
    if not fresh:
        return ng
    _socket(ng, "Geometry", "INPUT", "NodeSocketGeometry")
    _socket(ng, "Radius", "INPUT", "NodeSocketFloat", 0.012, 0.0, 1.0)
    _socket(ng, "Geometry", "OUTPUT", "NodeSocketGeometry")
    gi, go = ng.nodes.new("NodeGroupInput"), ng.nodes.new("NodeGroupOutput")
    gi.location, go.location = (-400, 0), (400, 0)
    points = ng.nodes.new("GeometryNodeMeshToPoints")
    ng.links.new(gi.outputs["Geometry"], points.inputs["Mesh"])
    ng.links.new(gi.outputs["Radius"], points.inputs["Radius"])
    set_mat = ng.nodes.new("GeometryNodeSetMaterial")
    set_mat.location = (200, 0)
    set_mat.inputs["Material"].default_value = preview_material()
    ng.links.new(points.outputs[0], set_mat.inputs["Geometry"])
    ng.links.new(set_mat.outputs[0], go.inputs[0])
    return ng


# ------------------------------------------------------------------------------------------------ materials


def _new_material(name: str) -> tuple[Any, bool]:
    mat = bpy.data.materials.get(name)
    if mat is not None and mat.get("pla4d_nodes_version") == NODES_VERSION:
        return mat, False
    if mat is None:
        mat = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0) or mat.node_tree is None:
        mat.use_nodes = True
    mat.node_tree.nodes.clear()
    mat["pla4d_nodes_version"] = NODES_VERSION
    return mat, True


def _shader_math(nt: Any, op: str, a: Any, b: Any = None, loc: tuple[float, float] = (0, 0)) -> Any:
    return _math(nt, op, a, b, loc)


def _attribute(nt: Any, name: str, kind: str, loc: tuple[float, float]) -> Any:
    node = nt.nodes.new("ShaderNodeAttribute")
    node.attribute_type = kind
    node.attribute_name = name
    node.location = loc
    return node


def splat_material() -> Any:
    """Emission coloured by ``splat_rgb`` with a Gaussian alpha falloff over the sphere, transparent behind."""
    mat, fresh = _new_material(SPLAT_MATERIAL)
    if not fresh:
        return mat
    nt = mat.node_tree
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    out.location = (900, 0)
    rgb = _attribute(nt, ATTR_RGB, "INSTANCER", (-200, 300))
    opacity = _attribute(nt, ATTR_OPACITY, "INSTANCER", (-200, 100))
    k = _attribute(nt, ATTR_K, "INSTANCER", (-800, -300))
    geo = nt.nodes.new("ShaderNodeNewGeometry")
    geo.location = (-1200, 0)
    coords = nt.nodes.new("ShaderNodeTexCoord")
    coords.location = (-1200, 300)
    # In the instance's own space the splat is the unit sphere at k sigmas: the hit point P (Object coordinates)
    # and the view ray D (Incoming, world -> object) give the ray's closest squared distance to the centre,
    # d^2 = |P|^2 - (P.D)^2 / |D|^2 (in units of k sigma), and the Gaussian along the ray peaks at
    # exp(-k^2 d^2 / 2): the same falloff 3DGS's projected 2D Gaussian has, for any scale and rotation.
    ray = nt.nodes.new("ShaderNodeVectorTransform")
    ray.vector_type, ray.convert_from, ray.convert_to = "VECTOR", "WORLD", "OBJECT"
    ray.location = (-1000, 0)
    nt.links.new(geo.outputs["Incoming"], ray.inputs[0])

    def dot(a: Any, b: Any, loc: tuple[float, float]) -> Any:
        node = nt.nodes.new("ShaderNodeVectorMath")
        node.operation = "DOT_PRODUCT"
        node.location = loc
        nt.links.new(a, node.inputs[0])
        nt.links.new(b, node.inputs[1])
        return node.outputs["Value"]

    p, d = coords.outputs["Object"], ray.outputs[0]
    pd = dot(p, d, (-800, 200))
    along = _shader_math(nt, "DIVIDE", _shader_math(nt, "MULTIPLY", pd, pd, (-600, 200)), dot(d, d, (-800, 0)),
                         (-400, 200))  # fmt: skip
    d2 = _shader_math(nt, "MAXIMUM", _shader_math(nt, "SUBTRACT", dot(p, p, (-800, 400)), along, (-200, 200)), 0.0,
                      (0, 200))  # fmt: skip
    k2 = _shader_math(nt, "MULTIPLY", k.outputs["Fac"], k.outputs["Fac"], (-600, -300))
    exponent = _shader_math(nt, "MULTIPLY", _shader_math(nt, "MULTIPLY", d2, k2, (150, 0)), -0.5, (300, 0))
    falloff = _shader_math(nt, "EXPONENT", exponent, None, (450, 0))
    alpha = _shader_math(nt, "MULTIPLY", falloff, opacity.outputs["Fac"], (450, -100))
    front = _shader_math(nt, "SUBTRACT", 1.0, geo.outputs["Backfacing"], (300, -300))
    alpha = _shader_math(nt, "MULTIPLY", alpha, front, (600, -100))
    emission = nt.nodes.new("ShaderNodeEmission")
    emission.location = (450, 250)
    nt.links.new(rgb.outputs["Color"], emission.inputs["Color"])
    emission.inputs["Strength"].default_value = 1.0
    clear = nt.nodes.new("ShaderNodeBsdfTransparent")
    clear.location = (450, 400)
    mix = nt.nodes.new("ShaderNodeMixShader")
    mix.location = (700, 200)
    nt.links.new(alpha, mix.inputs["Fac"])
    nt.links.new(clear.outputs[0], mix.inputs[1])
    nt.links.new(emission.outputs[0], mix.inputs[2])
    nt.links.new(mix.outputs[0], out.inputs["Surface"])
    mat.use_backface_culling = True
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = "DITHERED"  # order-independent: right for thousands of overlapping splats
    return mat


def preview_material() -> Any:
    mat, fresh = _new_material(PREVIEW_MATERIAL)
    if not fresh:
        return mat
    nt = mat.node_tree
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    out.location = (400, 0)
    rgb = _attribute(nt, ATTR_RGB, "GEOMETRY", (-400, 100))
    emission = nt.nodes.new("ShaderNodeEmission")
    nt.links.new(rgb.outputs["Color"], emission.inputs["Color"])
    nt.links.new(emission.outputs[0], out.inputs["Surface"])
    return mat


def mesh_material(texture: Path | None) -> Any:
    """Principled BSDF with the mesh's texture (on its UVs) or its vertex colours (``pla4d_rgb``)."""
    name = MESH_MATERIAL + (f" {texture.parent.name}" if texture else "")
    mat, fresh = _new_material(name)
    if not fresh:
        return mat
    nt = mat.node_tree
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    out.location = (400, 0)
    bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.inputs["Roughness"].default_value = 1.0
    nt.links.new(bsdf.outputs[0], out.inputs["Surface"])
    if texture is not None:
        image = nt.nodes.new("ShaderNodeTexImage")
        image.image = bpy.data.images.load(str(texture), check_existing=True)
        image.location = (-400, 0)
        nt.links.new(image.outputs["Color"], bsdf.inputs["Base Color"])
    else:
        rgb = _attribute(nt, "pla4d_rgb", "GEOMETRY", (-400, 0))
        nt.links.new(rgb.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


# ------------------------------------------------------------------------------------------------ objects


def _modifier_input(mod: Any, name: str, value: Any) -> None:
    for item in mod.node_group.interface.items_tree:
        if getattr(item, "in_out", None) == "INPUT" and item.name == name:
            mod[item.identifier] = value
            return
    raise KeyError(name)


def _add_modifiers(obj: Any, start: int, count: int, splats: bool) -> None:
    frames = obj.modifiers.new("pla4d Frames", "NODES")
    frames.node_group = frames_group()
    _modifier_input(frames, "Start Frame", int(start))
    _modifier_input(frames, "Frame Count", int(count))
    if splats:
        mod = obj.modifiers.new("pla4d Splats", "NODES")
        mod.node_group = splats_group()


def _link(context: Any, obj: Any, collection: Any = None) -> None:
    (collection or context.collection or context.scene.collection).objects.link(obj)


def new_pointcloud(context: Any, name: str, count: int, collection: Any = None) -> Any:
    """A PointCloud object with ``count`` points (Python cannot size a PointCloud directly: convert a mesh)."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(count)
    obj = bpy.data.objects.new(name, mesh)
    _link(context, obj, collection)
    override: dict[str, Any] = {"active_object": obj, "object": obj, "selected_objects": [obj],
                                "selected_editable_objects": [obj], "scene": context.scene}  # fmt: skip
    if context.view_layer is not None:
        override["view_layer"] = context.view_layer
    with context.temp_override(**override):
        result = bpy.ops.object.convert(target="POINTCLOUD")
    if "FINISHED" not in result or obj.type != "POINTCLOUD":
        bpy.data.objects.remove(obj)
        raise ImportFailedError("Blender could not create a point cloud object")
    bpy.data.meshes.remove(mesh) if mesh.users == 0 else None
    obj.data.name = name
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
    forget = str(Path(path).resolve())
    _assets.pop(forget, None)  # a re-import re-reads the folder (it may have been replaced)
    asset = get_asset(path, verify=verify)
    scene = context.scene
    start = scene.frame_start if start is None else int(start)
    label = name or _label(asset)
    obj = new_pointcloud(context, label, asset.num_gaussians, collection)
    data = obj.data
    can = asset.canonical
    _set_attr(data, ATTR_RGB, asset_io.sh_dc_to_linear_rgb(can["sh_dc"]))
    for attr in ("positions", "rotations", "scales", "opacities"):
        target, kind, key, _width = BLENDER_ATTR[attr]
        _set_attr(data, target, to_blender(attr, asset.frame(attr, 0)), kind, key)
    data.materials.append(splat_material())
    props = obj.pla4d
    props.kind = "GAUSSIANS"
    props.asset_path = str(asset.path)
    props.frame_count = asset.frame_count
    props.animated = ",".join(asset.animated)
    props.job_id = job_id
    props["start_frame"] = start  # no update callback yet: the modifiers do not exist
    _add_modifiers(obj, start, asset.frame_count, splats=True)
    apply_frame(obj, scene.frame_current)
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
    _link(context, obj, collection)
    props = obj.pla4d
    props.kind = "MESH"
    props.asset_path = str(asset.path)
    props.frame_count = asset.frame_count
    props.animated = "positions"
    props.job_id = job_id
    props["start_frame"] = start
    _add_modifiers(obj, start, asset.frame_count, splats=False)
    apply_frame(obj, scene.frame_current)
    return obj


def _label(asset: Asset) -> str:
    prompt = asset.meta.get("prompt")
    if prompt:
        return "pla4d " + str(prompt)[:40]
    return "pla4d " + (asset.path.parent.name if asset.path.name == "asset" else asset.path.stem)


# ------------------------------------------------------------------------------------------------ playback


def asset_frame(obj: Any, scene_frame: int) -> int:
    props = obj.pla4d
    return min(max(int(scene_frame) - props.start_frame, 0), max(props.frame_count - 1, 0))


def apply_frame(obj: Any, scene_frame: int) -> bool:
    """Write the object's animated attributes for ``scene_frame``; False when the asset is not available."""
    props = obj.pla4d
    if props.baked or not props.asset_path or props.kind not in ("GAUSSIANS", "MESH"):
        return False
    try:
        asset = get_asset(props.asset_path)
    except (asset_io.AssetReadError, OSError):
        return False
    t = asset_frame(obj, scene_frame)
    data = obj.data
    if props.kind == "MESH":
        if asset.mesh is None:
            return False
        src = asset.mesh.positions[t]
        buf = _buffer(data, "mesh", (src.shape[0], 3))
        asset_io.positions_to_blender(src, buf)
        data.attributes["position"].data.foreach_set("vector", buf.ravel())
        data.update_tag()
        return True
    if len(data.points) != asset.num_gaussians:
        return False
    for name in asset.animated:
        target, _kind, key, width = BLENDER_ATTR[name]
        attr = data.attributes.get(target)
        if attr is None:
            continue
        src = asset.arrays[name][t]
        buf = _buffer(data, name, (src.shape[0], width) if width > 1 else (src.shape[0],))
        to_blender(name, src, buf)
        attr.data.foreach_set(key, buf.ravel())
    data.update_tag()
    return True


def apply_scene(scene: Any) -> int:
    """Update every handler-driven pla4d object of ``scene`` to its current frame; returns how many changed."""
    count = 0
    frame = scene.frame_current
    for obj in scene.objects:
        props = getattr(obj, "pla4d", None)
        if props is not None and props.kind in ("GAUSSIANS", "MESH") and not props.baked:
            count += apply_frame(obj, frame)
    return count


# ------------------------------------------------------------------------------------------------ bake


def _frame_values(obj: Any, name: str, t: int) -> np.ndarray:
    """Blender values of animated attribute ``name`` at asset frame ``t`` (from the bake or the asset)."""
    props = obj.pla4d
    target, _kind, key, width = BLENDER_ATTR[name]
    if props.baked:
        attr = obj.data.attributes.get(f"pla4d_{target}_{t}") or obj.data.attributes.get(target)
        n = len(attr.data)
        out = np.empty(n * width, dtype=np.float32)
        attr.data.foreach_get(key, out)
        return out.reshape(n, width) if width > 1 else out
    asset = get_asset(props.asset_path)
    if props.kind == "MESH":
        return asset_io.positions_to_blender(asset.mesh.positions[t])
    return to_blender(name, asset.frame(name, t))


def bake(obj: Any) -> int:
    """Copy every frame into per-frame attributes read by the ``pla4d Frames`` nodes; returns the frame count.

    After this the object plays without the asset folder, the handler or the backend (a saved .blend too)."""
    props = obj.pla4d
    if props.baked:
        return props.frame_count
    if props.kind not in ("GAUSSIANS", "MESH"):
        raise ImportFailedError(f"{obj.name} is not a pla4d Gaussian or mesh object")
    try:
        asset = get_asset(props.asset_path)
    except asset_io.AssetReadError as exc:
        raise ImportFailedError(f"cannot bake {obj.name}: {exc}") from None
    animated = MESH_ANIMATED if props.kind == "MESH" else asset.animated
    data = obj.data
    for t in range(asset.frame_count):
        for name in animated:
            target, kind, key, _width = BLENDER_ATTR[name]
            values = _frame_values(obj, name, t)
            _set_attr(data, f"pla4d_{target}_{t}", values, kind, key)
    props.baked = True
    obj.modifiers.get("pla4d Frames") or _add_modifiers(obj, props.start_frame, props.frame_count, splats=False)
    data.update_tag()
    return asset.frame_count


def unbake(obj: Any) -> None:
    """Remove the per-frame attributes; the handler drives the object from its asset folder again."""
    data = obj.data
    # Collect names first: removing an attribute invalidates references to the others.
    names = [a.name for a in data.attributes if a.name.startswith("pla4d_") and a.name.rsplit("_", 1)[-1].isdigit()]
    for name in names:
        data.attributes.remove(data.attributes[name])
    obj.pla4d.baked = False
    data.update_tag()


def set_start_frame(obj: Any) -> None:
    """Propagate a changed start frame to the modifier and the handler-driven data."""
    mod = obj.modifiers.get("pla4d Frames")
    if mod is not None and mod.node_group is not None:
        _modifier_input(mod, "Start Frame", int(obj.pla4d.start_frame))
        obj.update_tag()
    scene = bpy.context.scene
    if scene is not None:
        apply_frame(obj, scene.frame_current)


# ------------------------------------------------------------------------------------------------ exports


def export_ply_sequence(obj: Any, folder: str | os.PathLike[str]) -> list[Path]:
    """Write ``frame_000.ply`` ... (standard 3DGS PLY, the asset's +Y-up axes, like the engine's exports)."""
    props = obj.pla4d
    if props.kind != "GAUSSIANS":
        raise ImportFailedError(f"{obj.name} is not a pla4d Gaussian object")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    data = obj.data
    n = len(data.points)

    def static(target: str, key: str, width: int) -> np.ndarray:
        buf = np.empty(n * width, dtype=np.float32)
        data.attributes[target].data.foreach_get(key, buf)
        return buf.reshape(n, width) if width > 1 else buf

    rgb = static(ATTR_RGB, "vector", 3)
    sh_dc = asset_io.linear_rgb_to_sh_dc(rgb)
    animated = [a for a in props.animated.split(",") if a]
    digits = max(3, len(str(props.frame_count - 1)))
    written = []
    for t in range(props.frame_count):
        values = {}
        for name, (target, _kind, key, width) in BLENDER_ATTR.items():
            values[name] = _frame_values(obj, name, t) if name in animated else static(target, key, width)
        rotations = asset_io.rotations_from_blender(values["rotations"])
        scales = np.log(np.maximum(values["scales"], 1e-30))
        opacity = np.clip(values["opacities"], 1e-6, 1 - 1e-6)
        logits = np.log(opacity / (1.0 - opacity))
        path = out / f"frame_{t:0{digits}d}.ply"
        asset_io.write_gaussian_ply(
            path, asset_io.positions_from_blender(values["positions"]), rotations, scales, logits, sh_dc
        )
        written.append(path)
    return written


def export_usd(context: Any, obj: Any, path: str | os.PathLike[str]) -> Path:
    """A USD point cache of ``obj`` (UsdGeomPoints with time-sampled points and primvars) for the scene range.

    The splat instancing is switched off during the export so the file holds the points and their attributes,
    not thousands of sphere instances; the ``pla4d Frames`` Scene Time read makes the exporter sample every frame.
    """
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


# ------------------------------------------------------------------------------------------------ live preview


def update_preview(context: Any, job_id: str, points: dict[str, np.ndarray]) -> Any:
    """Create or update (in place) the preview object of a training job from a ``preview`` event's arrays."""
    positions = np.asarray(points["positions"], dtype=np.float32).reshape(-1, 3)
    n = positions.shape[0]
    name = f"pla4d preview {job_id[:8]}"
    obj = bpy.data.objects.get(name)
    if obj is None or obj.type != "MESH":
        me = bpy.data.meshes.new(name)
        obj = bpy.data.objects.new(name, me)
        _link(context, obj)
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
        _set_attr(me, ATTR_RGB, asset_io.srgb_to_linear(np.asarray(points["colors"], np.float32).reshape(-1, 3)))
    if "opacities" in points:
        _set_attr(me, ATTR_OPACITY, np.asarray(points["opacities"], np.float32).reshape(-1), "FLOAT", "value")
    me.update()
    return obj


def remove_preview(job_id: str) -> None:
    obj = bpy.data.objects.get(f"pla4d preview {job_id[:8]}")
    if obj is not None:
        me = obj.data
        bpy.data.objects.remove(obj)
        if me is not None and me.users == 0:
            bpy.data.meshes.remove(me)
