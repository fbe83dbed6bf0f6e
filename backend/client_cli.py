"""``pla4d submit`` / ``pla4d jobs`` / ``pla4d fetch`` / ``pla4d cancel``: the backend from scripts.

Errors end with one ``pla4d: error: ...`` line (exit status 2 for usage and connection problems, 1 for a
failed job, 130 after Ctrl-C, which also cancels the job being followed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

DEFAULT_SERVER = os.environ.get("PLA4D_SERVER", "tcp://127.0.0.1:5555")
MISSING = 'the backend client needs pyzmq and msgpack: pip install "pla4d[backend]"'


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pla4d", description="pla4d backend client commands")
    sub = p.add_subparsers(dest="command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--server", default=DEFAULT_SERVER, help="backend endpoint (default %(default)s; $PLA4D_SERVER)")
        q.add_argument("--secret-file", help="shared secret of a keyed backend (or $PLA4D_BACKEND_SECRET)")
        q.add_argument("--curve-server-key", help="the backend's CurveZMQ public key file (server.key)")
        q.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer")

    s = sub.add_parser("submit", help="submit a job, print its progress, save its result")
    s.add_argument("prompt", nargs="?", help="text prompt (text-to-4D; needs a backend with a text-to-video model)")
    s.add_argument("--example", action="store_true", help="the built-in example instead of a prompt")
    s.add_argument("--image", help="frame-1 PNG (RGBA, matted): lift it with --mesh")
    s.add_argument("--video", help="a folder of RGBA PNG frames (or a .zip of them): video-to-4D with --mesh")
    s.add_argument("--mesh", help="the frame-1 mesh (.glb/.obj/...)")
    s.add_argument("--fps", type=float, help="the video's frame rate (default: the backend's)")
    s.add_argument("--preset", help="quality preset (default: the backend's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--iterations", type=int, help="static-stage iterations (override)")
    s.add_argument("--motion-iterations", type=int, help="4D-stage iterations (override)")
    s.add_argument("--frames", type=int, default=8, help="example: frame count")
    s.add_argument("--resolution", type=int, default=128, help="example: pixels")
    s.add_argument("--out", help="where to save the result (default pla4d-jobs/JOB_ID)")
    s.add_argument("--no-fetch", action="store_true", help="do not download the result")
    s.add_argument("--detach", action="store_true", help="print the job id and return at once")
    s.add_argument("--json", action="store_true", help="print events as JSON lines")
    common(s)
    j = sub.add_parser("jobs", help="list the backend's jobs")
    j.add_argument("--state", choices=["queued", "running", "done", "failed", "cancelled"])
    j.add_argument("--limit", type=int, default=50)
    j.add_argument("--json", action="store_true")
    common(j)
    f = sub.add_parser("fetch", help="download a done job's result (resumes partial downloads)")
    f.add_argument("job_id")
    f.add_argument("--out", help="default pla4d-jobs/JOB_ID")
    common(f)
    c = sub.add_parser("cancel", help="cancel a queued or running job")
    c.add_argument("job_id")
    common(c)
    return p


def _client(args: argparse.Namespace):
    from backend.client import Client
    from backend.protocol import load_secret

    secret = load_secret(args.secret_file, os.environ.get("PLA4D_BACKEND_SECRET"))
    curve = None
    if args.curve_server_key:
        import zmq.auth

        curve = zmq.auth.load_certificate(args.curve_server_key)[0]
    return Client(args.server, secret=secret, timeout=args.timeout, curve_server_key=curve)


def _progress_line(event: dict) -> str | None:
    name = event.get("event")
    if name == "progress":
        loss = event.get("losses", {}).get("loss")
        loss_text = f" loss {loss:.4f}" if isinstance(loss, float) else ""
        return (f"{event.get('stage')}: {event.get('iteration')}/{event.get('total')}{loss_text}"
                f" eta {event.get('eta_s', 0):.0f}s")  # fmt: skip
    if name in ("accepted", "queue"):
        pos = event.get("queue_position")
        return "running" if pos == 0 else f"queued at position {pos}"
    if name in ("stage_started", "stage_finished"):
        return f"{event.get('stage')}: {'started' if name == 'stage_started' else 'finished'}"
    if name == "preview":
        return None
    return name


def _submit(args: argparse.Namespace) -> int:
    settings: dict = {"seed": args.seed, "example": {"frames": args.frames, "resolution": args.resolution}}
    if args.preset:
        settings["preset"] = args.preset
    if args.fps is not None:
        settings["fps"] = args.fps
    overrides = {}
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    if args.motion_iterations is not None:
        overrides["motion_iterations"] = args.motion_iterations
    if overrides:
        settings["overrides"] = overrides
    with _client(args) as client:
        if args.prompt is not None:
            job = client.submit("text", settings, prompt=args.prompt)
        elif args.video:
            if not args.mesh:
                raise ValueError("--video needs --mesh (the first frame's mesh)")
            for path in (args.video, args.mesh):
                if not Path(path).exists():
                    raise ValueError(f"not found: {path}")
            job = client.submit("video", settings, frames=Path(args.video), mesh=Path(args.mesh))
        elif args.image or args.mesh:
            if not (args.image and args.mesh):
                raise ValueError("--image and --mesh go together")
            job = client.submit("lift", settings, image=Path(args.image), mesh=Path(args.mesh))
        elif args.example:
            job = client.submit("example", settings)
        else:
            raise ValueError("give a prompt, --example, --video and --mesh, or --image and --mesh")
        job_id = job["job_id"]
        print(f"job {job_id} accepted (queue position {job['queue_position']})", file=sys.stderr)
        if args.detach:
            print(job_id)
            return 0
        final = None
        last_line = 0.0
        try:
            for event in client.follow(job_id, timeout=max(args.timeout, 600)):
                if args.json:
                    print(json.dumps({k: v for k, v in event.items() if k != "points"}), flush=True)
                else:
                    line = _progress_line(event)
                    now = time.monotonic()
                    if line and (event.get("event") != "progress" or now - last_line > 1 or
                                 event.get("iteration") == event.get("total")):  # fmt: skip
                        print(f"[{job_id}] {line}", file=sys.stderr, flush=True)
                        last_line = now
                final = event
        except KeyboardInterrupt:
            client.cancel(job_id)
            print(f"pla4d: cancelled job {job_id}", file=sys.stderr)
            return 130
        if final is None or final["event"] != "done":
            if final is not None and final["event"] == "failed":
                print(
                    f"pla4d: error: job {job_id} failed: {final.get('code')}: {final.get('message')}", file=sys.stderr
                )
            else:
                print(f"pla4d: error: job {job_id} was cancelled", file=sys.stderr)
            return 1
        if not args.no_fetch:
            out = Path(args.out or Path("pla4d-jobs") / job_id)
            stats = client.fetch(job_id, out)
            print(f"saved {len(stats['files'])} files ({stats['bytes']} bytes) to {out}", file=sys.stderr)
            print(str(out))
    return 0


def _jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        jobs = client.list(args.state, args.limit)
    if args.json:
        print(json.dumps(jobs, indent=1))
        return 0
    print(f"{'job':16}  {'kind':8} {'state':10} {'stage':9} {'queue':5}  {'created':19}  error")
    for job in jobs:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["created"]))
        error = f"{job['error']['code']}: {job['error']['message']}" if job["error"] else ""
        pos = "" if job["queue_position"] is None else str(job["queue_position"])
        print(
            f"{job['job_id']:16}  {job['kind']:8} {job['state']:10} {job['stage'] or '':9} {pos:5}  {created}  {error}"
        )
    return 0


def _fetch(args: argparse.Namespace) -> int:
    out = Path(args.out or Path("pla4d-jobs") / args.job_id)
    with _client(args) as client:
        stats = client.fetch(args.job_id, out)
    print(f"saved {len(stats['files'])} files ({stats['bytes']} bytes fetched) to {out}", file=sys.stderr)
    print(str(out))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(client.cancel(args.job_id)["state"])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        import msgpack  # noqa: F401
        import zmq  # noqa: F401
    except ImportError:
        print(f"pla4d: error: {MISSING}", file=sys.stderr)
        return 2
    from backend.client import BackendError

    handler = {"submit": _submit, "jobs": _jobs, "fetch": _fetch, "cancel": _cancel}[args.command]
    try:
        return handler(args)
    except BackendError as exc:
        print(f"pla4d: error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1 if exc.code not in ("TIMEOUT", "AUTH_FAILED") else 2
    except (ValueError, OSError) as exc:
        print(f"pla4d: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pla4d: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
