"""Inside Blender: a rigged asset imports as an Armature with its Action, a skinned mesh and splats bound to the
armature; every frame plays the rig's positions (and the splats' rotations); posing one bone by hand moves only what
it carries; the frame-change time of 100k rigged splats. Assets from tests/addon/test_blender_rig.py."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import bpy
import numpy as np
import pytest
from conftest import PACKAGE, positions, pxr_path

RIGS = Path(os.environ.get("PLA4D_RIG_DIR", "/nonexistent"))


@pytest.fixture
def rig_import(addon):
    import importlib

    return importlib.import_module(f"{PACKAGE}.rig_import"), importlib.import_module(f"{PACKAGE}.asset_io")


def _evaluated(obj, hide: tuple[str, ...] = ()):
    """World positions (and splat rotations) of ``obj`` as evaluated, with the ``hide`` modifiers off: a mesh's
    vertices, or the rigged splats' points before the instancer."""
    for name in hide:
        obj.modifiers[name].show_viewport = False
    depsgraph = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(depsgraph)
    data = ev.data if obj.type == "POINTCLOUD" else ev.to_mesh()
    pts = positions(data)
    rot = None
    if "splat_rotation" in data.attributes and len(data.attributes["splat_rotation"].data) == len(pts):
        rot = np.empty(len(pts) * 4, np.float32)
        data.attributes["splat_rotation"].data.foreach_get("value", rot)
        rot = rot.reshape(-1, 4)
    if obj.type != "POINTCLOUD":
        ev.to_mesh_clear()
    for name in hide:
        obj.modifiers[name].show_viewport = True
    world = np.array(obj.matrix_world)
    return pts @ world[:3, :3].T + world[:3, 3], rot


def _same_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (degrees) between quaternion rows (q and -q are one rotation)."""
    a = a / np.linalg.norm(a.astype(np.float64), axis=1, keepdims=True)
    b = b / np.linalg.norm(b.astype(np.float64), axis=1, keepdims=True)
    return np.degrees(2 * np.arccos(np.clip(np.abs((a * b).sum(1)), 0, 1)))


@pytest.mark.parametrize("name", ["bar", "fold"])
def test_action_plays_the_rig_on_mesh_and_splats(rig_import, name):
    """``fold``: bones turned far apart (quaternions in opposite hemispheres), the rotation blend's flipped branch."""
    module, asset_io = rig_import
    expected = dict(np.load(RIGS / f"{name}.npz"))
    scene = bpy.context.scene
    armature, splats, mesh = module.import_rig(bpy.context, str(RIGS / name))
    assert armature.type == "ARMATURE" and [b.name for b in armature.data.bones] == [
        "bone_00_root",
        "bone_01_mid_centre.L",
    ]
    assert armature.animation_data.action is not None
    frames = expected["positions"].shape[0]
    assert scene.frame_end == scene.frame_start + frames - 1
    for t in range(frames):
        scene.frame_set(scene.frame_start + t)
        got, _ = _evaluated(mesh)
        assert np.abs(got - asset_io.positions_to_blender(expected["mesh_positions"][t])).max() < 1e-4, t
        centres, rot = _evaluated(splats, hide=("pla4d Splats",))
        assert np.abs(centres - asset_io.positions_to_blender(expected["positions"][t])).max() < 1e-4, t
        assert len(centres) == len(expected["positions"][t]) and rot is not None
        want = asset_io.rotations_to_blender(expected["rotations"][t])
        # The engine's blended rotation (pla4d.rig.skinning.blend_rotations) is what the add-on's skinning gives.
        angle = _same_rotation(rot, want)
        assert angle.max() < 0.05, (t, angle.max())


def test_posing_one_bone_moves_only_the_splats_it_carries(rig_import):
    module, _ = rig_import
    expected = dict(np.load(RIGS / "bar.npz"))
    armature, splats, _mesh = module.import_rig(bpy.context, str(RIGS / "bar"))
    armature.animation_data.action = None
    for pb in armature.pose.bones:
        pb.location, pb.rotation_quaternion = (0, 0, 0), (1, 0, 0, 0)
    bpy.context.view_layer.update()
    before, _ = _evaluated(splats, hide=("pla4d Splats",))
    child = armature.pose.bones["bone_01_mid_centre.L"]
    child.rotation_quaternion = (math.cos(math.pi / 8), 0.0, 0.0, math.sin(math.pi / 8))  # 45 degrees
    bpy.context.view_layer.update()
    after, _ = _evaluated(splats, hide=("pla4d Splats",))
    moved = np.linalg.norm(after - before, axis=1)
    carried = expected["child_weight"] > 0
    assert moved[~carried].max() < 1e-6 and moved[expected["child_weight"] > 0.5].min() > 1e-3


