"""Renders of imported splats (256 x 256, CPU) from the cameras the engine rendered (PLA4D_RENDER_DIR), at each
of the asset's frames, in the engines PLA4D_RENDER_ENGINES names (CYCLES, EEVEE); the outer test scores them
against the engine's renders (PSNR, LPIPS on white). Written as ``{engine}_c{camera}_f{frame}.png``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import bpy
import mathutils
from conftest import to_blender


def setup_camera(scene, eye: list[float], focal_px: float, size: int) -> None:
    """The engine's orbit camera in Blender: eye converted to Blender axes, looking at the origin, +Z up."""
    import numpy as np

    eye = mathutils.Vector(to_blender(np.array([eye]))[0].tolist())
    obj = scene.camera
    if obj is None:
        cam = bpy.data.cameras.new("engine camera")
        obj = bpy.data.objects.new("engine camera", cam)
        scene.collection.objects.link(obj)
        scene.camera = obj
    cam = obj.data
    cam.sensor_fit = "HORIZONTAL"
    cam.sensor_width = 36.0
    cam.lens = focal_px * 36.0 / size
    obj.location = eye
    obj.rotation_euler = (-eye).to_track_quat("-Z", "Y").to_euler()


def setup_render(scene, engine: str, size: int) -> None:
    """CPU renders, ``PLA4D_PIXEL_FILTER`` px wide box pixel filter (the engine samples pixel centres only)."""
    width = float(os.environ.get("PLA4D_PIXEL_FILTER", "1.0"))
    if engine == "CYCLES":
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = 32
        scene.cycles.use_denoising = False
        scene.cycles.pixel_filter_type = "BOX"
        scene.cycles.filter_width = width
    else:
        names = bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items.keys()
        scene.render.engine = "BLENDER_EEVEE_NEXT" if "BLENDER_EEVEE_NEXT" in names else "BLENDER_EEVEE"
        scene.eevee.taa_render_samples = 32
        scene.render.filter_size = width
        # No lamp lights these scenes, so shadows change no pixel (checked: bit-identical at 64 px), but EEVEE
        # re-renders every transparent-shadow caster's shadow pages each sample in a final render (6000 splats:
        # ~25 s a sample at 64 px on llvmpipe, 0.5 s without). The lit scene turns them back on.
        scene.eevee.use_shadows = False
    scene.render.threads_mode = "FIXED"
    scene.render.threads = 2
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"


def test_render_views(addon):
    folder = Path(os.environ["PLA4D_RENDER_DIR"])
    engines = os.environ.get("PLA4D_RENDER_ENGINES", "CYCLES").split(",")
    described = json.loads((folder / "cameras.json").read_text())
    scene = bpy.context.scene
    scene.frame_start = 1
    assert bpy.ops.pla4d.import_asset(directory=str(folder / "creature")) == {"FINISHED"}
    assert scene.view_settings.view_transform == "Standard"  # set by the import: splat colours are display colours
    seconds = {}
    for engine in engines:
        setup_render(scene, engine, described["size"])
        start = time.perf_counter()
        for c, camera in enumerate(described["cameras"]):
            setup_camera(scene, camera["eye"], described["focal_px"], described["size"])
            for t in range(described["frames"]):
                scene.frame_set(scene.frame_start + t)
                out = folder / f"{engine.lower()}_c{c}_f{t}.png"
                scene.render.filepath = str(out)
                bpy.ops.render.render(write_still=True)
                assert out.is_file()
        seconds[engine] = round(time.perf_counter() - start, 1)
    (folder / "render_seconds.json").write_text(json.dumps(seconds))


