"""The panel's one-line status message (``scene.pla4d.status``) and redrawing the areas that show it."""

from __future__ import annotations

from typing import Any

import bpy


def set_status(scene: Any, text: str, level: str = "INFO") -> None:
    """Show ``text`` in the panel (``INFO``, ``WARNING`` or ``ERROR``); warnings and errors go to the console too."""
    scene.pla4d.status = text[:1000]
    scene.pla4d.status_level = level
    if level != "INFO":
        print(f"pla4d: {text}")
    redraw()


def redraw() -> None:
    """Tag the 3D views and the preferences for redraw (the sidebar panel and the add-on preferences)."""
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()
