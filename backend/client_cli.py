"""``pla4d submit`` / ``pla4d jobs`` / ``pla4d fetch`` / ``pla4d cancel``: the backend from scripts.

``submit``'s setting flags derive from the settings table (:mod:`pla4d.settings`): one flag per remote setting of
any job kind, checked by the table before anything is sent. Errors end with one ``pla4d: error: ...`` line (exit
status 2 for usage and connection problems, 1 for a failed job or a job that cannot be cancelled, 130 after Ctrl-C,
which also cancels the job being followed).

The table is imported only when a parser is built: importing this module needs neither the engine nor pyzmq.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from pla4d.settings import Setting

DEFAULT_SERVER = os.environ.get("PLA4D_SERVER", "tcp://127.0.0.1:5555")
MISSING = 'the backend client needs pyzmq and msgpack: pip install "pla4d[backend]"'
# The job kinds one submit can be, and what picks each.
KINDS = {"example": "--example", "video": "--video", "text": "a prompt", "lift": "--image"}
STATES = ("queued", "running", "done", "failed", "cancelled")
# The server answers a submit before it hands the job to a free worker (in the same pass of its loop, so the
# "running" queue event follows within milliseconds); a queue position is printed once it has held this long.
SETTLE_S = 2.0
SUBMIT_USAGE = """pla4d submit (PROMPT | --example | --video FRAMES --mesh M | --image I --mesh M)
                    [--server tcp://HOST:PORT] [--preset P] [--seed N] [SETTING FLAGS]
                    [--out DIR] [--no-fetch] [--detach] [--json]"""


class _Parser(argparse.ArgumentParser):
    """Usage mistakes end like every other error of these commands: one ``pla4d: error:`` line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"pla4d: error: {message} (see {self.prog} --help)\n")


# ----------------------------------------------------------------------------------------------- parsers


def setting_flags() -> dict[str, dict[str, Setting]]:
    """flag -> {job kind: the setting that kind reads through it}, over every kind's remote settings.

    A flag two settings share (``--frames``: ``example.frames`` for example jobs, ``video.num_frames`` for text
    jobs) is one flag; its value goes to the setting of the submitted job's kind."""
    from pla4d.settings import settings_for

    flags: dict[str, dict[str, Setting]] = {}
    for kind in KINDS:
        for setting in settings_for(kind, remote_only=True):
            flags.setdefault(setting.cli_flag, {})[kind] = setting
    for flag, by_kind in flags.items():
        if len({(s.type, s.switch, s.shortcut) for s in by_kind.values()}) > 1:
            paths = sorted({s.path for s in by_kind.values()})
            raise ValueError(f"settings {paths} share {flag} but read it differently; give one its own flag")
    return flags


def _jobs_text(kinds: list[str]) -> str:
    return (", ".join(kinds[:-1]) + " and " if len(kinds) > 1 else "") + kinds[-1] + " jobs"


def _flag_help(by_kind: dict[str, Setting]) -> str:
    readers: dict[str, tuple[Setting, list[str]]] = {}
    for kind, setting in by_kind.items():
        readers.setdefault(setting.path, (setting, []))[1].append(kind)
    parts = []
    for setting, kinds in readers.values():
        text = setting.help
        if setting.switch == "value" and (setting.type != "str" or setting.choices):
            text += f", {setting.describe_range()}"
        defaults = {setting.default_in(kind) for kind in kinds} - {None}
        if len(defaults) == 1:
            text += f" (default {defaults.pop()})"
        if len(readers) > 1:
            text = f"{_jobs_text(kinds)}: {setting.path}, {text}"
        elif len(kinds) < len(KINDS):
            text += f" [{_jobs_text(kinds)}]"
        parts.append(text)
    text = "; ".join(parts)
    if len(readers) > 1:
        text = "sets the setting the job's kind reads. " + text
    return text.replace("%", "%%")


