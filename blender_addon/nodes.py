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

import math
from pathlib import Path
from typing import Any

import bpy

from .attributes import ATTR_K, ATTR_OPACITY, ATTR_RGB, ATTR_ROTATION, ATTR_SCALE, BLENDER_ATTR

NODES_VERSION = 4  # bump when the node groups change; older groups are rebuilt
SPLATS_GROUP = "pla4d Splats"
FRAMES_GROUP = "pla4d Frames"
PREVIEW_GROUP = "pla4d Preview Points"
SPLAT_MATERIAL = "pla4d Splat"
SPLAT_LIT_MATERIAL = "pla4d Splat Lit"
PREVIEW_MATERIAL = "pla4d Preview"
MESH_MATERIAL = "pla4d Mesh"
DEFAULT_SPLAT_SIZE = 3.0  # the splat shell's radius in standard deviations (3DGS culls at 3 sigma too)
# The engine's rasteriser adds 0.3 px^2 to every projected covariance (gsplat's eps2d, classic mode: no opacity
# compensation), so a Gaussian thinner than a pixel draws as a soft 0.55 px line, never a needle. In 3D that is
# an isotropic variance 0.3 (z / f)^2 at the distance z and focal f (pixels) the model was trained at: the
# engine's orbit, radius 3 with a 49.1 degree field of view at 256 px (f = 280.2), so sigma = 0.00586 (a
# Mip-Splatting-style 3D smoothing filter, in asset units). Applied in the nodes: same at every frame and baked.
DEFAULT_SMOOTHING = math.sqrt(0.3) * 3.0 * math.tan(math.radians(49.1 / 2)) / 128.0


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
    _socket(ng, "Smoothing", "INPUT", "NodeSocketFloat", DEFAULT_SMOOTHING, 0.0, 1.0)
    _socket(ng, "Lit", "INPUT", "NodeSocketBool", False)
    _socket(ng, "Geometry", "OUTPUT", "NodeSocketGeometry")
    gi, go = ng.nodes.new("NodeGroupInput"), ng.nodes.new("NodeGroupOutput")
    gi.location, go.location = (-900, 0), (700, 0)
    # Nearly transparent Gaussians get no splat: they cost render time and show nothing. (The instancing's own
    # selection: a Delete Geometry node would copy the 100k points first.)
    opacity = _named(ng, ATTR_OPACITY, "FLOAT", (-700, -250))
    faint = _math(ng, "LESS_THAN", opacity.outputs[0], gi.outputs["Min Opacity"], (-500, -250))
    shown = ng.nodes.new("FunctionNodeBooleanMath")
    shown.operation = "NOT"
    shown.location = (-300, -250)
    ng.links.new(faint, shown.inputs[0])
    # One smooth sphere of radius 1 per point, scaled by scale * Splat Size: the shell at that many sigmas.
    ico = ng.nodes.new("GeometryNodeMeshIcoSphere")
    ico.location = (-700, 250)
    ico.inputs["Radius"].default_value = 1.0
    ng.links.new(gi.outputs["Detail"], ico.inputs["Subdivisions"])
    # The material needs the shell radius (in sigmas) to turn the facing ratio into a Gaussian falloff: stored on
    # the one shared sphere (a dozen vertices), not on each of the 100k instances.
    store = ng.nodes.new("GeometryNodeStoreNamedAttribute")
    store.data_type, store.domain = "FLOAT", "POINT"
    store.location = (-500, 250)
    store.inputs["Name"].default_value = ATTR_K
    ng.links.new(ico.outputs["Mesh"], store.inputs["Geometry"])
    ng.links.new(gi.outputs["Splat Size"], store.inputs["Value"])
    smooth = ng.nodes.new("GeometryNodeSetShadeSmooth")
    smooth.location = (-300, 250)
    ng.links.new(store.outputs[0], smooth.inputs[0])
    set_mat = ng.nodes.new("GeometryNodeSetMaterial")
    set_mat.location = (-100, 250)
    pick = ng.nodes.new("GeometryNodeSwitch")
    pick.input_type = "MATERIAL"
    pick.location = (-300, 450)
    pick.inputs[1].default_value = splat_material()
    pick.inputs[2].default_value = splat_material(lit=True)
    ng.links.new(gi.outputs["Lit"], pick.inputs[0])
    ng.links.new(pick.outputs[0], set_mat.inputs["Material"])
    ng.links.new(smooth.outputs[0], set_mat.inputs["Geometry"])
    rotation = _named(ng, ATTR_ROTATION, "QUATERNION", (-500, -450))
    scale = _named(ng, ATTR_SCALE, "FLOAT_VECTOR", (-900, -600))
    # 3D smoothing filter: each axis' sigma becomes sqrt(sigma^2 + smoothing^2) (covariance + smoothing^2 I).
    # sigma * sigma + smoothing^2 as one vector operation: every node here runs over all 100k points each frame.
    s2 = _math(ng, "MULTIPLY", gi.outputs["Smoothing"], gi.outputs["Smoothing"], (-900, -800))
    s2_vec = ng.nodes.new("ShaderNodeCombineXYZ")
    s2_vec.location = (-750, -800)
    for axis in range(3):
        ng.links.new(s2, s2_vec.inputs[axis])
    variance = _vector_math(ng, "MULTIPLY_ADD", scale.outputs[0], scale.outputs[0], (-700, -600))
    ng.links.new(s2_vec.outputs[0], variance.inputs[2])
    split = ng.nodes.new("ShaderNodeSeparateXYZ")
    split.location = (-600, -600)
    ng.links.new(variance.outputs[0], split.inputs[0])
    joined = ng.nodes.new("ShaderNodeCombineXYZ")
    joined.location = (-450, -600)
    for axis in range(3):
        ng.links.new(_math(ng, "SQRT", split.outputs[axis], None, (-500, -600 - 60 * axis)), joined.inputs[axis])
    scaled = ng.nodes.new("ShaderNodeVectorMath")
    scaled.operation = "SCALE"
    scaled.location = (-300, -600)
    ng.links.new(joined.outputs[0], scaled.inputs[0])
    ng.links.new(gi.outputs["Splat Size"], scaled.inputs["Scale"])
    inst = ng.nodes.new("GeometryNodeInstanceOnPoints")
    inst.location = (100, 0)
    ng.links.new(gi.outputs["Geometry"], inst.inputs["Points"])
    ng.links.new(shown.outputs[0], inst.inputs["Selection"])
    ng.links.new(set_mat.outputs[0], inst.inputs["Instance"])
    ng.links.new(rotation.outputs[0], inst.inputs["Rotation"])
    ng.links.new(scaled.outputs[0], inst.inputs["Scale"])
    ng.links.new(inst.outputs[0], go.inputs[0])
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
    gi.location, go.location = (-1000, 0), (1500, 0)
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
    baked = None
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
            baked = named.outputs["Exists"]
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
    # Unbaked (no frame attributes): the input passes through untouched. The nodes above would each still copy
    # the point attributes they write to (a third of frame_set at 100k Gaussians); a Switch evaluates one side.
    # It needs a single value, and "Exists" is a field: sampled at the first point.
    first = ng.nodes.new("GeometryNodeSampleIndex")
    first.data_type, first.domain = "BOOLEAN", "POINT"
    first.location = (x, -250)
    ng.links.new(gi.outputs["Geometry"], first.inputs["Geometry"])
    ng.links.new(baked, first.inputs["Value"])
    switch = ng.nodes.new("GeometryNodeSwitch")
    switch.input_type = "GEOMETRY"
    switch.location = (x + 250, 0)
    ng.links.new(first.outputs[0], switch.inputs[0])
    ng.links.new(gi.outputs["Geometry"], switch.inputs[1])
    ng.links.new(geometry, switch.inputs[2])
    ng.links.new(switch.outputs[0], go.inputs[0])
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


