"""Operators and the main-thread side of the networking (:func:`tick`).

Operators validate what the user asked for and either act at once (import, bake, export) or start a
background task (:mod:`.jobs`); they never wait on the network. :func:`tick` runs on Blender's main thread
(a ``bpy.app.timers`` callback) and applies what the tasks reported: job states, progress, preview points,
downloads (imported when done), errors.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import asset_io, jobs, props, splats

_submit_ids = itertools.count(1)


# ------------------------------------------------------------------------------------------------ helpers


def preferences(context: Any = None) -> Any:
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


def settings_from_prefs(context: Any = None) -> jobs.Settings:
    """The thread-safe snapshot of the preferences; raises :class:`jobs.UserError` for unusable ones."""
    prefs = preferences(context)
    if prefs is None:
        return jobs.Settings(download_dir=_default_download_dir())
    secret = prefs.secret
    if prefs.secret_file:
        try:
            secret = Path(bpy.path.abspath(prefs.secret_file)).read_text().strip()
        except OSError as exc:
            raise jobs.UserError(f"Cannot read the auth key file {prefs.secret_file}: {exc.strerror}") from None
    if secret and len(secret) < 16:
        raise jobs.UserError("The auth key must be at least 16 characters (the backend's --secret-file rule)")
    server = prefs.server.strip()
    jobs.parse_address(server)
    jobs.check_address(server, bool(getattr(bpy.app, "online_access", True)))
    download = bpy.path.abspath(prefs.download_dir) if prefs.download_dir else _default_download_dir()
    return jobs.Settings(server=server, secret=secret, curve_server_key=prefs.curve_server_key,
                         timeout=prefs.timeout, stall_timeout=prefs.stall_timeout, download_dir=download)  # fmt: skip


def _default_download_dir() -> str:
    try:
        return bpy.utils.extension_path_user(__package__, path="jobs", create=True)
    except (ValueError, AttributeError):  # not installed as an extension (a legacy add-on install)
        path = Path(bpy.utils.user_resource("DATAFILES", path="pla4d/jobs", create=True))
        return str(path)


def set_status(scene: Any, text: str, level: str = "INFO") -> None:
    scene.pla4d.status = text[:1000]
    scene.pla4d.status_level = level
    if level != "INFO":
        print(f"pla4d: {text}")
    _redraw()


def _redraw() -> None:
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


def _scene(name: str) -> Any:
    return bpy.data.scenes.get(name) or bpy.context.scene


def _job_entry(scene: Any, job_id: str, create: bool = True) -> Any:
    for entry in scene.pla4d.jobs:
        if entry.job_id == job_id:
            return entry
    if not create:
        return None
    entry = scene.pla4d.jobs.add()
    entry.job_id = job_id
    scene.pla4d.jobs.move(len(scene.pla4d.jobs) - 1, 0)  # newest first, as the backend lists them
    return scene.pla4d.jobs[0]


def _format_eta(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or seconds < 0:
        return ""
    seconds = int(seconds + 0.5)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


def _override(scene: Any) -> dict[str, Any]:
    """A context override for main-thread work started from a timer (which has no window or view layer)."""
    out: dict[str, Any] = {"scene": scene}
    wm = bpy.context.window_manager
    window = wm.windows[0] if wm is not None and len(wm.windows) else None
    if window is not None:
        out["window"] = window
    view_layer = bpy.context.view_layer
    if view_layer is None or view_layer not in scene.view_layers.values():
        view_layer = scene.view_layers[0]
    out["view_layer"] = view_layer
    return out


def import_asset(context: Any, path: str, import_as: str = "GAUSSIANS", job_id: str = "") -> list[Any]:
    """Import a 4D asset (``GAUSSIANS``, ``MESH`` or ``BOTH``), set the scene up and select the result."""
    asset = splats.get_asset(path, verify=True) if not job_id else splats.get_asset(path, verify=False)
    scene = context.scene
    start = scene.frame_start
    created = []
    if import_as in ("GAUSSIANS", "BOTH") or asset.mesh is None:
        created.append(splats.import_gaussians(context, path, start=start, verify=False, job_id=job_id))
    if import_as in ("MESH", "BOTH") and asset.mesh is not None:
        created.append(splats.import_mesh(context, path, start=start, verify=False, job_id=job_id))
    splats.setup_scene(scene, asset, start)
    for obj in created:
        try:
            obj.select_set(True)
        except RuntimeError:  # not in the current view layer
            pass
    if created and context.view_layer is not None and created[0].name in context.view_layer.objects:
        context.view_layer.objects.active = created[0]
    return created


# ------------------------------------------------------------------------------------------------ the timer


def tick() -> float:
    """Apply what the network threads reported; returns the delay before the next call (bpy.app.timers)."""
    for kind, payload in jobs.drain():
        try:
            _apply(kind, payload)
        except Exception as exc:  # never let one bad message kill the timer
            import traceback

            traceback.print_exc()
            set_status(_scene(payload.get("scene", "")), f"pla4d: {type(exc).__name__}: {exc}", "ERROR")
    return 0.1 if jobs.busy() or jobs.pending() else 0.5


def _apply(kind: str, p: dict[str, Any]) -> None:
    scene = _scene(p.get("scene", ""))
    sp = scene.pla4d
    if kind == "hello":
        info = p["info"]
        jobs.remember_hello(info)
        props.set_presets(list(info.get("presets") or []))
        models = ", ".join(f"{k}: {v or 'none'}" for k, v in (info.get("models") or {}).items())
        kinds = ", ".join(k for k, v in (info.get("kinds") or {}).items() if v.get("available"))
        sp.server_info = (
            f"pla4d-backend {info.get('server_version', '?')} (engine {info.get('engine_version', '?')}) on "
            f"{info.get('device', '?')}, {info.get('workers', '?')} worker(s); jobs: {kinds}; models: {models}; "
            f"{info.get('latency_ms', 0):.0f} ms"
        )
        set_status(scene, f"Connected to {p['server']}")
    elif kind == "jobs":
        seen = set()
        for job in p["jobs"]:
            entry = _job_entry(scene, job["job_id"])
            entry.kind = job.get("kind", "")
            entry.state = job.get("state", "")
            entry.stage = job.get("stage") or ""
            entry.created = float(job.get("created") or 0.0)
            error = job.get("error") or {}
            entry.message = error.get("message", "") if error else entry.message
            seen.add(job["job_id"])
        set_status(scene, f"{len(seen)} job(s) on the backend")
    elif kind == "submitted":
        entry = _job_entry(scene, p["job_id"])
        entry.kind, entry.label, entry.state = p["kind"], p["label"][:200], "queued"
        entry.created = time.time()
        sp.active_job = p["job_id"]
        sp.progress = 0.0
        position = p.get("queue_position", 0)
        sp.progress_text = "Queued" + (f" (position {position})" if position else "")
        set_status(scene, f"Submitted job {p['job_id'][:8]}")
    elif kind == "following":
        sp.active_job = p["job_id"]
        set_status(scene, f"Following job {p['job_id'][:8]}")
    elif kind == "progress_text":
        sp.progress_text = p["text"]
    elif kind == "event":
        _apply_event(scene, p["job_id"], p["event"])
    elif kind == "preview":
        if sp.live_preview:
            with bpy.context.temp_override(**_override(scene)):
                splats.update_preview(bpy.context, p["job_id"], p["points"])
    elif kind == "download":
        sp.progress_text = f"Downloading {Path(p['file']).name}: {p['chunk']}/{p['chunks']}"
    elif kind == "downloaded":
        entry = _job_entry(scene, p["job_id"])
        entry.local_path = p["path"]
        splats.remove_preview(p["job_id"])
        if sp.auto_import:
            with bpy.context.temp_override(**_override(scene)):
                created = import_asset(bpy.context, p["path"], sp.import_as, p["job_id"])
            set_status(scene, f"Imported job {p['job_id'][:8]} as {', '.join(o.name for o in created)}")
        else:
            set_status(scene, f"Downloaded job {p['job_id'][:8]} to {p['path']}")
        sp.progress_text = "Done"
        sp.progress = 1.0
    elif kind == "cancel":
        entry = _job_entry(scene, p["job_id"], create=False)
        if entry is not None:
            entry.state = p["reply"].get("state", entry.state)
        set_status(scene, f"Job {p['job_id'][:8]}: {p['reply'].get('state', 'cancelled')}")
    elif kind == "delete":
        for index, entry in enumerate(sp.jobs):
            if entry.job_id == p["job_id"]:
                sp.jobs.remove(index)
                break
        set_status(scene, f"Deleted job {p['job_id'][:8]}")
    elif kind == "error":
        set_status(scene, p["text"], "ERROR")
        if p.get("key", "").startswith("submit"):
            sp.progress_text = ""
    elif kind == "task_finished":
        pass
    _redraw()


def _apply_event(scene: Any, job_id: str, event: dict[str, Any]) -> None:
    sp = scene.pla4d
    entry = _job_entry(scene, job_id)
    name = event.get("event")
    seq = event.get("seq")
    if isinstance(seq, int):
        entry.last_seq = max(entry.last_seq, seq)
    active = sp.active_job == job_id
    if name in ("accepted", "queue"):
        position = event.get("queue_position", 0)
        entry.state = "running" if position == 0 and name == "queue" else entry.state
        if active:
            sp.progress_text = "Running" if position == 0 else f"Queued (position {position})"
    elif name == "stage_started":
        entry.state, entry.stage = "running", str(event.get("stage", ""))
        if active:
            sp.progress = 0.0
            sp.progress_text = f"{entry.stage}: starting"
    elif name == "stage_finished":
        if active:
            cached = " (cached)" if event.get("cached") else ""
            sp.progress_text = f"{event.get('stage', '')}: finished in {float(event.get('seconds', 0)):.1f} s{cached}"
    elif name == "progress":
        entry.state, entry.stage = "running", str(event.get("stage", entry.stage))
        if active:
            total = max(int(event.get("total") or 1), 1)
            iteration = int(event.get("iteration") or 0)
            sp.progress = min(iteration / total, 1.0)
            eta = _format_eta(event.get("eta_s"))
            sp.progress_text = f"{entry.stage}: {iteration}/{total}" + (f", ETA {eta}" if eta else "")
    elif name == "done":
        entry.state, entry.message = "done", ""
        if active:
            sp.progress = 1.0
            sp.progress_text = "Finished; downloading the result"
    elif name == "failed":
        entry.state = "failed"
        entry.message = str(event.get("message", ""))[:500]
        splats.remove_preview(job_id)
        set_status(scene, jobs.describe(str(event.get("code", "ENGINE_ERROR")), entry.message, ""), "ERROR")
        if active:
            sp.progress_text = "Failed"
    elif name == "cancelled":
        entry.state = "cancelled"
        splats.remove_preview(job_id)
        set_status(scene, f"Job {job_id[:8]} cancelled", "WARNING")
        if active:
            sp.progress_text = "Cancelled"


# ------------------------------------------------------------------------------------------------ operators


def _start_or_report(op: Any, context: Any, make: Any) -> set[str]:
    """Build a task from the preferences and start it; user errors become a report, not a traceback."""
    try:
        settings = settings_from_prefs(context)
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
        settings: dict[str, Any] = {"preset": sp.preset, "seed": sp.seed, "fps": float(sp.fps)}
        if sp.overrides.strip():
            try:
                overrides = json.loads(sp.overrides)
            except json.JSONDecodeError as exc:
                self.report({"ERROR"}, f"Overrides are not valid JSON: {exc.msg} (at character {exc.pos})")
                return {"CANCELLED"}
            if not isinstance(overrides, dict):
                self.report({"ERROR"}, 'Overrides must be a JSON object, e.g. {"iterations": 500}')
                return {"CANCELLED"}
            settings["overrides"] = overrides
        prompt, uploads, kind = None, {}, "example"
        if sp.source == "TEXT":
            kind, prompt = "text", sp.prompt.strip()
            if not prompt:
                self.report({"ERROR"}, "Type a prompt first")
                return {"CANCELLED"}
        elif sp.source == "EXAMPLE":
            settings["example"] = {"frames": sp.frames, "resolution": sp.example_resolution}
        else:
            kind = "video"
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
        entry = _job_entry(context.scene, self.job_id, create=False) if self.job_id else _selected_job(context)
        if entry is None:
            self.report({"WARNING"}, "Select a job first")
            return {"CANCELLED"}
        if entry.state not in ("done", ""):
            self.report({"WARNING"}, f"Job {entry.job_id[:8]} is {entry.state}; only finished jobs have a result")
            return {"CANCELLED"}
        if entry.local_path and os.path.exists(entry.local_path):
            try:
                created = import_asset(context, entry.local_path, sp.import_as, entry.job_id)
            except (asset_io.AssetReadError, splats.ImportFailedError) as exc:
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
            created = import_asset(context, bpy.path.abspath(path), self.import_as)
        except (asset_io.AssetReadError, splats.ImportFailedError) as exc:
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
            frames = [splats.bake(obj) for obj in objects]
        except splats.ImportFailedError as exc:
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
            splats.unbake(obj)
            splats.apply_frame(obj, context.scene.frame_current)
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
            path = splats.export_usd(context, objects[0], self.filepath)
        except splats.ImportFailedError as exc:
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
            written = splats.export_ply_sequence(objects[0], bpy.path.abspath(self.directory))
        except (splats.ImportFailedError, asset_io.AssetReadError, OSError) as exc:
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
            splats.forget_assets()
        splats.apply_scene(context.scene)
        return {"FINISHED"}


CLASSES = (
    PLA4D_OT_test_connection,
    PLA4D_OT_generate,
    PLA4D_OT_cancel,
    PLA4D_OT_refresh_jobs,
    PLA4D_OT_delete_job,
    PLA4D_OT_reimport_job,
    PLA4D_OT_follow_job,
    PLA4D_OT_import_asset,
    PLA4D_OT_bake,
    PLA4D_OT_unbake,
    PLA4D_OT_export_usd,
    PLA4D_OT_export_ply,
    PLA4D_OT_apply_frame,
)
