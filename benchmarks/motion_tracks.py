"""How good are the video's point tracks (pla4d/losses/tracks.py) against the true motion? No training.

    python benchmarks/motion_tracks.py CLIP_DIR [--size 128] [--method tvl1|ilk] [--every 3]
                                       [--out results/motion_tracks.jsonl]

The input frames' consecutive flow is chained from frame 0 as the motion stage does. The true vertices seen by the
input camera at frame 0 and frame t (benchmarks/motion_tracking.py's point z-buffer) take the track at their
frame-0 pixel; printed per frame: the share of them whose track is still valid, the true image-plane motion, and
the tracks' error on the valid ones (pixels at the clip's resolution). The "moving" vertices (top 20% of peak
true displacement, as motion_integrity.py) are reported apart: they are the limbs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from motion_tracking import project, visible
from results_log import append_result

from pla4d.clip import load_clip
from pla4d.losses.tracks import _sample, chain_tracks, frame_alphas, texture_maps, video_flows
from pla4d.runner.inputs import frame_paths, load_frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--method", default="tvl1", help="tvl1 (the stage's) or ilk")
    parser.add_argument("--radius", type=int, default=None, help="Lucas-Kanade window (default: 7 px at 256)")
    parser.add_argument("--min-texture", type=float, default=0.0, help="drop tracks on flat shading (0: keep)")
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "motion_tracks.jsonl")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    clip = load_clip(args.clip)
    video = torch.stack([load_frame(p) for p in frame_paths(clip.path / "input")])
    start = time.perf_counter()
    forward, backward = video_flows(video, args.size, args.method, args.radius)
    flow_s = time.perf_counter() - start
    texture = texture_maps(video, args.size, args.radius) if args.min_texture > 0 else None
    tracks, valid = chain_tracks(forward, backward, frame_alphas(video, args.size), 0.5, texture, args.min_texture)
    chain_s = time.perf_counter() - start - flow_s
    gt = np.load(clip.gt_verts_path)["verts"].astype(np.float64)
    camera = clip.camera_batch(["input"])
    viewmat, K = camera.viewmats[0].double().numpy(), camera.Ks[0].double().numpy()
    size = (camera.width, camera.height)
    scale = args.size / camera.width
    peak = np.linalg.norm(gt - gt[0:1], axis=-1).max(0)
    moving = peak >= np.quantile(peak, 0.8)
    seen0 = visible(gt[0], viewmat, K, size)
    uv0, _ = project(gt[0], viewmat, K)
    steps = tracks.shape[0]
    disp = (tracks - tracks[0:1]).permute(1, 2, 0, 3).reshape(args.size, args.size, steps * 2)
    at = torch.from_numpy(uv0 * scale).float()
    track_uv = uv0[None] + _sample(disp, at).reshape(-1, steps, 2).permute(1, 0, 2).double().numpy() / scale
    track_ok = (_sample(valid.float().permute(1, 2, 0), at).T > 0.999).numpy()
    rows = []
    for t in range(args.every, clip.n_frames, args.every):
        seen = seen0 & visible(gt[t], viewmat, K, size)
        uv_true, _ = project(gt[t], viewmat, K)
        true_px = np.linalg.norm(uv_true - uv0, axis=1)
        err = np.linalg.norm(track_uv[t] - uv_true, axis=1)
        row = {"frame": t}
        for name, sel in (("all", seen), ("moving", seen & moving)):
            ok = sel & track_ok[t]
            row[name] = {
                "seen": int(sel.sum()),
                "valid": round(float(ok.sum() / max(sel.sum(), 1)), 3),
                "true_px": round(float(true_px[sel].mean()) if sel.any() else 0.0, 2),
                "true_px_valid": round(float(true_px[ok].mean()) if ok.any() else 0.0, 2),
                "error_px": round(float(err[ok].mean()) if ok.any() else float("nan"), 2),
            }
        rows.append(row)
    print(f"flow {flow_s:.1f} s, chain {chain_s:.1f} s ({args.method}, {args.size} px)")
    print(f"{'frame':>5} | {'valid':>6} {'true':>6} {'err':>6} | moving: {'valid':>6} {'true':>6} {'err':>6}")
    for r in rows:
        a, m = r["all"], r["moving"]
        print(f"{r['frame']:>5} | {a['valid']:>6} {a['true_px_valid']:>6} {a['error_px']:>6} | "
              f"        {m['valid']:>6} {m['true_px_valid']:>6} {m['error_px']:>6}")  # fmt: skip
    append_result(args.out, {"clip": clip.name, "size": args.size, "method": args.method, "radius": args.radius,
                             "min_texture": args.min_texture,
                             "flow_s": round(flow_s, 1), "frames": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
