"""Motion integrity: which Gaussians of a deformed model lost opacity, grew, or left their neighbours.

Pure arithmetic on per-Gaussian arrays (no rendering, no files), so the benchmark that draws the heat maps
(benchmarks/motion_integrity.py) and the tests share it. Everything is measured against frame 0 of the same
field (not the canonical model), so what the first-frame term leaves over is not counted as motion.

* opacity mass: the sum of the Gaussians' opacities; a part whose mass falls has faded out.
* scale growth: per Gaussian the largest ratio of an axis' scale at t to the same axis at frame 0 (a streak is
  one axis grown, so the largest ratio, not the volume).
* neighbour change: per Gaussian the mean distance to its k nearest canonical neighbours at t over the same at
  frame 0; above 1 the Gaussian left its neighbours (a tear), below 1 they crowd in.
* replacement: of the opacity sitting on a part's true surface at t, the share that belongs to the part's own
  Gaussians; a part rendered by other parts' Gaussians has been replaced.
* depth-blind truth: the true positions at t slid along the input camera's rays back to their frame-0 depth,
  where a motion that follows the input view exactly but has no depth would put them. Its error in the other
  views is the floor for what the input view alone can show; anything below it came from another term.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

__all__ = [
    "FLAGS",
    "FrameState",
    "knn_indices",
    "neighbour_ratio",
    "opacity_mass",
    "part_figures",
    "region_share",
    "scale_growth",
    "assign_parts",
    "depth_blind",
]

# The thresholds behind each mechanism's flag (stated so reports can quote them).
FLAGS = {
    "faded": "part opacity mass below 90% of frame 0",
    "stretched": "opacity-weighted mean largest-axis growth above 1.3x",
    "torn": "opacity-weighted mean limb-scale neighbour distance above 1.3x frame 0",
    "replaced": "own Gaussians hold under half the opacity on the part's true surface (frame 0 share times 0.5)",
}
FADED, STRETCHED, TORN, REPLACED_SHARE = 0.9, 1.3, 1.3, 0.5


@dataclass(frozen=True)
class FrameState:
    """Activated per-Gaussian values at one time: means (N, 3), scales (N, 3), opacities (N,)."""

    means: np.ndarray
    scales: np.ndarray
    opacities: np.ndarray


def opacity_mass(opacities: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Sum of the opacities (of the Gaussians in ``mask``)."""
    values = opacities if mask is None else opacities[mask]
    return float(np.sum(values, dtype=np.float64))


def scale_growth(scales: np.ndarray, scales0: np.ndarray) -> np.ndarray:
    """(N,) the largest per-axis ratio of ``scales`` to ``scales0``: 1 unchanged, 2 one axis twice as long."""
    return np.max(scales / np.maximum(scales0, 1e-12), axis=1)


def knn_indices(points: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices of each point's k nearest other points (the point itself left out)."""
    if len(points) < 2:
        return np.zeros((len(points), 0), dtype=np.int64)
    k = min(k, len(points) - 1)
    _, index = cKDTree(points).query(points, k=k + 1)
    return np.asarray(index)[:, 1:].reshape(len(points), k)


def neighbour_ratio(means: np.ndarray, means0: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """(N,) mean distance to the ``neighbours`` (N, k) at ``means`` over the same at ``means0``."""
    if neighbours.shape[1] == 0:
        return np.ones(len(means))
    now = np.linalg.norm(means[:, None, :] - means[neighbours], axis=-1).mean(axis=1)
    before = np.linalg.norm(means0[:, None, :] - means0[neighbours], axis=-1).mean(axis=1)
    return now / np.maximum(before, 1e-12)


def assign_parts(points: np.ndarray, vertices: np.ndarray, vertex_parts: np.ndarray) -> np.ndarray:
    """(N,) the part label of each point's nearest vertex (labels as ``vertex_parts``)."""
    _, nearest = cKDTree(vertices).query(points, k=1)
    return np.asarray(vertex_parts)[nearest]


def depth_blind(points: np.ndarray, rest: np.ndarray, viewmat: np.ndarray) -> np.ndarray:
    """``points`` (N, 3), each slid along its ray from the camera ``viewmat`` (4x4 world-to-camera, OpenCV) to the
    camera depth of the same point at rest in ``rest`` (N, 3): on the same pixel of that camera, with no motion in
    its depth."""
    rotation, shift = viewmat[:3, :3], viewmat[:3, 3]
    moved, still = points @ rotation.T + shift, rest @ rotation.T + shift
    return (moved * (still[:, 2:3] / moved[:, 2:3]) - shift) @ rotation


def region_share(
    means: np.ndarray, opacities: np.ndarray, own: np.ndarray, surface: np.ndarray, radius: float
) -> tuple[float, float]:
    """(opacity within ``radius`` of the ``surface`` points, the share of it held by the ``own`` Gaussians)."""
    distance, _ = cKDTree(surface).query(means, k=1, distance_upper_bound=radius)
    near = np.isfinite(distance)
    total = float(opacities[near].sum())
    return total, float(opacities[near & own].sum() / total) if total > 0 else 0.0


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    total = float(weights.sum())
    return float((values * weights).sum() / total) if total > 0 else float("nan")


def part_figures(
    state: FrameState,
    state0: FrameState,
    mask: np.ndarray,
    limb_neighbours: np.ndarray,
    region: tuple[float, float] | None = None,
    region0: tuple[float, float] | None = None,
) -> dict[str, float | list[str]]:
    """One part's figures at one frame against frame 0, and the mechanisms they flag.

    ``region`` / ``region0``: :func:`region_share` on the part's true surface at t / at frame 0 (None: no
    ground truth, no replacement figure). Weights are frame-0 opacities, so a faded Gaussian still counts
    for what it did at frame 0."""
    weight = state0.opacities[mask]
    mass0 = opacity_mass(state0.opacities, mask)
    mass = opacity_mass(state.opacities, mask) / mass0 if mass0 > 0 else float("nan")
    growth = _weighted_mean(scale_growth(state.scales[mask], state0.scales[mask]), weight)
    spread = _weighted_mean(
        neighbour_ratio(state.means, state0.means, limb_neighbours)[mask] if mask.any() else np.zeros(0), weight
    )
    out: dict[str, float | list[str]] = {
        "gaussians": int(mask.sum()),
        "opacity_mass": round(mass, 4),
        "scale_growth": round(growth, 3),
        "neighbour_ratio": round(spread, 3),
    }
    flags = []
    if mass < FADED:
        flags.append("faded")
    if growth > STRETCHED:
        flags.append("stretched")
    if spread > TORN:
        flags.append("torn")
    if region is not None and region0 is not None:
        out["own_share"] = round(region[1], 3)
        out["own_share_frame0"] = round(region0[1], 3)
        out["region_opacity"] = round(region[0] / region0[0], 3) if region0[0] > 0 else float("nan")
        if region[1] < REPLACED_SHARE * region0[1]:
            flags.append("replaced")
    out["flags"] = flags
    return out
