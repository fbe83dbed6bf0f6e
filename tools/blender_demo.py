"""The demo's Blender half (run with bpy's Python, see the README): install the built add-on, import the demo's
4D asset, bake it into a .blend and render a turntable frame with Cycles on the CPU.

    .venv-bpy/bin/python tools/blender_demo.py --asset out/demo/run/asset --out out/demo

Writes ``OUT/demo.blend`` (the baked Gaussians on the timeline, a camera orbiting once over the frame range:
open it in Blender 4.2+ and press play; no add-on or backend needed) and ``OUT/turntable.png``. The add-on is
installed into a private Blender user folder (``OUT/blender-user``), never into your own Blender.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asset", default="out/demo/run/asset", help="the 4D asset folder (pla4d demo writes it)")
    parser.add_argument("--out", default="out/demo", help="where demo.blend and turntable.png go")
    parser.add_argument("--size", type=int, default=384, help="render size in pixels (square)")
    parser.add_argument("--samples", type=int, default=32, help="Cycles samples")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    asset = Path(args.asset).resolve()
    if not (asset / "asset.json").is_file():
        print(f"blender_demo: no 4D asset at {asset}; run `pla4d demo --out {args.out}` first", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    os.environ["BLENDER_USER_RESOURCES"] = str(out / "blender-user")
    sys.path.insert(0, str(ROOT))
    import build_addon

    zip_path = build_addon.build(out / "addon")
    import bpy

    result = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                      enable_on_install=True)  # fmt: skip
    if result != {"FINISHED"}:
        print(f"blender_demo: installing {zip_path} failed", file=sys.stderr)
        return 1
    addon = importlib.import_module("bl_ext.user_default.pla4d")
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start = 1
    (obj,) = addon.importer.import_asset(bpy.context, str(asset), "GAUSSIANS")
    frames = addon.playback.bake(obj)
    # A turntable: the camera rides an empty that turns once over the frame range.
    pivot = bpy.data.objects.new("turntable", None)
    scene.collection.objects.link(pivot)
    cam = bpy.data.cameras.new("camera")
    cam.lens = 50.0
    camera = bpy.data.objects.new("camera", cam)
    scene.collection.objects.link(camera)
    camera.parent = pivot
    elevation = math.radians(15.0)
    camera.location = (0.0, -3.2 * math.cos(elevation), 3.2 * math.sin(elevation))  # Blender's Front view
    camera.rotation_euler = (math.pi / 2 - elevation, 0.0, 0.0)
    scene.camera = camera
    pivot.rotation_euler = (0.0, 0.0, 0.0)
    pivot.keyframe_insert("rotation_euler", index=2, frame=scene.frame_start)
    pivot.rotation_euler = (0.0, 0.0, 2 * math.pi)
    pivot.keyframe_insert("rotation_euler", index=2, frame=scene.frame_end + 1)
    for curve in _fcurves(pivot):
        for point in curve.keyframe_points:
            point.interpolation = "LINEAR"
    world = bpy.data.worlds.new("white")
    world.color = (1.0, 1.0, 1.0)
    background = world.node_tree.nodes.get("Background") if world.node_tree else None
    if background is not None:  # Blender 5.0 gives new worlds a node tree
        background.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    scene.world = world
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = args.samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = args.size
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    blend = out / "demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    frame = scene.frame_start + (scene.frame_end - scene.frame_start) // 3
    scene.frame_set(frame)
    scene.render.filepath = str(out / "turntable.png")
    start = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    print(f"{blend} ({frames} baked frames), {out / 'turntable.png'} (frame {frame}, "
          f"{time.perf_counter() - start:.1f} s)")  # fmt: skip
    return 0


def _fcurves(obj):  # noqa: ANN001, ANN202
    """The object's F-curves (Blender 5.0 keeps them in layered actions, 4.x on the action)."""
    action = obj.animation_data.action
    if hasattr(action, "fcurves") and len(action.fcurves):
        return list(action.fcurves)
    curves = []
    for layer in getattr(action, "layers", []):
        for strip in layer.strips:
            for bag in strip.channelbags:
                curves.extend(bag.fcurves)
    return curves


if __name__ == "__main__":
    sys.exit(main())
