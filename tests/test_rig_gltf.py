"""exports/rigged.glb (issue 23): read back by pygltflib and skinned as glTF defines it (node TRS down the joint
tree, inverse bind matrices, JOINTS_0 / WEIGHTS_0), it plays the rig's vertex positions at every frame; trimesh
loads it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pygltflib
import pytest

from pla4d.asset.rig_gltf import rigged_glb_bytes, write_rigged_glb
from pla4d.example.creature import animate_creature
from pla4d.rig.fit import build_rig
from pla4d.rig.ssdr import reconstruct

FRAMES = 10


@pytest.fixture(scope="module")
def creature_rig():
    anim = animate_creature(FRAMES)
    return anim, build_rig(np.zeros((FRAMES, 0, 3)), anim.vertices, bones=12, iterations=6)


def _accessor(gltf: pygltflib.GLTF2, blob: bytes, index: int) -> np.ndarray:
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    dtype = {pygltflib.FLOAT: "<f4", pygltflib.UNSIGNED_BYTE: "u1", pygltflib.UNSIGNED_SHORT: "<u2",
             pygltflib.UNSIGNED_INT: "<u4"}[acc.componentType]  # fmt: skip
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc.type]
    start = view.byteOffset + (acc.byteOffset or 0)
    return np.frombuffer(blob, dtype, acc.count * width, start).reshape(acc.count, width)


def _quat_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])  # fmt: skip


def _play(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Every keyframe's skinned vertex positions (T, V, 3), evaluated from the GLB alone, and the keyframe times."""
    gltf = pygltflib.GLTF2.load_from_bytes(data)
    blob = gltf.binary_blob()
    prim = gltf.meshes[0].primitives[0]
    rest = _accessor(gltf, blob, prim.attributes.POSITION).astype(np.float64)
    joints = _accessor(gltf, blob, prim.attributes.JOINTS_0).astype(np.int64)
    weights = _accessor(gltf, blob, prim.attributes.WEIGHTS_0).astype(np.float64)
    skin = gltf.skins[0]
    ibm = _accessor(gltf, blob, skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)  # column-major
    anim = gltf.animations[0]
    times = _accessor(gltf, blob, anim.samplers[0].input)[:, 0]
    keyed = {}
    for ch in anim.channels:
        keyed[(ch.target.node, ch.target.path)] = _accessor(gltf, blob, anim.samplers[ch.sampler].output)
    parent = {c: i for i, n in enumerate(gltf.nodes) for c in (n.children or [])}
    frames = []
    for k in range(len(times)):
        world: dict[int, np.ndarray] = {}

        def world_of(node: int, k: int = k, world: dict = world) -> np.ndarray:
            if node not in world:
                n = gltf.nodes[node]
                local = np.eye(4)
                q = keyed.get((node, "rotation"), [n.rotation or [0, 0, 0, 1]] * (k + 1))[k]
                t = keyed.get((node, "translation"), [n.translation or [0, 0, 0]] * (k + 1))[k]
                local[:3, :3], local[:3, 3] = _quat_matrix(np.asarray(q, np.float64)), t
                world[node] = (world_of(parent[node]) if node in parent else np.eye(4)) @ local
            return world[node]

        skinning = np.stack([world_of(j) @ ibm[i] for i, j in enumerate(skin.joints)])
        mats = np.einsum("vi,vicd->vcd", weights, skinning[joints])
        frames.append(np.einsum("vcd,vd->vc", mats[:, :3], np.column_stack([rest, np.ones(len(rest))])))
    return np.stack(frames), times


def test_rigged_glb_plays_the_rig_at_every_frame(creature_rig) -> None:
    anim, rig = creature_rig
    data = rigged_glb_bytes(rig, anim.faces, anim.vertices[0], fps=16.0)
    played, times = _play(data)
    assert np.allclose(times, np.arange(FRAMES) / 16.0)
    lbs = reconstruct(anim.vertices[0], rig.transforms, rig.mesh_joints.astype(np.int64), rig.mesh_weights)
    assert np.abs(played - lbs).max() < 1e-4  # the glTF pose is the rig, frame for frame
    flat = anim.vertices.reshape(-1, 3)
    diagonal = np.linalg.norm(flat.max(0) - flat.min(0))
    err = np.linalg.norm(played - anim.vertices, axis=-1) / diagonal
    assert err.mean() <= 0.01 and np.percentile(err, 95) <= 0.03  # and the rig is the motion, within the targets
    gltf = pygltflib.GLTF2.load_from_bytes(data)
    names = [gltf.nodes[j].name for j in gltf.skins[0].joints]
    assert names == rig.names and names[0] == "bone_00_root"


def test_trimesh_loads_the_rigged_glb(creature_rig, tmp_path: Path) -> None:
    import trimesh

    anim, rig = creature_rig

    class _Asset:  # what write_rigged_glb reads of a 4D asset
        fps = 16.0
        mesh = type("M", (), {"faces": anim.faces, "positions": anim.vertices, "vertex_colors": None})()

    _Asset.rig = rig
    path = write_rigged_glb(_Asset(), tmp_path / "exports" / "rigged.glb")
    assert path is not None and path.is_file()
    scene = trimesh.load(io.BytesIO(path.read_bytes()), file_type="glb")
    mesh = next(iter(scene.geometry.values())) if hasattr(scene, "geometry") else scene
    assert len(mesh.vertices) == anim.vertices.shape[1] and len(mesh.faces) == len(anim.faces)
    assert np.allclose(np.sort(mesh.vertices, axis=0), np.sort(anim.vertices[0], axis=0), atol=1e-5)
    _Asset.rig = None
    assert write_rigged_glb(_Asset(), tmp_path / "none.glb") is None and not (tmp_path / "none.glb").exists()
