"""Rig figures (issue 23) for finished runs (``pla4d eval`` / ``pla4d run`` folders with motion):

- the rig's error against the motion it was fitted to (the field's mesh vertices and Gaussian centres at every
  frame): mean and 95th percentile distance as fractions of the bounding-box diagonal, for each bone count;
- the rig stage's time (sampling the field at every frame + the fit) with the default 24 bones;
- novel-view PSNR / LPIPS of the rig-driven splats (centres and rotations by linear blend skinning, scales and
  opacities held at their mean over the frames, ``pla4d.rig.fit.held_appearance``, as Blender shows them) against
  the field-driven ones, both scored against the clip's ground truth with ``pla4d eval``'s scorer, when the run's
  clip has novel views;
- ``--size``: the fit alone at the target size (32 frames, 20k Gaussians + 20k mesh vertices), the mesh taken
  from a run's mesh plus its edge midpoints (vertices of the once-subdivided mesh, moved as their edge moves).

Usage: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/rig_bench.py out/bench4d/*/run --bones 8,16,24,32``
(one JSON line per run and bone count; ``--out`` also writes them to a file).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pla4d.asset.format import Asset4D, frame_model, read_asset  # noqa: E402
from pla4d.rig.fit import build_rig, rig_driven_asset  # noqa: E402


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _load() -> float:
    return os.getloadavg()[0]


def fit_errors(asset: Asset4D, bones: int) -> dict[str, Any]:
    mesh = None if asset.mesh is None else np.asarray(asset.mesh.positions)
    rig, wall, cpu = _timed(build_rig, np.asarray(asset.positions), mesh, bones=bones)
    return {"bones": bones, "mesh": rig.info.get("mesh"), "gaussians": rig.info.get("gaussians"),
            "iterations": rig.info["iterations"], "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "load_1min": round(_load(), 2), "rig": rig}  # fmt: skip


def stage_time(run: Path) -> dict[str, Any]:
    """What the rig stage does in a run: sample the field at every asset frame, fit 24 bones."""
    from pla4d.gaussians.ply import load_ply
    from pla4d.runner.inputs import check_mesh
    from pla4d.runner.motion import load_field
    from pla4d.runner.rig import sample_motion

    summary = json.loads((run / "summary.json").read_text())
    field = load_field(run / "motion")
    canonical = load_ply(run / "static" / "canonical.ply")
    mesh = check_mesh(summary["inputs"]["mesh"])
    (centres, verts), wall_s, cpu_s = _timed(sample_motion, canonical, field, mesh, int(summary["asset_frames"]))
    rig, wall_f, cpu_f = _timed(build_rig, centres, verts, bones=24)
    return {"sample_wall_s": round(wall_s, 2), "sample_cpu_s": round(cpu_s, 2), "fit_wall_s": round(wall_f, 2),
            "fit_cpu_s": round(cpu_f, 2), "stage_wall_s": round(wall_s + wall_f, 2),
            "gaussians": int(centres.shape[1]), "vertices": None if verts is None else int(verts.shape[1]),
            "frames": int(centres.shape[0]), "load_1min": round(_load(), 2)}  # fmt: skip


def novel_views(run: Path, asset: Asset4D, rig: Any, every: int) -> dict[str, Any] | None:
    """Field-driven vs rig-driven splats on the run's clip's novel views (same scorer as ``pla4d eval``)."""
    from pla4d.clip import load_clip
    from pla4d.evaluate import Scorer, _aggregate, render_views

    clip_dir = Path(json.loads((run / "summary.json").read_text())["inputs"]["video"]).parent
    if not (clip_dir / "novel").is_dir():
        return None
    clip = load_clip(clip_dir)
    frames = list(range(0, min(clip.n_frames, asset.num_frames), every))
    asset.rig = rig
    rigged = rig_driven_asset(asset)  # what `pla4d eval --method rig` scores
    positions, rotations = rigged.positions, rigged.rotations
    # Diagnostic: the rig's centres and rotations with the field's own scales and opacities (what the rig cannot
    # carry), to split the rig-driven drop into pose error and held scales / opacities.
    posed = Asset4D(asset.canonical, positions=positions, rotations=rotations, scales=asset.scales,
                    opacities=asset.opacities, fps=asset.fps)  # fmt: skip
    scorer = Scorer("alex")
    out = {}
    for name, source in (("field", asset), ("rig", rigged), ("rig_field_scales_opacities", posed)):
        per_view: dict[str, list[dict[str, float]]] = {v: [] for v in clip.novel_views}
        for t in frames:
            renders = render_views(frame_model(source, t), clip, clip.novel_views)
            for view in clip.novel_views:
                per_view[view].append(scorer.score(renders[view], clip.load_frame(view, t)))
        mean, _ = _aggregate(per_view)
        out[name] = {"psnr": round(mean["psnr"], 3), "lpips": round(mean["lpips"], 4)}
    out["frames"] = frames
    out["psnr_drop_db"] = round(out["field"]["psnr"] - out["rig"]["psnr"], 3)
    return out


def target_size(run: Path) -> dict[str, Any]:
    """The fit alone at 32 frames, 20k Gaussians, 20k mesh vertices (the issue's timing target)."""
    asset = read_asset(run / "asset", mmap=False)
    g = np.asarray(asset.positions)[:32, :20_000]
    verts = np.asarray(asset.mesh.positions)[:32]
    faces = np.asarray(asset.mesh.faces, np.int64)
    edges = np.unique(np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1), axis=0)
    mid = 0.5 * (verts[:, edges[:, 0]] + verts[:, edges[:, 1]])
    mesh = np.concatenate([verts, mid], axis=1)[:, :20_000]
    rig, wall, cpu = _timed(build_rig, g, mesh, bones=24)
    return {"frames": int(g.shape[0]), "gaussians": int(g.shape[1]), "vertices": int(mesh.shape[1]),
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "threads": torch.get_num_threads(),
            "load_1min": round(_load(), 2), "mesh": rig.info["mesh"], "gaussians_err": rig.info["gaussians"],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with motion (asset/, motion/, static/)")
    parser.add_argument("--bones", default="8,16,24,32", help="bone counts to fit (comma list)")
    parser.add_argument("--every", type=int, default=4, help="score every n-th frame on the novel views (0: no)")
    parser.add_argument("--no-stage", action="store_true", help="skip the stage timing")
    parser.add_argument("--size", action="store_true", help="also time the fit at 32 x (20k + 20k) points")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON lines here")
    args = parser.parse_args()
    lines = []
    for run in args.runs:
        asset = read_asset(run / "asset", mmap=False)
        name = run.parent.name if run.name == "run" else run.name
        for bones in [int(b) for b in args.bones.split(",") if b.strip()]:
            record = fit_errors(asset, bones)
            rig = record.pop("rig")
            record["clip"] = name
            if bones == 24 and args.every > 0 and asset.rotations is not None:
                record["novel_views"] = novel_views(run, asset, rig, args.every)
            lines.append(record)
            print(json.dumps(record), flush=True)
        if not args.no_stage:
            lines.append({"clip": name, "stage": stage_time(run)})
            print(json.dumps(lines[-1]), flush=True)
        if args.size and asset.mesh is not None:
            lines.append({"clip": name, "target_size": target_size(run)})
            print(json.dumps(lines[-1]), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
