"""The ``pla4d`` command line.

User mistakes (bad paths, bad numbers) end with one ``pla4d: error: ...`` line and exit status 2,
never a traceback. Set ``PLA4D_DEBUG=1`` to see the traceback anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pla4d import __version__
from pla4d.errors import MissingWeightsError

if TYPE_CHECKING:
    from pla4d.config import PresetConfig


class UserError(Exception):
    """A problem the user can fix; reported as one line without a traceback."""


class _Parser(argparse.ArgumentParser):
    """Usage mistakes (a bad value, a missing argument) end like every other user error: one line, exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message}")


def _settings(args: argparse.Namespace, scope: str) -> tuple[PresetConfig, dict[str, Any]]:
    """The preset with the command line's settings applied, and the run-level values (seed, fps, example)."""
    from pla4d import settings
    from pla4d.config import get_preset

    values = settings.parsed(args)
    return settings.apply(get_preset(args.preset), values), settings.run_values(values, scope)


def _preset(args: argparse.Namespace) -> PresetConfig:
    return _settings(args, args.command)[0]


def _print(summary: dict[str, Any]) -> int:
    print(json.dumps(summary, indent=1))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pla4d.runner import run_example

    preset, values = _settings(args, "demo")
    out = Path(args.out)
    start = time.perf_counter()
    run = run_example(out / "run", preset, values, seed=values["job.seed"], device=args.device,
                      render_only=args.render_only, novel_views=True)  # fmt: skip
    clip = Path(run["clip"])
    preview, video = _demo_pictures(clip, out, int(values["example.frames"]), float(values["asset.fps"] or 16.0))
    summary = {
        "clip": str(clip),
        "run": None if args.render_only else run["run"],
        "asset": run.get("asset"),
        "exports": run.get("exports"),
        "preview": str(preview),
        "video": str(video),
        "frames": run["frames"],
        "resolution": values["example.resolution"],
        "seconds": round(time.perf_counter() - start, 2),
    }
    return _print(summary)


def _demo_pictures(clip: Path, out: Path, frames: int, fps: float) -> tuple[Path, Path]:
    """A contact sheet of every view and an MP4 of the front view (what the method sees) beside a 45-degree view
    (what it must infer)."""
    import numpy as np

    from pla4d.media import composite, contact_sheet, load_png, save_png, write_video

    views = ["input"] + sorted(str(p.relative_to(clip)) for p in (clip / "novel").iterdir() if p.is_dir())
    shown = sorted({round(i * (frames - 1) / 7) for i in range(8)}) if frames > 1 else [0]
    rows = [[composite(load_png(clip / v / f"{t:03d}.png")) for t in shown] for v in views]
    save_png(out / "preview.png", contact_sheet(rows))
    video_frames = []
    for t in range(frames):
        front = composite(load_png(clip / "input" / f"{t:03d}.png"))
        side = composite(load_png(clip / views[1] / f"{t:03d}.png"))
        video_frames.append(np.concatenate([front, side], axis=1))
    return out / "preview.png", write_video(out / "video.mp4", video_frames, fps)


def _lift(args: argparse.Namespace) -> int:
    from pla4d.runner import run_lift

    preset, values = _settings(args, "lift")
    for path, what in ((args.image, "image"), (args.mesh, "mesh")):
        if not Path(path).is_file():
            raise UserError(f"{what} not found: {path}")
    return _print(run_lift(args.image, args.mesh, args.out, preset, seed=values["job.seed"], device=args.device,
                           force=args.force or ()))  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    from pla4d.runner import run_video_to_4d

    preset, values = _settings(args, "run")
    return _print(run_video_to_4d(args.video, args.mesh, args.out, preset, seed=values["job.seed"],
                                  device=args.device, fps=values["asset.fps"], force=args.force or ()))  # fmt: skip


