"""Exports of a 4D asset: PLY sequence, animated-mesh GLB (parsed back by pygltflib, checked against the glTF 2.0
rules we rely on, loaded by trimesh and by pla4d's own loader), preview video and contact sheet.

The test asset is the built-in example creature: Gaussians sampled on its first-frame surface, carried along by
every frame's skinned mesh (positions and rotations animated), plus the skinned mesh itself as the animated mesh.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import plyfile
import pygltflib
import pytest
import torch
import trimesh

from pla4d.asset.export import export_glb, export_ply_sequence, render_frames, write_contact_sheet, write_preview_video
from pla4d.asset.format import AnimatedMesh, Asset4D, frame_model
from pla4d.gaussians import load_ply
from pla4d.gaussians.init import gaussians_from_mesh, quats_from_normals
from pla4d.render.mesh import load_mesh
from pla4d.render.mesh_sampling import sample_barycentric

FRAMES = 8


@pytest.fixture(scope="module")
def creature() -> Asset4D:
    from pla4d.example.clip import creature_mesh
    from pla4d.example.creature import animate_creature

    anim = animate_creature(FRAMES, fps=16.0)
    mesh = creature_mesh(anim, 0)
    canonical = gaussians_from_mesh(mesh, n=3000, seed=0)
    face_idx, bary = sample_barycentric(mesh, 3000, seed=0)  # the same surface locations as the Gaussians
    faces = anim.faces[face_idx.numpy()]
    tri = anim.vertices[:, faces]  # (T, n, 3 corners, 3)
    positions = np.einsum("tnkc,nk->tnc", tri, bary.numpy()).astype(np.float32)
    normals = np.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    rotations = np.stack([quats_from_normals(torch.from_numpy(n).float()).numpy() for n in normals])
    return Asset4D(
        canonical,
        positions,
        rotations=rotations,
        fps=anim.fps,
        meta={"prompt": "example creature"},
        mesh=AnimatedMesh.from_mesh(mesh, anim.vertices),
    )


# ------------------------------------------------------------------------------------------ PLY sequence


def test_ply_sequence(tmp_path: Path, creature: Asset4D) -> None:
    paths = export_ply_sequence(creature, tmp_path / "seq")
    assert [p.name for p in paths] == [f"frame_{t:03d}.ply" for t in range(FRAMES)]
    for t in (0, FRAMES - 1):
        back, ref = load_ply(paths[t]), frame_model(creature, t)
        assert all(torch.equal(a, b) for a, b in zip(back.parameters(), ref.parameters(), strict=True))
        vertex = plyfile.PlyData.read(str(paths[t]))["vertex"]  # the reference reader sees the same values
        np.testing.assert_array_equal(np.stack([vertex[c] for c in "xyz"], 1), creature.positions[t])
        np.testing.assert_array_equal(np.stack([vertex[f"rot_{i}"] for i in range(4)], 1), creature.rotations[t])
    assert [p.name for p in export_ply_sequence(creature, tmp_path / "some", frames=[5, 1])] == [
        "frame_005.ply",
        "frame_001.ply",
    ]
    with pytest.raises(IndexError):
        export_ply_sequence(creature, tmp_path / "bad", frames=[FRAMES])


def _load_glb(path: Path) -> pygltflib.GLTF2:
    return pygltflib.GLTF2.load(str(path))


def _accessor(gltf: pygltflib.GLTF2, index: int) -> np.ndarray:
    """Accessor ``index`` as numpy (tightly packed float32 or uint32, as the export writes them)."""
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc.type]
    dtype = {pygltflib.FLOAT: "<f4", pygltflib.UNSIGNED_INT: "<u4"}[acc.componentType]
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    data = np.frombuffer(gltf.binary_blob(), dtype=dtype, count=acc.count * width, offset=start)
    return data.reshape(acc.count, width) if width > 1 else data


# -------------------------------------------------------------------------------------------------- glTF


def test_glb_container_and_morph_animation(tmp_path: Path, creature: Asset4D) -> None:
    path = export_glb(creature, tmp_path / "creature.glb")
    raw = path.read_bytes()
    magic, version, length = struct.unpack_from("<III", raw)
    assert (magic, version, length) == (0x46546C67, 2, len(raw)) and length % 4 == 0
    json_len = struct.unpack_from("<I", raw, 12)[0]
    assert json_len % 4 == 0
    gltf = _load_glb(path)
    assert gltf.asset.version == "2.0" and len(gltf.binary_blob()) == gltf.buffers[0].byteLength
    assert all(v.byteOffset % 4 == 0 for v in gltf.bufferViews)

    mesh = creature.mesh
    (prim,) = gltf.meshes[0].primitives
    base = _accessor(gltf, prim.attributes.POSITION)
    np.testing.assert_array_equal(base, mesh.positions[0])
    np.testing.assert_array_equal(_accessor(gltf, prim.indices).reshape(-1, 3), mesh.faces)
    np.testing.assert_array_equal(_accessor(gltf, prim.attributes.COLOR_0), mesh.vertex_colors)
    normals = _accessor(gltf, prim.attributes.NORMAL)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)

    # POSITION accessors (base and every target) carry the min/max the spec requires, and they are exact.
    position_accessors = [prim.attributes.POSITION] + [
        t["POSITION"] for t in prim.targets
    ]  # pygltflib reads targets as dicts
    for index in position_accessors:
        acc, data = gltf.accessors[index], _accessor(gltf, index)
        assert acc.min == data.min(axis=0).tolist() and acc.max == data.max(axis=0).tolist()

    # target t plus the base reproduces frame t
    assert len(prim.targets) == FRAMES and gltf.meshes[0].weights == [0.0] * FRAMES
    assert gltf.meshes[0].extras["targetNames"] == [f"frame_{t:03d}" for t in range(FRAMES)]
    for t, target in enumerate(prim.targets):
        np.testing.assert_allclose(base + _accessor(gltf, target["POSITION"]), mesh.positions[t], atol=1e-6)

    # the weights channel plays the frames in sequence: keyframe t at t / fps has weight 1 on target t only
    (anim,) = gltf.animations
    (sampler,) = anim.samplers
    (channel,) = anim.channels
    assert (channel.sampler, channel.target.node, channel.target.path) == (0, 0, "weights")
    assert sampler.interpolation == "LINEAR"
    times = _accessor(gltf, sampler.input)
    np.testing.assert_allclose(times, np.arange(FRAMES) / creature.fps)
    assert gltf.accessors[sampler.input].min == [0.0]
    weights = _accessor(gltf, sampler.output).reshape(FRAMES, FRAMES)
    np.testing.assert_array_equal(weights, np.eye(FRAMES))
    assert gltf.extras["pla4d"]["fps"] == creature.fps


def test_glb_loads_in_trimesh_and_pla4d(tmp_path: Path, creature: Asset4D) -> None:
    path = export_glb(creature, tmp_path / "creature.glb", interpolation="STEP")
    scene = trimesh.load(str(path), force="scene", process=False)
    (geom,) = scene.geometry.values()
    np.testing.assert_allclose(np.asarray(geom.vertices), creature.mesh.positions[0])
    np.testing.assert_array_equal(np.asarray(geom.faces), creature.mesh.faces)
    mesh = load_mesh(path)  # linear COLOR_0 comes back as the same linear colours
    np.testing.assert_allclose(mesh.vertex_colors.numpy(), creature.mesh.vertex_colors, atol=1e-6)
    assert _load_glb(path).animations[0].samplers[0].interpolation == "STEP"


def test_glb_textured_and_frame_subset(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    box = trimesh.creation.box()
    positions = np.stack([box.vertices * (1 + 0.1 * t) for t in range(4)]).astype(np.float32)
    texture = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    am = AnimatedMesh(box.faces, positions, uvs=rng.random((len(box.vertices), 2)), texture=texture)
    path = export_glb(am, tmp_path / "box.glb", fps=10, frames=[1, 3])
    gltf = _load_glb(path)
    prim = gltf.meshes[0].primitives[0]
    assert gltf.images[0].mimeType == "image/png" and gltf.materials[0].pbrMetallicRoughness.baseColorTexture
    assert gltf.meshes[0].extras["targetNames"] == ["frame_001", "frame_003"]
    base = _accessor(gltf, prim.attributes.POSITION)
    np.testing.assert_array_equal(base, positions[1])
    np.testing.assert_allclose(base + _accessor(gltf, prim.targets[1]["POSITION"]), positions[3])
    loaded = load_mesh(path)
    np.testing.assert_allclose(loaded.texture.numpy(), texture / 255.0, atol=1e-6)
    np.testing.assert_allclose(loaded.uvs.numpy(), am.uvs, atol=1e-6)
    with pytest.raises(ValueError, match="fps"):
        export_glb(am, tmp_path / "x.glb")
    with pytest.raises(ValueError, match="no animated mesh"):
        export_glb(Asset4D(_tiny_model(), np.zeros((1, 2, 3), np.float32)), tmp_path / "y.glb")


def _tiny_model():
    from pla4d.gaussians import GaussianModel

    return GaussianModel(torch.zeros(2, 3), torch.ones(2, 4), torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, 3))


# ---------------------------------------------------------------------------------------- preview renders


def test_renders_show_the_motion(creature: Asset4D) -> None:
    images = render_frames(creature, [0, FRAMES // 2, 0], [0.0, 0.0, 90.0], size=48)
    assert images.shape == (3, 48, 48, 3) and images.min() >= 0 and images.max() <= 1
    assert (images[0] < 0.9).mean() > 0.05  # the creature covers part of the white frame
    assert np.abs(images[0] - images[1]).mean() > 1e-3  # the asset moves between frames
    assert np.abs(images[0] - images[2]).mean() > 1e-3  # and the view changes with the azimuth


def test_preview_video_and_contact_sheet(tmp_path: Path, creature: Asset4D) -> None:
    import imageio.v2 as imageio
    from PIL import Image

    video = write_preview_video(creature, tmp_path / "preview.mp4", frames=[0, 3, 6], loops=2, size=48)
    reader = imageio.get_reader(video)
    frames = [f for f in reader]
    reader.close()
    assert len(frames) == 6 and frames[0].shape == (48, 48, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["preview.mp4"]  # no temporary file left
    with pytest.raises(ValueError, match="even"):
        write_preview_video(creature, tmp_path / "odd.mp4", size=47)

    sheet = write_contact_sheet(creature, tmp_path / "sheet.png", frames=3, size=40)
    with Image.open(sheet) as im:
        assert im.size == (3 * 44 + 4, 4 * 44 + 4)  # 3 frames across, 4 azimuths down, 4 px padding
