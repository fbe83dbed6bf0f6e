"""Bake into the .blend (plays after save + reopen with the asset folder gone), USD point cache, PLY sequence."""

from __future__ import annotations

import shutil
import sys

import bpy
import numpy as np
import pytest
from conftest import attribute, instance_scales, positions, pxr_path, quat_to_blender, same_rotation, to_blender


def _evaluated(obj):
    """The object's geometry after the pla4d Frames nodes (the splat instancing switched off to read points)."""
    splats = obj.modifiers.get("pla4d Splats")
    if splats is not None:
        splats.show_viewport = False
    depsgraph = bpy.context.evaluated_depsgraph_get()
    return obj.evaluated_get(depsgraph).data


def _copy(blob, tmp_path):
    path, expected = blob
    copy = tmp_path / "asset"
    shutil.copytree(path, copy)
    return copy, expected


def test_bake_save_reopen_without_asset(addon, blob, tmp_path):
    asset, expected = _copy(blob, tmp_path)
    scene = bpy.context.scene
    scene.frame_start = 1
    gaussians, mesh = addon.importer.import_asset(bpy.context, str(asset), "BOTH")
    for obj in (gaussians, mesh):
        obj.select_set(True)
    with bpy.context.temp_override(selected_objects=[gaussians, mesh], active_object=gaussians):
        assert bpy.ops.pla4d.bake() == {"FINISHED"}
    assert gaussians.pla4d.baked and mesh.pla4d.baked
    names = gaussians.name, mesh.name
    blend = tmp_path / "baked.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    shutil.rmtree(asset)  # the bake must not need the asset folder any more
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    addon.playback.forget_assets()
    gaussians, mesh = (bpy.data.objects[name] for name in names)
    for frame in (1, 3, 6, 8):
        t = min(frame - 1, 5)
        bpy.context.scene.frame_set(frame)
        data = _evaluated(gaussians)
        np.testing.assert_allclose(positions(data), to_blender(expected["positions"][t]), atol=1e-6)
        assert same_rotation(attribute(data, "splat_rotation", 4), quat_to_blender(expected["rotations"][t])) < 1e-5
        np.testing.assert_allclose(attribute(data, "splat_scale", 3), np.exp(expected["scales"][t]), rtol=1e-5)
        assert not [a.name for a in data.attributes if a.name.startswith("pla4d_")]  # per-frame copies stay behind
        np.testing.assert_allclose(positions(_evaluated(mesh)), to_blender(expected["mesh_positions"][t]), atol=1e-6)
        # The 3D smoothing filter (in the splat nodes) is the same on the baked frames.
        s, scale = gaussians.pla4d.smoothing, np.exp(expected["scales"][t])
        shown = 1 / (1 + np.exp(-expected["opacities"][t])) >= 1 / 255
        assert s > 0
        gaussians.modifiers["pla4d Splats"].show_viewport = True
        np.testing.assert_allclose(instance_scales(gaussians), np.sort(3 * np.sqrt(scale[shown] ** 2 + s**2).ravel()),
                                   rtol=1e-4)  # fmt: skip


def test_bake_plays_without_the_addon(addon, blob, tmp_path):
    """Disable the add-on (no handler): the baked object still plays, from geometry nodes alone."""
    import addon_utils

    asset, expected = _copy(blob, tmp_path)
    (obj,) = addon.importer.import_asset(bpy.context, str(asset), "GAUSSIANS")
    addon.playback.bake(obj)
    name = obj.name
    addon_utils.disable(addon.__name__, default_set=True)
    try:
        for frame in (2, 5):
            bpy.context.scene.frame_set(frame)
            obj = bpy.data.objects[name]
            np.testing.assert_allclose(positions(_evaluated(obj)), to_blender(expected["positions"][frame - 1]),
                                       atol=1e-6)  # fmt: skip
    finally:
        addon_utils.enable(addon.__name__, default_set=True)


