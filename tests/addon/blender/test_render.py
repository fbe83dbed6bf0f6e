"""A Cycles CPU render (256 x 256) of imported splats, from the camera the engine rendered (PLA4D_RENDER_DIR);
the outer test compares it with the engine's render (mask IoU, mean colour)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import bpy
import mathutils
from conftest import to_blender


def setup_camera(scene, camera: dict) -> None:
    """The engine's orbit camera in Blender: eye converted to Blender axes, looking at the origin, +Z up."""
    import numpy as np

    eye = mathutils.Vector(to_blender(np.array([camera["eye"]]))[0].tolist())
    cam = bpy.data.cameras.new("engine camera")
    cam.sensor_fit = "HORIZONTAL"
    cam.sensor_width = 36.0
    cam.lens = camera["focal_px"] * 36.0 / camera["size"]
    obj = bpy.data.objects.new("engine camera", cam)
    scene.collection.objects.link(obj)
    obj.location = eye
    obj.rotation_euler = (-eye).to_track_quat("-Z", "Y").to_euler()
    scene.camera = obj


def test_cycles_render(addon):
    folder = Path(os.environ["PLA4D_RENDER_DIR"])
    camera = json.loads((folder / "camera.json").read_text())
    scene = bpy.context.scene
    scene.frame_start = 1
    assert bpy.ops.pla4d.import_asset(directory=str(folder / "creature")) == {"FINISHED"}
    setup_camera(scene, camera)
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 32
    scene.cycles.use_denoising = False
    scene.render.threads_mode = "FIXED"
    scene.render.threads = 2
    scene.render.resolution_x = scene.render.resolution_y = camera["size"]
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    assert scene.view_settings.view_transform == "Standard"  # set by the import: splat colours are display colours
    scene.frame_set(1)
    out = folder / "cycles.png"
    scene.render.filepath = str(out)
    start = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    (folder / "cycles_seconds.txt").write_text(f"{time.perf_counter() - start:.2f}")
    assert out.is_file()
