"""Import a rigged 4D asset (its ``rig`` block, docs/asset-format.md section 9) as editable animation: an Armature
with its Action on the timeline, the mesh skinned to it, and the splats bound to the same armature, so posing or
re-keying a bone moves the splats and the mesh alike.

The splats are a PointCloud like the cache import (one point per splat), skinned by :mod:`.rig_playback` in the
add-on's handlers from the armature's evaluated pose (numpy: one matrix product for 100k splats, see there for why
not the Armature modifier); the mesh keeps Blender's Armature modifier.
"""

from __future__ import annotations

import os
from typing import Any

import bpy
import numpy as np
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import asset_io, rig_playback
from .attributes import ATTR_RGB, ATTR_ROTATION, BLENDER_ATTR, set_attribute, to_blender
from .importer import _label, link_object, new_pointcloud, setup_scene
from .nodes import add_modifiers, mesh_material, splat_material
from .playback import ImportFailedError, forget_asset, get_asset
from .rig_playback import bind_splats

# The asset's axes -> Blender's: (x, y, z) -> (x, -z, y), as a 4 x 4 change of basis.
AXES = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def _to_blender(m: np.ndarray) -> np.ndarray:
    """4 x 4 transforms (..., 4, 4) in the asset's axes -> the same transforms in Blender's."""
    return AXES @ m @ AXES.T


def _homogeneous(transforms: np.ndarray) -> np.ndarray:
    out = np.zeros(transforms.shape[:-2] + (4, 4))
    out[..., :3, :] = transforms
    out[..., 3, 3] = 1.0
    return out