def test_frame_change_of_100k_rigged_splats(rig_import):
    module, asset_io = rig_import
    import importlib

    rig_playback = importlib.import_module(f"{PACKAGE}.rig_playback")
    expected = dict(np.load(RIGS / "big.npz"))
    scene = bpy.context.scene
    objs = module.import_rig(bpy.context, str(RIGS / "big"), verify=False)
    splats = objs[1]
    assert splats.type == "POINTCLOUD" and len(splats.data.points) == 100_000
    frames = list(range(scene.frame_start, scene.frame_end + 1))
    for t in (1, len(frames) - 1):  # bones turning about x, y and z: the rotations' axes convention shows
        scene.frame_set(frames[t])
        centres, rot = _evaluated(splats, hide=("pla4d Splats",))
        assert np.abs(centres - asset_io.positions_to_blender(expected["positions"][t])).max() < 1e-4, t
        angle = _same_rotation(rot, asset_io.rotations_to_blender(expected["rotations"][t]))
        assert angle.max() < 0.05, (t, angle.max())
    scene.frame_set(frames[-1])
    times, handler = [], []
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for _ in range(2):
        for f in frames:
            start = time.perf_counter()
            scene.frame_set(f)
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
            assert rig_playback.skin_object(splats, depsgraph, force=True)  # the handler's work at this pose
            handler.append(time.perf_counter() - start)
    ms = 1000 * float(np.median(times))
    (RIGS / "timing.json").write_text(
        json.dumps(
            {"splats": 100_000, "frame_change_ms": round(ms, 2), "handler_ms": round(1000 * np.median(handler), 2),
             "frames": len(times), "threads": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)}
        )
    )  # fmt: skip
    assert ms < 2000


def test_baked_rigged_splats_play_without_the_addon(addon, rig_import):
    """Bake stores the rig's frames in the .blend; with the add-on off (no handler) they still play."""
    import addon_utils

    module, asset_io = rig_import
    expected = dict(np.load(RIGS / "bar.npz"))
    scene = bpy.context.scene
    _armature, splats, _mesh = module.import_rig(bpy.context, str(RIGS / "bar"))
    with bpy.context.temp_override(selected_objects=[splats], active_object=splats):
        assert bpy.ops.pla4d.bake() == {"FINISHED"}
    assert splats.pla4d.baked
    name = splats.name
    addon_utils.disable(addon.__name__, default_set=True)
    try:
        for t in (1, 3, 4):
            scene.frame_set(scene.frame_start + t)
            centres, rot = _evaluated(bpy.data.objects[name], hide=("pla4d Splats",))
            assert np.abs(centres - asset_io.positions_to_blender(expected["positions"][t])).max() < 1e-4, t
            angle = _same_rotation(rot, asset_io.rotations_to_blender(expected["rotations"][t]))
            assert angle.max() < 0.05, (t, angle.max())
    finally:
        addon_utils.enable(addon.__name__, default_set=True)