def _add_job_arguments(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """What a submit names besides the table's settings; the settings group, for the caller to fill."""
    from pla4d.config import PRESETS

    job = p.add_argument_group("the job (one of)")
    job.add_argument("prompt", nargs="?", help="text prompt: text-to-4D (needs a backend with the text models)")
    job.add_argument("--example", action="store_true", help="the built-in animated example (no inputs)")
    job.add_argument("--video", metavar="FRAMES", help="video-to-4D: a folder of RGBA PNG frames, frame 1 first "
                     "by name, or a .zip of them; with --mesh")  # fmt: skip
    job.add_argument("--image", metavar="I", help="the static 3D stage only: frame 1 as an RGBA PNG; with --mesh")
    job.add_argument("--mesh", metavar="M", help="frame 1's mesh (.glb .gltf .obj .ply .stl .off)")
    settings = p.add_argument_group("settings", "derived from the settings table and checked before anything is "
                                    "sent; unset ones keep the preset's (or the job's) default")  # fmt: skip
    settings.add_argument("--preset", metavar="P", help=f"quality preset ({', '.join(PRESETS)}; default: the "
                          "backend's --preset)")  # fmt: skip
    result = p.add_argument_group("the result")
    result.add_argument("--out", metavar="DIR", help="where to save the result (default pla4d-jobs/JOB_ID)")
    result.add_argument("--no-fetch", action="store_true", help="do not download the result")
    result.add_argument("--detach", action="store_true", help="print the job id and return once it is queued")
    result.add_argument("--json", action="store_true", help="print the job's events as JSON lines on stdout")
    _add_connection_arguments(p)
    return settings


def _add_connection_arguments(p: argparse.ArgumentParser) -> None:
    q = p.add_argument_group("the backend")
    q.add_argument("--server", default=DEFAULT_SERVER, metavar="tcp://HOST:PORT",
                   help="the backend's ZeroMQ endpoint (default %(default)s; $PLA4D_SERVER)")  # fmt: skip
    q.add_argument("--secret-file", metavar="F", help="shared secret of a keyed backend (or $PLA4D_BACKEND_SECRET)")
    q.add_argument("--curve-server-key", metavar="F", help="the backend's CurveZMQ public key file (server.key)")
    q.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for an answer (default %(default)s)")  # fmt: skip


def _count(lo: int, hi: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer from {lo} to {hi} (got {text!r})")
        return value

    parse.__name__ = "count"
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pla4d", description="pla4d backend client commands", allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="{submit,jobs,fetch,cancel}")

    s = sub.add_parser("submit", help="submit a job, print its progress, save its result", usage=SUBMIT_USAGE,
                       allow_abbrev=False, description="Submit a job to a pla4d backend, follow it and save its "
                       "result. Ctrl-C cancels the job.")  # fmt: skip
    group = _add_job_arguments(s)
    for flag, by_kind in setting_flags().items():
        first = next(iter(by_kind.values()))
        dest = "flag:" + flag
        if first.switch == "value":
            group.add_argument(flag, dest=dest, metavar=first.type.upper(), help=_flag_help(by_kind))
        else:
            group.add_argument(flag, dest=dest, action="store_const", const=first.switch == "on",
                               help=_flag_help(by_kind))  # fmt: skip
        if first.shortcut is not None:
            shortcut, value, text = first.shortcut
            group.add_argument(shortcut, dest=dest, action="store_const", const=value, help=text)

    j = sub.add_parser("jobs", help="list the backend's jobs", allow_abbrev=False)
    j.add_argument("--state", choices=STATES, help="only the jobs in this state")
    j.add_argument("--limit", type=_count(1, 1000), default=50, metavar="N",
                   help="at most this many jobs, newest first (1 to 1000; default %(default)s)")  # fmt: skip
    j.add_argument("--json", action="store_true", help="print the jobs as one JSON list (every field)")
    _add_connection_arguments(j)
    f = sub.add_parser("fetch", help="download a done job's result (resumes partial downloads)", allow_abbrev=False)
    f.add_argument("job_id", help="the job (as `pla4d jobs` lists it)")
    f.add_argument("--out", metavar="DIR", help="where to save it (default pla4d-jobs/JOB_ID)")
    _add_connection_arguments(f)
    c = sub.add_parser("cancel", help="cancel a queued or running job", allow_abbrev=False)
    c.add_argument("job_id", help="the job (as `pla4d jobs` lists it)")
    _add_connection_arguments(c)
    return p


def _kind_parser(kind: str) -> argparse.ArgumentParser:
    """The submit parser of one job kind: its flags are the table's for that kind (:func:`pla4d.settings.add_flags`),
    so each value is parsed and range-checked by the setting the kind reads."""
    from pla4d.settings import add_flags

    p = _Parser(prog="pla4d submit", usage=SUBMIT_USAGE, allow_abbrev=False)
    _add_job_arguments(p)
    add_flags(p, kind, remote_only=True)
    return p


# ----------------------------------------------------------------------------------------------- submit


def _job_kind(args: argparse.Namespace) -> str:
    given = [kind for kind, chosen in (("text", args.prompt is not None), ("example", args.example),
                                       ("video", args.video), ("lift", args.image)) if chosen]  # fmt: skip
    if len(given) != 1:
        what = "several jobs: " + ", ".join(KINDS[k] for k in given) if given else "no job"
        raise ValueError(f"{what}; give one of a prompt, --example, --video FRAMES --mesh M, --image I --mesh M")
    kind = given[0]
    if kind in ("video", "lift") and not args.mesh:
        raise ValueError(f"{KINDS[kind]} needs --mesh (frame 1's mesh)")
    if kind in ("text", "example") and args.mesh:
        raise ValueError(f"--mesh goes with --video or --image, not with {KINDS[kind]}")
    for path in (args.video, args.image, args.mesh):
        if path and not Path(path).exists():
            raise ValueError(f"not found: {path}")
    return kind


def job_request(args: argparse.Namespace, argv: list[str]) -> tuple[str, dict[str, Any]]:
    """The job's kind and its ``settings`` body, checked by the settings table; ValueError / SystemExit(2) with
    one line naming the flag and its range otherwise. Nothing is sent."""
    kind = _job_kind(args)
    flags = setting_flags()
    for flag, by_kind in flags.items():
        if vars(args)["flag:" + flag] is not None and kind not in by_kind:
            raise ValueError(f"{flag} does not act on {kind} jobs, only on {_jobs_text(list(by_kind))}")
    from pla4d.settings import parsed

    values = parsed(_kind_parser(kind).parse_args(argv))
    settings: dict[str, Any] = {}
    if args.preset:
        settings["preset"] = args.preset
    if "job.seed" in values:
        settings["seed"] = values.pop("job.seed")
    settings["values"] = {path: list(v) if isinstance(v, tuple) else v for path, v in values.items()}
    return kind, settings


def _position_text(position: int | None) -> str:
    if position == 0:
        return "running now"
    if position is None:
        return "waiting for the backend"
    if position == 1:
        return "queued: next in line, waiting for a free worker"
    return f"queued behind {position - 1} waiting job{'s' if position > 2 else ''}"


def _progress_line(event: dict[str, Any]) -> str | None:
    name = event.get("event")
    if name == "progress":
        loss = event.get("losses", {}).get("loss")
        loss_text = f" loss {loss:.4f}" if isinstance(loss, float) else ""
        return (f"{event.get('stage')}: {event.get('iteration')}/{event.get('total')}{loss_text}"
                f" eta {event.get('eta_s', 0):.0f}s")  # fmt: skip
    if name in ("stage_started", "stage_finished"):
        return f"{event.get('stage')}: {'started' if name == 'stage_started' else 'finished'}"
    if name in ("preview", "accepted", "queue"):
        return None
    return name


def _follow(client: Any, job_id: str, position: int | None, args: argparse.Namespace) -> dict[str, Any] | None:
    """Print the job's events until it ends (or, with ``--detach``, until its queue position has settled); the
    final event. The submit reply, the ``accepted`` event and an idle backend's ``queue`` event right after them
    say one thing (where the job stands), so they make one line."""
    from backend.client import BackendError
    from backend.protocol import TERMINAL_EVENTS

    shown: tuple[int | None, str] | None = None
    pending: tuple[int | None, str] | None = (position, "")
    due = time.monotonic() + (0.0 if position == 0 else SETTLE_S)
    last_line = 0.0
    silence = max(args.timeout, 600)

    def say(state: tuple[int | None, str]) -> None:
        text = _position_text(state[0]) + (f" ({state[1]})" if state[1] else "")
        if shown is None:
            print(f"job {job_id} submitted: {text}", file=sys.stderr, flush=True)
        elif not args.json:
            print(f"[{job_id}] {text}", file=sys.stderr, flush=True)

    while True:
        if pending is not None and (pending[0] == 0 or time.monotonic() >= due):
            say(pending)
            shown, pending = pending, None
            if args.detach:
                return None
        wait = max(0.0, due - time.monotonic()) if pending is not None else silence
        event = client.next_event(wait)
        if event is None:
            if pending is not None:
                continue
            raise BackendError("TIMEOUT", f"no event for job {job_id} from {args.server}")
        if event.get("job_id") != job_id:
            continue
        if args.json:
            print(json.dumps({k: v for k, v in event.items() if k not in ("points", "raw")}), flush=True)
        name = event.get("event")
        if name in ("accepted", "queue"):
            state = (event.get("queue_position"), event.get("reason") or "")
            if state != (pending or shown):
                pending = state
                if shown is not None:  # later moves in the queue are news at once
                    due = time.monotonic()
            continue
        if pending is not None:  # the job moved on (a stage started, or it ended): where it stood is settled
            say(pending)
            shown, pending = pending, None
            if args.detach:
                return None
        line = None if args.json else _progress_line(event)
        now = time.monotonic()
        if line and (name != "progress" or now - last_line > 1 or event.get("iteration") == event.get("total")):
            print(f"[{job_id}] {line}", file=sys.stderr, flush=True)
            last_line = now
        if name in TERMINAL_EVENTS:
            return event


def _submit(args: argparse.Namespace, kind: str, settings: dict[str, Any]) -> int:
    files: dict[str, Any] = {}
    if kind == "video":
        files = {"frames": Path(args.video), "mesh": Path(args.mesh)}
    elif kind == "lift":
        files = {"image": Path(args.image), "mesh": Path(args.mesh)}
    with _client(args) as client:
        job = client.submit(kind, settings, prompt=args.prompt, **files)
        job_id = job["job_id"]
        try:
            final = _follow(client, job_id, job.get("queue_position"), args)
        except KeyboardInterrupt:
            client.cancel(job_id)
            print(f"pla4d: cancelled job {job_id}", file=sys.stderr)
            return 130
        if args.detach:
            print(job_id)
            return 0
        if final is None or final["event"] != "done":
            if final is not None and final["event"] == "failed":
                print(f"pla4d: error: job {job_id} failed: {final.get('code')}: {final.get('message')}",
                      file=sys.stderr)  # fmt: skip
            else:
                print(f"pla4d: error: job {job_id} was cancelled", file=sys.stderr)
            return 1
        if not args.no_fetch:
            out = Path(args.out or Path("pla4d-jobs") / job_id)
            stats = client.fetch(job_id, out)
            print(f"saved {len(stats['files'])} files ({stats['bytes']} bytes) to {out}", file=sys.stderr)
            print(str(out))
    return 0


# ----------------------------------------------------------------------------------------------- the rest


def _client(args: argparse.Namespace) -> Any:
    from backend.client import Client
    from backend.protocol import load_secret

    secret = load_secret(args.secret_file, os.environ.get("PLA4D_BACKEND_SECRET"))
    curve = None
    if args.curve_server_key:
        import zmq.auth

        curve = zmq.auth.load_certificate(args.curve_server_key)[0]
    return Client(args.server, secret=secret, timeout=args.timeout, curve_server_key=curve)


def _jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        jobs = client.list(args.state, args.limit)
    if args.json:
        print(json.dumps(jobs, indent=1))
        return 0
    nodes = any(job.get("node") for job in jobs)  # a backend with --executor ray: where each job runs or ran
    print(f"{'job':16}  {'kind':8} {'state':10} {'stage':9} {'queue':5}  {'created':19}  " + ("node  " * nodes)
          + "error")  # fmt: skip
    for job in jobs:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["created"]))
        error = f"{job['error']['code']}: {job['error']['message']}" if job["error"] else ""
        pos = "" if job["queue_position"] is None else str(job["queue_position"])
        node = f"{job.get('node') or '-'}  " if nodes else ""
        print(
            f"{job['job_id']:16}  {job['kind']:8} {job['state']:10} {job['stage'] or '':9} {pos:5}  {created}  "
            f"{node}{error}"
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
        # The reply alone cannot tell "cancelled now" from "cancelled long ago": ask where the job stood first.
        before = client.status(args.job_id)["state"]
        state = client.cancel(args.job_id)["state"] if before in ("queued", "running") else before
    if before in ("queued", "running") and state in ("cancelled", "cancelling"):
        print(state)
        return 0
    print(f"pla4d: error: job {args.job_id} had already finished ({state}); nothing was cancelled", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        import msgpack  # noqa: F401
        import zmq
    except ImportError:
        print(f"pla4d: error: {MISSING}", file=sys.stderr)
        return 2
    from backend.client import BackendError, check_endpoint

    try:
        check_endpoint(args.server)
    except ValueError as exc:
        print(f"pla4d: error: --server {exc}", file=sys.stderr)
        return 2
    try:
        request = job_request(args, argv[1:]) if args.command == "submit" else None
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    except ValueError as exc:
        print(f"pla4d: error: {exc}", file=sys.stderr)
        return 2
    try:
        if request is not None:
            return _submit(args, *request)
        return {"jobs": _jobs, "fetch": _fetch, "cancel": _cancel}[args.command](args)
    except BackendError as exc:
        print(f"pla4d: error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1 if exc.code not in ("TIMEOUT", "AUTH_FAILED") else 2
    except zmq.ZMQBaseError as exc:
        reason = getattr(exc, "strerror", None) or exc  # without the address ZeroMQ repeats
        print(f"pla4d: error: cannot talk to the backend at {args.server}: {reason}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"pla4d: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pla4d: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
