"""The main-thread side of the networking: :func:`tick` applies what the background tasks (:mod:`.jobs`) reported.

It runs as a ``bpy.app.timers`` callback (tests call it themselves: timers never fire in background mode) and
turns the tasks' plain messages into scene state: the backend's capabilities (presets, the settings table), job
states, progress, live-preview points, downloads (imported when done) and one-line errors.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import bpy

from . import importer, jobs, knobs, panel_settings, preview, props, server_facts
from .status import redraw, set_status

TOO_OLD = "; this backend is too old for settings (it sends no settings table), so jobs use the preset's defaults"


def _scene(name: str) -> Any:
    return bpy.data.scenes.get(name) or bpy.context.scene


def job_entry(scene: Any, job_id: str, create: bool = True) -> Any:
    """The scene's job-list entry of ``job_id`` (a new one, listed first, unless ``create`` is False)."""
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


def _load_settings(scene: Any, info: dict[str, Any], server: str) -> None:
    """The panel's knobs from the capabilities' settings table (or the note that the backend has none)."""
    rows = info.get("settings")
    if rows is None:
        panel_settings.mark_too_old(scene)
        return
    try:
        skipped = panel_settings.load_table(scene, rows)
    except knobs.KnobError as exc:
        panel_settings.mark_too_old(scene)
        print(f"pla4d: the settings table of {server} is unusable ({exc}); jobs use the preset's defaults")
        return
    if skipped:
        print(f"pla4d: settings this add-on cannot show (a newer backend?): {', '.join(skipped)}")


def _apply(kind: str, p: dict[str, Any]) -> None:
    scene = _scene(p.get("scene", ""))
    sp = scene.pla4d
    if kind == "hello":
        info = p["info"]
        jobs.remember_hello(info)
        props.set_presets(list(info.get("presets") or []))
        _load_settings(scene, info, p["server"])
        models = ", ".join(f"{k}: {v or 'none'}" for k, v in (info.get("models") or {}).items())
        kinds = ", ".join(k for k, v in (info.get("kinds") or {}).items() if v.get("available"))
        sp.server_info = (
            f"pla4d-backend {info.get('server_version', '?')} (engine {info.get('engine_version', '?')}) on "
            f"{info.get('device', '?')}, {info.get('workers', '?')} worker(s); jobs: {kinds}; models: {models}; "
            f"{info.get('latency_ms', 0):.0f} ms"
        )
        # What the backend's machine can run (pla4d doctor's facts), one line each in the preferences' server box.
        machine = server_facts.machine_lines(info.get("machine"), info.get("default_preset") or "draft")
        if machine:
            sp.server_info += "; " + "; ".join(machine)
        old = sp.settings_source == "OLD_SERVER"
        set_status(scene, f"Connected to {p['server']}" + (TOO_OLD if old else ""))
    elif kind == "jobs":
        seen = set()
        for job in p["jobs"]:
            entry = job_entry(scene, job["job_id"])
            entry.kind = job.get("kind", "")
            entry.state = job.get("state", "")
            entry.stage = job.get("stage") or ""
            entry.created = float(job.get("created") or 0.0)
            error = job.get("error") or {}
            entry.message = error.get("message", "") if error else entry.message
            seen.add(job["job_id"])
        set_status(scene, f"{len(seen)} job(s) on the backend")
    elif kind == "submitted":
        entry = job_entry(scene, p["job_id"])
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
                preview.update_preview(bpy.context, p["job_id"], p["points"])
    elif kind == "download":
        sp.progress_text = f"Downloading {Path(p['file']).name}: {p['chunk']}/{p['chunks']}"
    elif kind == "downloaded":
        entry = job_entry(scene, p["job_id"])
        entry.local_path = p["path"]
        preview.remove_preview(p["job_id"])
        if sp.auto_import:
            with bpy.context.temp_override(**_override(scene)):
                created = importer.import_asset(bpy.context, p["path"], sp.import_as, p["job_id"])
            set_status(scene, f"Imported job {p['job_id'][:8]} as {', '.join(o.name for o in created)}")
        else:
            set_status(scene, f"Downloaded job {p['job_id'][:8]} to {p['path']}")
        sp.progress_text = "Done"
        sp.progress = 1.0
    elif kind == "cancel":
        entry = job_entry(scene, p["job_id"], create=False)
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
    redraw()


def _apply_event(scene: Any, job_id: str, event: dict[str, Any]) -> None:
    sp = scene.pla4d
    entry = job_entry(scene, job_id)
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
        preview.remove_preview(job_id)
        set_status(scene, jobs.describe(str(event.get("code", "ENGINE_ERROR")), entry.message, ""), "ERROR")
        if active:
            sp.progress_text = "Failed"
    elif name == "cancelled":
        entry.state = "cancelled"
        preview.remove_preview(job_id)
        set_status(scene, f"Job {job_id[:8]} cancelled", "WARNING")
        if active:
            sp.progress_text = "Cancelled"
