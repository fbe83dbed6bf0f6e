"""Operators that talk to the backend: test the connection, generate (submit), cancel, list, delete, import a
job's result again, follow a job again.

They check what the user asked for (the settings against the backend's table included) and start a background
task (:mod:`.jobs`); they never wait on the network. What the tasks report is applied by :mod:`.job_updates`.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import bpy
from bpy.props import StringProperty

from . import asset_io, importer, job_updates, jobs, knobs, panel_settings, playback, prefs
from .status import set_status

_submit_ids = itertools.count(1)


def _start_or_report(op: Any, context: Any, make: Any) -> set[str]:
    """Build a task from the preferences and start it; user errors become a report, not a traceback."""
    try:
        settings = prefs.settings_from_prefs(context)
        jobs.start(make(settings))
    except jobs.UserError as exc:
        set_status(context.scene, str(exc), "ERROR")
        op.report({"ERROR"}, str(exc))
        return {"CANCELLED"}
    return {"FINISHED"}


class PLA4D_OT_test_connection(bpy.types.Operator):
    """Ask the backend for its version, device, models and job kinds (in the background)"""

    bl_idname = "pla4d.test_connection"
    bl_label = "Test Connection"

    def execute(self, context: Any) -> set[str]:
        set_status(context.scene, "Connecting ...")
        return _start_or_report(self, context, lambda s: jobs.HelloTask(s, "hello", context.scene.name))


class PLA4D_OT_generate(bpy.types.Operator):
    """Submit a job to the backend; progress, preview and the result arrive while you keep working"""

    bl_idname = "pla4d.generate"
    bl_label = "Generate"

    def execute(self, context: Any) -> set[str]:
        sp = context.scene.pla4d
        kind = panel_settings.KIND_OF_SOURCE[sp.source]
        try:
            settings = panel_settings.submit_settings(context.scene, kind)
        except knobs.KnobError as exc:
            set_status(context.scene, str(exc), "ERROR")
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        prompt, uploads = None, {}
        if kind == "text":
            prompt = sp.prompt.strip()
            if not prompt:
                self.report({"ERROR"}, "Type a prompt first")
                return {"CANCELLED"}
        elif kind == "video":
            frames, mesh = bpy.path.abspath(sp.video_path), bpy.path.abspath(sp.mesh_path)
            for label, path in (("frames", frames), ("mesh", mesh)):
                if not path or not os.path.exists(path):
                    self.report({"ERROR"}, f"Choose the {label} ({path or 'none set'} does not exist)")
                    return {"CANCELLED"}
            uploads = {"frames": frames, "mesh": mesh}
        available = (jobs.last_hello().get("kinds") or {}).get(kind)
        if available is not None and not available.get("available", True):
            text = jobs.describe(available.get("code", "UNSUPPORTED_KIND"), available.get("message", ""), "")
            set_status(context.scene, text, "ERROR")
            self.report({"ERROR"}, text)
            return {"CANCELLED"}
        key = f"submit-{next(_submit_ids)}"
        sp.progress, sp.progress_text = 0.0, "Submitting ..."
        set_status(context.scene, "Submitting ...")
        return _start_or_report(
            self, context,
            lambda s: jobs.JobTask(s, key, context.scene.name, kind=kind, submit_settings=settings, prompt=prompt,
                                   uploads=uploads),
        )  # fmt: skip


def _selected_job(context: Any) -> Any:
    sp = context.scene.pla4d
    if 0 <= sp.jobs_index < len(sp.jobs):
        return sp.jobs[sp.jobs_index]
    return None


class PLA4D_OT_cancel(bpy.types.Operator):
    """Cancel the job (the one being followed, or the given one)"""

    bl_idname = "pla4d.cancel"
    bl_label = "Cancel"

    job_id: StringProperty(options={"SKIP_SAVE"})

    def execute(self, context: Any) -> set[str]:
        job_id = self.job_id or context.scene.pla4d.active_job
        if not job_id:
            self.report({"WARNING"}, "No job to cancel")
            return {"CANCELLED"}
        set_status(context.scene, f"Cancelling job {job_id[:8]} ...")
        if jobs.request_cancel(job_id):
            return {"FINISHED"}
        return _start_or_report(
            self, context, lambda s: jobs.SimpleTask(s, f"cancel-{job_id}", context.scene.name, action="cancel",
                                                     job_id=job_id)
        )  # fmt: skip


class PLA4D_OT_refresh_jobs(bpy.types.Operator):
    """Fetch the backend's job list"""

    bl_idname = "pla4d.refresh_jobs"
    bl_label = "Refresh Jobs"

    def execute(self, context: Any) -> set[str]:
        return _start_or_report(self, context, lambda s: jobs.ListTask(s, "list", context.scene.name))


