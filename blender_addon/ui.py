"""The sidebar panel (3D viewport > Sidebar > pla4d): generate, progress, jobs, and the selected object."""

from __future__ import annotations

from typing import Any

import bpy

STATE_ICONS = {"queued": "TIME", "running": "PLAY", "done": "CHECKMARK", "failed": "ERROR", "cancelled": "CANCEL"}


class PLA4D_UL_jobs(bpy.types.UIList):
    def draw_item(
        self, _context: Any, layout: Any, _data: Any, item: Any, _icon: int, _active_data: Any, _active_prop: str,
        _index: int = 0, _flt_flag: int = 0,
    ) -> None:  # fmt: skip
        row = layout.row(align=True)
        row.label(text=item.label or item.kind or "job", icon=STATE_ICONS.get(item.state, "QUESTION"))
        row.label(text=item.state + (f" ({item.stage})" if item.state == "running" and item.stage else ""))
        row.label(text=item.job_id[:8])


class _Panel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "pla4d"


def _status(layout: Any, sp: Any) -> None:
    if sp.status:
        icon = {"ERROR": "ERROR", "WARNING": "ERROR"}.get(sp.status_level, "INFO")
        box = layout.box()
        # Long messages wrap over a few lines so they stay readable in a narrow sidebar.
        words, line, lines = sp.status.split(), "", []
        for word in words:
            if len(line) + len(word) > 48:
                lines.append(line)
                line = ""
            line = f"{line} {word}".strip()
        lines.append(line)
        for index, text in enumerate(lines[:6]):
            box.label(text=text, icon=icon if index == 0 else "BLANK1")


class PLA4D_PT_generate(_Panel, bpy.types.Panel):
    bl_label = "pla4d"
    bl_idname = "PLA4D_PT_generate"

    def draw(self, context: Any) -> None:
        from . import jobs

        layout = self.layout
        sp = context.scene.pla4d
        layout.prop(sp, "source", text="")
        kinds = jobs.last_hello().get("kinds") or {}
        kind = {"TEXT": "text", "EXAMPLE": "example", "VIDEO": "video"}[sp.source]
        info = kinds.get(kind)
        if sp.source == "TEXT":
            layout.prop(sp, "prompt", text="")
        elif sp.source == "EXAMPLE":
            layout.prop(sp, "example_resolution")
        else:
            layout.prop(sp, "video_path")
            layout.prop(sp, "mesh_path")
        if info is not None and not info.get("available", True):
            layout.label(text=info.get("message", "not available on this backend"), icon="ERROR")
        col = layout.column(align=True)
        col.prop(sp, "preset")
        row = col.row(align=True)
        row.prop(sp, "seed")
        row.prop(sp, "frames")
        col.prop(sp, "fps")
        col.prop(sp, "overrides")
        row = layout.row(align=True)
        row.prop(sp, "import_as", text="")
        row.prop(sp, "live_preview", text="", icon="HIDE_OFF")
        row = layout.row(align=True)
        row.scale_y = 1.4
        row.operator("pla4d.generate", icon="PLAY")
        row.operator("pla4d.cancel", text="", icon="CANCEL")
        if sp.active_job:
            if hasattr(layout, "progress"):
                layout.progress(factor=sp.progress, type="BAR", text=sp.progress_text or "")
            else:
                layout.label(text=f"{sp.progress * 100:.0f}% {sp.progress_text}")
        _status(layout, sp)
        layout.operator("pla4d.import_asset", text="Import From File", icon="FILEBROWSER")


class PLA4D_PT_jobs(_Panel, bpy.types.Panel):
    bl_label = "Jobs"
    bl_parent_id = "PLA4D_PT_generate"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: Any) -> None:
        layout = self.layout
        sp = context.scene.pla4d
        row = layout.row()
        row.template_list("PLA4D_UL_jobs", "", sp, "jobs", sp, "jobs_index", rows=4)
        col = row.column(align=True)
        col.operator("pla4d.refresh_jobs", text="", icon="FILE_REFRESH")
        col.operator("pla4d.reimport_job", text="", icon="IMPORT")
        col.operator("pla4d.follow_job", text="", icon="PLAY")
        col.operator("pla4d.delete_job", text="", icon="TRASH")
        if 0 <= sp.jobs_index < len(sp.jobs):
            job = sp.jobs[sp.jobs_index]
            if job.message:
                layout.label(text=job.message, icon="ERROR")
            if job.state in ("queued", "running"):
                layout.operator("pla4d.cancel", text="Cancel Job", icon="CANCEL").job_id = job.job_id


class PLA4D_PT_object(_Panel, bpy.types.Panel):
    bl_label = "Object"
    bl_parent_id = "PLA4D_PT_generate"

    @classmethod
    def poll(cls, context: Any) -> bool:
        obj = context.active_object
        return obj is not None and getattr(obj, "pla4d", None) is not None and obj.pla4d.kind != "NONE"

    def draw(self, context: Any) -> None:
        layout = self.layout
        obj = context.active_object
        op = obj.pla4d
        layout.label(text=f"{op.kind.title()}: {op.frame_count} frames" + (" (baked)" if op.baked else ""))
        layout.prop(op, "start_frame")
        splat_mod = obj.modifiers.get("pla4d Splats")
        if splat_mod is not None:
            layout.prop(splat_mod, "show_viewport", text="Show Splats")
        row = layout.row(align=True)
        if op.baked:
            row.operator("pla4d.unbake", icon="TRASH")
        else:
            row.operator("pla4d.bake", icon="FILE_TICK")
        if op.kind == "GAUSSIANS":
            row = layout.row(align=True)
            row.operator("pla4d.export_usd", text="USD", icon="EXPORT")
            row.operator("pla4d.export_ply", text="PLY Sequence", icon="EXPORT")


CLASSES = (PLA4D_UL_jobs, PLA4D_PT_generate, PLA4D_PT_jobs, PLA4D_PT_object)


def menu_import(self: Any, _context: Any) -> None:
    self.layout.operator("pla4d.import_asset", text="pla4d 4D Asset")
