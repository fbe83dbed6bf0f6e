"""Properties: per object (what a pla4d object is and where its frames come from), per scene (the panel's
choices, the job settings drawn from the backend's table, the job list and the progress of the job being
followed).

Both are saved in the .blend, so a reopened file knows its objects' assets and the jobs it submitted."""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .nodes import DEFAULT_SMOOTHING

DEFAULT_PRESETS = ("draft", "standard", "paper")
_preset_items: list[tuple[str, str, str]] = [(p, p.title(), f"The backend's {p} preset") for p in DEFAULT_PRESETS]


def set_presets(names: list[str]) -> None:
    """Replace the preset choices with the backend's (from its ``hello`` reply)."""
    global _preset_items
    if names:
        _preset_items = [(p, p.title(), f"The backend's {p} preset") for p in names]


def _presets(_self: Any, _context: Any) -> list[tuple[str, str, str]]:
    return _preset_items


def _start_changed(self: Any, _context: Any) -> None:
    from . import playback

    obj = self.id_data
    if isinstance(obj, bpy.types.Object):
        playback.set_start_frame(obj)


def _look_changed(self: Any, _context: Any) -> None:
    from . import nodes

    obj = self.id_data
    if isinstance(obj, bpy.types.Object):
        nodes.sync_splat_look(obj)


def _preset_changed(self: Any, _context: Any) -> None:
    from . import panel_settings

    panel_settings.preset_changed(self.id_data)


def _knob_edited(self: Any, _context: Any) -> None:
    from . import panel_settings

    panel_settings.value_edited(self)


def _knob_toggled(self: Any, _context: Any) -> None:
    from . import panel_settings

    panel_settings.changed_toggled(self)


class PLA4D_ObjectProps(bpy.types.PropertyGroup):
    kind: EnumProperty(
        name="Kind",
        items=[
            ("NONE", "None", "Not a pla4d object"),
            ("GAUSSIANS", "Gaussians", "Animated Gaussian splats"),
            ("MESH", "Mesh", "The asset's animated mesh"),
            ("PREVIEW", "Preview", "Live preview points of a training job"),
        ],
        default="NONE",
    )
    asset_path: StringProperty(name="Asset", subtype="DIR_PATH", description="The 4D asset folder this plays")
    start_frame: IntProperty(
        name="Start Frame", default=1, description="Scene frame of the asset's first frame", update=_start_changed
    )
    frame_count: IntProperty(name="Frames", default=1, min=1)
    animated: StringProperty(name="Animated", description="Animated attributes (comma separated)")
    baked: BoolProperty(name="Baked", description="Frames are stored in the .blend (no asset folder needed)")
    job_id: StringProperty(name="Job")
    smoothing: FloatProperty(
        name="Smoothing", default=DEFAULT_SMOOTHING, min=0.0, max=1.0, precision=5, step=0.01,
        description="3D smoothing filter (asset units): every Gaussian's sigma becomes sqrt(sigma^2 + s^2), the "
        "engine's 0.3 px screen-space dilation at its training view. 0 draws the raw Gaussians (thin ones as needles)",
        update=_look_changed,
    )  # fmt: skip
    shading: EnumProperty(
        name="Shading",
        items=[
            ("EMISSION", "Emission", "The splats' colours as they are (the video's look); scene lights do not act"),
            ("LIT", "Lit", "A surface per splat (normal along its shortest axis): lights shade it, shadows fall"),
        ],
        default="EMISSION",
        update=_look_changed,
    )


class PLA4D_Job(bpy.types.PropertyGroup):
    job_id: StringProperty(name="Job")
    kind: StringProperty(name="Kind")
    state: StringProperty(name="State", default="queued")
    stage: StringProperty(name="Stage")
    label: StringProperty(name="Label", description="The prompt or what was submitted")
    message: StringProperty(name="Message")
    local_path: StringProperty(name="Downloaded to", subtype="DIR_PATH")
    created: FloatProperty(name="Created")
    last_seq: IntProperty(name="Last event", default=0)


