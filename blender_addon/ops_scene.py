"""Operators on the scene, no backend needed: import a 4D asset from disk, bake / free bake, export USD and a PLY
sequence, refresh the frames of every pla4d object."""

from __future__ import annotations

import os
from typing import Any

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import asset_io, exporter, importer, playback


class PLA4D_OT_import_asset(bpy.types.Operator, ImportHelper):
    """Import a pla4d 4D asset folder (or a run folder, or a 3DGS .ply) from disk, without a backend"""

    bl_idname = "pla4d.import_asset"
    bl_label = "Import 4D Asset"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ""
    filter_glob: StringProperty(default="asset.json;*.ply", options={"HIDDEN"})
    directory: StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})
    import_as: bpy.props.EnumProperty(
        name="Import as",
        items=[("GAUSSIANS", "Gaussians", ""), ("MESH", "Mesh", ""), ("BOTH", "Both", "")],
        default="GAUSSIANS",
    )

    def execute(self, context: Any) -> set[str]:
        path = self.filepath if self.filepath and os.path.isfile(self.filepath) else (self.directory or self.filepath)
        try:
            created = importer.import_asset(context, bpy.path.abspath(path), self.import_as)
        except (asset_io.AssetReadError, playback.ImportFailedError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Imported {', '.join(o.name for o in created)}")
        return {"FINISHED"}


def _pla4d_objects(context: Any, kinds: tuple[str, ...] = ("GAUSSIANS", "MESH")) -> list[Any]:
    chosen = list(context.selected_objects) or ([context.active_object] if context.active_object else [])
    return [o for o in chosen if getattr(o, "pla4d", None) is not None and o.pla4d.kind in kinds]


class PLA4D_OT_bake(bpy.types.Operator):
    """Store every frame in the .blend, so the object plays without its asset folder, the add-on or a backend"""

    bl_idname = "pla4d.bake"
    bl_label = "Bake Animation"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Any) -> set[str]:
        objects = _pla4d_objects(context)
        if not objects:
            self.report({"ERROR"}, "Select a pla4d Gaussian or mesh object")
            return {"CANCELLED"}
        try:
            frames = [playback.bake(obj) for obj in objects]
        except playback.ImportFailedError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Baked {len(objects)} object(s), {max(frames)} frames")
        return {"FINISHED"}


class PLA4D_OT_unbake(bpy.types.Operator):
    """Remove the baked frames (the object plays from its asset folder again)"""

    bl_idname = "pla4d.unbake"
    bl_label = "Free Bake"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Any) -> set[str]:
        objects = [o for o in _pla4d_objects(context) if o.pla4d.baked]
        if not objects:
            self.report({"WARNING"}, "No baked pla4d object selected")
            return {"CANCELLED"}
        for obj in objects:
            if not os.path.exists(obj.pla4d.asset_path):
                self.report({"ERROR"}, f"{obj.name}: its asset folder {obj.pla4d.asset_path} is gone; keeping the bake")
                return {"CANCELLED"}
            playback.unbake(obj)
            playback.apply_frame(obj, context.scene.frame_current)
        return {"FINISHED"}


class PLA4D_OT_export_usd(bpy.types.Operator, ExportHelper):
    """Export the active pla4d Gaussians as a USD point cache (points + attributes, one sample per frame)"""

    bl_idname = "pla4d.export_usd"
    bl_label = "Export USD Point Cache"

    filename_ext = ".usdc"
    filter_glob: StringProperty(default="*.usd;*.usdc;*.usda", options={"HIDDEN"})

    def execute(self, context: Any) -> set[str]:
        objects = _pla4d_objects(context, ("GAUSSIANS",))
        if not objects:
            self.report({"ERROR"}, "Select a pla4d Gaussian object")
            return {"CANCELLED"}
        try:
            path = exporter.export_usd(context, objects[0], self.filepath)
        except playback.ImportFailedError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Wrote {path}")
        return {"FINISHED"}


class PLA4D_OT_export_ply(bpy.types.Operator):
    """Export the active pla4d Gaussians as a sequence of standard 3DGS PLY files (frame_000.ply, ...)"""

    bl_idname = "pla4d.export_ply"
    bl_label = "Export PLY Sequence"

    directory: StringProperty(subtype="DIR_PATH")

    def invoke(self, context: Any, _event: Any) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: Any) -> set[str]:
        objects = _pla4d_objects(context, ("GAUSSIANS",))
        if not objects:
            self.report({"ERROR"}, "Select a pla4d Gaussian object")
            return {"CANCELLED"}
        if not self.directory:
            self.report({"ERROR"}, "Choose a folder")
            return {"CANCELLED"}
        try:
            written = exporter.export_ply_sequence(objects[0], bpy.path.abspath(self.directory))
        except (playback.ImportFailedError, asset_io.AssetReadError, OSError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Wrote {len(written)} PLY files to {self.directory}")
        return {"FINISHED"}


class PLA4D_OT_apply_frame(bpy.types.Operator):
    """Re-read the current frame of every pla4d object (after moving an asset folder, for example)"""

    bl_idname = "pla4d.refresh_frames"
    bl_label = "Refresh Frames"

    clear_cache: BoolProperty(default=True)
    frame: IntProperty(default=-1)

    def execute(self, context: Any) -> set[str]:
        if self.clear_cache:
            playback.forget_assets()
        playback.apply_scene(context.scene)
        return {"FINISHED"}


CLASSES = (
    PLA4D_OT_import_asset,
    PLA4D_OT_bake,
    PLA4D_OT_unbake,
    PLA4D_OT_export_usd,
    PLA4D_OT_export_ply,
    PLA4D_OT_apply_frame,
)
