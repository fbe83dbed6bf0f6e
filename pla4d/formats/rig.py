"""The 4D asset's optional ``rig`` block (docs/asset-format.md section 9): bones, their tree, rest matrices, a
rigid skinning transform per bone and frame, and linear-blend weights of the Gaussians (and of the mesh's vertices).

A point's position at frame t is ``sum_i weights[i] * transforms[t, joints[i]] @ [rest_position, 1]`` where the
rest position is its position at frame 0 (``transforms[0]`` is the identity). Bone j's pose (its frame in the
world) at frame t is ``transforms[t, j] @ rest[j]``. numpy only (the add-on vendors this package); the asset writer
and reader pass in their own array writer and reader, so this module imports nothing of the package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RigData", "read_rig", "write_rig"]

FILES = {
    "transforms": "rig_transforms.bin",
    "gaussian_joints": "rig_gaussian_joints.bin",
    "gaussian_weights": "rig_gaussian_weights.bin",
    "mesh_joints": "rig_mesh_joints.bin",
    "mesh_weights": "rig_mesh_weights.bin",
}


@dataclass
class RigData:
    """Bones in tree order (parents first, ``parents[0] == -1``): ``names``; ``parents`` (B,); ``rest`` (B, 4, 4)
    each bone's frame at rest (frame 0); ``tails`` (B, 3) where each bone points at rest (for display);
    ``transforms`` (T, B, 3, 4) rigid skinning transforms (rest -> frame t); ``gaussian_joints`` / ``_weights``
    (N, I) and optionally ``mesh_joints`` / ``_weights`` (V, I): bone indices and weights, each row
    non-negative, summing to one (unused slots: weight 0); ``info``: the fit's figures (free-form)."""

    names: list[str]
    parents: np.ndarray
    rest: np.ndarray
    tails: np.ndarray
    transforms: np.ndarray
    gaussian_joints: np.ndarray
    gaussian_weights: np.ndarray
    mesh_joints: np.ndarray | None = None
    mesh_weights: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_bones(self) -> int:
        return len(self.names)

    @property
    def influences(self) -> int:
        return int(self.gaussian_joints.shape[1])

    def poses(self) -> np.ndarray:
        """(T, B, 4, 4) every bone's frame in the world at every frame."""
        m = np.zeros(self.transforms.shape[:2] + (4, 4))
        m[..., :3, :] = self.transforms
        m[..., 3, 3] = 1.0
        return m @ np.asarray(self.rest, np.float64)[None]

    def local_poses(self) -> np.ndarray:
        """(T, B, 4, 4) every bone's frame relative to its parent's (the root's: to the world)."""
        world = self.poses()
        local = world.copy()
        for j, p in enumerate(np.asarray(self.parents)):
            if p >= 0:
                local[:, j] = np.linalg.inv(world[:, p]) @ world[:, j]
        return local

    def check(self, frames: int, gaussians: int, vertices: int | None) -> None:
        """ValueError naming the first inconsistency with an asset of this many frames, Gaussians, vertices."""
        b = self.num_bones
        parents = np.asarray(self.parents)
        if b < 1 or parents.shape != (b,) or parents[0] != -1 or any(not -1 < p < j for j, p in
                                                                      enumerate(parents[1:], 1)):  # fmt: skip
            raise ValueError("rig parents must list one root first (-1) and every other bone after its parent")
        shapes = {"rest": (self.rest, (b, 4, 4)), "tails": (self.tails, (b, 3)),
                  "transforms": (self.transforms, (frames, b, 3, 4))}  # fmt: skip
        i = self.gaussian_joints.shape[1] if np.ndim(self.gaussian_joints) == 2 else -1
        shapes.update(gaussian_joints=(self.gaussian_joints, (gaussians, i)),
                      gaussian_weights=(self.gaussian_weights, (gaussians, i)))  # fmt: skip
        if self.mesh_joints is not None or self.mesh_weights is not None:
            if vertices is None or self.mesh_joints is None or self.mesh_weights is None:
                raise ValueError("rig mesh weights need an animated mesh and both joints and weights")
            shapes["mesh_joints"] = (self.mesh_joints, (vertices, i))
            shapes["mesh_weights"] = (self.mesh_weights, (vertices, i))
        for name, (value, shape) in shapes.items():
            if np.shape(value) != shape:
                raise ValueError(f"rig {name} has shape {np.shape(value)}, expected {shape}")
        for kind in ("gaussian", "mesh"):
            j, w = getattr(self, f"{kind}_joints"), getattr(self, f"{kind}_weights")
            if j is None:
                continue
            if np.size(j) and (int(np.min(j)) < 0 or int(np.max(j)) >= b):
                raise ValueError(f"rig {kind} joints index bones outside [0, {b})")
            if np.size(w) and (float(np.min(w)) < 0 or not np.allclose(np.sum(w, 1), 1.0, atol=1e-3)):
                raise ValueError(f"rig {kind} weights must be non-negative and sum to one")


