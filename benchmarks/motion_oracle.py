"""How far is the 4D stage from perfect motion? Scores a run against an oracle that moves the same static
Gaussians with the ground-truth motion.

    python benchmarks/motion_oracle.py CLIP_DIR RUN_DIR [--every 4] [--out results/motion_oracle.jsonl]

RUN_DIR is a `pla4d run` / `pla4d eval` run folder (``static/canonical.ply``, ``motion/field.pt``). The oracle
attaches every canonical Gaussian to its 4 nearest ground-truth vertices at frame 0 (``gt_verts.npz``, inverse
distance weights) and translates it with them at every frame (no rotation): the best a deformation of these
Gaussians could do, up to that approximation. Both are scored with the same code as ``pla4d eval`` (video
PSNR over the chosen frames, on white), per view and on the input view too, with the mean displacement of the
Gaussians and the mean distance between ours and the oracle's positions. The input view is not scored by the
benchmark protocol; it is printed here to show when the front-view loss is met by motion that is wrong in 3D.

Two more oracles split the true motion by what the input view can show: ``oracle_image_plane`` keeps only its
part across the input camera's rays (the depth along the rays, which no front-view loss can see, set to zero),
and ``oracle_mirror`` puts back the depth the mirror-plane prior (pla4d/deform/mirror.py) would give that
image-plane motion: the ceiling of the prior when the visible motion is tracked exactly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from results_log import append_result
from scipy.spatial import cKDTree

from pla4d.clip import load_clip
from pla4d.deform.hexplane import frame_time
from pla4d.deform.mirror import find_mirror_plane, lift_depth
from pla4d.evaluate import Scorer, _aggregate, _straight_rgba
from pla4d.gaussians.ply import load_ply
from pla4d.render.gaussians import render_gaussians
from pla4d.runner.motion import load_field


def oracle_weights(means: np.ndarray, gt0: np.ndarray, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    distance, index = cKDTree(gt0).query(means, k=k)
    weights = 1.0 / np.maximum(distance, 1e-4)
    return index, weights / weights.sum(axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip")
    parser.add_argument("run")
    parser.add_argument("--every", type=int, default=4, help="score every n-th frame (default 4)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "motion_oracle.jsonl")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    clip = load_clip(args.clip)
    run = Path(args.run)
    model = load_ply(run / "static" / "canonical.ply")
    field = load_field(run / "motion")
    gt = np.load(clip.gt_verts_path)["verts"].astype(np.float64)
    index, weights = oracle_weights(model.means.numpy().astype(np.float64), gt[0])
    views = ("input", *clip.novel_views)
    cameras = clip.camera_batch(list(views))
    scorer = Scorer("alex")
    frames = list(range(0, clip.n_frames, args.every))
    names = ("ours", "oracle", "oracle_image_plane", "oracle_mirror")
    scores: dict[str, dict[str, list]] = {name: {v: [] for v in views} for name in names}
    front = clip.camera_batch(["input"])
    eye = front.centers()[0]
    rays = torch.nn.functional.normalize(model.means.detach() - eye, dim=-1)
    plane = find_mirror_plane(model.means, -front.viewmats[0, 1, :3], min_inliers=0.0)  # OpenCV: y is down
    normal = torch.tensor(plane.normal, dtype=torch.float32)
    moved = {"ours": [], "oracle": [], "ours_to_oracle": []}
    for t in frames:
        means, q, scales, opacities = field.deform(model, frame_time(t, clip.n_frames))
        shift = (weights[..., None] * (gt[t][index] - gt[0][index])).sum(axis=1)
        shift = torch.from_numpy(shift).float()
        oracle_means = model.means + shift
        across = shift - (shift * rays).sum(dim=-1, keepdim=True) * rays

        def still_shape(positions):
            return render_gaussians(positions, model.normalized_quats, model.scales, model.opacities, model.sh,
                                    cameras, sh_degree=model.sh_degree)  # fmt: skip

        renders = {
            "ours": render_gaussians(means, q, scales, opacities, model.sh, cameras, sh_degree=model.sh_degree),
            "oracle": still_shape(oracle_means),
            "oracle_image_plane": still_shape(model.means + across),
            "oracle_mirror": still_shape(model.means + lift_depth(across, model.means.detach(), normal, eye)),
        }
        truth = [clip.load_frame(v, t) for v in views]
        for name, out in renders.items():
            for i, view in enumerate(views):
                scores[name][view].append(scorer.score(_straight_rgba(out.rgb[i], out.alpha[i]), truth[i]))
        moved["ours"].append(float((means - model.means).norm(dim=1).mean()))
        moved["oracle"].append(float((oracle_means - model.means).norm(dim=1).mean()))
        moved["ours_to_oracle"].append(float((means - oracle_means).norm(dim=1).mean()))
    record: dict = {"clip": clip.name, "run": str(run), "frames": frames, "lpips_net": scorer.lpips_name,
                    "mirror_plane": plane.to_dict()}  # fmt: skip
    for name in names:
        novel = {v: scores[name][v] for v in clip.novel_views}
        mean, by_view = _aggregate(novel)
        front, _ = _aggregate({"input": scores[name]["input"]})
        record[name] = {**{k: round(v, 4) for k, v in mean.items()}, "input_view_psnr": round(front["psnr"], 2),
                        "views_psnr": {v: round(s["psnr"], 2) for v, s in by_view.items()}}  # fmt: skip
    record["mean_displacement"] = {k: [round(x, 4) for x in v] for k, v in moved.items()}
    append_result(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
