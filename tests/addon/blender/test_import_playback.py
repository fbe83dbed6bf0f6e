"""Import a 4D asset as animated Gaussians and as an animated mesh; check every attribute at several frames."""

from __future__ import annotations

import bpy
import numpy as np
import pytest
from conftest import attribute, instance_scales, positions, quat_to_blender, same_rotation, to_blender


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_import_gaussians_plays_every_attribute(addon, blob):
    path, expected = blob
    scene = bpy.context.scene
    scene.frame_start = 10
    result = bpy.ops.pla4d.import_asset(directory=str(path), import_as="GAUSSIANS")
    assert result == {"FINISHED"}
    obj = bpy.context.active_object
    assert obj.type == "POINTCLOUD" and obj.pla4d.kind == "GAUSSIANS"
    data = obj.data
    frames = expected["positions"].shape[0]
    assert len(data.points) == expected["positions"].shape[1]
    assert scene.render.fps / scene.render.fps_base == pytest.approx(12.0)
    assert (scene.frame_start, scene.frame_end) == (10, 10 + frames - 1)
    assert "color" not in data.attributes  # Cycles renders an attribute named `color` black on points
    rgb = attribute(data, "splat_rgb", 3)
    srgb = np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)
    np.testing.assert_allclose(srgb, expected["rgb"], atol=2e-3)
    for frame in (10, 12, 15, 9, 40):  # before the start and past the end clamp to the first / last frame
        scene.frame_set(frame)
        t = min(max(frame - 10, 0), frames - 1)
        np.testing.assert_allclose(positions(data), to_blender(expected["positions"][t]), atol=1e-6)
        assert same_rotation(attribute(data, "splat_rotation", 4), quat_to_blender(expected["rotations"][t])) < 1e-5
        np.testing.assert_allclose(attribute(data, "splat_scale", 3), np.exp(expected["scales"][t]), rtol=1e-5)
        np.testing.assert_allclose(attribute(data, "splat_opacity", 1), _sigmoid(expected["opacities"][t]), atol=1e-6)


def test_float16_asset_and_start_frame_change(addon, test_dir):
    path = test_dir / "blob16"
    expected = dict(np.load(test_dir / "blob16.npz"))
    scene = bpy.context.scene
    scene.frame_start = 1
    (obj,) = addon.importer.import_asset(bpy.context, str(path), "GAUSSIANS")
    scene.frame_set(3)
    np.testing.assert_allclose(positions(obj.data), to_blender(expected["positions"][2]), atol=5e-4)
    obj.pla4d.start_frame = 2  # the update callback moves the animation and re-applies the frame
    scene.frame_set(3)
    np.testing.assert_allclose(positions(obj.data), to_blender(expected["positions"][1]), atol=5e-4)


def _check_frame(data, expected, t):
    np.testing.assert_allclose(positions(data), to_blender(expected["positions"][t]), atol=1e-6)
    assert same_rotation(attribute(data, "splat_rotation", 4), quat_to_blender(expected["rotations"][t])) < 1e-5
    np.testing.assert_allclose(attribute(data, "splat_scale", 3), np.exp(expected["scales"][t]), rtol=1e-5)
    np.testing.assert_allclose(attribute(data, "splat_opacity", 1), _sigmoid(expected["opacities"][t]), atol=1e-6)


def test_converted_frames_cache_full_and_replaced_folder(addon, blob, tmp_path):
    """Playback keeps converted frames up to a budget: past it frames are converted every time and still right
    (twice round the timeline, backwards too); a re-import of a replaced folder shows the new values."""
    import hashlib
    import json
    import shutil

    path, expected = blob
    folder = tmp_path / "blob"
    shutil.copytree(path, folder)
    scene = bpy.context.scene
    scene.frame_start = 1
    frames = expected["positions"].shape[0]
    playback = addon.playback
    budget = playback.FRAME_CACHE_BYTES
    playback.FRAME_CACHE_BYTES = 2 * 600 * 4 * (3 + 4 + 3 + 1)  # two frames' attributes of the 600 Gaussians
    key = str(folder.resolve())
    try:
        (obj,) = addon.importer.import_asset(bpy.context, str(folder), "GAUSSIANS")
        # the import converted frames ahead until the budget ran out: frame 0 whole, frame 2 not at all
        kept = {(name, t) for (path, name, t) in playback._frames if path == key}
        assert {(name, 0) for name in obj.pla4d.animated.split(",")} <= kept and not any(t >= 2 for _n, t in kept)
        for frame in [*range(1, frames + 1), *range(frames, 0, -1)]:
            scene.frame_set(frame)
            _check_frame(obj.data, expected, frame - 1)
        assert 0 < playback._frames_bytes <= playback.FRAME_CACHE_BYTES
    finally:
        playback.FRAME_CACHE_BYTES = budget
    moved = expected["positions"] + np.float32(0.25)
    (folder / "positions.bin").write_bytes(moved.astype("<f4").tobytes())
    meta = json.loads((folder / "asset.json").read_text())
    meta["arrays"]["positions"]["sha256"] = hashlib.sha256((folder / "positions.bin").read_bytes()).hexdigest()
    (folder / "asset.json").write_text(json.dumps(meta))
    (obj,) = addon.importer.import_asset(bpy.context, str(folder), "GAUSSIANS")
    kept = {(name, t) for (path, name, t) in playback._frames if path == key}
    assert kept == {(name, t) for name in obj.pla4d.animated.split(",") for t in range(frames)}  # all, at import
    for frame in (2, 1):
        scene.frame_set(frame)
        np.testing.assert_allclose(positions(obj.data), to_blender(moved[frame - 1]), atol=1e-6)


