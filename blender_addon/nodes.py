"""Geometry-node groups and materials that make pla4d objects look and play right, and the modifiers that use them.

- ``pla4d Splats`` instances a smooth ico-sphere per Gaussian, rotated and scaled to ``Splat Size`` standard
  deviations; the ``pla4d Splat`` material makes it a soft Gaussian: emission ``splat_rgb`` with alpha
  ``opacity * exp(-k^2 d^2 / 2)``, ``d`` the view ray's closest distance to the centre in the splat's own
  unit-sphere space. The same nodes work in EEVEE and Cycles.
- ``pla4d Frames`` reads Scene Time, so exporters (USD) treat handler-driven objects as animated, and on a baked
  object picks the current frame's attributes by name (``pla4d_position_7`` ...).
- ``pla4d Preview Points`` draws the live training preview's vertices as points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy

from .attributes import ATTR_K, ATTR_OPACITY, ATTR_RGB, ATTR_ROTATION, ATTR_SCALE, BLENDER_ATTR

NODES_VERSION = 2  # bump when the node groups change; older groups are rebuilt
SPLATS_GROUP = "pla4d Splats"
FRAMES_GROUP = "pla4d Frames"
PREVIEW_GROUP = "pla4d Preview Points"
SPLAT_MATERIAL = "pla4d Splat"
PREVIEW_MATERIAL = "pla4d Preview"
MESH_MATERIAL = "pla4d Mesh"
DEFAULT_SPLAT_SIZE = 3.0  # the splat shell's radius in standard deviations (3DGS culls at 3 sigma too)


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


# ------------------------------------------------------------------------------------------------ modifiers


def set_modifier_input(mod: Any, name: str, value: Any) -> None:
    """Set a geometry-nodes modifier's input by its socket name."""
    for item in mod.node_group.interface.items_tree:
        if getattr(item, "in_out", None) == "INPUT" and item.name == name:
            mod[item.identifier] = value
            return
    raise KeyError(name)


def add_modifiers(obj: Any, start: int, count: int, splats: bool) -> None:
    """The ``pla4d Frames`` modifier (time for exporters, baked frames) and, for Gaussians, ``pla4d Splats``."""
    frames = obj.modifiers.new("pla4d Frames", "NODES")
    frames.node_group = frames_group()
    set_modifier_input(frames, "Start Frame", int(start))
    set_modifier_input(frames, "Frame Count", int(count))
    if splats:
        mod = obj.modifiers.new("pla4d Splats", "NODES")
        mod.node_group = splats_group()