class PLA4D_Knob(bpy.types.PropertyGroup):
    """One job setting from the backend's settings table; ``name`` is its path (``motion.iterations``)."""

    row: StringProperty(name="Row", description="The table row this knob was made from (JSON)")
    label: StringProperty(name="Label")
    type: StringProperty(name="Type", description="int, float, bool, str, ints or floats")
    help: StringProperty(name="Help")
    kinds: StringProperty(name="Kinds", description="Job kinds that read it (comma separated)")
    min: FloatProperty(name="Min")
    max: FloatProperty(name="Max")
    has_min: BoolProperty(name="Has Min")
    has_max: BoolProperty(name="Has Max")
    has_default: BoolProperty(name="Has Default", description="The preset gives it a value (else the backend decides)")
    changed: BoolProperty(name="Changed", description="Send this value (else the preset's default is used)",
                          update=_knob_toggled)  # fmt: skip
    int_value: IntProperty(name="Value", update=_knob_edited)
    float_value: FloatProperty(name="Value", update=_knob_edited)
    bool_value: BoolProperty(name="Value", update=_knob_edited)
    text_value: StringProperty(name="Value", description="Text, or a comma-separated list", update=_knob_edited)
    error: StringProperty(name="Error", description="Why the value is refused (empty: it is fine)")


class PLA4D_SceneProps(bpy.types.PropertyGroup):
    source: EnumProperty(
        name="Source",
        items=[
            ("TEXT", "Text prompt", "Text-to-4D from the prompt"),
            ("EXAMPLE", "Built-in example", "The backend's built-in animated example (video-to-4D)"),
            ("VIDEO", "Video frames + mesh", "Your own clip: a folder (or .zip) of RGBA PNG frames and frame 1's mesh"),
        ],
        default="TEXT",
    )
    prompt: StringProperty(name="Prompt", description="What to generate", default="")
    preset: EnumProperty(name="Preset", items=_presets, description="Quality preset (the backend's list)",
                         update=_preset_changed)  # fmt: skip
    video_path: StringProperty(name="Frames", subtype="FILE_PATH", description="Folder or .zip of RGBA PNG frames")
    mesh_path: StringProperty(name="Mesh", subtype="FILE_PATH", description="Frame 1's mesh (.glb .obj .ply ...)")
    knobs: CollectionProperty(type=PLA4D_Knob, description="Job settings from the backend's settings table")
    settings_source: EnumProperty(
        name="Settings from",
        items=[
            ("NONE", "Not connected", "No settings table yet: Test Connection loads the backend's"),
            ("TABLE", "Backend table", "The knobs come from the backend's settings table"),
            ("OLD_SERVER", "Too old", "The backend sends no settings table: jobs use the preset's defaults"),
        ],
        default="NONE",
    )
    import_as: EnumProperty(
        name="Import as",
        items=[
            ("GAUSSIANS", "Gaussians", "Animated Gaussian splats"),
            ("MESH", "Mesh", "The animated mesh"),
            ("BOTH", "Both", "Gaussians and the animated mesh"),
        ],
        default="GAUSSIANS",
    )
    auto_import: BoolProperty(name="Import when done", default=True)
    live_preview: BoolProperty(name="Live preview", default=True, description="Show the points while training")
    # The followed job's progress.
    active_job: StringProperty(name="Active job")
    progress: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")
    progress_text: StringProperty(name="Progress text")
    status: StringProperty(name="Status")
    status_level: EnumProperty(
        items=[("INFO", "Info", ""), ("WARNING", "Warning", ""), ("ERROR", "Error", "")], default="INFO"
    )
    server_info: StringProperty(name="Server")
    jobs: CollectionProperty(type=PLA4D_Job)
    jobs_index: IntProperty(default=0)


CLASSES = (PLA4D_ObjectProps, PLA4D_Job, PLA4D_Knob, PLA4D_SceneProps)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Object.pla4d = PointerProperty(type=PLA4D_ObjectProps)
    bpy.types.Scene.pla4d = PointerProperty(type=PLA4D_SceneProps)


def unregister() -> None:
    del bpy.types.Scene.pla4d
    del bpy.types.Object.pla4d
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
