"""Does the 4D stage follow the motion the input view shows? Image-plane tracking error of the visible vertices.

    python benchmarks/motion_tracking.py CLIP_DIR RUN_DIR [--every 3] [--out results/motion_tracking.jsonl]

RUN_DIR is a `pla4d run` / `pla4d eval` run folder (``motion/field.pt``). The ground-truth vertices
(``gt_verts.npz``) at frame 0 are moved by our deformation field (the same call that animates the exported
mesh) and, at each scored frame t, projected into the clip's input camera beside the ground truth at t. Only
vertices seen by the input camera at both frame 0 and frame t count (a point z-buffer at the image size, each
vertex splatted over 3x3 pixels, 0.03 world units of depth tolerance): their motion is in the video, so an
error there is a failure to track, not a missing prior. Printed per frame: the true image-plane displacement
from frame 0, ours, and the distance between them (pixels at the clip's resolution), and the depth error
(world units) of the same vertices.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from results_log import append_result

from pla4d.clip import load_clip
from pla4d.deform.hexplane import frame_time
from pla4d.runner.motion import load_field


def project(points: np.ndarray, viewmat: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, 2) pixel positions and (V,) depths of world points in an OpenCV camera."""
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    depth = cam[:, 2]
    uv = cam[:, :2] / depth[:, None] * K[[0, 1], [0, 1]] + K[[0, 1], [2, 2]]
    return uv, depth


def visible(points: np.ndarray, viewmat: np.ndarray, K: np.ndarray, size: tuple[int, int], tol: float = 0.03):
    """(V,) bool: the vertex is the nearest surface point at its pixel (within ``tol`` world units)."""
    width, height = size
    uv, depth = project(points, viewmat, K)
    col = np.clip(np.round(uv[:, 0]).astype(int), 0, width - 1)
    row = np.clip(np.round(uv[:, 1]).astype(int), 0, height - 1)
    zbuffer = np.full((height, width), np.inf)
    for dr in (-1, 0, 1):  # vertices are sparser than pixels: splat each over 3x3 so surfaces close
        for dc in (-1, 0, 1):
            np.minimum.at(zbuffer, (np.clip(row + dr, 0, height - 1), np.clip(col + dc, 0, width - 1)), depth)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    return inside & (depth <= zbuffer[row, col] + tol)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip")
    parser.add_argument("run")
    parser.add_argument("--every", type=int, default=3, help="score every n-th frame (default 3)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "motion_tracking.jsonl")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    clip = load_clip(args.clip)
    run = Path(args.run)
    field = load_field(run / "motion")
    gt = np.load(clip.gt_verts_path)["verts"].astype(np.float64)
    camera = clip.camera_batch(["input"])
    viewmat, K = camera.viewmats[0].double().numpy(), camera.Ks[0].double().numpy()
    size = (camera.width, camera.height)
    seen0 = visible(gt[0], viewmat, K, size)
    uv0, _ = project(gt[0], viewmat, K)
    rows = []
    for t in range(args.every, clip.n_frames, args.every):
        ours = field.deform_points(torch.from_numpy(gt[0]).float(), frame_time(t, clip.n_frames)).double().numpy()
        seen = seen0 & visible(gt[t], viewmat, K, size)
        uv_true, z_true = project(gt[t], viewmat, K)
        uv_ours, z_ours = project(ours, viewmat, K)
        rows.append({
            "frame": t,
            "visible": round(float(seen.mean()), 3),
            "true_px": round(float(np.linalg.norm(uv_true - uv0, axis=1)[seen].mean()), 2),
            "ours_px": round(float(np.linalg.norm(uv_ours - uv0, axis=1)[seen].mean()), 2),
            "error_px": round(float(np.linalg.norm(uv_ours - uv_true, axis=1)[seen].mean()), 2),
            "depth_error": round(float(np.abs(z_ours - z_true)[seen].mean()), 4),
        })  # fmt: skip
    print(f"{'frame':>5} {'visible':>8} {'true px':>8} {'ours px':>8} {'error px':>9} {'depth err':>10}")
    for r in rows:
        print(f"{r['frame']:>5} {r['visible']:>8} {r['true_px']:>8} {r['ours_px']:>8} {r['error_px']:>9} "
              f"{r['depth_error']:>10}")  # fmt: skip
    record = {
        "clip": clip.name,
        "run": str(run),
        "mean_true_px": round(float(np.mean([r["true_px"] for r in rows])), 2),
        "mean_ours_px": round(float(np.mean([r["ours_px"] for r in rows])), 2),
        "mean_error_px": round(float(np.mean([r["error_px"] for r in rows])), 2),
        "frames": rows,
    }
    append_result(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