def _quaternion(r: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of rotation matrices (T, B, 3, 3) (Shepperd's stable branch), continuous along T."""
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    cand = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    pick = np.argmax(cand, axis=-1)
    s = np.sqrt(np.maximum(np.take_along_axis(cand, pick[..., None], -1)[..., 0], 1e-12)) * 2.0
    a21, a12, a02, a20, a10, a01 = r[..., 2, 1], r[..., 1, 2], r[..., 0, 2], r[..., 2, 0], r[..., 1, 0], r[..., 0, 1]
    options = [np.stack([0.25 * s, (a21 - a12) / s, (a02 - a20) / s, (a10 - a01) / s], -1),
               np.stack([(a21 - a12) / s, 0.25 * s, (a01 + a10) / s, (a02 + a20) / s], -1),
               np.stack([(a02 - a20) / s, (a01 + a10) / s, 0.25 * s, (a12 + a21) / s], -1),
               np.stack([(a10 - a01) / s, (a02 + a20) / s, (a12 + a21) / s, 0.25 * s], -1)]  # fmt: skip
    q = np.zeros(r.shape[:-2] + (4,))
    for i, option in enumerate(options):
        q = np.where((pick == i)[..., None], option, q)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    for t in range(1, q.shape[0]):
        flip = (q[t] * q[t - 1]).sum(-1) < 0
        q[t][flip] = -q[t][flip]
    return q


def build_armature(context: Any, rig: Any, name: str, collection: Any = None) -> Any:
    """The rig's bones as an Armature object (heads at the joints, tails where the bones point, the tree)."""
    arm = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, arm)
    link_object(context, obj, collection)
    heads = asset_io.positions_to_blender(np.asarray(rig.rest, np.float32)[:, :3, 3])
    tails = asset_io.positions_to_blender(np.asarray(rig.tails, np.float32))
    override = {"active_object": obj, "object": obj, "selected_objects": [obj], "edit_object": obj}
    if context.view_layer is not None:
        context.view_layer.objects.active = obj
        override["view_layer"] = context.view_layer
    with context.temp_override(**override):
        bpy.ops.object.mode_set(mode="EDIT")
        bones = []
        for j, bone_name in enumerate(rig.names):
            eb = arm.edit_bones.new(bone_name)
            eb.head, eb.tail, eb.roll = heads[j].tolist(), tails[j].tolist(), 0.0
            if rig.parents[j] >= 0:
                eb.parent = bones[int(rig.parents[j])]
            bones.append(eb)
        bpy.ops.object.mode_set(mode="OBJECT")
    return obj


def key_action(obj: Any, rig: Any, start: int) -> Any:
    """Key every bone's location and rotation at every frame so the armature deforms as the rig's transforms.

    Blender skins a vertex with ``pose @ rest^-1`` (armature space); the rig's transform of bone j at frame t,
    in Blender's axes, is M_j(t), so the pose is M_j(t) @ B_j (B_j: the bone's rest matrix) and its local channels
    are B_j^-1 @ M_parent(t)^-1 @ M_j(t) @ B_j (the parent's rest-relative offset cancels)."""
    m = _to_blender(_homogeneous(np.asarray(rig.transforms, np.float64)))  # (T, B, 4, 4)
    rest = np.array([np.array(obj.data.bones[n].matrix_local, dtype=np.float64) for n in rig.names])
    parents = np.asarray(rig.parents)
    rel = m.copy()
    for j, p in enumerate(parents):
        if p >= 0:
            rel[:, j] = np.linalg.inv(m[:, p]) @ m[:, j]
    basis = np.linalg.inv(rest)[None] @ rel @ rest[None]
    quats = _quaternion(basis[..., :3, :3])
    locs = basis[..., :3, 3]
    obj.animation_data_create()
    for j, bone_name in enumerate(rig.names):
        pb = obj.pose.bones[bone_name]
        pb.rotation_mode = "QUATERNION"
        for t in range(m.shape[0]):
            pb.location = locs[t, j].tolist()
            pb.rotation_quaternion = quats[t, j].tolist()
            pb.keyframe_insert("location", frame=start + t, group=bone_name)
            pb.keyframe_insert("rotation_quaternion", frame=start + t, group=bone_name)
    action = obj.animation_data.action
    if action is not None:
        action.name = f"{obj.name} motion"
    return action


def _bind(obj: Any, armature: Any, names: list[str], joints: np.ndarray, weights: np.ndarray) -> None:
    """Vertex groups from the rig's weights and an Armature modifier first in the stack."""
    groups = [obj.vertex_groups.new(name=n) for n in names]
    joints = np.asarray(joints, np.int64)
    weights = np.asarray(weights, np.float32)
    # VertexGroup.add takes one weight for a list of vertices: the points of each (slot, bone) are sorted by their
    # weight (rounded to 1e-5; the Armature modifier divides by each vertex's total) and added run by run.
    for i in range(joints.shape[1]):
        for j in np.unique(joints[weights[:, i] > 0, i]):
            rows = np.flatnonzero((joints[:, i] == j) & (weights[:, i] > 0))
            values = np.round(weights[rows, i], 5)
            order = np.argsort(values, kind="stable")
            rows, values = rows[order], values[order]
            cuts = np.flatnonzero(np.diff(values)) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(rows)], strict=True):
                groups[int(j)].add(rows[lo:hi].tolist(), float(values[lo]), "ADD")
    mod = obj.modifiers.new("pla4d Armature", "ARMATURE")
    mod.object = armature
    mod.use_vertex_groups = True
    obj.parent = armature


def _held(asset: Any) -> tuple[np.ndarray, np.ndarray]:
    """The splats' static log-scales and opacity logits: their mean over the frames (opacity as a probability),
    as pla4d.rig.fit.held_appearance (bones move and turn a splat, nothing scales it)."""
    scales = np.asarray(asset.arrays["scales"], np.float64).mean(0) if "scales" in asset.arrays else None
    if "opacities" in asset.arrays:
        p = (1.0 / (1.0 + np.exp(-np.asarray(asset.arrays["opacities"], np.float64)))).mean(0)
        p = np.clip(p, 1e-6, 1.0 - 1e-6)
        opacities = np.log(p / (1.0 - p))
    else:
        opacities = None
    return (np.asarray(asset.canonical["scales"] if scales is None else scales, np.float32),
            np.asarray(asset.canonical["opacities"] if opacities is None else opacities, np.float32))  # fmt: skip