def _splat_alpha(nt: Any) -> tuple[Any, Any]:
    """The splat's alpha (Gaussian falloff x opacity, 0 on back faces) and the Geometry node, in material ``nt``."""
    opacity = _attribute(nt, ATTR_OPACITY, "INSTANCER", (-200, 100))
    k = _attribute(nt, ATTR_K, "GEOMETRY", (-800, -300))  # on the shared sphere's vertices (one value)
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
    p, d = coords.outputs["Object"], ray.outputs[0]
    pd = _vector_math(nt, "DOT_PRODUCT", p, d, (-800, 200)).outputs["Value"]
    dd = _vector_math(nt, "DOT_PRODUCT", d, d, (-800, 0)).outputs["Value"]
    pp = _vector_math(nt, "DOT_PRODUCT", p, p, (-800, 400)).outputs["Value"]
    along = _shader_math(nt, "DIVIDE", _shader_math(nt, "MULTIPLY", pd, pd, (-600, 200)), dd, (-400, 200))
    d2 = _shader_math(nt, "MAXIMUM", _shader_math(nt, "SUBTRACT", pp, along, (-200, 200)), 0.0, (0, 200))
    k2 = _shader_math(nt, "MULTIPLY", k.outputs["Fac"], k.outputs["Fac"], (-600, -300))
    exponent = _shader_math(nt, "MULTIPLY", _shader_math(nt, "MULTIPLY", d2, k2, (150, 0)), -0.5, (300, 0))
    falloff = _shader_math(nt, "EXPONENT", exponent, None, (450, 0))
    alpha = _shader_math(nt, "MULTIPLY", falloff, opacity.outputs["Fac"], (450, -100))
    front = _shader_math(nt, "SUBTRACT", 1.0, geo.outputs["Backfacing"], (300, -300))
    return _shader_math(nt, "MULTIPLY", alpha, front, (600, -100)), geo


