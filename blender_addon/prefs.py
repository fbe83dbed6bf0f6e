"""Add-on preferences: where the backend is, how to authenticate, how long to wait, where results go."""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import FloatProperty, StringProperty


class PLA4D_Preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    server: StringProperty(
        name="Backend Address",
        default="tcp://127.0.0.1:5555",
        description="ZeroMQ address of pla4d-backend: tcp://HOST:PORT (a remote one needs online access allowed)",
    )
    secret: StringProperty(
        name="Auth Key",
        subtype="PASSWORD",
        description="Shared secret (HMAC key) of a backend started with --secret-file; at least 16 characters",
    )
    secret_file: StringProperty(
        name="Auth Key File", subtype="FILE_PATH", description="Read the shared secret from this file instead"
    )
    curve_server_key: StringProperty(
        name="CurveZMQ Server Key",
        description="The backend's public Curve key (server.key from pla4d-backend keygen) to encrypt the connection",
    )
    timeout: FloatProperty(
        name="Request Timeout", default=10.0, min=0.5, max=600.0, unit="TIME_ABSOLUTE",
        description="Seconds to wait for the backend's answer to one request",
    )  # fmt: skip
    stall_timeout: FloatProperty(
        name="Silence Timeout", default=600.0, min=5.0, max=86400.0, unit="TIME_ABSOLUTE",
        description="Seconds without any event from a running job before the backend is checked again",
    )  # fmt: skip
    download_dir: StringProperty(
        name="Downloads", subtype="DIR_PATH",
        description="Where job results are stored (empty: the extension's user folder)",
    )  # fmt: skip

    def draw(self, context: Any) -> None:
        layout = self.layout
        col = layout.column()
        col.prop(self, "server")
        col.prop(self, "secret")
        col.prop(self, "secret_file")
        col.prop(self, "curve_server_key")
        row = col.row()
        row.prop(self, "timeout")
        row.prop(self, "stall_timeout")
        col.prop(self, "download_dir")
        if not getattr(bpy.app, "online_access", True):
            col.label(text="Online access is off: only a backend on this computer can be used", icon="INFO")
        row = layout.row()
        row.operator("pla4d.test_connection", icon="LINKED")
        scene = context.scene
        if scene is not None and hasattr(scene, "pla4d"):
            sp = scene.pla4d
            if sp.server_info:
                for line in sp.server_info.split("; "):
                    layout.label(text=line)
            if sp.status:
                icon = {"ERROR": "ERROR", "WARNING": "ERROR"}.get(sp.status_level, "INFO")
                layout.label(text=sp.status, icon=icon)


CLASSES = (PLA4D_Preferences,)
