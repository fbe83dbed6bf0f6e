"""pla4d Blender extension: text-to-4D Gaussian splats on the timeline (bpy, numpy, pyzmq, msgpack; never torch).

Modules: ``asset_io`` (numpy reader of 4D assets), ``splats`` (objects, nodes, playback, bake, exports),
``jobs`` (background networking), ``ops`` (operators and the main-thread timer), ``ui`` (the sidebar panel),
``prefs`` and ``props``. ``pla4d_client`` is the backend client library, vendored by build_addon.py.
"""

from __future__ import annotations

from typing import Any

import bpy
from bpy.app.handlers import persistent

from . import jobs, ops, prefs, props, splats, ui

_CLASSES = (*prefs.CLASSES, *ops.CLASSES, *ui.CLASSES)


@persistent
def _on_frame_change(scene: Any, *_args: Any) -> None:
    """Write the current frame of every handler-driven pla4d object (before the depsgraph evaluates)."""
    splats.apply_scene(scene)


@persistent
def _on_load(*_args: Any) -> None:
    """A new file: forget memory-mapped assets of the old one and show the new file's objects at their frame."""
    splats.forget_assets()
    for scene in bpy.data.scenes:
        splats.apply_scene(scene)


def _timer() -> float:
    return ops.tick()


def register() -> None:
    props.register()
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.append(ui.menu_import)
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
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
    props.unregister()
    splats.forget_assets()
