"""End to end against a real pla4d-backend on loopback (started by the outer test): the add-on's operators
submit, the test drives the timer callback (timers never fire in background mode), progress and the result
arrive, the object plays; cancel; clear messages for an unreachable backend, an unavailable kind, bad input."""

from __future__ import annotations

import os
import time

import bpy
import numpy as np
import pytest
from conftest import positions, to_blender

TINY = {"static.iterations": 4, "motion.iterations": 2, "static.num_gaussians": 2000, "static.max_gaussians": 4000,
        "static.resolutions": "32", "static.resolution_steps": "", "static.view_pool": 4, "static.batch_views": 1,
        "example.frames": 2, "example.resolution": 32}  # fmt: skip


@pytest.fixture
def prefs(addon):
    p = bpy.context.preferences.addons[addon.__name__].preferences
    p.server = os.environ["PLA4D_BACKEND"]
    p.timeout = 20.0
    p.download_dir = str(os.environ["PLA4D_DOWNLOADS"])
    addon.jobs._last_hello.clear()
    return p


def drive(addon, until, timeout: float = 240.0) -> None:
    """Call the timer callback like Blender would, until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"timed out; status: {bpy.context.scene.pla4d.status!r}"
        delay = addon.job_updates.tick()
        assert 0 < delay <= 0.5
        time.sleep(0.05)


def idle(addon) -> bool:
    return not addon.jobs.busy() and not addon.jobs.pending()


def use_settings(addon, values: dict) -> None:
    """Set the panel's knobs (from the backend's settings table, so Test Connection first) as a user would."""
    assert bpy.ops.pla4d.test_connection() == {"FINISHED"}
    drive(addon, lambda: idle(addon))
    sp = bpy.context.scene.pla4d
    assert sp.settings_source == "TABLE", f"the backend sent no settings table; status: {sp.status!r}"
    for path, value in values.items():
        knob = sp.knobs[path]
        setattr(knob, addon.panel_settings.VALUE_PROPS[knob.type], value)
        assert knob.changed and not knob.error, (path, knob.error)


def test_connection_shows_server_info(addon, prefs):
    assert bpy.ops.pla4d.test_connection() == {"FINISHED"}
    drive(addon, lambda: idle(addon))
    sp = bpy.context.scene.pla4d
    assert sp.status_level == "INFO", sp.status
    assert "pla4d-backend" in sp.server_info and "cpu" in sp.server_info and "models" in sp.server_info
    assert "example" in addon.jobs.last_hello()["kinds"]


def test_example_job_end_to_end(addon, prefs):
    sp = bpy.context.scene.pla4d
    sp.source, sp.preset = "EXAMPLE", "draft"
    use_settings(addon, TINY)
    sp.live_preview = True
    seen: list[str] = []
    assert bpy.ops.pla4d.generate() == {"FINISHED"}

    previews: list[int] = []

    def finished() -> bool:
        if sp.progress_text and (not seen or seen[-1] != sp.progress_text):
            seen.append(sp.progress_text)
        previews.extend(len(o.data.vertices) for o in bpy.data.objects if o.pla4d.kind == "PREVIEW")
        return idle(addon)

    drive(addon, finished)
    assert sp.status_level == "INFO", sp.status
    job = sp.jobs[0]
    assert job.state == "done" and job.kind == "example" and os.path.isdir(job.local_path)
    assert any(":" in text and "/" in text for text in seen), seen  # "stage: iteration/total" progress lines
    assert sp.progress == 1.0
    obj = bpy.context.view_layer.objects.active
    assert obj.type == "POINTCLOUD" and obj.pla4d.kind == "GAUSSIANS" and obj.pla4d.job_id == job.job_id
    assert previews and max(previews) > 0  # the live preview (the backend's training points) showed up meanwhile
    assert not [o for o in bpy.data.objects if o.pla4d.kind == "PREVIEW"]  # the preview made way for the result
    asset = addon.asset_io.open_asset(job.local_path)
    assert asset.frame_count == 2
    start = bpy.context.scene.frame_start
    for t in (0, 1):
        bpy.context.scene.frame_set(start + t)
        want = to_blender(np.asarray(asset.arrays["positions"][t], np.float32))
        np.testing.assert_allclose(positions(obj.data), want, atol=1e-6)
    # The job list from the backend, re-import from the local copy, delete.
    assert bpy.ops.pla4d.refresh_jobs() == {"FINISHED"}
    drive(addon, lambda: idle(addon))
    assert any(j.job_id == job.job_id and j.state == "done" for j in sp.jobs)
    sp.jobs_index = [j.job_id for j in sp.jobs].index(job.job_id)
    before = len(bpy.data.objects)
    assert bpy.ops.pla4d.reimport_job() == {"FINISHED"}
    assert len(bpy.data.objects) == before + 1
    assert bpy.ops.pla4d.delete_job() == {"FINISHED"}
    drive(addon, lambda: idle(addon))
    assert job.job_id not in [j.job_id for j in sp.jobs], sp.status


def test_cancel_running_job(addon, prefs):
    sp = bpy.context.scene.pla4d
    sp.source = "EXAMPLE"
    use_settings(addon, dict(TINY, **{"static.iterations": 50_000}))
    assert bpy.ops.pla4d.generate() == {"FINISHED"}
    drive(addon, lambda: bool(sp.jobs) and sp.jobs[0].state == "running" and "/" in sp.progress_text)
    assert bpy.ops.pla4d.cancel() == {"FINISHED"}
    drive(addon, lambda: idle(addon))
    assert sp.jobs[0].state == "cancelled" and sp.progress_text == "Cancelled"
    assert "cancelled" in sp.status


def test_text_prompt_is_a_clear_message(addon, prefs):
    sp = bpy.context.scene.pla4d
    sp.source, sp.prompt = "TEXT", "a corgi running"
    # Without a hello the backend's own MODEL_UNAVAILABLE answer reaches the panel ...
    assert bpy.ops.pla4d.generate() == {"FINISHED"}
    drive(addon, lambda: idle(addon))
    assert sp.status_level == "ERROR" and "pla4d models pull" in sp.status  # names the missing models
    assert "Traceback" not in sp.status and not sp.jobs
    # ... and once the capabilities are known, the operator refuses before sending anything.
    bpy.ops.pla4d.test_connection()
    drive(addon, lambda: idle(addon))
    with pytest.raises(RuntimeError, match="pla4d models pull"):
        bpy.ops.pla4d.generate()


def test_unreachable_backend(addon, prefs):
    prefs.server = "tcp://127.0.0.1:9"  # nothing listens there
    prefs.timeout = 1.0
    sp = bpy.context.scene.pla4d
    assert bpy.ops.pla4d.test_connection() == {"FINISHED"}
    drive(addon, lambda: idle(addon), timeout=30)
    assert sp.status_level == "ERROR"
    assert "No answer from the pla4d backend at tcp://127.0.0.1:9" in sp.status and "Traceback" not in sp.status
    sp.source = "EXAMPLE"
    assert bpy.ops.pla4d.generate() == {"FINISHED"}
    drive(addon, lambda: idle(addon), timeout=30)
    assert "No answer" in sp.status and sp.progress_text == ""


def test_address_and_online_access_checks(addon, prefs):
    prefs.server = "localhost:5555"
    with pytest.raises(RuntimeError, match="not valid: use tcp://HOST:PORT"):
        bpy.ops.pla4d.test_connection()
    prefs.server = "tcp://10.20.30.40:5555"
    if not bpy.app.online_access:  # background bpy has online access off
        with pytest.raises(RuntimeError, match="online access is off"):
            bpy.ops.pla4d.test_connection()
    prefs.server = os.environ["PLA4D_BACKEND"]
    use_settings(addon, {})
    bpy.context.scene.pla4d.knobs["static.iterations"].int_value = 0
    with pytest.raises(RuntimeError, match=r"must be a whole number from 1 to 100000, not 0"):
        bpy.ops.pla4d.generate()
    assert not addon.jobs.busy()
