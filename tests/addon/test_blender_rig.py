"""The rig inside Blender 5.0 (issue 23): the add-on's import (Armature + Action, skinned mesh, splats bound to the
armature) and Blender's own glTF importer reading the engine's rigged.glb.

The engine writes two rigged assets (a two-bone bending bar with its exact rig, and 100k splats on 24 bones for the
frame-change time; its expected centres and rotations in big.npz); ``blender/test_rig_import.py`` imports them in
the bpy venv."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from conftest import run_inner

from pla4d.asset.rig_gltf import rigged_glb_bytes
from pla4d.formats.asset import MeshData, write_asset
from pla4d.formats.rig import RigData
from pla4d.rig.skinning import skin_gaussians, skin_points
from pla4d.rig.synthetic import chain_rig_asset, rigid_turn


def _canonical(positions: np.ndarray, rotations: np.ndarray) -> dict[str, np.ndarray]:
    n = positions.shape[0]
    return {"positions": positions.astype(np.float32), "rotations": rotations.astype(np.float32),
            "scales": np.full((n, 3), -4.0, np.float32), "opacities": np.full(n, 2.0, np.float32),
            "sh_dc": np.zeros((n, 3), np.float32)}  # fmt: skip


def bar_asset(path: Path, frames: int = 5, fold: bool = False) -> dict[str, np.ndarray]:
    """A bar along x in [0, 2] bending at x = 1 about z: root bone still, child bone turning by up to 90 degrees.
    ``fold``: the root turns by up to +170 degrees about the origin and the child by up to -170 about the joint, so
    at the last frames the two bones' quaternions lie in opposite hemispheres (the splats blending both take the
    flipped branch of the rotation blend)."""
    rng = np.random.default_rng(0)
    n, v = 400, 120
    points = np.column_stack([rng.uniform(0, 2, n + v), rng.uniform(-0.1, 0.1, n + v), rng.uniform(-0.1, 0.1, n + v)])
    w = np.clip((points[:, 0] - 0.8) / 0.4, 0.0, 1.0)
    joints = np.tile(np.array([0, 1], np.uint32), (n + v, 1))
    weights = np.column_stack([1 - w, w]).astype(np.float32)
    transforms = np.zeros((frames, 2, 3, 4))
    transforms[:, 0] = np.eye(3, 4)
    for t in range(frames):
        transforms[t, 1] = rigid_turn(0.5 * math.pi * t / (frames - 1), 2, np.array([1.0, 0.0, 0.0]))
        if fold:
            turn = math.radians(170) * t / (frames - 1)
            transforms[t, 0] = rigid_turn(turn, 2, np.zeros(3))
            transforms[t, 1] = rigid_turn(-turn, 2, np.array([1.0, 0.0, 0.0]))
    rest = np.tile(np.eye(4), (2, 1, 1))
    rest[1, :3, 3] = [1.0, 0.0, 0.0]
    q0 = rng.normal(size=(n, 4))
    q0 /= np.linalg.norm(q0, axis=1, keepdims=True)
    g_pos, g_rot = skin_gaussians(points[:n], q0, transforms, joints[:n].astype(np.int64), weights[:n])
    m_pos = skin_points(points[n:], transforms, joints[n:].astype(np.int64), weights[n:])
    faces = np.array([[i, i + 1, i + 2] for i in range(v - 2)], np.uint32)
    rig = RigData(["bone_00_root", "bone_01_mid_centre.L"], np.array([-1, 0]), rest,
                  np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]), transforms.astype(np.float32), joints[:n],
                  weights[:n], joints[n:], weights[n:])  # fmt: skip
    write_asset(path, _canonical(points[:n], q0), {"positions": g_pos, "rotations": g_rot}, fps=8.0,
                mesh=MeshData(faces, m_pos), rig=rig)  # fmt: skip
    (path.parent / f"{path.name}_rigged.glb").write_bytes(rigged_glb_bytes(rig, faces, points[n:], fps=8.0))
    return {"positions": g_pos, "rotations": g_rot, "mesh_positions": m_pos, "child_weight": weights[:n, 1]}


def big_asset(path: Path, n: int = 100_000, bones: int = 24, frames: int = 8) -> None:
    """100k splats on 24 bones (pla4d.rig.synthetic) for the frame-change time; the expected frames in big.npz."""
    pos, rot = chain_rig_asset(path, n, bones, frames, fps=8.0)
    np.savez(path.parent / "big.npz", positions=pos, rotations=rot)


def test_rig_import(bpy_python, addon_zip, fixture_dir, tmp_path):
    rigs = tmp_path / "rigs"
    rigs.mkdir()
    np.savez(rigs / "bar.npz", **bar_asset(rigs / "bar"))
    np.savez(rigs / "fold.npz", **bar_asset(rigs / "fold", fold=True))
    big_asset(rigs / "big")
    env = {"PLA4D_RIG_DIR": str(rigs)}
    result = run_inner(bpy_python, ["test_rig_import.py"], addon_zip, fixture_dir, tmp_path, env)
    print(result.stdout.strip().splitlines()[-1])
    timing = json.loads((rigs / "timing.json").read_text())
    print(json.dumps(timing))
    assert timing["splats"] == 100_000 and timing["frame_change_ms"] > 0
