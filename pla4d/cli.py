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

from pla4d import __version__
from pla4d.errors import MissingWeightsError


class UserError(Exception):
    """A problem the user can fix; reported as one line without a traceback."""


def _demo(args: argparse.Namespace) -> int:
    import numpy as np

    from pla4d.example.clip import ExampleSettings, write_example_clip
    from pla4d.media import composite, contact_sheet, load_png, save_png, write_video

    settings = ExampleSettings(num_frames=args.frames, fps=args.fps, resolution=args.resolution)
    settings.validate()
    out = Path(args.out)
    start = time.perf_counter()
    clip_dir = write_example_clip(out / "clip", settings)

    views = ["input"] + [f"novel/{az:03.0f}" for az in settings.novel_azimuths]
    shown = sorted({round(i * (settings.num_frames - 1) / 7) for i in range(8)}) if settings.num_frames > 1 else [0]
    rows = [[composite(load_png(clip_dir / v / f"{t:03d}.png")) for t in shown] for v in views]
    save_png(out / "preview.png", contact_sheet(rows))

    # The video shows the front view (what the method sees) beside a 45-degree view (what it must infer).
    video_frames = []
    for t in range(settings.num_frames):
        front = composite(load_png(clip_dir / "input" / f"{t:03d}.png"))
        side = composite(load_png(clip_dir / views[1] / f"{t:03d}.png"))
        video_frames.append(np.concatenate([front, side], axis=1))
    video = write_video(out / "video.mp4", video_frames, settings.fps)

    run = None
    if not args.render_only:
        from pla4d.pipeline import run_video_to_4d

        run = run_video_to_4d(
            clip_dir / "input", clip_dir / "first_frame.glb", out / "run", _preset(args), seed=args.seed,
            device=args.device, fps=settings.fps,
        )  # fmt: skip

    summary = {
        "clip": str(clip_dir),
        "run": None if run is None else run["run"],
        "asset": None if run is None else run["asset"],
        "exports": None if run is None else run["exports"],
        "preview": str(out / "preview.png"),
        "video": str(video),
        "frames": settings.num_frames,
        "resolution": settings.resolution,
        "seconds": round(time.perf_counter() - start, 2),
    }
    print(json.dumps(summary, indent=1))
    return 0


def _preset(args: argparse.Namespace):
    from pla4d.config import get_preset

    preset = get_preset(args.preset)
    changes = {}
    if getattr(args, "iterations", None) is not None:
        changes["iterations"] = args.iterations
    if getattr(args, "motion_iterations", None) is not None:
        preset = preset.replace_motion(iterations=args.motion_iterations, epochs=None)
    if getattr(args, "no_contrastive", False):
        changes["batch_views"] = 0
    if changes:
        preset = preset.replace_static(**changes)
    if getattr(args, "no_first_frame_consistency", False):
        preset = preset.replace_motion(first_frame_consistency=False)
    if getattr(args, "no_focal_alignment", False):
        import dataclasses

        preset = dataclasses.replace(preset, focal=dataclasses.replace(preset.focal, enabled=False))
    return preset


def _lift(args: argparse.Namespace) -> int:
    from pla4d.lift import run_lift

    for path, what in ((args.image, "image"), (args.mesh, "mesh")):
        if not Path(path).is_file():
            raise UserError(f"{what} not found: {path}")
    summary = run_lift(args.image, args.mesh, args.out, _preset(args), seed=args.seed, device=args.device)
    print(json.dumps(summary, indent=1))
    return 0