def _lit_scene(scene, engine: str):
    """The imported creature on a floor under a sun, seen from straight above by an orthographic camera (4 x 4
    units, 96 px): world (x, y) is pixel ((x / 4 + 0.5) * 96, (0.5 - y / 4) * 96)."""
    import numpy as np

    setup_render(scene, engine, 96)
    scene.render.film_transparent = False
    if engine == "CYCLES":
        scene.cycles.samples = 16
    else:
        scene.eevee.use_shadows = True
        # Transparent shadows re-render all 6000 casters every sample (~25 s a sample on llvmpipe): 4 samples.
        scene.eevee.taa_render_samples = 4
    world = bpy.data.worlds.new("dim")
    world.color = (0.05, 0.05, 0.05)
    if world.node_tree is not None and world.node_tree.nodes.get("Background") is not None:
        world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.05, 0.05, 0.05, 1.0)
    scene.world = world
    obj = next(o for o in scene.objects if o.pla4d.kind == "GAUSSIANS")
    z = obj.data.attributes["position"]
    pts = np.empty(len(z.data) * 3, np.float32)
    z.data.foreach_get("vector", pts)
    floor_z = float(pts.reshape(-1, 3)[:, 2].min())
    bpy.ops.mesh.primitive_plane_add(size=4.0, location=(0.0, 0.0, floor_z))
    sun_data = bpy.data.lights.new("sun", "SUN")
    sun_data.energy = 3.0
    sun_data.angle = 0.05
    sun = bpy.data.objects.new("sun", sun_data)
    scene.collection.objects.link(sun)
    cam = bpy.data.cameras.new("top")
    cam.type = "ORTHO"
    cam.ortho_scale = 4.0
    top = bpy.data.objects.new("top", cam)
    scene.collection.objects.link(top)
    top.location = (0.0, 0.0, 5.0)
    scene.camera = top
    return obj, sun, floor_z


def _render_array(scene, path: Path):
    import numpy as np

    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    pixels = np.array(image.pixels[:], dtype=np.float32).reshape(image.size[1], image.size[0], 4)[::-1, :, :3]
    bpy.data.images.remove(image)
    return pixels.mean(axis=-1)  # rows top to bottom


def test_lit_splats_cast_shadows_and_follow_the_lamp(addon):
    """Lit splats: the floor is darker under the creature (in the sun's shadow) than on the other side, and
    turning the sun changes the creature's shading; the emission look (the default) ignores the sun."""
    import math

    import numpy as np

    folder = Path(os.environ["PLA4D_RENDER_DIR"])
    engine = os.environ.get("PLA4D_RENDER_ENGINES", "CYCLES").split(",")[0]
    scene = bpy.context.scene
    scene.frame_start = 1
    assert bpy.ops.pla4d.import_asset(directory=str(folder / "creature")) == {"FINISHED"}
    obj, sun, floor_z = _lit_scene(scene, engine)
    assert obj.pla4d.shading == "EMISSION"  # the default look
    obj.pla4d.shading = "LIT"
    height = -floor_z  # the creature's centre is at the origin
    tilt = math.radians(45.0)

    def pixel(x: float, y: float) -> tuple[int, int]:
        return int((0.5 - y / 4) * 96), int((x / 4 + 0.5) * 96)

    def patch(img, x: float, y: float) -> float:
        r, c = pixel(x, y)
        return float(img[r - 2 : r + 3, c - 2 : c + 3].mean())

    def creature(img) -> float:
        r, c = pixel(0.0, 0.0)
        return img[r - 4 : r + 5, c - 4 : c + 5]

    sun.rotation_euler = (0.0, tilt, 0.0)  # light from +X: the shadow of the centre falls at x = -height
    lit_a = _render_array(scene, folder / f"lit_{engine.lower()}_a.png")
    shadow, beside = patch(lit_a, -height, 0.0), patch(lit_a, height, 0.0)
    assert shadow < 0.7 * beside, (shadow, beside)
    sun.rotation_euler = (0.0, -tilt, 0.0)  # light from -X now
    lit_b = _render_array(scene, folder / f"lit_{engine.lower()}_b.png")
    assert patch(lit_b, height, 0.0) < 0.7 * patch(lit_b, -height, 0.0)  # the shadow moved with the lamp
    lit_change = float(np.abs(creature(lit_a) - creature(lit_b)).mean())
    obj.pla4d.shading = "EMISSION"
    emit_b = _render_array(scene, folder / f"emission_{engine.lower()}_b.png")
    sun.rotation_euler = (0.0, tilt, 0.0)
    emit_a = _render_array(scene, folder / f"emission_{engine.lower()}_a.png")
    emit_change = float(np.abs(creature(emit_a) - creature(emit_b)).mean())
    assert lit_change > 0.05 and lit_change > 5 * emit_change, (lit_change, emit_change)