def test_import_mesh(addon, blob):
    path, expected = blob
    scene = bpy.context.scene
    scene.frame_start = 1
    assert bpy.ops.pla4d.import_asset(directory=str(path), import_as="MESH") == {"FINISHED"}
    obj = bpy.context.active_object
    assert obj.type == "MESH" and obj.pla4d.kind == "MESH"
    assert len(obj.data.polygons) == 4 and "pla4d_rgb" in obj.data.color_attributes
    for frame in (1, 4, 6):
        scene.frame_set(frame)
        np.testing.assert_allclose(positions(obj.data), to_blender(expected["mesh_positions"][frame - 1]), atol=1e-6)


def test_import_both(addon, blob):
    path, _ = blob
    created = addon.importer.import_asset(bpy.context, str(path), "BOTH")
    assert sorted(o.type for o in created) == ["MESH", "POINTCLOUD"]


def _instance_materials(obj) -> set[str]:
    depsgraph = bpy.context.evaluated_depsgraph_get()
    return {
        slot.material.name
        for i in depsgraph.object_instances
        if i.is_instance and i.parent and i.parent.name == obj.name
        for slot in i.object.material_slots
        if slot.material is not None
    }


def test_splat_nodes_and_material(addon, blob):
    path, _ = blob
    (obj,) = addon.importer.import_asset(bpy.context, str(path), "GAUSSIANS")
    assert [m.name for m in obj.modifiers] == ["pla4d Frames", "pla4d Splats"]
    got = instance_scales(obj)
    shown = attribute(obj.data, "splat_opacity", 1) >= 1 / 255
    assert got.size == 3 * int(shown.sum()) > 0
    # Each instance is the Gaussian's scale, widened by the 3D smoothing filter, times the splat size (3 sigma).
    s = obj.pla4d.smoothing
    assert s == pytest.approx(np.sqrt(0.3) * 3.0 * np.tan(np.radians(49.1 / 2)) / 128.0, rel=1e-6)
    raw = attribute(obj.data, "splat_scale", 3)[shown]
    np.testing.assert_allclose(got, np.sort((np.sqrt(raw**2 + s**2) * 3.0).ravel()), rtol=1e-4)
    obj.pla4d.smoothing = 0.0  # reversible: the attributes are untouched, the filter lives in the nodes
    np.testing.assert_allclose(instance_scales(obj), np.sort((raw * 3.0).ravel()), rtol=1e-4)
    mat = bpy.data.materials["pla4d Splat"]
    attrs = {n.attribute_name for n in mat.node_tree.nodes if n.type == "ATTRIBUTE"}
    assert attrs == {"splat_rgb", "splat_opacity", "splat_k"}
    assert obj.pla4d.shading == "EMISSION" and _instance_materials(obj) == {"pla4d Splat"}
    obj.pla4d.shading = "LIT"
    assert _instance_materials(obj) == {"pla4d Splat Lit"}
    lit = bpy.data.materials["pla4d Splat Lit"]
    assert {n.type for n in lit.node_tree.nodes} >= {"BSDF_PRINCIPLED", "BSDF_TRANSPARENT"}
    attrs = {n.attribute_name for n in lit.node_tree.nodes if n.type == "ATTRIBUTE"}
    assert attrs == {"splat_rgb", "splat_opacity", "splat_k", "splat_scale"}
    # A file saved by an older add-on: its splat group has neither input; a change of look rebuilds it in place.
    group = obj.modifiers["pla4d Splats"].node_group
    group.interface.remove(next(i for i in group.interface.items_tree if getattr(i, "name", "") == "Smoothing"))
    group["pla4d_nodes_version"] = 2
    obj.pla4d.smoothing = 0.01
    assert obj.modifiers["pla4d Splats"].node_group == group
    assert group["pla4d_nodes_version"] == addon.nodes.NODES_VERSION
    np.testing.assert_allclose(instance_scales(obj), np.sort((np.sqrt(raw**2 + 0.01**2) * 3.0).ravel()), rtol=1e-4)


def test_import_errors_are_messages(addon, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RuntimeError) as info:
        bpy.ops.pla4d.import_asset(directory=str(tmp_path))
    assert "not a pla4d 4D asset" in str(info.value) and "Traceback" not in str(info.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "asset.json").write_text('{"format": "pla4d-asset4d", "format_version": "9.0"}')
    with pytest.raises(RuntimeError, match="update the pla4d add-on"):
        bpy.ops.pla4d.import_asset(directory=str(broken))


def test_corrupted_asset_is_refused(addon, blob, tmp_path):
    import shutil

    path, _ = blob
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    data = bytearray((copy / "positions.bin").read_bytes())
    data[100] ^= 0xFF
    (copy / "positions.bin").write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="corrupted"):
        bpy.ops.pla4d.import_asset(directory=str(copy))


def test_live_preview_updates_in_place(addon):
    rng = np.random.default_rng(0)
    points = {"positions": rng.normal(size=(300, 3)).astype(np.float32),
              "colors": rng.uniform(size=(300, 3)).astype(np.float32),
              "opacities": rng.uniform(size=300).astype(np.float32)}  # fmt: skip
    obj = addon.preview.update_preview(bpy.context, "job123456789", points)
    np.testing.assert_allclose(positions(obj.data), to_blender(points["positions"]), atol=1e-6)
    points2 = {k: v[:200] * 0.5 for k, v in points.items()}
    again = addon.preview.update_preview(bpy.context, "job123456789", points2)
    assert again == obj and len(obj.data.vertices) == 200
    np.testing.assert_allclose(positions(obj.data), to_blender(points2["positions"]), atol=1e-6)
    addon.preview.remove_preview("job123456789")
    assert "pla4d preview job12345" not in bpy.data.objects