def import_rigged_splats(context: Any, asset: Any, armature: Any, name: str, start: int, collection: Any = None
                         ) -> Any:  # fmt: skip
    """The splats bound to ``armature``: a PointCloud (one point per splat, as the cache import) whose centres and
    rotations :mod:`.rig_playback` skins from the armature's pose; scales and opacities held at their mean over
    the frames."""
    rig = asset.rig
    centres = to_blender("positions", np.asarray(asset.frame("positions", 0), np.float32))
    rot = asset_io.rotations_to_blender(np.asarray(asset.frame("rotations", 0), np.float32))
    rot = rot / np.linalg.norm(rot, axis=1, keepdims=True)
    obj = new_pointcloud(context, name, asset.num_gaussians, collection)
    data = obj.data
    set_attribute(data, ATTR_RGB, asset_io.sh_dc_to_linear_rgb(asset.canonical["sh_dc"]))
    set_attribute(data, "position", centres)
    set_attribute(data, ATTR_ROTATION, rot, "QUATERNION", "value")
    for attr, value in zip(("scales", "opacities"), _held(asset), strict=True):
        target, kind, key, _width = BLENDER_ATTR[attr]
        set_attribute(data, target, to_blender(attr, value), kind, key)
    data.materials.append(splat_material())
    obj.parent = armature
    bind_splats(obj, armature, list(rig.names), rig.gaussian_joints, rig.gaussian_weights, centres, rot)
    props = obj.pla4d
    props.kind = "GAUSSIANS"  # Bake, Free Bake and the look settings apply; playback.apply_frame leaves it alone
    props.asset_path = str(asset.path)
    props.frame_count = asset.frame_count
    props.animated = "positions,rotations"
    props["start_frame"] = start
    add_modifiers(obj, start, asset.frame_count, splats=True)
    return obj


def import_rigged_mesh(context: Any, asset: Any, armature: Any, name: str, collection: Any = None) -> Any:
    """The asset's mesh at rest (frame 0) skinned to ``armature``."""
    mesh_data, rig = asset.mesh, asset.rig
    me = bpy.data.meshes.new(name)
    faces = np.asarray(mesh_data.faces, dtype=np.int32)
    me.vertices.add(mesh_data.num_vertices)
    me.vertices.foreach_set("co", asset_io.positions_to_blender(np.asarray(mesh_data.positions[0])).ravel())
    me.loops.add(faces.size)
    me.loops.foreach_set("vertex_index", faces.ravel())
    me.polygons.add(faces.shape[0])
    me.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    if mesh_data.vertex_colors is not None:
        colors = np.ones((mesh_data.num_vertices, 4), dtype=np.float32)
        colors[:, :3] = mesh_data.vertex_colors
        me.color_attributes.new("pla4d_rgb", "FLOAT_COLOR", "POINT").data.foreach_set("color", colors.ravel())
    me.update()
    me.validate()
    me.materials.append(mesh_material(mesh_data.texture))
    obj = bpy.data.objects.new(name, me)
    link_object(context, obj, collection)
    _bind(obj, armature, rig.names, rig.mesh_joints, rig.mesh_weights)
    return obj


def import_rig(context: Any, path: str, verify: bool = True) -> list[Any]:
    """Import a rigged asset: [armature, splats, mesh (if any)]; the Action plays from the scene's start frame."""
    forget_asset(path)
    asset = get_asset(path, verify=verify)
    if getattr(asset, "rig", None) is None:
        raise ImportFailedError(f"{asset.path} has no rig: run `pla4d rig RUN` (or a run with the rig stage)")
    scene = context.scene
    start = scene.frame_start
    label = _label(asset)
    armature = build_armature(context, asset.rig, f"{label} rig")
    key_action(armature, asset.rig, start)
    created = [armature, import_rigged_splats(context, asset, armature, f"{label} splats", start)]
    if asset.mesh is not None and asset.rig.mesh_joints is not None:
        created.append(import_rigged_mesh(context, asset, armature, f"{label} mesh"))
    setup_scene(scene, asset, start)
    rig_playback.prefill(created[1])  # ends on the scene's current frame
    return created


