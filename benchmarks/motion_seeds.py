"""How much does the motion stage's random start decide? One static model, the 4D stage trained with several seeds.

    python benchmarks/motion_seeds.py CLIP_DIR RUN_DIR --seeds 0,1,2,3 [--every 3] [--preset draft]
                                      [--out results/motion_seeds.jsonl]

RUN_DIR is a `pla4d run` / `pla4d eval` run folder; its static stage (``static/canonical.ply``,
``focal/camera.json``) is kept fixed and only the deformation field is trained again, once per seed, with the
preset's motion settings (the seed sets the field's initial planes and the draw of frames, views and backgrounds).
Each field is scored like `pla4d eval` (video PSNR over every n-th frame of the novel views, on white), and on the
input view too: the input view is what training sees, so its score is all a run could be chosen by without
ground truth. One JSON line per seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from results_log import append_result

from pla4d.cameras import Cameras
from pla4d.clip import load_clip
from pla4d.config import get_preset
from pla4d.deform.hexplane import frame_time
from pla4d.evaluate import Scorer, _aggregate, _straight_rgba
from pla4d.gaussians.ply import load_ply
from pla4d.losses.perceptual import make_perceptual
from pla4d.render.gaussians import render_gaussians
from pla4d.runner.inputs import frame_paths, load_frame
from pla4d.stages.motion4d import train_motion


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip")
    parser.add_argument("run")
    parser.add_argument("--seeds", default="0,1,2,3", help="comma-separated seeds (default 0,1,2,3)")
    parser.add_argument("--every", type=int, default=3, help="score every n-th frame (default 3)")
    parser.add_argument("--preset", default="draft")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "motion_seeds.jsonl")
    args = parser.parse_args(argv)
    clip = load_clip(args.clip)
    run = Path(args.run)
    model = load_ply(run / "static" / "canonical.ply")
    camera = json.loads((run / "focal" / "camera.json").read_text())
    cfg = get_preset(args.preset).motion
    video = torch.stack([load_frame(p) for p in frame_paths(clip.path / "input")])
    front = Cameras(
        torch.tensor([camera["w2c_opencv"]]), torch.tensor([camera["K"]]), camera["width"], camera["height"]
    )
    front = front.scaled(video.shape[2] / front.width)
    perceptual, _ = make_perceptual(cfg.perceptual_weight, cfg.perceptual_net, "cpu")
    views = ("input", *clip.novel_views)
    cameras = clip.camera_batch(list(views))
    frames = list(range(0, clip.n_frames, args.every))
    truth = {t: [clip.load_frame(v, t) for v in views] for t in frames}
    scorer = Scorer("alex")

    for seed in [int(s) for s in args.seeds.split(",")]:
        start = time.perf_counter()
        field = train_motion(model, video, front, cfg, perceptual, radius=camera["radius"], seed=seed).field
        seconds = time.perf_counter() - start
        scores: dict[str, list] = {v: [] for v in views}
        with torch.no_grad():
            for t in frames:
                means, quats, scales, opacities = field.deform(model, frame_time(t, clip.n_frames))
                out = render_gaussians(means, quats, scales, opacities, model.sh, cameras, sh_degree=model.sh_degree)
                for i, view in enumerate(views):
                    scores[view].append(scorer.score(_straight_rgba(out.rgb[i], out.alpha[i]), truth[t][i]))
        novel, by_view = _aggregate({v: scores[v] for v in clip.novel_views})
        front_score, _ = _aggregate({"input": scores["input"]})
        record = {
            "clip": clip.name,
            "run": str(run),
            "preset": args.preset,
            "seed": seed,
            "frames": frames,
            "lpips_net": scorer.lpips_name,
            **{k: round(v, 4) for k, v in novel.items()},
            "input_view_psnr": round(front_score["psnr"], 3),
            "views_psnr": {v: round(s["psnr"], 2) for v, s in by_view.items()},
            "train_s": round(seconds, 1),
        }
        append_result(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
