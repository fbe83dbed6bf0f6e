"""Rig figures (issue 23) for finished runs (``pla4d eval`` / ``pla4d run`` folders with motion):

- the rig's error against the motion it was fitted to (the field's mesh vertices and Gaussian centres at every
  frame): mean and 95th percentile distance as fractions of the bounding-box diagonal, for each bone count;
- the rig stage's time (sampling the field at every frame + the fit) with the default 24 bones;
- novel-view PSNR / LPIPS of the rig-driven splats (centres and rotations by linear blend skinning, scales and
  opacities held at their mean over the frames, ``pla4d.rig.fit.held_appearance``, as Blender shows them) against
  the field-driven ones, both scored against the clip's ground truth with ``pla4d eval``'s scorer, when the run's
  clip has novel views;
- ``--size``: the fit alone at the target size (32 frames, 20k Gaussians + 20k mesh vertices), the mesh taken
  from a run's mesh plus its edge midpoints (vertices of the once-subdivided mesh, moved as their edge moves);
- ``--blender``: Blender playback of rigged splats (bpy 5.0.1 from ``.venv-bpy``): a synthetic rigged asset
  (``pla4d.rig.synthetic``: ``--gaussians`` splats on 24 bones, 32 frames) imported with the add-on's rig
  import; the import time, the frame change (``scene.frame_set`` as a whole: the Action, the skinning handler,
  the splat instancing) with every frame skinned and then with the skinned frames kept (the timeline played
  again, the pose unchanged), the handler's part in both cases (blender_addon/rig_playback.py: pose matrices, the
  product, rotations, ``foreach_set``; or the kept frame's ``foreach_set``), ``frame_set`` without the add-on's
  handlers (the Action and the armature only: the splats do not change) and with the kept frames but without the
  splat instancing (the rest is the instancing of the splats, which dominates), then the cache path (the same
  asset imported as Gaussians) in the same process. Wall and CPU
  milliseconds (CPU: every thread of the process; less inflated than wall time on a shared machine).

Usage: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/rig_bench.py out/bench4d/*/run --bones 8,16,24,32``
(one JSON line per run and bone count; ``--out`` also writes them to a file);
``OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/rig_bench.py --blender`` (one JSON line).
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# The engine (torch, pla4d) is imported where it is used: ``--blender-inner`` runs in Blender's Python.


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _load() -> float:
    return os.getloadavg()[0]


def fit_errors(asset: Any, bones: int) -> dict[str, Any]:
    from pla4d.rig.fit import build_rig

    mesh = None if asset.mesh is None else np.asarray(asset.mesh.positions)
    rig, wall, cpu = _timed(build_rig, np.asarray(asset.positions), mesh, bones=bones)
    return {"bones": bones, "mesh": rig.info.get("mesh"), "gaussians": rig.info.get("gaussians"),
            "iterations": rig.info["iterations"], "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "load_1min": round(_load(), 2), "rig": rig}  # fmt: skip


def clip_of(run: Path, clip: Path | None) -> Path:
    """The clip folder a run was made from (its summary's video), unless given."""
    if clip is not None:
        return clip
    return Path(json.loads((run / "summary.json").read_text())["inputs"]["video"]).parent


def load_asset(run: Path, clip: Path) -> Any:
    """The run's 4D asset; for a folder with only the stages (``static/``, ``motion/``: a harness's), the asset the
    asset stage would build from them and the clip's mesh (every frame of the field, no time multiplier)."""
    from pla4d.asset.format import read_asset

    if (run / "asset" / "asset.json").is_file():
        return read_asset(run / "asset", mmap=False)
    from pla4d.gaussians.ply import load_ply
    from pla4d.runner.inputs import check_mesh
    from pla4d.runner.motion import build_asset, load_field

    field = load_field(run / "motion")
    frames = int(json.loads((run / "motion" / "field.json").read_text())["config"]["num_frames"])
    return build_asset(load_ply(run / "static" / "canonical.ply"), field, check_mesh(clip / "first_frame.glb"), frames,
                       1, 8.0)  # fmt: skip


def stage_time(run: Path, clip: Path, frames: int) -> dict[str, Any]:
    """What the rig stage does in a run: sample the field at every asset frame, fit 24 bones."""
    from pla4d.gaussians.ply import load_ply
    from pla4d.rig.fit import build_rig
    from pla4d.runner.inputs import check_mesh
    from pla4d.runner.motion import load_field
    from pla4d.runner.rig import sample_motion

    field = load_field(run / "motion")
    canonical = load_ply(run / "static" / "canonical.ply")
    mesh = check_mesh(clip / "first_frame.glb")
    (centres, verts), wall_s, cpu_s = _timed(sample_motion, canonical, field, mesh, frames)
    rig, wall_f, cpu_f = _timed(build_rig, centres, verts, bones=24)
    return {"sample_wall_s": round(wall_s, 2), "sample_cpu_s": round(cpu_s, 2), "fit_wall_s": round(wall_f, 2),
            "fit_cpu_s": round(cpu_f, 2), "stage_wall_s": round(wall_s + wall_f, 2),
            "gaussians": int(centres.shape[1]), "vertices": None if verts is None else int(verts.shape[1]),
            "frames": int(centres.shape[0]), "load_1min": round(_load(), 2)}  # fmt: skip


def novel_views(clip_dir: Path, asset: Any, rig: Any, every: int) -> dict[str, Any] | None:
    """Field-driven vs rig-driven splats on the run's clip's novel views (same scorer as ``pla4d eval``)."""
    from pla4d.asset.format import Asset4D, frame_model
    from pla4d.clip import load_clip
    from pla4d.evaluate import Scorer, _aggregate, render_views
    from pla4d.rig.fit import rig_driven_asset

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


def target_size(asset: Any) -> dict[str, Any]:
    """The fit alone at 32 frames, 20k Gaussians, 20k mesh vertices (the issue's timing target)."""
    import torch

    from pla4d.rig.fit import build_rig

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


def blender_playback(n: int, python: Path) -> dict[str, Any]:
    """Write the synthetic rigged asset, then time its playback inside Blender's Python (``--blender-inner``)."""
    import subprocess
    import tempfile

    from pla4d.rig.synthetic import chain_rig_asset

    with tempfile.TemporaryDirectory(prefix="pla4d-rig-bench-") as tmp:
        chain_rig_asset(Path(tmp) / "asset", n)
        cmd = [str(python), __file__, "--blender-inner", str(Path(tmp) / "asset"), "--gaussians", str(n)]
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", BLENDER_USER_RESOURCES=str(Path(tmp) / "user"))
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
        if result.returncode != 0:
            raise RuntimeError(f"Blender's side failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])


def blender_inner(asset: Path) -> dict[str, Any]:
    """Inside Blender's Python: install the add-on, import the rigged asset, time the frame changes."""
    import importlib
    import statistics
    import tempfile

    import build_addon

    zip_path = build_addon.build(Path(tempfile.mkdtemp(prefix="pla4d-rig-addon-")))
    import bpy

    bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default", enable_on_install=True)
    rig_import = importlib.import_module("bl_ext.user_default.pla4d.rig_import")
    rig_playback = importlib.import_module("bl_ext.user_default.pla4d.rig_playback")
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start = 1
    start = time.perf_counter()
    splats = rig_import.import_rig(bpy.context, str(asset), verify=True)[1]
    import_s = time.perf_counter() - start
    frames = list(range(scene.frame_start, scene.frame_end + 1))

    def frame_set_ms() -> tuple[float, float]:
        """Median wall and CPU (every thread of the process) milliseconds of ``scene.frame_set``."""
        times, cpu = [], []
        for f in frames * 2:
            t0, c0 = time.perf_counter(), time.process_time()
            scene.frame_set(f)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return round(statistics.median(times) * 1e3, 2), round(statistics.median(cpu) * 1e3, 2)

    # Every frame skinned (nothing kept), then the timeline played again with every frame kept (the pose unchanged).
    keep = rig_playback.RIG_CACHE_BYTES
    rig_playback.RIG_CACHE_BYTES = 0
    rig_playback.forget(splats)
    whole, whole_cpu = frame_set_ms()
    rig_playback.RIG_CACHE_BYTES = keep
    for f in frames:
        scene.frame_set(f)
    kept, kept_cpu = frame_set_ms()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    skin = rig_playback._skins[splats.session_uid]
    handler, handler_cpu, handler_kept, handler_kept_cpu = [], [], [], []
    for f in frames * 2:
        scene.frame_set(f)
        t0, c0 = time.perf_counter(), time.process_time()
        rig_playback.skin_object(splats, depsgraph, force=True)  # the handler's work at this frame's pose
        handler.append(time.perf_counter() - t0)
        handler_cpu.append(time.process_time() - c0)
        skin.last = None  # as at a frame change: the kept frame is written
        t0, c0 = time.perf_counter(), time.process_time()
        rig_playback.skin_object(splats, depsgraph, frame=f)
        handler_kept.append(time.perf_counter() - t0)
        handler_kept_cpu.append(time.process_time() - c0)
    pre, post = bpy.app.handlers.frame_change_pre, bpy.app.handlers.frame_change_post
    pre.remove(rig_playback._on_frame_change_pre)
    post.remove(rig_playback._on_frame_change_post)
    no_handler, _ = frame_set_ms()  # Blender's own evaluation: the Action, the armature (the splats do not change)
    pre.append(rig_playback._on_frame_change_pre)
    post.append(rig_playback._on_frame_change_post)
    splats.modifiers["pla4d Splats"].show_viewport = False
    no_instancing, _ = frame_set_ms()
    count, bones = len(splats.data.points), len(splats["pla4d_rig_bones"])
    # The cache path on the same asset, same process, minutes later: what a rig costs over playing the frames.
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start = 1
    importlib.import_module("bl_ext.user_default.pla4d.importer").import_asset(bpy.context, str(asset), "GAUSSIANS")
    cache, cache_cpu = frame_set_ms()

    def ms(values: list[float]) -> float:
        return round(statistics.median(values) * 1e3, 2)

    return {"bench": "rig_blender", "blender": bpy.app.version_string, "gaussians": count, "bones": bones,
            "frames": len(frames), "import_s": round(import_s, 3),
            "frame_set_ms": whole, "frame_set_cpu_ms": whole_cpu, "frame_set_kept_ms": kept,
            "frame_set_kept_cpu_ms": kept_cpu, "handler_ms": ms(handler),
            "handler_p95_ms": round(sorted(handler)[int(0.95 * len(handler))] * 1e3, 2),
            "handler_cpu_ms": ms(handler_cpu), "handler_cpu_min_ms": round(min(handler_cpu) * 1e3, 2),
            "handler_kept_ms": ms(handler_kept),
            "handler_kept_cpu_ms": ms(handler_kept_cpu), "frame_set_no_handler_ms": no_handler,
            "frame_set_no_instancing_ms": no_instancing, "cache_path_frame_set_ms": cache,
            "cache_path_frame_set_cpu_ms": cache_cpu,
            "skin_threads": 2 if rig_playback.THREADED else 1, "cores": os.cpu_count(),
            "load_1min": round(_load(), 2), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="run folders with motion (asset/, motion/, static/)")
    parser.add_argument("--bones", default="8,16,24,32", help="bone counts to fit (comma list)")
    parser.add_argument("--every", type=int, default=4, help="score every n-th frame on the novel views (0: no)")
    parser.add_argument("--no-stage", action="store_true", help="skip the stage timing")
    parser.add_argument("--size", action="store_true", help="also time the fit at 32 x (20k + 20k) points")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON lines here")
    parser.add_argument("--blender", action="store_true", help="time Blender playback of rigged splats")
    parser.add_argument("--gaussians", type=int, default=100_000, help="splats for --blender")
    parser.add_argument("--clip", type=Path, default=None, help="the runs' clip folder (runs without summary.json)")
    parser.add_argument("--bpy-python", type=Path, default=REPO / ".venv-bpy" / "bin" / "python")
    parser.add_argument("--blender-inner", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.blender_inner is not None:
        print(json.dumps(blender_inner(args.blender_inner)), flush=True)
        return 0
    lines = []
    if args.blender:
        lines.append(blender_playback(args.gaussians, args.bpy_python))
        print(json.dumps(lines[-1]), flush=True)
    for run in args.runs:
        clip = clip_of(run, args.clip)
        asset = load_asset(run, clip)
        name = clip.name
        for bones in [int(b) for b in args.bones.split(",") if b.strip()]:
            record = fit_errors(asset, bones)
            rig = record.pop("rig")
            record["clip"] = name
            if bones == 24 and args.every > 0 and asset.rotations is not None:
                record["novel_views"] = novel_views(clip, asset, rig, args.every)
            lines.append(record)
            print(json.dumps(record), flush=True)
        if not args.no_stage:
            lines.append({"clip": name, "stage": stage_time(run, clip, asset.num_frames)})
            print(json.dumps(lines[-1]), flush=True)
        if args.size and asset.mesh is not None:
            lines.append({"clip": name, "target_size": target_size(asset)})
            print(json.dumps(lines[-1]), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
