"""Operators on the scene, no backend needed: import a 4D asset from disk, import splats made elsewhere (PLY
sequence, SPZ, KHR glTF), bake / free bake, export USD, a PLY sequence, KHR glTF and SPZ, refresh the frames of
every pla4d object; and the File > Import / Export menu entries."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import asset_io, exporter, import_foreign, importer, playback


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


# What an export can fail on that is the user's to fix (a stale or moved asset, a full disk, bad values): a report.
_EXPORT_ERRORS = (playback.ImportFailedError, asset_io.AssetReadError, OSError, ValueError)


def _export_active(op: Any, context: Any, write: Callable[[Any], str]) -> set[str]:
    """Run ``write`` (which returns what it wrote, for the report) on the selected pla4d Gaussian object."""
    objects = _pla4d_objects(context, ("GAUSSIANS",))
    if not objects:
        op.report({"ERROR"}, "Select a pla4d Gaussian object")
        return {"CANCELLED"}
    try:
        message = write(objects[0])
    except _EXPORT_ERRORS as exc:
        op.report({"ERROR"}, str(exc))
        return {"CANCELLED"}
    op.report({"INFO"}, message)
    return {"FINISHED"}


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
        return _export_active(self, context, lambda obj: f"Wrote {exporter.export_usd(context, obj, self.filepath)}")


class PLA4D_OT_export_ply(bpy.types.Operator):
    """Export the active pla4d Gaussians as a sequence of standard 3DGS PLY files (frame_000.ply, ...)"""

    bl_idname = "pla4d.export_ply"
    bl_label = "Export PLY Sequence"

    directory: StringProperty(subtype="DIR_PATH")

    def invoke(self, context: Any, _event: Any) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: Any) -> set[str]:
        if not self.directory:
            self.report({"ERROR"}, "Choose a folder")
            return {"CANCELLED"}

        def write(obj: Any) -> str:
            written = exporter.export_ply_sequence(obj, bpy.path.abspath(self.directory))
            return f"Wrote {len(written)} PLY files to {self.directory}"

        return _export_active(self, context, write)


class PLA4D_OT_import_foreign(bpy.types.Operator, ImportHelper):
    """Import Gaussian splats made elsewhere: a 3DGS PLY or a numbered PLY sequence (frame_0001.ply, ...), SPZ, or
    KHR_gaussian_splatting glTF (morph targets play as frames); they play and bake like pla4d assets"""

    bl_idname = "pla4d.import_foreign"
    bl_label = "Import Splats (PLY Sequence, SPZ, KHR glTF)"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ""
    filter_glob: StringProperty(default="*.ply;*.spz;*.glb;*.gltf", options={"HIDDEN"})
    sequence: BoolProperty(
        name="Sequence",
        default=True,
        description="Also read the numbered files beside this one (same name around the digits)",
    )
    fps: FloatProperty(name="Frame Rate", default=24.0, min=1.0, max=240.0,
                       description="Frames per second, for files that do not say")  # fmt: skip

    def execute(self, context: Any) -> set[str]:
        try:
            created = import_foreign.import_foreign(context, bpy.path.abspath(self.filepath), self.sequence, self.fps)
        except (asset_io.AssetReadError, playback.ImportFailedError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        frames = created[0].pla4d.frame_count if created else 0
        self.report({"INFO"}, f"Imported {', '.join(o.name for o in created)} ({frames} frames)")
        return {"FINISHED"}


class PLA4D_OT_export_splats(bpy.types.Operator, ExportHelper):
    """Export the active pla4d Gaussians as KHR_gaussian_splatting glTF (morph targets per frame) or SPZ (the
    current frame)"""

    bl_idname = "pla4d.export_splats"
    bl_label = "Export Splats"

    filename_ext = ".glb"
    filter_glob: StringProperty(default="*.glb;*.spz", options={"HIDDEN"})
    format: EnumProperty(
        name="Format",
        items=[("KHR_GLB", "KHR glTF (.glb)", "KHR_gaussian_splatting; every frame's positions as morph targets"),
               ("SPZ", "SPZ (.spz)", "Niantic's compressed splats, the current frame")],
        default="KHR_GLB",
    )  # fmt: skip

    def check(self, _context: Any) -> bool:
        ext = ".glb" if self.format == "KHR_GLB" else ".spz"
        changed = self.filename_ext != ext
        self.filename_ext = ext
        return ExportHelper.check(self, _context) or changed

    def execute(self, context: Any) -> set[str]:
        write = exporter.export_khr_glb if self.format == "KHR_GLB" else exporter.export_spz
        return _export_active(self, context, lambda obj: f"Wrote {write(context, obj, self.filepath)}")


class PLA4D_OT_export_splat_sequence(bpy.types.Operator):
    """Export the active pla4d Gaussians as one KHR glTF or SPZ file per frame (frame_000.glb, ...)"""

    bl_idname = "pla4d.export_splat_sequence"
    bl_label = "Export Splat Sequence"

    directory: StringProperty(subtype="DIR_PATH")
    format: EnumProperty(
        name="Format",
        items=[("KHR_GLB", "KHR glTF (.glb)", "one static KHR_gaussian_splatting GLB per frame"),
               ("SPZ", "SPZ (.spz)", "one SPZ file per frame")],
        default="SPZ",
    )  # fmt: skip

    def invoke(self, context: Any, _event: Any) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: Any) -> set[str]:
        if not self.directory:
            self.report({"ERROR"}, "Choose a folder")
            return {"CANCELLED"}

        def write(obj: Any) -> str:
            written = exporter.export_splat_sequence(context, obj, bpy.path.abspath(self.directory), self.format)
            return f"Wrote {len(written)} files to {self.directory}"

        return _export_active(self, context, write)


def menu_import(self: Any, _context: Any) -> None:
    self.layout.operator(PLA4D_OT_import_foreign.bl_idname, text="Gaussian Splats (PLY Sequence, SPZ, KHR glTF)")


def menu_export(self: Any, _context: Any) -> None:
    layout = self.layout
    layout.operator(PLA4D_OT_export_splats.bl_idname, text="pla4d Splats: KHR glTF (.glb)").format = "KHR_GLB"
    layout.operator(PLA4D_OT_export_splats.bl_idname, text="pla4d Splats: SPZ (.spz)").format = "SPZ"
    layout.operator(PLA4D_OT_export_splat_sequence.bl_idname, text="pla4d Splats: SPZ Sequence").format = "SPZ"
    glb_sequence = layout.operator(PLA4D_OT_export_splat_sequence.bl_idname, text="pla4d Splats: KHR glTF Sequence")
    glb_sequence.format = "KHR_GLB"
    layout.operator(PLA4D_OT_export_ply.bl_idname, text="pla4d Splats: PLY Sequence")
    layout.operator(PLA4D_OT_export_usd.bl_idname, text="pla4d Splats: USD Point Cache")


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
    PLA4D_OT_import_foreign,
    PLA4D_OT_export_splats,
    PLA4D_OT_export_splat_sequence,
    PLA4D_OT_apply_frame,
)
