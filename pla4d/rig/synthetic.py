"""A synthetic rigged 4D asset of any size, for the Blender rig tests and benchmarks/rig_bench.py: splats on a chain
of bones, each bone turning about its own joint (about x, y or z by turns) a little more every frame, four random
weights per splat on its nearest bones, random rest rotations. Every splat moves and turns at every frame, about
axes that differ between its bones (so any axis convention in the rotation blend would show)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pla4d.formats.asset import write_asset
from pla4d.formats.rig import RigData
from pla4d.rig.skinning import skin_gaussians


def rigid_turn(angle: float, axis: int, pivot: np.ndarray) -> np.ndarray:
    """(3, 4): a turn by ``angle`` radians about the axis ``axis`` (0, 1, 2: x, y, z) through ``pivot``."""
    c, s = np.cos(angle), np.sin(angle)
    a, b = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return np.concatenate([r, (pivot - r @ pivot)[:, None]], axis=1)


def chain_rig_asset(path: Path, n: int, bones: int = 24, frames: int = 32, fps: float = 16.0,
                    seed: int = 1) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Write the asset to ``path``; returns its splats' centres (T, n, 3) and rotations (T, n, 4) at every frame."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, 1, (n, 3))
    centres = np.column_stack([np.linspace(-1, 1, bones), np.zeros(bones), np.zeros(bones)])
    nearest = np.argsort(((points[:, None] - centres[None]) ** 2).sum(-1), axis=1)[:, :4]
    weights = rng.dirichlet(np.ones(4), n).astype(np.float32)
    transforms = np.array([[rigid_turn(0.3 * t / frames * np.sin(j), j % 3, centres[j]) for j in range(bones)]
                           for t in range(frames)])  # fmt: skip
    rest = np.tile(np.eye(4), (bones, 1, 1))
    rest[:, :3, 3] = centres
    q0 = rng.normal(size=(n, 4))
    q0 /= np.linalg.norm(q0, axis=1, keepdims=True)
    pos, rot = skin_gaussians(points, q0, transforms, nearest, weights)
    canonical = {"positions": points.astype(np.float32), "rotations": q0.astype(np.float32),
                 "scales": np.full((n, 3), -4.0, np.float32), "opacities": np.full(n, 2.0, np.float32),
                 "sh_dc": np.zeros((n, 3), np.float32)}  # fmt: skip
    rig = RigData([f"bone_{j:02d}" for j in range(bones)], np.arange(-1, bones - 1), rest, centres + [0, 0.05, 0],
                  transforms.astype(np.float32), nearest.astype(np.uint32), weights)  # fmt: skip
    write_asset(path, canonical, {"positions": pos, "rotations": rot}, fps=fps, rig=rig)
    return pos, rot
