"""Add-on preferences: where the backend is, how to authenticate, how long to wait, where results go; and the
thread-safe snapshot of them that the network tasks get (:func:`settings_from_prefs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy
from bpy.props import FloatProperty, StringProperty

from . import jobs


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


def preferences(context: Any = None) -> Any:
    """The add-on's preferences, or None when it is not enabled as an add-on."""
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
