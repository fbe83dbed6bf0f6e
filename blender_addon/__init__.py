"""pla4d Blender extension: text-to-4D Gaussian splats on the timeline (bpy, numpy, pyzmq, msgpack; never torch).

Laid out like Blender's glTF add-on: code without bpy apart from bpy code, and import / playback / export apart.

- Without bpy (testable in any Python): ``asset_io`` (the 4D asset and PLY formats, axes, colours), ``jobs``
  (background networking), ``knobs`` (the backend's settings table and its checks); ``pla4d_client`` is the
  backend client library, vendored by build_addon.py.
- Shared bpy code: ``attributes`` (point attributes and their conversion), ``nodes`` (geometry nodes, materials,
  modifiers), ``status`` (the panel's message).
- Import: ``importer`` (Gaussians, mesh, scene set-up), ``import_foreign`` (PLY sequences, SPZ, KHR glTF splats
  made elsewhere, converted to a 4D asset and imported like ours), ``preview`` (live training points).
- Playback and bake: ``playback`` (assets, the frame-change update, bake / free bake, start frame).
- Export: ``exporter`` (PLY sequence, KHR glTF, SPZ and their per-frame sequences, USD point cache).
- Interface: ``props``, ``prefs``, ``panel_settings`` (knobs from the table), ``ui`` (the sidebar),
  ``ops_jobs`` (backend operators), ``ops_scene`` (import, bake, export operators), ``job_updates`` (the
  main-thread timer that applies what the network threads report).
"""

from __future__ import annotations

from typing import Any

import bpy
from bpy.app.handlers import persistent

from . import job_updates, jobs, ops_jobs, ops_scene, playback, prefs, props, rig_import, ui

_CLASSES = (*prefs.CLASSES, *ops_jobs.CLASSES, *ops_scene.CLASSES, *ui.CLASSES)


@persistent
def _on_frame_change(scene: Any, *_args: Any) -> None:
    """Write the current frame of every handler-driven pla4d object (before the depsgraph evaluates)."""
    playback.apply_scene(scene)


@persistent
def _on_load(*_args: Any) -> None:
    """A new file: forget memory-mapped assets of the old one and show the new file's objects at their frame."""
    playback.forget_assets()
    for scene in bpy.data.scenes:
        playback.apply_scene(scene)
    for obj in bpy.data.objects:
        if getattr(obj, "pla4d", None) is not None:
            playback.prefill(obj)


def _timer() -> float:
    return job_updates.tick()


def register() -> None:
    props.register()
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.append(ui.menu_import)
    bpy.types.TOPBAR_MT_file_import.append(ops_scene.menu_import)
    bpy.types.TOPBAR_MT_file_export.append(ops_scene.menu_export)
    rig_import.register()
    bpy.app.handlers.frame_change_pre.append(_on_frame_change)
    bpy.app.handlers.load_post.append(_on_load)
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=0.5, persistent=True)


def unregister() -> None:
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
    jobs.join_all(timeout=2.0)
    for handlers, fn in ((bpy.app.handlers.frame_change_pre, _on_frame_change), (bpy.app.handlers.load_post, _on_load)):
        if fn in handlers:
            handlers.remove(fn)
    bpy.types.TOPBAR_MT_file_import.remove(ui.menu_import)
    bpy.types.TOPBAR_MT_file_import.remove(ops_scene.menu_import)
    bpy.types.TOPBAR_MT_file_export.remove(ops_scene.menu_export)
    rig_import.unregister()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
    props.unregister()
    playback.forget_assets()