def _run(args: argparse.Namespace) -> int:
    from pla4d.pipeline import run_video_to_4d

    summary = run_video_to_4d(
        args.video,
        args.mesh,
        args.out,
        _preset(args),
        seed=args.seed,
        device=args.device,
        fps=args.fps,
        time_multiplier=args.time_multiplier,
        force=args.force or (),
    )
    print(json.dumps(summary, indent=1))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from pla4d.evaluate import evaluate_clip

    if not Path(args.clip).is_dir():
        raise UserError(f"clip folder not found: {args.clip}")
    if args.prompt is not None and not (Path(args.clip) / "cameras.json").is_file():
        # A run folder (pla4d run / generate): CLIP score of its 4D asset against the prompt.
        from pla4d.clipscore import score_run

        print(json.dumps(score_run(args.clip, args.prompt, args.clip_model, args.device if args.device != "auto"
                                   else "cpu", views=args.clip_views)), flush=True)  # fmt: skip
        return 0
    records = evaluate_clip(
        args.clip,
        _preset(args),
        frames=args.frames,
        baseline=args.baseline,
        out_dir=args.out,
        seed=args.seed,
        device=args.device,
        lpips_net=args.lpips_net,
        method=args.method,
        save_renders=args.save_renders,
        prompt=args.prompt,
        clip_model=args.clip_model,
    )
    for record in records:
        print(json.dumps(record), flush=True)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from pla4d.generate import run_generate

    preset = _preset(args)
    video_changes = {}
    for name, value in (("num_frames", args.frames), ("steps", args.steps), ("negative_prompt", args.negative_prompt),
                        ("width", args.width), ("height", args.height)):  # fmt: skip
        if value is not None:
            video_changes[name] = value
    if args.no_prompt_suffix:
        video_changes["use_prompt_suffix"] = False
    if video_changes:
        preset = preset.replace_video(**video_changes)
    if args.mesh_command_cwd:
        preset = preset.replace_mesh(command_cwd=args.mesh_command_cwd)
    models = {"video": args.video_model, "matte": args.matte_session, "mesh": args.mesh_model,
              "mesh_command": args.mesh_command}  # fmt: skip
    if args.guidance_model is not None:
        models["guidance"] = None if args.guidance_model.lower() == "none" else args.guidance_model
    summary = run_generate(
        args.prompt, args.out, preset, seed=args.seed, device=args.device, video=args.video, image=args.image,
        mesh=args.mesh, force=args.force or (), models=models,
    )  # fmt: skip
    print(json.dumps(summary, indent=1))
    return 0


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


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="draft", help="draft (CPU, minutes), standard or paper (default: draft)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--iterations", type=int, default=None, help="override the static stage's iterations")
    parser.add_argument("--motion-iterations", type=int, default=None, help="override the 4D stage's iterations")
    parser.add_argument(
        "--no-focal-alignment", action="store_true", help="ablation: keep the initial fov (49.1 degrees)"
    )
    parser.add_argument("--no-contrastive", action="store_true", help="ablation: front view only, no GS-mesh views")
    parser.add_argument(
        "--no-first-frame-consistency",
        action="store_true",
        help="ablation: the 4D stage without eq. 10's first-frame consistency term",
    )