def rig_armature(obj: Any) -> Any:
    """The armature of a pla4d rig from any of its objects (the armature, its splats or its skinned mesh), or None."""
    if obj is None:
        return None
    if obj.type == "ARMATURE":
        return obj
    armature = obj.get(rig_playback.RIG_MARK) or obj.parent
    return armature if getattr(armature, "type", None) == "ARMATURE" else None


def export_rig(context: Any, armature: Any, path: str, fmt: str = "GLTF") -> str:
    """Write ``armature`` (or the armature of the rigged object given), its Action as the armature plays it and the
    meshes skinned to it (not the splats: a PointCloud, which glTF and FBX skins do not carry; their own exports
    write the pose per frame) as glTF binary (Blender's glTF exporter) or FBX; returns the path."""
    armature = rig_armature(armature)
    if armature is None:
        raise ImportFailedError("select a pla4d rig (its armature, splats or mesh) to export")
    chosen = [armature] + [c for c in armature.children if c.type == "MESH"]  # the splats are a PointCloud
    override = {"selected_objects": chosen, "selected_editable_objects": chosen, "active_object": armature}
    for obj in context.view_layer.objects if context.view_layer is not None else ():
        obj.select_set(obj in chosen)
    with context.temp_override(**override):
        if fmt == "FBX":
            result = bpy.ops.export_scene.fbx(filepath=path, use_selection=True, bake_anim=True, add_leaf_bones=False)
        else:
            result = bpy.ops.export_scene.gltf(filepath=path, export_format="GLB", use_selection=True,
                                               export_animations=True)  # fmt: skip
    if "FINISHED" not in result:
        raise ImportFailedError(f"Blender's {fmt} exporter did not finish")
    return path


class PLA4D_OT_import_rig(bpy.types.Operator, ImportHelper):
    """Import a rigged pla4d 4D asset: an Armature with its Action, the skinned mesh and the splats bound to it"""

    bl_idname = "pla4d.import_rig"
    bl_label = "Import 4D Asset as Rig"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ""
    filter_glob: bpy.props.StringProperty(default="asset.json", options={"HIDDEN"})
    directory: bpy.props.StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context: Any) -> set[str]:
        path = self.filepath if self.filepath and os.path.isfile(self.filepath) else (self.directory or self.filepath)
        try:
            created = import_rig(context, bpy.path.abspath(os.path.dirname(path) if path.endswith(".json") else path))
        except (asset_io.AssetReadError, ImportFailedError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Imported {', '.join(o.name for o in created)}")
        return {"FINISHED"}


class PLA4D_OT_export_rig(bpy.types.Operator, ExportHelper):
    """Export the selected pla4d rig (armature, Action, skinned mesh) as glTF binary or FBX"""

    bl_idname = "pla4d.export_rig"
    bl_label = "Export pla4d Rig"

    filename_ext = ".glb"
    format: bpy.props.EnumProperty(name="Format", items=[("GLTF", "glTF binary (.glb)", ""), ("FBX", "FBX", "")])

    def invoke(self, context: Any, event: Any) -> set[str]:
        self.filename_ext = ".fbx" if self.format == "FBX" else ".glb"
        return super().invoke(context, event)

    def execute(self, context: Any) -> set[str]:
        try:
            export_rig(context, context.active_object, self.filepath, self.format)
        except ImportFailedError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


def _menu_import(self: Any, _context: Any) -> None:
    self.layout.operator(PLA4D_OT_import_rig.bl_idname, text="pla4d 4D Asset as Rig (Armature + Action)")


def _menu_export(self: Any, _context: Any) -> None:
    self.layout.operator(PLA4D_OT_export_rig.bl_idname, text="pla4d Rig: glTF (.glb)").format = "GLTF"
    self.layout.operator(PLA4D_OT_export_rig.bl_idname, text="pla4d Rig: FBX (.fbx)").format = "FBX"


CLASSES = (PLA4D_OT_import_rig, PLA4D_OT_export_rig)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.append(_menu_import)
    bpy.types.TOPBAR_MT_file_export.append(_menu_export)
    rig_playback.register()


def unregister() -> None:
    rig_playback.unregister()
    bpy.types.TOPBAR_MT_file_import.remove(_menu_import)
    bpy.types.TOPBAR_MT_file_export.remove(_menu_export)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
