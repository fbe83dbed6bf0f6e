"""How well can rigid parts follow the true motion at all? A partition of a run's canonical Gaussians scored
against the clip's true motion, without training (issue 21).

    python benchmarks/motion_partition.py CLIP_DIR RUN_DIR [--parts 32,64] [--methods kmeans,graph]
                                          [--out results/motion_partition.jsonl]

Each canonical Gaussian follows its nearest true vertex at frame 0 (``gt_verts.npz``). For a partition (the part
motion's own: ``kmeans`` on positions, or ``graph``: clusters over a k-NN graph of the Gaussians, pla4d/deform/
parts.py) every part gets, per frame, the rigid motion that best fits its Gaussians' true motion (weighted
Kabsch), and the Gaussians are moved by their part's blend (``PartMotion.weights``). The residual, the distance of
each Gaussian from its true place, opacity-weighted, is what the fine field would still have to do, and a part
that holds two limbs moving apart (the example's forearm and head, a human's two thighs) shows as a large residual
on the "moving" Gaussians (top 20% of peak true displacement); on the built-in example also on its waving arm
(``arm_l``) and head. Distances are world units, means over frames; one JSON line per partition.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from results_log import append_result
from scipy.spatial import cKDTree

from pla4d.clip import load_clip
from pla4d.deform.parts import PartMotion
from pla4d.diagnostics.parts import creature_vertex_parts
from pla4d.gaussians.ply import load_ply

EXAMPLE_ASSET = "pla4d built-in example creature"


def kabsch(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R and translation t minimising sum w |R src + t - dst|^2."""
    w = w / max(w.sum(), 1e-12)
    cs, cd = (w[:, None] * src).sum(0), (w[:, None] * dst).sum(0)
    h = ((src - cs) * w[:, None]).T @ (dst - cd)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return r, cd - r @ cs


def residuals(
    points: np.ndarray, truth: np.ndarray, opacity: np.ndarray, motion: PartMotion
) -> tuple[np.ndarray, np.ndarray]:
    """(T, N) distance of each point from its true place under the best rigid part motion (blended as the part
    motion blends), and under hard labels (each point moved by its own part's fit only)."""
    pts = torch.as_tensor(points, dtype=torch.float32)
    idx, w = motion.weights(pts)
    idx, w = idx.numpy(), w.double().numpy()
    label = idx[:, 0]
    blended, hard = [], []
    for t in range(truth.shape[0]):
        mats = np.tile(np.eye(3), (motion.parts, 1, 1))
        shifts = np.zeros((motion.parts, 3))
        for k in range(motion.parts):
            own = label == k
            if own.sum() >= 3:
                mats[k], shifts[k] = kabsch(points[own], truth[t][own], opacity[own] + 1e-6)
        moved = np.einsum("nkij,nj->nki", mats[idx], points) + shifts[idx]  # (N, m, 3)
        blend = (w[..., None] * moved).sum(1)
        blended.append(np.linalg.norm(blend - truth[t], axis=1))
        hard.append(np.linalg.norm(moved[:, 0] - truth[t], axis=1))
    return np.stack(blended), np.stack(hard)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip")
    parser.add_argument("run")
    parser.add_argument("--parts", default="32,64")
    parser.add_argument("--methods", default="kmeans")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "motion_partition.jsonl")
    args = parser.parse_args(argv)
    clip = load_clip(args.clip)
    model = load_ply(Path(args.run) / "static" / "canonical.ply")
    points = model.means.detach().double().numpy()
    opacity = model.opacities.detach().double().numpy().reshape(-1)
    gt = np.load(clip.gt_verts_path)["verts"].astype(np.float64)
    _, nearest = cKDTree(gt[0]).query(points)
    truth = gt[:, nearest] - gt[0][nearest] + points  # each Gaussian moved with its nearest true vertex
    travel = np.linalg.norm(truth - points, axis=2)
    peak = travel.max(0)
    moving = peak >= np.quantile(peak, 0.8)
    named: dict[str, np.ndarray] = {}  # the built-in example's waving arm, known in code
    if clip.meta.get("asset") == EXAMPLE_ASSET:
        vertex_parts, names = creature_vertex_parts()
        label = np.asarray(vertex_parts)[nearest]
        named = {name: label == i for i, name in enumerate(names) if name in ("arm_l", "head")}
    for method in args.methods.split(","):
        for k in (int(x) for x in args.parts.split(",")):
            start = time.perf_counter()
            motion = PartMotion(k, 2, clustering=method)
            motion.place(torch.as_tensor(points, dtype=torch.float32))
            placed = time.perf_counter() - start
            blend, hard = residuals(points, truth, opacity, motion)

            def mean(err: np.ndarray, mask: np.ndarray) -> float:
                return float((err[:, mask] * opacity[mask]).sum() / (opacity[mask].sum() * err.shape[0]))

            record = {
                "clip": clip.name, "run": args.run, "method": method, "parts": k,
                "true_motion_moving": round(mean(travel, moving), 4),
                "residual_moving": round(mean(blend, moving), 4), "residual_still": round(mean(blend, ~moving), 4),
                "hard_residual_moving": round(mean(hard, moving), 4),
                "worst_frame_moving": round(float(max((blend[t, moving] * opacity[moving]).sum() / opacity[moving].sum()
                                                      for t in range(blend.shape[0]))), 4),
                "place_s": round(placed, 2),
                **{f"residual_{name}": round(mean(blend, mask), 4) for name, mask in named.items()},
            }  # fmt: skip
            print(record, flush=True)
            append_result(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
