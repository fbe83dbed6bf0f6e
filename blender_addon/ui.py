"""The sidebar panel (3D viewport > Sidebar > pla4d): generate, progress, jobs, and the selected object."""

from __future__ import annotations

from typing import Any

import bpy

from . import jobs, panel_settings

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


def _wrapped(layout: Any, text: str, icon: str) -> None:
    # Long messages wrap over a few lines so they stay readable in a narrow sidebar.
    words, line, lines = text.split(), "", []
    for word in words:
        if len(line) + len(word) > 48:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    lines.append(line)
    for index, part in enumerate(lines[:6]):
        layout.label(text=part, icon=icon if index == 0 else "BLANK1")


def _status(layout: Any, sp: Any) -> None:
    if sp.status:
        icon = {"ERROR": "ERROR", "WARNING": "ERROR"}.get(sp.status_level, "INFO")
        _wrapped(layout.box(), sp.status, icon)


def _is_run_level(knob: Any) -> bool:
    return knob.name.split(".", 1)[0] in panel_settings.RUN_SECTIONS


def _draw_knobs(layout: Any, items: list[Any]) -> None:
    """One row per knob: a tick to use your value (else the preset's default, greyed out), then the value."""
    for knob in items:
        row = layout.row(align=True)
        row.prop(knob, "changed", text="")
        value = row.row(align=True)
        value.active = knob.changed
        if knob.changed or knob.has_default:
            value.prop(knob, panel_settings.VALUE_PROPS[knob.type], text=knob.label)
        else:
            value.label(text=f"{knob.label}: the backend's default")
        if knob.error:
            _wrapped(layout, knob.error, "ERROR")


class PLA4D_PT_generate(_Panel, bpy.types.Panel):
    bl_label = "pla4d"
    bl_idname = "PLA4D_PT_generate"

    def draw(self, context: Any) -> None:
        layout = self.layout
        sp = context.scene.pla4d
        layout.prop(sp, "source", text="")
        kinds = jobs.last_hello().get("kinds") or {}
        kind = panel_settings.KIND_OF_SOURCE[sp.source]
        info = kinds.get(kind)
        if sp.source == "TEXT":
            layout.prop(sp, "prompt", text="")
        elif sp.source == "VIDEO":
            layout.prop(sp, "video_path")
            layout.prop(sp, "mesh_path")
        if info is not None and not info.get("available", True):
            layout.label(text=info.get("message", "not available on this backend"), icon="ERROR")
        col = layout.column(align=True)
        col.prop(sp, "preset")
        _draw_knobs(col, [k for k in panel_settings.for_kind(context.scene, kind) if _is_run_level(k)])
        if sp.settings_source == "OLD_SERVER":
            _wrapped(layout, "This backend is too old for settings: jobs use the preset's defaults", "INFO")
        elif sp.settings_source == "NONE":
            layout.operator("pla4d.test_connection", text="Load the Backend's Settings", icon="LINKED")
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


class PLA4D_PT_settings(_Panel, bpy.types.Panel):
    """The stage settings of the chosen source's job kind, from the backend's settings table, by section."""

    bl_label = "Settings"
    bl_parent_id = "PLA4D_PT_generate"
    bl_options = {"DEFAULT_CLOSED"}

    @classmethod
    def poll(cls, context: Any) -> bool:
        return context.scene is not None and len(context.scene.pla4d.knobs) > 0

    def draw(self, context: Any) -> None:
        sp = context.scene.pla4d
        kind = panel_settings.KIND_OF_SOURCE[sp.source]
        section, col = "", self.layout.column(align=True)
        for knob in panel_settings.for_kind(context.scene, kind):
            if _is_run_level(knob):
                continue
            if knob.name.split(".", 1)[0] != section:
                section = knob.name.split(".", 1)[0]
                col = self.layout.column(align=True)
                col.label(text=section.title())
            _draw_knobs(col, [knob])


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
            layout.prop(op, "shading")
            layout.prop(op, "smoothing")
        row = layout.row(align=True)
        if op.baked:
            row.operator("pla4d.unbake", icon="TRASH")
        else:
            row.operator("pla4d.bake", icon="FILE_TICK")
        if op.kind == "GAUSSIANS":
            row = layout.row(align=True)
            row.operator("pla4d.export_usd", text="USD", icon="EXPORT")
            row.operator("pla4d.export_ply", text="PLY Sequence", icon="EXPORT")


CLASSES = (PLA4D_UL_jobs, PLA4D_PT_generate, PLA4D_PT_settings, PLA4D_PT_jobs, PLA4D_PT_object)


def menu_import(self: Any, _context: Any) -> None:
    self.layout.operator("pla4d.import_asset", text="pla4d 4D Asset")