def _vector_math(nt: Any, op: str, a: Any, b: Any = None, loc: tuple[float, float] = (0, 0)) -> Any:
    node = nt.nodes.new("ShaderNodeVectorMath")
    node.operation = op
    node.location = loc
    nt.links.new(a, node.inputs[0])
    if b is not None:
        nt.links.new(b, node.inputs[1])
    return node


def _shortest_axis_normal(nt: Any, geo: Any) -> Any:
    """World normal of the splat's flattest direction (its local axis with the smallest scale), turned towards the
    viewer: a flat Gaussian shades like the little disc it is."""
    scale = _attribute(nt, ATTR_SCALE, "INSTANCER", (-1200, -700))
    split = nt.nodes.new("ShaderNodeSeparateXYZ")
    split.location = (-1000, -700)
    nt.links.new(scale.outputs["Vector"], split.inputs[0])
    sx, sy, sz = split.outputs[0], split.outputs[1], split.outputs[2]

    def not_greater(a: Any, b: Any, y: float) -> Any:
        return _shader_math(nt, "SUBTRACT", 1.0, _shader_math(nt, "GREATER_THAN", a, b, (-800, y)), (-650, y))

    ex = _shader_math(nt, "MULTIPLY", not_greater(sx, sy, -600), not_greater(sx, sz, -700), (-500, -650))
    rest = _shader_math(nt, "SUBTRACT", 1.0, ex, (-500, -750))
    ey = _shader_math(nt, "MULTIPLY", rest, not_greater(sy, sz, -800), (-350, -750))
    ez = _shader_math(nt, "SUBTRACT", rest, ey, (-200, -800))
    axis = nt.nodes.new("ShaderNodeCombineXYZ")
    axis.location = (-100, -700)
    for index, value in enumerate((ex, ey, ez)):
        nt.links.new(value, axis.inputs[index])
    # An object-space normal through the instance's inverse transpose: R S^-1 e_i, i.e. R e_i once normalised.
    world = nt.nodes.new("ShaderNodeVectorTransform")
    world.vector_type, world.convert_from, world.convert_to = "NORMAL", "OBJECT", "WORLD"
    world.location = (50, -700)
    nt.links.new(axis.outputs[0], world.inputs[0])
    normal = _vector_math(nt, "NORMALIZE", world.outputs[0], None, (200, -700)).outputs[0]
    facing = _vector_math(nt, "DOT_PRODUCT", normal, geo.outputs["Incoming"], (350, -600)).outputs["Value"]
    sign = _shader_math(nt, "SIGN", facing, None, (500, -600))
    flip = _vector_math(nt, "SCALE", normal, None, (650, -700))
    nt.links.new(sign, flip.inputs["Scale"])
    return flip.outputs[0]


