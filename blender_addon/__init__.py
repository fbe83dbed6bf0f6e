"""pla4d Blender extension (bpy only; never imports torch).

This package holds the extension's manifest and registration. The panel, the backend client and the
importers arrive with the Blender add-on issue; until then it registers nothing.
"""


def register() -> None:
    pass


def unregister() -> None:
    pass
