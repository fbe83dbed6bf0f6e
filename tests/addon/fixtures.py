"""Fixture 4D assets for the add-on tests, written with the engine's own writer (main venv only: imports pla4d).

The Blender side reads them with the add-on's numpy reader; the tests compare what Blender holds at each frame
with the arrays returned here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from pla4d.asset.format import AnimatedMesh, Asset4D, write_asset
from pla4d.gaussians.model import GaussianModel


def synthetic_asset(path: Path, n: int = 600, frames: int = 6, dtype: str = "float32", seed: int = 0,
                    all_attributes: bool = True, fps: float = 12.0) -> dict[str, np.ndarray]:  # fmt: skip
    """A blob of ``n`` Gaussians that turns about +Y and rises over ``frames`` frames, every attribute animated
    (``all_attributes``), plus a small animated mesh. Returns the arrays written (storage convention)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n, 3)).astype(np.float32)
    means *= (0.6 / np.linalg.norm(means, axis=1, keepdims=True)) ** 0.5 * 0.8
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    log_scales = rng.uniform(-4.0, -2.5, size=(n, 3)).astype(np.float32)
    logits = rng.uniform(-1.0, 4.0, size=n).astype(np.float32)
    rgb = rng.uniform(0.1, 0.9, size=(n, 3)).astype(np.float32)
    canonical = GaussianModel.from_activated(
        torch.from_numpy(means), torch.from_numpy(quats), torch.from_numpy(np.exp(log_scales)),
        torch.sigmoid(torch.from_numpy(logits)), torch.from_numpy(rgb),
    )  # fmt: skip
    positions = np.empty((frames, n, 3), np.float32)
    rotations = np.empty((frames, n, 4), np.float32)
    for t in range(frames):
        a = 0.5 * t
        rot = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], np.float32)
        positions[t] = means @ rot.T + np.array([0.0, 0.05 * t, 0.0], np.float32)
        half = np.array([math.cos(a / 2), 0.0, math.sin(a / 2), 0.0], np.float32)  # about +Y
        rotations[t] = _qmul(half, quats)
    scales = np.stack([log_scales + 0.05 * t for t in range(frames)]) if all_attributes else None
    opacities = np.stack([logits - 0.2 * t for t in range(frames)]) if all_attributes else None
    verts = np.array([[0, 0.5, 0], [0.5, -0.3, 0.2], [-0.5, -0.3, 0.2], [0, -0.3, -0.5]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]], np.uint32)
    mesh_pos = np.stack([verts + np.array([0.1 * t, 0, 0], np.float32) for t in range(frames)])
    mesh = AnimatedMesh(faces, mesh_pos, vertex_colors=np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]]))
    asset = Asset4D(canonical, positions, rotations=rotations if all_attributes else rotations, scales=scales,
                    opacities=opacities, fps=fps, meta={"prompt": "test blob", "seed": seed}, mesh=mesh)  # fmt: skip
    write_asset(path, asset, dtype=dtype)
    out = {"positions": positions, "rotations": rotations, "mesh_positions": mesh_pos, "rgb": rgb,
           "sh0": canonical.sh0.detach().numpy()}  # fmt: skip
    if scales is not None:
        out["scales"] = scales
        out["opacities"] = opacities
    return out


def _qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    return np.stack([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ], axis=1).astype(np.float32)  # fmt: skip


if __name__ == "__main__":
    import sys

    data = synthetic_asset(Path(sys.argv[1]))
    np.savez(Path(sys.argv[1]).with_suffix(".npz"), **data)
    print(sys.argv[1])