def splat_material(lit: bool = False) -> Any:
    """Emission coloured by ``splat_rgb`` with a Gaussian alpha falloff over the sphere, transparent behind; with
    ``lit``, a Principled surface of that colour (normal along the splat's shortest axis) under the same alpha,
    so scene lights shade the splats and they cast and receive shadows."""
    mat, fresh = _new_material(SPLAT_LIT_MATERIAL if lit else SPLAT_MATERIAL)
    if not fresh:
        return mat
    nt = mat.node_tree
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    out.location = (1100, 0)
    rgb = _attribute(nt, ATTR_RGB, "INSTANCER", (-200, 300))
    alpha, geo = _splat_alpha(nt)
    if lit:
        surface = nt.nodes.new("ShaderNodeBsdfPrincipled")
        surface.inputs["Roughness"].default_value = 0.8
        nt.links.new(_shortest_axis_normal(nt, geo), surface.inputs["Normal"])
        nt.links.new(rgb.outputs["Color"], surface.inputs["Base Color"])
    else:
        surface = nt.nodes.new("ShaderNodeEmission")
        nt.links.new(rgb.outputs["Color"], surface.inputs["Color"])
        surface.inputs["Strength"].default_value = 1.0
    surface.location = (650, 350)
    clear = nt.nodes.new("ShaderNodeBsdfTransparent")
    clear.location = (650, 500)
    mix = nt.nodes.new("ShaderNodeMixShader")
    mix.location = (900, 200)
    nt.links.new(alpha, mix.inputs["Fac"])
    nt.links.new(clear.outputs[0], mix.inputs[1])
    nt.links.new(surface.outputs[0], mix.inputs[2])
    nt.links.new(mix.outputs[0], out.inputs["Surface"])
    mat.use_backface_culling = True
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = "DITHERED"  # order-independent: right for thousands of overlapping splats
    if hasattr(mat, "use_transparent_shadow"):  # EEVEE (4.2+): shadows follow the splats' alpha
        mat.use_transparent_shadow = True
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
        sync_splat_look(obj)


def sync_splat_look(obj: Any) -> None:
    """Copy the object's look settings (smoothing, material) to its ``pla4d Splats`` modifier."""
    mod = obj.modifiers.get("pla4d Splats")
    if mod is None or mod.node_group is None:
        return
    if mod.node_group.name == SPLATS_GROUP and mod.node_group.get("pla4d_nodes_version") != NODES_VERSION:
        # A group saved by an older add-on (no Smoothing / Lit inputs) is rebuilt in place; its sockets are new,
        # so the modifier is given their defaults (it would read 0 for a socket it has no value for).
        group = splats_group()
        for item in group.interface.items_tree:
            if getattr(item, "in_out", None) == "INPUT" and hasattr(item, "default_value"):
                mod[item.identifier] = item.default_value
    set_modifier_input(mod, "Smoothing", float(obj.pla4d.smoothing))
    set_modifier_input(mod, "Lit", obj.pla4d.shading == "LIT")
    obj.update_tag()