def _bench(args: argparse.Namespace, rest: list[str]) -> int:
    if args.what == "raster":
        from pla4d.bench_raster import main_bench_raster

        return main_bench_raster(rest)
    raise UserError(f"unknown benchmark {args.what!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pla4d", description="Text-to-4D Gaussian splatting (PLA4D).")
    parser.add_argument("--version", action="version", version=f"pla4d {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="the built-in example end to end: render the creature, then video-to-4D on its frames and mesh",
        description="Render the built-in example (an animated creature made in code) with the project's own "
        "mesh renderer: front-view RGBA frames (the stand-in for the text-to-video output), held-out "
        "views, the frame-1 mesh (the stand-in for the image-to-mesh output), a preview picture and an MP4. "
        "Then run video-to-4D on its frames and frame-1 mesh (out/demo/run: static Gaussians, deformation field, "
        "4D asset, animated-mesh GLB, preview video).",
    )
    demo.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo.add_argument("--frames", type=int, default=32, help="number of frames (default: 32)")
    demo.add_argument("--fps", type=float, default=16.0, help="frames per second (default: 16)")
    demo.add_argument("--resolution", type=int, default=256, help="image size in pixels (default: 256)")
    demo.add_argument("--render-only", action="store_true", help="only render the example; skip video-to-4D")
    _add_training_options(demo)
    demo.set_defaults(handler=_demo)

    lift = sub.add_parser(
        "lift",
        help="frame 1 + its mesh -> static 3D Gaussians (focal alignment, texture and geometry alignment)",
        description="The static 3D stage: find the focal length that matches the mesh's front view to the frame, "
        "then train Gaussians initialised from the mesh. Writes canonical.ply, camera.json, preview.png, "
        "losses.jsonl, config.json and timings.json into --out.",
    )
    lift.add_argument("--image", required=True, help="frame 1: an RGBA PNG with the object matted")
    lift.add_argument("--mesh", required=True, help="the frame's mesh (GLB, glTF or OBJ)")
    lift.add_argument("--out", required=True, help="run folder")
    _add_training_options(lift)
    lift.set_defaults(handler=_lift)

    run = sub.add_parser(
        "run",
        help="video-to-4D: RGBA frames + frame 1's mesh -> static Gaussians, deformation, 4D asset, exports",
        description="Run every stage (static 3D, motion 4D, asset, exports) with the stage cache: stages whose "
        "inputs and settings did not change are skipped (--force STAGE redoes one and those after it).",
    )
    run.add_argument("--video", required=True, help="folder of RGBA PNG frames (frame 1 first)")
    run.add_argument("--mesh", required=True, help="frame 1's mesh (GLB, glTF or OBJ)")
    run.add_argument("--out", required=True, help="run folder")
    run.add_argument("--fps", type=float, default=None, help="frame rate of the video (default 8)")
    run.add_argument("--time-multiplier", type=int, default=None, help="asset frames per video frame (preset's)")
    run.add_argument("--force", action="append", choices=["static", "motion", "asset", "exports"],
                     help="redo this stage (and the ones after it) even if cached")  # fmt: skip
    _add_training_options(run)
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
        "--method", default="4d", choices=["4d", "static"], help="4d: the whole video-to-4D run (default); "
        "static: the static stage only (its model is scored at every frame)"
    )  # fmt: skip
    evaluate.add_argument("--save-renders", default=None, help="write every scored render as DIR/<azimuth>/NNN.png")
    evaluate.add_argument("--prompt", default=None, help="also the CLIP score against this text; with a run folder "
                          "instead of a clip, only the CLIP score of its 4D asset")  # fmt: skip
    evaluate.add_argument("--clip-model", default="openai/clip-vit-large-patch14", help="CLIP model id or folder")
    evaluate.add_argument("--clip-views", type=int, default=8, help="azimuths rendered for the CLIP score of a run")
    _add_training_options(evaluate)
    evaluate.set_defaults(handler=_eval)

    generate = sub.add_parser(
        "generate",
        help="text to 4D: video, matte, mesh, focal, static 3D, 4D, export, with the stage cache",
        description="Generate a 4D asset from a prompt (or start from your own --video / --image / --mesh). Every "
        "stage is cached in --out; models are checked before any work starts (`pla4d models list`). "
        "See docs/text-to-4d.md.",
    )
    generate.add_argument("prompt", nargs="?", default=None, help='the text, e.g. "a panda dancing"')
    generate.add_argument("--out", required=True, help="run folder")
    generate.add_argument("--video", default=None, help="your own video (file or folder of frames) instead of text")
    generate.add_argument("--image", default=None, help="the image-to-mesh input instead of frame 1 (with --video)")
    generate.add_argument("--mesh", default=None, help="your own mesh (+Y up, facing +Z) instead of image-to-mesh")
    generate.add_argument("--video-model", default=None, help="text-to-video model id or folder (preset's)")
    generate.add_argument("--matte-session", default=None, help="rembg session (u2net, isnet-general-use, ...)")
    generate.add_argument("--mesh-model", default=None, help="image-to-mesh model id or folder (preset's)")
    generate.add_argument("--mesh-command", default=None, help="external image-to-mesh command template "
                          "({image}, {outdir}, {mesh}; docs/text-to-4d.md)")  # fmt: skip
    generate.add_argument("--mesh-command-cwd", default=None, help="working folder of --mesh-command")
    generate.add_argument("--guidance-model", default=None, help="Zero123 model id or folder for the 4D stage, "
                          "or none")  # fmt: skip
    generate.add_argument("--frames", type=int, default=None, help="video frames (preset's)")
    generate.add_argument("--steps", type=int, default=None, help="text-to-video sampling steps (preset's)")
    generate.add_argument("--width", type=int, default=None, help="video width (preset's)")
    generate.add_argument("--height", type=int, default=None, help="video height (preset's)")
    generate.add_argument("--negative-prompt", default=None, help="text-to-video negative prompt (preset's)")
    generate.add_argument(
        "--no-prompt-suffix",
        action="store_true",
        help="do not add the single-centred-object, plain-background suffix to the prompt",
    )
    generate.add_argument(
        "--force",
        action="append",
        choices=["video", "matte", "mesh", "static", "motion", "asset", "exports"],
        help="redo this stage (and the ones after it) even if cached",
    )
    _add_training_options(generate)
    generate.set_defaults(handler=_generate)

    models = sub.add_parser(
        "models",
        help="the models the presets need: list (size, licence, cache location), pull (download), verify (hashes)",
        description="list: every known model (or a preset's, or the named ones) and whether it is installed; "
        "pull: download into the Hugging Face cache / rembg folder (needs network); verify: re-hash files.",
    )
    models.add_argument("action", choices=["list", "pull", "verify"])
    models.add_argument("ids", nargs="*", help="model ids, local folders or rembg session names")
    models.add_argument("--preset", default=None, help="the models this preset needs")
    models.add_argument("--json", action="store_true", help="list as JSON")
    models.set_defaults(handler=_models)

    bench = sub.add_parser("bench", help="benchmarks (e.g. `pla4d bench raster --help`)", add_help=False)
    bench.add_argument("what", choices=["raster"], help="which benchmark")
    bench.set_defaults(handler=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # `bench` passes its remaining arguments to the benchmark's own parser.
    args, rest = parser.parse_known_args(argv)
    if args.command != "bench" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "bench":
            return _bench(args, rest)
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