WriteArray = Callable[..., dict]
ReadArray = Callable[[Path, Any, str, tuple[int, ...], bool, bool], np.ndarray]


def write_rig(folder: Path, rig: RigData, frames: int, gaussians: int, vertices: int | None,
              write_array: WriteArray) -> dict[str, Any]:  # fmt: skip
    """Write the rig's arrays into ``folder`` (``write_array(folder, file, value, dtype, what, per_frame)``);
    return the ``rig`` block of asset.json."""
    rig.check(frames, gaussians, vertices)
    mesh = None
    if rig.mesh_joints is not None:
        mesh = {
            "joints": write_array(folder, FILES["mesh_joints"], rig.mesh_joints, "<u4", "rig mesh joints"),
            "weights": write_array(folder, FILES["mesh_weights"], rig.mesh_weights, "<f4", "rig mesh weights"),
        }
    return {
        "num_bones": rig.num_bones,
        "influences": rig.influences,
        "rest_frame": 0,
        "names": list(rig.names),
        "parents": [int(p) for p in rig.parents],
        "rest": np.asarray(rig.rest, np.float64).reshape(-1, 16).tolist(),
        "tails": np.asarray(rig.tails, np.float64).tolist(),
        "transforms": write_array(folder, FILES["transforms"], rig.transforms, "<f4", "rig transforms", True),
        "gaussians": {
            "joints": write_array(folder, FILES["gaussian_joints"], rig.gaussian_joints, "<u4", "rig gaussian joints"),
            "weights": write_array(folder, FILES["gaussian_weights"], rig.gaussian_weights, "<f4", "rig weights"),
        },
        "mesh": mesh,
        "fit": dict(rig.info),
        "conventions": {
            "skinning": "p_t = sum_i weights[i] * transforms[t, joints[i]] @ [p_0, 1]; p_0 = the position at frame 0",
            "rest": "row-major 4 x 4 bone frames at frame 0; bone j at frame t is transforms[t, j] @ rest[j]",
            "parents": "tree order: the root (-1) first, every bone after its parent",
        },
    }


def read_rig(path: Path, block: Any, frames: int, gaussians: int, vertices: int | None, read_array: ReadArray,
             mmap: bool, verify: bool) -> RigData:  # fmt: skip
    """The rig block of asset.json with its arrays (``read_array`` checks files, sizes, dtypes, sha256)."""
    try:
        b, i = int(block["num_bones"]), int(block["influences"])
        names = [str(n) for n in block["names"]]
        parents = np.asarray(block["parents"], np.int64)
        rest = np.asarray(block["rest"], np.float64).reshape(b, 4, 4)
        tails = np.asarray(block["tails"], np.float64).reshape(b, 3)
        transforms = read_array(path, block["transforms"], "rig transforms", (frames, b, 3, 4), mmap, verify)
        g = block["gaussians"]
        g_joints = read_array(path, g["joints"], "rig gaussian joints", (gaussians, i), False, verify)
        g_weights = read_array(path, g["weights"], "rig gaussian weights", (gaussians, i), False, verify)
        m_joints = m_weights = None
        if block.get("mesh"):
            if vertices is None:
                raise ValueError("the rig has mesh weights but the asset has no mesh")
            m_joints = read_array(path, block["mesh"]["joints"], "rig mesh joints", (vertices, i), False, verify)
            m_weights = read_array(path, block["mesh"]["weights"], "rig mesh weights", (vertices, i), False, verify)
        rig = RigData(names, parents, rest, tails, transforms, g_joints, g_weights, m_joints, m_weights,
                      dict(block.get("fit") or {}))  # fmt: skip
        rig.check(frames, gaussians, vertices)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"the rig block is incomplete ({exc!r})") from exc
    return rig