class PLA4D_OT_delete_job(bpy.types.Operator):
    """Delete the selected job and its result on the backend"""

    bl_idname = "pla4d.delete_job"
    bl_label = "Delete Job"

    job_id: StringProperty(options={"SKIP_SAVE"})

    def execute(self, context: Any) -> set[str]:
        entry = _selected_job(context)
        job_id = self.job_id or (entry.job_id if entry else "")
        if not job_id:
            self.report({"WARNING"}, "Select a job first")
            return {"CANCELLED"}
        return _start_or_report(
            self, context, lambda s: jobs.SimpleTask(s, f"delete-{job_id}", context.scene.name, action="delete",
                                                     job_id=job_id)
        )  # fmt: skip


class PLA4D_OT_reimport_job(bpy.types.Operator):
    """Import the job's result again (downloads it first when it is not on this computer)"""

    bl_idname = "pla4d.reimport_job"
    bl_label = "Import Job Result"

    job_id: StringProperty(options={"SKIP_SAVE"})

    def execute(self, context: Any) -> set[str]:
        sp = context.scene.pla4d
        if self.job_id:
            entry = job_updates.job_entry(context.scene, self.job_id, create=False)
        else:
            entry = _selected_job(context)
        if entry is None:
            self.report({"WARNING"}, "Select a job first")
            return {"CANCELLED"}
        if entry.state not in ("done", ""):
            self.report({"WARNING"}, f"Job {entry.job_id[:8]} is {entry.state}; only finished jobs have a result")
            return {"CANCELLED"}
        if entry.local_path and os.path.exists(entry.local_path):
            try:
                created = importer.import_asset(context, entry.local_path, sp.import_as, entry.job_id)
            except (asset_io.AssetReadError, playback.ImportFailedError) as exc:
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
            set_status(context.scene, f"Imported {', '.join(o.name for o in created)}")
            return {"FINISHED"}
        sp.active_job = entry.job_id
        job_id = entry.job_id
        return _start_or_report(
            self, context, lambda s: jobs.JobTask(s, f"fetch-{job_id}", context.scene.name, job_id=job_id,
                                                  fetch_only=True)
        )  # fmt: skip


class PLA4D_OT_follow_job(bpy.types.Operator):
    """Follow a queued or running job again (e.g. after reopening the file): progress, preview and result"""

    bl_idname = "pla4d.follow_job"
    bl_label = "Follow Job"

    def execute(self, context: Any) -> set[str]:
        entry = _selected_job(context)
        if entry is None:
            self.report({"WARNING"}, "Select a job first")
            return {"CANCELLED"}
        job_id, since = entry.job_id, entry.last_seq
        context.scene.pla4d.active_job = job_id
        return _start_or_report(
            self, context, lambda s: jobs.JobTask(s, f"follow-{job_id}", context.scene.name, job_id=job_id,
                                                  since=since)
        )  # fmt: skip


CLASSES = (
    PLA4D_OT_test_connection,
    PLA4D_OT_generate,
    PLA4D_OT_cancel,
    PLA4D_OT_refresh_jobs,
    PLA4D_OT_delete_job,
    PLA4D_OT_reimport_job,
    PLA4D_OT_follow_job,
)
