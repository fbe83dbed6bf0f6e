"""Properties: per object (what a pla4d object is and where its frames come from), per scene (the panel's
settings, the job list and the progress of the job being followed).

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
    from . import splats

    obj = self.id_data
    if isinstance(obj, bpy.types.Object):
        splats.set_start_frame(obj)


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
    seed: IntProperty(name="Seed", default=0, min=0, max=2**31 - 1)
    preset: EnumProperty(name="Preset", items=_presets, description="Quality preset (the backend's list)")
    frames: IntProperty(name="Frames", default=8, min=1, max=64, description="Frame count of the clip")
    fps: FloatProperty(name="FPS", default=16.0, min=1.0, max=240.0, description="Playback rate of the result")
    example_resolution: IntProperty(name="Resolution", default=128, min=16, max=512, description="Example clip size")
    video_path: StringProperty(name="Frames", subtype="FILE_PATH", description="Folder or .zip of RGBA PNG frames")
    mesh_path: StringProperty(name="Mesh", subtype="FILE_PATH", description="Frame 1's mesh (.glb .obj .ply ...)")
    overrides: StringProperty(
        name="Overrides",
        description='Advanced: backend setting overrides as JSON, e.g. {"iterations": 500}',
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


CLASSES = (PLA4D_ObjectProps, PLA4D_Job, PLA4D_SceneProps)


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