def test_unbaked_rigged_splats_export_what_the_armature_poses(addon, rig_import, tmp_path):
    """Re-keyed by hand (the child bone turning the other way, to -60 degrees), the splats' PLY sequence, KHR glTF
    morph targets and USD point cache hold the re-keyed pose at every frame, not the asset's motion; the scene's
    frame is kept."""
    import importlib
    import sys

    module, asset_io = rig_import
    expected = dict(np.load(RIGS / "bar.npz"))
    scene = bpy.context.scene
    armature, splats, _mesh = module.import_rig(bpy.context, str(RIGS / "bar"))
    frames = expected["positions"].shape[0]
    child = armature.pose.bones["bone_01_mid_centre.L"]
    for t in range(frames):
        half = -math.radians(30) * t / (frames - 1)
        child.rotation_quaternion = (math.cos(half), 0.0, 0.0, math.sin(half))
        child.keyframe_insert("rotation_quaternion", frame=scene.frame_start + t)
    posed, posed_rot = [], []
    for t in range(frames):
        scene.frame_set(scene.frame_start + t)
        centres, rot = _evaluated(splats, hide=("pla4d Splats",))
        posed.append(centres)
        posed_rot.append(rot)
    # Not the asset's own motion: the child turned to +90 degrees there.
    assert np.abs(posed[-1] - asset_io.positions_to_blender(expected["positions"][-1])).max() > 0.5
    scene.frame_set(scene.frame_start + 1)
    out = tmp_path / "plys"
    with bpy.context.temp_override(selected_objects=[splats], active_object=splats):
        assert bpy.ops.pla4d.export_ply(directory=str(out)) == {"FINISHED"}
        assert bpy.ops.pla4d.export_splats(filepath=str(tmp_path / "rig.glb"), format="KHR_GLB") == {"FINISHED"}
    assert scene.frame_current == scene.frame_start + 1
    files = sorted(out.glob("frame_*.ply"))
    assert len(files) == frames
    for t, file in enumerate(files):
        ply = addon.asset_io.read_gaussian_ply(file)
        assert np.abs(asset_io.positions_to_blender(ply["positions"]) - posed[t]).max() < 1e-4, t
        assert _same_rotation(asset_io.rotations_to_blender(ply["rotations"]), posed_rot[t]).max() < 0.05, t
    khr = importlib.import_module(f"{PACKAGE}.pla4d_formats.khr_gltf").read_khr_gltf(tmp_path / "rig.glb")
    assert khr.frame_count == frames
    for t in range(frames):
        assert np.abs(asset_io.positions_to_blender(khr.arrays["positions"][t]) - posed[t]).max() < 1e-4, t
    if bpy.app.version < (4, 5, 0):  # 4.2's USD exporter writes no point clouds (the export refuses)
        return
    with bpy.context.temp_override(selected_objects=[splats], active_object=splats):
        assert bpy.ops.pla4d.export_usd(filepath=str(tmp_path / "rig.usdc")) == {"FINISHED"}
    sys.path.append(pxr_path())
    from pxr import Usd, UsdGeom

    stage = Usd.Stage.Open(str(tmp_path / "rig.usdc"))
    (prim,) = [p for p in stage.Traverse() if p.GetTypeName() == "Points"]
    attr = UsdGeom.Points(prim).GetPointsAttr()
    for t in range(frames):
        assert np.abs(np.array(attr.Get(float(scene.frame_start + t))) - posed[t]).max() < 1e-4, t


def test_export_rig_as_gltf_and_fbx_and_blender_reads_the_gltf_back(rig_import, tmp_path):
    module, _ = rig_import
    armature, splats, _mesh = module.import_rig(bpy.context, str(RIGS / "bar"))
    glb = module.export_rig(bpy.context, armature, str(tmp_path / "rig.glb"), "GLTF")
    fbx = module.export_rig(bpy.context, armature, str(tmp_path / "rig.fbx"), "FBX")
    assert Path(glb).stat().st_size > 1000 and Path(fbx).stat().st_size > 1000
    assert module.rig_armature(splats) == armature and module.rig_armature(_mesh) == armature  # either selected
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.import_scene.gltf(filepath=glb) == {"FINISHED"}
    arms = [o for o in bpy.data.objects if o.type == "ARMATURE"]
    assert len(arms) == 1 and len(arms[0].data.bones) == 2 and bpy.data.actions
    assert not [o for o in bpy.data.objects if o.type == "MESH" and len(o.data.vertices) == 3 * 400]  # no helpers


def test_blender_gltf_importer_plays_the_engines_rigged_glb():
    """exports/rigged.glb (pla4d.asset.rig_gltf) through Blender's own importer: every frame's vertices exact."""
    expected = np.load(RIGS / "bar.npz")["mesh_positions"]  # (T, V, 3), +Y up
    scene = bpy.context.scene
    scene.render.fps = 8  # the GLB's rate: keyframe k (time k / 8 s) lands on scene frame k
    assert bpy.ops.import_scene.gltf(filepath=str(RIGS / "bar_rigged.glb")) == {"FINISHED"}
    assert any(o.type == "ARMATURE" for o in scene.objects)
    obj = next(o for o in scene.objects if o.type == "MESH")
    to_blender = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float64)
    for frame in range(len(expected)):
        scene.frame_set(frame)
        got, _ = _evaluated(obj)
        assert got.shape == expected[frame].shape
        assert np.abs(got - expected[frame] @ to_blender.T).max() < 1e-4, frame
