"""Parity of the mesh renderer with the benchmark's Cycles renders of frame 000.

For every clip in the benchmark folder, renders ``first_frame.glb`` (and ``first_frame.obj``) with the exact
``w2c_opencv`` and ``K`` of each view in ``cameras.json`` and compares with ``<view>/000.png``, both composited
on white: full-image PSNR and mask IoU (alpha > 0.5). Prints a table and writes
``benchmarks/results/mesh_render_parity.json``.

Usage: ``python benchmarks/mesh_render_parity.py [--bench-dir DIR] [--supersample 3] [--backend auto]
[--images DIR]`` (the bench folder defaults to $PLA4D_BENCH_DIR or ``../shared/bench`` beside the checkout).

Measured on the 2-core development machine (CPU backend, supersample 3), GLB renders:

    khr_cesiumman      PSNR 37.26 37.63 38.33 38.22 36.77 (mean 37.64)   IoU >= 0.9984
    khr_fox_walk       PSNR 30.20 30.79 30.10 31.16 30.20 (mean 30.49)   IoU >= 0.9973
    q_stag_walk        PSNR 31.49 30.89 31.73 31.47 31.98 (mean 31.51)   IoU >= 0.9971
    three_robot_dance  PSNR 30.88 30.65 32.18 31.49 31.58 (mean 31.36)   IoU >= 0.9984
    (views: input, novel/045, 135, 225, 315; all 20: mean 32.75 dB, min 30.10 dB; ~0.02 s per view)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pla4d.clip import composite_on_white, load_clip  # noqa: E402
from pla4d.metrics import mask_iou, psnr  # noqa: E402
from pla4d.render.mesh import load_mesh, render_mesh  # noqa: E402

# The acceptance thresholds of the mesh renderer (per view, and mean over all views).
MIN_IOU = 0.99
MIN_PSNR = 29.0
MIN_MEAN_PSNR = 30.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bench-dir",
        type=Path,
        default=Path(os.environ.get("PLA4D_BENCH_DIR", REPO.parent / "shared" / "bench")),
    )
    parser.add_argument("--supersample", type=int, default=3)
    parser.add_argument("--backend", default="auto", choices=["auto", "cpu", "nvdiffrast"])
    parser.add_argument("--device", default="cpu", help="where the mesh lives (cuda selects nvdiffrast on auto)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "mesh_render_parity.json")
    parser.add_argument("--images", type=Path, default=None, help="also save ours | reference | 4x difference PNGs")
    args = parser.parse_args(argv)

    clips = sorted(p for p in args.bench_dir.glob("*") if (p / "cameras.json").is_file())
    if not clips:
        print(f"no benchmark clips in {args.bench_dir} (set PLA4D_BENCH_DIR or --bench-dir)", file=sys.stderr)
        return 2

    white = torch.ones(3)
    results: dict = {}
    all_psnr: list[float] = []
    ok = True
    print(f"{'clip':20s} {'view':10s} {'IoU':>7s} {'PSNR':>7s} {'OBJ PSNR':>9s}")
    for clip_dir in clips:
        clip = load_clip(clip_dir)
        cams = clip.camera_batch().to(args.device)
        start = time.perf_counter()
        mesh = load_mesh(clip.mesh_path).to(args.device)
        load_s = time.perf_counter() - start
        render_mesh(mesh, cams[0], supersample=1, backend=args.backend)  # compile / warm up
        start = time.perf_counter()
        ours = render_mesh(
            mesh, cams, background=white.to(args.device), supersample=args.supersample, backend=args.backend
        )
        render_s = time.perf_counter() - start
        obj = render_mesh(
            load_mesh(clip.obj_path).to(args.device),
            cams,
            background=white.to(args.device),
            supersample=args.supersample,
            backend=args.backend,
        )
        views = {}
        for i, view in enumerate(clip.views):
            ref = clip.load_frame(view, 0)
            ref_rgb = composite_on_white(ref)
            rgb = ours.rgb[i].cpu()
            p = psnr(rgb, ref_rgb)
            iou = mask_iou(ours.alpha[i, ..., 0].cpu(), ref[..., 3])
            p_obj = psnr(obj.rgb[i].cpu(), ref_rgb)
            views[view] = {"psnr_db": round(p, 3), "mask_iou": round(iou, 5), "obj_psnr_db": round(p_obj, 3)}
            all_psnr.append(p)
            ok &= iou >= MIN_IOU and p >= MIN_PSNR
            print(f"{clip.name:20s} {view:10s} {iou:7.4f} {p:7.2f} {p_obj:9.2f}")
            if args.images is not None:
                _save_comparison(args.images / f"{clip.name}_{view.replace('/', '_')}.png", rgb, ref_rgb)
        results[clip.name] = {
            "views": views,
            "mean_psnr_db": round(float(np.mean([v["psnr_db"] for v in views.values()])), 3),
            "min_mask_iou": round(min(v["mask_iou"] for v in views.values()), 5),
            "faces": mesh.num_faces,
            "load_s": round(load_s, 3),
            "render_all_views_s": round(render_s, 3),
        }
    mean = float(np.mean(all_psnr))
    ok &= mean >= MIN_MEAN_PSNR
    print(f"mean PSNR over {len(all_psnr)} views: {mean:.2f} dB (min {min(all_psnr):.2f}); pass: {ok}")

    report = {
        "what": "first_frame.glb rendered with each view's w2c_opencv and K vs <view>/000.png, both on white",
        "supersample": args.supersample,
        "backend": args.backend,
        "device": args.device,
        "thresholds": {"min_iou": MIN_IOU, "min_psnr_db": MIN_PSNR, "min_mean_psnr_db": MIN_MEAN_PSNR},
        "pass": bool(ok),
        "mean_psnr_db": round(mean, 3),
        "min_psnr_db": round(min(all_psnr), 3),
        "clips": results,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if ok else 1


def _save_comparison(path: Path, ours: torch.Tensor, ref: torch.Tensor) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    panel = torch.cat([ours, ref, (ours - ref).abs() * 4], dim=1).clamp(0, 1)
    Image.fromarray((panel.numpy() * 255 + 0.5).astype(np.uint8)).save(path)


if __name__ == "__main__":
    sys.exit(main())
