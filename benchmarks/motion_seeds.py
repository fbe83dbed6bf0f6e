"""How much does the motion stage's random start decide? One static model, the 4D stage trained with several seeds.

    python benchmarks/motion_seeds.py CLIP_DIR RUN_DIR --seeds 0,1,2,3 [--every 3] [--preset draft|run]
                                      [--set KEY=VALUE ...] [--save DIR] [--out results/motion_seeds.jsonl]

RUN_DIR is a `pla4d run` / `pla4d eval` run folder; its static stage (``static/canonical.ply``,
``focal/camera.json``) is kept fixed and only the deformation field is trained again, once per seed, with the
preset's motion settings (the seed sets the field's initial planes and the draw of frames, views and backgrounds).
Each field is scored like `pla4d eval` (video PSNR over every n-th frame of the novel views, on white), and on the
input view too: the input view is what training sees, so its score is all a run could be chosen by without
ground truth. One JSON line per seed.

``--preset run`` takes the motion settings RUN_DIR was made with (its ``config.json``); ``--set KEY=VALUE``
(repeatable) changes one motion setting (e.g. ``--set parts=24``), to measure a candidate on the same static
model. ``--save DIR`` writes each field as a run folder DIR/seed<N> (the static stage linked), which
benchmarks/motion_integrity.py then measures; with a clip that has ``gt_verts.npz`` its per-part summary (opacity
mass, tracking error) goes into the record too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from motion_integrity import measure
from results_log import append_result

from pla4d.cameras import Cameras
from pla4d.clip import load_clip
from pla4d.config import MotionConfig, get_preset
from pla4d.deform.hexplane import frame_time
from pla4d.evaluate import Scorer, _aggregate, _straight_rgba, vertex_errors
from pla4d.gaussians.ply import load_ply
from pla4d.losses.perceptual import make_perceptual
from pla4d.render.gaussians import render_gaussians
from pla4d.runner.inputs import check_mesh, frame_paths, load_frame
from pla4d.runner.motion import load_field
from pla4d.stages.motion4d import train_motion


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip")
    parser.add_argument("run")
    parser.add_argument("--seeds", default="0,1,2,3", help="comma-separated seeds (default 0,1,2,3)")
    parser.add_argument("--every", type=int, default=3, help="score every n-th frame (default 3)")
    parser.add_argument("--preset", default="draft", help="a preset's motion settings, or 'run': RUN_DIR's own")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a motion setting")
    parser.add_argument("--kept", action="store_true", help="score RUN_DIR's own field (no training) first")
    parser.add_argument("--save", type=Path, default=None, help="write each field as a run folder DIR/seed<N>")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "motion_seeds.jsonl")
    args = parser.parse_args(argv)
    clip = load_clip(args.clip)
    run = Path(args.run)
    model = load_ply(run / "static" / "canonical.ply")
    camera = json.loads((run / "focal" / "camera.json").read_text())
    cfg = motion_settings(run, args.preset, args.set)
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

    mesh0 = None  # the clip's frame-1 mesh, moved by the field as the asset's animated mesh is (vertex error)
    if (clip.path / "first_frame.glb").is_file() and clip.gt_verts_path.is_file():
        mesh0 = check_mesh(clip.path / "first_frame.glb").vertices.float()

    seeds: list[int | str] = (["run"] if args.kept else []) + [int(s) for s in args.seeds.split(",") if s]
    for seed in seeds:
        start = time.perf_counter()
        if seed == "run":
            field = load_field(run / "motion").eval()
        else:
            field = train_motion(model, video, front, cfg, perceptual, radius=camera["radius"], seed=seed).field
        seconds = time.perf_counter() - start
        integrity = None
        if args.save is not None:
            folder = run if seed == "run" else args.save / f"seed{seed}"
            integrity = _save_and_measure(field, run, folder, clip, args.every)
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
        if mesh0 is not None:
            with torch.no_grad():
                moved = np.stack([field.deform_points(mesh0, frame_time(t, clip.n_frames)).numpy() for t in frames])
            record.update({k: round(v, 4) for k, v in (vertex_errors(moved, clip.gt_verts_path, frames) or {}).items()})
        if args.set and seed != "run":
            record["settings"] = dict(item.split("=", 1) for item in args.set)
        if integrity is not None:
            record["integrity"] = integrity
        append_result(args.out, record)
    return 0


def motion_settings(run: Path, preset: str, changes: list[str]) -> MotionConfig:
    """The motion settings of ``preset`` (or of ``run``'s config.json for 'run') with ``changes`` (KEY=VALUE)."""
    if preset == "run":
        saved = json.loads((run / "config.json").read_text())["preset"]["motion"]
        fields = {f.name for f in dataclasses.fields(MotionConfig)}
        cfg = MotionConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in fields})
    else:
        cfg = get_preset(preset).motion
    for item in changes:
        key, value = item.split("=", 1)
        current = getattr(cfg, key)  # AttributeError names an unknown setting
        cfg = dataclasses.replace(cfg, **{key: type(current)(json.loads(value)) if current is not None
                                          else json.loads(value)})  # fmt: skip
    return cfg


def _save_and_measure(field, run: Path, folder: Path, clip, every: int) -> dict | None:
    """Write ``field`` as a run folder beside ``run``'s static stage (``folder`` = ``run``: measure it as it is);
    its integrity summary (parts) when the clip has true vertices."""
    if folder == run:
        return measure(folder, clip.path, every, None)["summary"]["parts"] if clip.gt_verts_path.is_file() else None
    (folder / "motion").mkdir(parents=True, exist_ok=True)
    for name in ("static", "focal"):
        link = folder / name
        if not link.exists():
            link.symlink_to((run / name).resolve())
    torch.save(field.state_dict(), folder / "motion" / "field.pt")
    (folder / "motion" / "field.json").write_text(json.dumps({"config": field.config()}))
    if not clip.gt_verts_path.is_file():
        return None
    with torch.no_grad():
        return measure(folder, clip.path, every, None)["summary"]["parts"]


if __name__ == "__main__":
    sys.exit(main())