def _eval(args: argparse.Namespace) -> int:
    from pla4d.evaluate import evaluate_clip

    preset, values = _settings(args, "eval")
    if not Path(args.clip).is_dir():
        raise UserError(f"clip folder not found: {args.clip}")
    if args.prompt is not None and not (Path(args.clip) / "cameras.json").is_file():
        # A run folder (pla4d run / generate): CLIP score of its 4D asset against the prompt.
        from pla4d.clipscore import score_run

        print(json.dumps(score_run(args.clip, args.prompt, args.clip_model, args.device if args.device != "auto"
                                   else "cpu", views=args.clip_views)), flush=True)  # fmt: skip
        return 0
    records = evaluate_clip(
        args.clip, preset, frames=args.frames, baseline=args.baseline, out_dir=args.out, seed=values["job.seed"],
        device=args.device, lpips_net=args.lpips_net, method=args.method, save_renders=args.save_renders,
        prompt=args.prompt, clip_model=args.clip_model,
    )  # fmt: skip
    for record in records:
        print(json.dumps(record), flush=True)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from pla4d.runner import run_generate

    preset, values = _settings(args, "generate")
    return _print(run_generate(args.prompt, args.out, preset, seed=values["job.seed"], device=args.device,
                               video=args.video, image=args.image, mesh=args.mesh, force=args.force or ()))  # fmt: skip


def _models(args: argparse.Namespace) -> int:
    from pla4d.models import KNOWN, needed_models
    from pla4d.models.registry import describe, pull, spec_for, verify

    def chosen() -> list:
        if args.ids:
            kinds = {s.id: s.kind for s in KNOWN.values()}
            return [KNOWN.get(i) or spec_for(i, kinds.get(i, "text-to-video")) for i in args.ids]
        if args.preset:
            from pla4d.config import get_preset

            return needed_models(get_preset(args.preset))
        return list(KNOWN.values())

    if args.action == "list":
        rows = [describe(spec) for spec in chosen()]
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        for row in rows:
            state = "installed" if row["installed"] else "missing  "
            extra = " (optional)" if row["optional"] else ""
            print(f"{state}  {row['id']:<36} {row['kind']:<14} {row['size']:<24} {row['licence']}{extra}")
            print(f"           {row['purpose']}; {row['location']}")
        return 0
    if args.action == "pull":
        if not args.ids and not args.preset:
            raise UserError("name the models to pull (ids or rembg session names), or --preset P for a preset's")
        for spec in chosen():
            print(f"pulling {spec.id} ({spec.size}) ...", file=sys.stderr, flush=True)
            try:
                where = pull(spec)
            except (OSError, RuntimeError) as exc:  # network errors, repository not found, disk full
                raise UserError(f"could not pull {spec.id}: {exc}") from None
            print(json.dumps({"id": spec.id, "path": str(where)}), flush=True)
        return 0
    status = 0
    for spec in chosen() if (args.ids or args.preset) else [s for s in KNOWN.values() if describe(s)["installed"]]:
        result = verify(spec)
        print(json.dumps(result), flush=True)
        status = status if result["ok"] else 1
    return status


def _add_common(parser: argparse.ArgumentParser, scope: str) -> None:
    """The preset, the device and every setting of the settings table that this command's stages read."""
    from pla4d import settings
    from pla4d.config import PRESETS

    parser.add_argument("--preset", default="draft", choices=list(PRESETS),
                        help="draft (CPU, minutes), standard or paper (default: draft)")  # fmt: skip
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="(default: auto)")
    settings.add_flags(parser, scope)


def _add_force(parser: argparse.ArgumentParser, stages: tuple[str, ...]) -> None:
    parser.add_argument("--force", action="append", choices=stages, metavar="STAGE",
                        help=f"redo this stage and the ones after it even if cached ({', '.join(stages)})")  # fmt: skip


def _bench(args: argparse.Namespace) -> int:
    from pla4d.bench_raster import main_bench_raster

    return main_bench_raster(args.rest)


def _export(args: argparse.Namespace) -> int:
    from pla4d.asset.export import export_run

    try:
        frames = None if args.frames is None else [int(f) for f in args.frames.split(",") if f.strip()]
        written = export_run(args.run, args.format, args.out, frames)
    except (IndexError, OSError) as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:  # int() of a bad --frames item, an unreadable asset, an unknown format
        raise UserError(f"pla4d export: {exc}") from None
    where = written[0] if len(written) == 1 else f"{len(written)} files in {written[0].parent}"
    print(f"wrote {where}")
    return 0


