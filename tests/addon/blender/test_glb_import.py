"""The engine's animated-mesh GLB (one morph target per frame) in Blender's own glTF importer: it plays."""

from __future__ import annotations

import bpy
import numpy as np


def test_blender_gltf_importer_plays_the_animated_mesh(test_dir):
    expected = np.load(test_dir / "wobble.npy")  # (T, V, 3), +Y up
    scene = bpy.context.scene
    scene.render.fps = 8  # the GLB's rate: keyframe k (time k / 8 s) lands on scene frame k
    assert bpy.ops.import_scene.gltf(filepath=str(test_dir / "wobble.glb")) == {"FINISHED"}
    obj = next(o for o in scene.objects if o.type == "MESH")
    keys = obj.data.shape_keys
    assert keys is not None and len(keys.key_blocks) == 1 + len(expected)  # basis + one target per frame
    assert keys.animation_data is not None and keys.animation_data.action is not None
    to_blender = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float32)  # (x, y, z) -> (x, -z, y)
    moved = []
    for frame in range(len(expected)):
        scene.frame_set(frame)
        evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        mesh = evaluated.to_mesh()
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        evaluated.to_mesh_clear()
        world = np.array(obj.matrix_world, np.float32)
        got = co.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]
        want = expected[frame] @ to_blender.T
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1e-4, frame  # vertex order kept, every frame exact
        moved.append(np.abs(got - expected[0] @ to_blender.T).max())
    assert min(moved[1:]) > 0.01  # it really moves
