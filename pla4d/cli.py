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

    summary = {
        "clip": str(clip_dir),
        "preview": str(out / "preview.png"),
        "video": str(video),
        "frames": settings.num_frames,
        "resolution": settings.resolution,
        "seconds": round(time.perf_counter() - start, 2),
    }
    print(json.dumps(summary, indent=1))
    return 0


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
        help="render the built-in example creature: a clip folder, a preview picture and a video",
        description="Render the built-in example (an animated creature made in code) with the project's own "
        "mesh renderer: front-view RGBA frames (the stand-in for the text-to-video output), held-out "
        "views, the frame-1 mesh, a preview picture and an MP4.",
    )
    demo.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo.add_argument("--frames", type=int, default=32, help="number of frames (default: 32)")
    demo.add_argument("--fps", type=float, default=16.0, help="frames per second (default: 16)")
    demo.add_argument("--resolution", type=int, default=256, help="image size in pixels (default: 256)")
    demo.set_defaults(handler=_demo)

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
    except (UserError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        if os.environ.get("PLA4D_DEBUG"):
            raise
        print(f"pla4d: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pla4d: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