def _rig(args: argparse.Namespace) -> int:
    from pla4d.runner.rig import rig_run_folder

    try:
        return _print(rig_run_folder(args.run, bones=args.bones, influences=args.influences, seed=args.seed))
    except ValueError as exc:  # no motion, one frame, more bones than points, an unreadable asset
        raise UserError(f"pla4d rig: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pla4d", description="Text-to-4D Gaussian splatting (PLA4D).")
    parser.add_argument("--version", action="version", version=f"pla4d {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    four_d = ("focal", "static", "motion", "rig", "asset", "exports")

    demo = sub.add_parser(
        "demo",
        help="the built-in example end to end: render the creature, then video-to-4D on its frames and mesh",
        description="Render the built-in example (an animated creature made in code) with the project's own "
        "mesh renderer into RUN/example: front-view RGBA frames (the stand-in for the text-to-video output), "
        "held-out views and the frame-1 mesh (the stand-in for the image-to-mesh output); a preview picture and an "
        "MP4 beside it. Then video-to-4D on its frames and frame-1 mesh (OUT/run: focal, static Gaussians, "
        "deformation field, 4D asset, animated-mesh GLB, preview video).",
    )
    demo.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo.add_argument("--render-only", action="store_true", help="only render the example; skip video-to-4D")
    _add_common(demo, "demo")
    demo.set_defaults(handler=_demo)

    lift = sub.add_parser(
        "lift",
        help="frame 1 + its mesh -> static 3D Gaussians (focal alignment, texture and geometry alignment)",
        description="The focal and static stages: find the focal length that matches the mesh's front view to the "
        "frame, then train Gaussians initialised from the mesh. Writes RUN/focal/camera.json and RUN/static/ "
        "(canonical.ply, preview.png, losses.jsonl, static.json); `pla4d run` on the same folder reuses them.",
    )
    lift.add_argument("--image", required=True, help="frame 1: an RGBA PNG with the object matted")
    lift.add_argument("--mesh", required=True, help="the frame's mesh (GLB, glTF or OBJ)")
    lift.add_argument("--out", required=True, help="run folder")
    _add_force(lift, ("focal", "static"))
    _add_common(lift, "lift")
    lift.set_defaults(handler=_lift)

    run = sub.add_parser(
        "run",
        help="video-to-4D: RGBA frames + frame 1's mesh -> static Gaussians, deformation, 4D asset, exports",
        description="Run every stage (focal, static 3D, motion 4D, asset, exports) with the stage cache: stages "
        "whose inputs and settings did not change are skipped (--force STAGE redoes one and those after it). "
        "Every frame and the mesh are read and checked before the first stage.",
    )
    run.add_argument("--video", required=True, help="folder of RGBA PNG frames (frame 1 first)")
    run.add_argument("--mesh", required=True, help="frame 1's mesh (GLB, glTF or OBJ)")
    run.add_argument("--out", required=True, help="run folder")
    _add_force(run, four_d)
    _add_common(run, "run")
    run.set_defaults(handler=_run)

    evaluate = sub.add_parser(
        "eval",
        help="score the method on a benchmark clip folder (PSNR, SSIM, LPIPS, mask IoU, time, memory)",
        description="Run the method on CLIP_DIR's input/ frames and first_frame mesh, then score every novel view. "
        "Prints one JSON line per method.",
    )
    evaluate.add_argument("clip", help="clip folder (cameras.json, input/, novel/, first_frame.glb), or with --prompt "
                          "a run folder")  # fmt: skip
    evaluate.add_argument("--frames", default="0", help="frames to score: 0 (default), a list 0,8,16, or all")
    evaluate.add_argument("--baseline", action="store_true", help="also score the static baseline (GT frame 0)")
    evaluate.add_argument("--out", default=None, help="where the run and pictures go (default: out/eval/CLIP/PRESET)")
    evaluate.add_argument("--lpips-net", default="alex", choices=["alex", "vgg"], help="LPIPS network for scoring")
    evaluate.add_argument(
        "--method", default="4d", choices=["4d", "static", "rig"], help="4d: the whole video-to-4D run (default); "
        "static: the static stage only (its model is scored at every frame); rig: the 4D run's splats driven by its "
        "rig alone (bones, held scales and opacities)"
    )  # fmt: skip
    evaluate.add_argument("--save-renders", default=None, help="write every scored render as DIR/<azimuth>/NNN.png")
    evaluate.add_argument("--prompt", default=None, help="also the CLIP score against this text; with a run folder "
                          "instead of a clip, only the CLIP score of its 4D asset")  # fmt: skip
    evaluate.add_argument("--clip-model", default="openai/clip-vit-large-patch14", help="CLIP model id or folder")
    evaluate.add_argument("--clip-views", type=int, default=8, help="azimuths rendered for the CLIP score of a run")
    _add_common(evaluate, "eval")
    evaluate.set_defaults(handler=_eval)

    generate = sub.add_parser(
        "generate",
        help="text to 4D: video, matte, mesh, focal, static 3D, 4D, export, with the stage cache",
        description="Generate a 4D asset from a prompt (or start from your own --video / --image / --mesh). Every "
        "stage is cached in --out; inputs and models are checked before any work starts (`pla4d models list`). "
        "See docs/text-to-4d.md.",
    )
    generate.add_argument("prompt", nargs="?", default=None, help='the text, e.g. "a panda dancing"')
    generate.add_argument("--out", required=True, help="run folder")
    generate.add_argument("--video", default=None, help="your own video (file or folder of frames) instead of text")
    generate.add_argument("--image", default=None, help="the image-to-mesh input instead of frame 1 (with --video)")
    generate.add_argument("--mesh", default=None, help="your own mesh (+Y up, facing +Z) instead of image-to-mesh")
    _add_force(generate, ("video", "matte", "mesh", *four_d))
    _add_common(generate, "generate")
    generate.set_defaults(handler=_generate)

    models = sub.add_parser(
        "models",
        help="the models the presets need: list (size, licence, cache location), pull (download), verify (hashes)",
        description="list: every known model (or a preset's, or the named ones) and whether it is installed; "
        "pull: download into the Hugging Face cache / rembg folder (needs network); verify: re-hash files.",
    )
    models.add_argument("action", choices=["list", "pull", "verify"], help="what to do")
    models.add_argument("ids", nargs="*", help="model ids, local folders or rembg session names")
    models.add_argument("--preset", default=None, help="the models this preset needs")
    models.add_argument("--json", action="store_true", help="list as JSON")
    models.set_defaults(handler=_models)

    from pla4d.formats.exports import EXPORT_FORMATS

    export = sub.add_parser(
        "export", help="write a run's 4D asset as KHR glTF splats, SPZ, per-frame sequences or the mesh GLB",
        description="Export the 4D asset of RUN (a run folder, or an asset folder) into RUN/exports/ (or --out): "
        + "; ".join(f"{k}: {v[0]}" for k, v in EXPORT_FORMATS.items()) + ". docs/asset-format.md section 7.",
    )  # fmt: skip
    export.add_argument("run", help="run folder (holding asset/) or asset folder")
    export.add_argument("--format", required=True, choices=list(EXPORT_FORMATS), help="what to write")
    export.add_argument("--out", default=None, help="file or folder to write (default: RUN/exports/<name>)")
    export.add_argument("--frames", default=None, help="frames to export, e.g. 0,8,16 (default: all)")
    export.set_defaults(handler=_export)

    rig = sub.add_parser(
        "rig", help="fit an armature to a run's motion: the asset's rig block and exports/rigged.glb",
        description="Skinning decomposition (SSDR) of RUN's 4D asset: rigid bones, a bone tree, at most 4 weights "
        "per Gaussian and vertex; written into RUN/asset (rig block) and RUN/exports/rigged.glb.",
    )  # fmt: skip
    rig.add_argument("run", help="run folder (holding asset/) or asset folder")
    rig.add_argument("--bones", type=int, default=24, help="bones (default: 24)")
    rig.add_argument("--influences", type=int, default=4, choices=[1, 2, 3, 4, 8], help="weights per point")
    rig.add_argument("--seed", type=int, default=0, help="seed of the initial clustering")
    rig.set_defaults(handler=_rig)

    from pla4d.doctor import add_parser as add_doctor

    add_doctor(sub)

    bench = sub.add_parser(
        "bench", help="benchmarks: `pla4d bench raster --help`",
        description="Benchmarks that print one JSON line per configuration. raster: the Gaussian rasterizer's "
        "forward and forward+backward times and peak memory (its options: `pla4d bench raster --help`).",
    )  # fmt: skip
    bench.add_argument("what", choices=["raster"], help="which benchmark")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options")
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except (UserError, MissingWeightsError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        if os.environ.get("PLA4D_DEBUG"):
            raise
        print(f"pla4d: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pla4d: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