def test_unbake_returns_to_handler(addon, blob):
    path, expected = blob
    (obj,) = addon.importer.import_asset(bpy.context, str(path), "GAUSSIANS")
    addon.playback.bake(obj)
    with bpy.context.temp_override(selected_objects=[obj], active_object=obj):
        assert bpy.ops.pla4d.unbake() == {"FINISHED"}
    assert not obj.pla4d.baked and not [a for a in obj.data.attributes if a.name.startswith("pla4d_")]
    bpy.context.scene.frame_set(4)
    np.testing.assert_allclose(positions(obj.data), to_blender(expected["positions"][3]), atol=1e-6)


@pytest.mark.parametrize("baked", [False, True], ids=["handler", "baked"])
def test_usd_point_cache(addon, blob, tmp_path, baked):
    path, expected = blob
    scene = bpy.context.scene
    scene.frame_start = 1
    (obj,) = addon.importer.import_asset(bpy.context, str(path), "GAUSSIANS")
    if baked:
        addon.playback.bake(obj)
    out = tmp_path / "points.usdc"
    if bpy.app.version < (4, 5, 0):  # Blender 4.2's USD exporter skips point clouds: refused with a message
        with bpy.context.temp_override(selected_objects=[obj], active_object=obj), pytest.raises(RuntimeError) as info:
            bpy.ops.pla4d.export_usd(filepath=str(out))
        assert "writes no point clouds" in str(info.value) and not out.exists()
        return
    with bpy.context.temp_override(selected_objects=[obj], active_object=obj):
        assert bpy.ops.pla4d.export_usd(filepath=str(out)) == {"FINISHED"}
    assert obj.modifiers["pla4d Splats"].show_viewport  # the export put the splats back
    sys.path.append(pxr_path())
    from pxr import Usd, UsdGeom

    stage = Usd.Stage.Open(str(out))
    (prim,) = [p for p in stage.Traverse() if p.GetTypeName() == "Points"]
    points = UsdGeom.Points(prim)
    samples = points.GetPointsAttr().GetTimeSamples()
    frames = expected["positions"].shape[0]
    assert samples == [float(f) for f in range(1, frames + 1)]
    for t in range(frames):
        got = np.array(points.GetPointsAttr().Get(float(t + 1)))
        np.testing.assert_allclose(got, to_blender(expected["positions"][t]), atol=1e-5)
    names = {pv.GetPrimvarName() for pv in UsdGeom.PrimvarsAPI(prim).GetPrimvars()}
    assert {"splat_rgb", "splat_opacity", "splat_scale", "splat_rotation"} <= names
    assert not [n for n in names if n.startswith("pla4d_")]


@pytest.mark.parametrize("baked", [False, True], ids=["handler", "baked"])
def test_ply_sequence(addon, blob, tmp_path, baked):
    path, expected = blob
    (obj,) = addon.importer.import_asset(bpy.context, str(path), "GAUSSIANS")
    if baked:
        addon.playback.bake(obj)
    out = tmp_path / "plys"
    with bpy.context.temp_override(selected_objects=[obj], active_object=obj):
        assert bpy.ops.pla4d.export_ply(directory=str(out)) == {"FINISHED"}
    files = sorted(out.glob("frame_*.ply"))
    assert [f.name for f in files] == [f"frame_{t:03d}.ply" for t in range(expected["positions"].shape[0])]
    for t, file in enumerate(files):
        ply = addon.asset_io.read_gaussian_ply(file)
        np.testing.assert_allclose(ply["positions"], expected["positions"][t], atol=1e-6)
        np.testing.assert_allclose(ply["scales"], expected["scales"][t], atol=1e-5)
        np.testing.assert_allclose(ply["opacities"], expected["opacities"][t], atol=1e-3)
        q = expected["rotations"][t] / np.linalg.norm(expected["rotations"][t], axis=1, keepdims=True)
        assert same_rotation(ply["rotations"], q) < 1e-5
        np.testing.assert_allclose(ply["sh_dc"], expected["sh0"], atol=2e-3)
