"""``pla4d-backend``: the ZeroMQ job server (see docs/protocol.md), wired from its parts.

- :mod:`backend.transport`: the ROUTER socket, envelopes, authentication, replay and rate limits, dispatch;
- :mod:`backend.uploads`: resumable uploads;
- :mod:`backend.jobs`: the requests about jobs (capabilities, submit with its settings and model checks, status,
  list, cancel, delete, subscribe, fetch);
- :mod:`backend.scheduler`: the queue, queue positions, job events, recovery after a restart;
- :mod:`backend.executor`: where jobs run (:class:`~backend.executor.LocalExecutor`: one worker process per device
  slot; ``--executor ray``: :mod:`backend.executor_ray`, jobs on a Ray cluster); the scheduler talks only to this
  interface;
- :mod:`backend.store`: the SQLite job store.

The socket loop never runs engine code: each job runs in a worker that reports its events back to the loop,
which stores them, forwards them to subscribers and serves everyone else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from backend import __version__
from backend.executor import Executor, LocalExecutor, resolve_devices
from backend.fetches import Fetches
from backend.jobs import KIND_UPLOADS, KINDS, MESH_EXTENSIONS, MODEL_ROLES, Jobs
from backend.protocol import load_secret
from backend.scheduler import Scheduler
from backend.store import JobStore
from backend.transport import Transport, check_bind
from backend.uploads import Uploads

__all__ = ["KINDS", "KIND_UPLOADS", "MESH_EXTENSIONS", "MODEL_ROLES", "Server", "keygen", "main", "resolve_devices"]
DEFAULT_BIND = "tcp://127.0.0.1:5555"
DEFAULT_DATA_DIR = "pla4d-backend-data"
UPLOAD_EXPIRY_CHECK_S = 5.0


class Server:
    """One backend: a transport, uploads, job handlers and a scheduler over an executor, sharing one job store.

    ``executor``: where jobs run; default a :class:`LocalExecutor` over ``device``'s slots, or with ``cluster`` (the
    keyword arguments of :class:`backend.executor_ray.RayExecutor`) a Ray cluster's."""

    def __init__(
        self,
        data_dir: str | Path,
        bind: str = DEFAULT_BIND,
        device: str = "auto",
        preset: str = "draft",
        secret: bytes | None = None,
        curve_secret_file: str | None = None,
        curve_clients_dir: str | None = None,
        rate: float = 500.0,
        burst: float = 1000.0,
        max_upload: int = 1 << 30,
        max_queue: int = 256,
        max_attempts: int = 2,
        insecure: bool = False,
        models: dict[str, str] | None = None,
        executor: Executor | None = None,
        machine_facts: bool = True,
        cluster: dict[str, Any] | None = None,
    ):
        from pla4d.config import PRESETS  # light: dataclasses only, no torch

        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        unknown = set(models or {}) - set(MODEL_ROLES)
        if unknown:
            raise ValueError(f"unknown model roles {sorted(unknown)}; use {', '.join(MODEL_ROLES)}")
        devices = resolve_devices(device)  # a bad --device is refused before any socket exists
        check_bind(bind, bool(secret or curve_secret_file), insecure)  # ... and a public bind before any file
        self.data = Path(data_dir)
        private_dir(self.data)
        private_dir(self.data / "jobs")
        self.ctx = zmq.Context(io_threads=2)
        try:
            self.transport = Transport(self.ctx, bind, secret, curve_secret_file, curve_clients_dir, rate, burst,
                                       insecure, self.data / "seen.sqlite")  # fmt: skip
        except BaseException:
            self.ctx.term()
            raise
        self.store = JobStore(self.data / "jobs.sqlite")
        if executor is None and cluster is not None:
            executor = ray_executor(self.ctx, self.data / "jobs", cluster)
        elif executor is None:
            executor = LocalExecutor(self.ctx, self.data / "jobs", devices)
        self.executor = executor
        self.scheduler = Scheduler(self.store, self.data / "jobs", executor, self.transport.send, max_attempts)
        self.uploads = Uploads(self.data / "uploads", max_upload, self.transport.client_id)
        from backend.machine import MachineFacts

        self.jobs = Jobs(self.data, self.store, self.scheduler, self.transport, self.uploads, preset, models or {},
                         max_queue, MachineFacts() if machine_facts else None)  # fmt: skip
        self.transport.on_gone(self.scheduler.peer_gone)
        self.transport.route(self.uploads.handlers())
        self.transport.route(self.jobs.handlers())
        self.fetches = Fetches(self.data / "jobs", self.store, self.transport)
        self.transport.route(self.fetches.handlers())
        self.scheduler.recover()
        self._last_expiry = 0.0

    @property
    def endpoint(self) -> str:
        return self.transport.endpoint

    @property
    def devices(self) -> list[str]:
        return self.executor.devices

    def capabilities(self) -> dict[str, Any]:
        return self.jobs.capabilities()

    def serve_forever(self) -> None:
        side = [(sock, self.executor.pump) for sock in self.executor.wait_sockets()]
        self.transport.serve_forever(side, self._tick)

    def _tick(self) -> None:
        self.executor.pump()
        self.scheduler.schedule()
        self.fetches.pump()
        self.transport.poll_ms = 5 if self.fetches.busy() else 100
        now = time.monotonic()
        if now - self._last_expiry > UPLOAD_EXPIRY_CHECK_S:
            self._last_expiry = now
            self.uploads.expire()

    def stop(self) -> None:
        """Make :meth:`serve_forever` return (from a signal handler)."""
        self.transport.running = False

    def close(self) -> None:
        self.executor.close()
        self.transport.close()
        self.ctx.term()
        self.store.close()


def ray_executor(ctx: zmq.Context, jobs_dir: Path, cluster: dict[str, Any]) -> Executor:
    """The Ray executor (ray is imported here only: the local path never loads it)."""
    try:
        from backend.executor_ray import RayExecutor
    except ImportError as exc:
        raise ValueError(f"--executor ray needs ray: pip install 'pla4d[cluster]' ({exc})") from None
    return RayExecutor(ctx, jobs_dir, **cluster)


def private_dir(path: Path) -> None:
    """A folder only this user can read (job inputs and results are the user's)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
        os.chmod(path, 0o700)


def check_private_file(path: str | None, what: str) -> None:
    """Refuse a secret that group or others can read (ValueError naming the fix)."""
    if path and os.stat(path).st_mode & 0o077:
        raise ValueError(f"{what} {path} can be read by other users: run `chmod 600 {path}` and start again")


def keygen(out_dir: str, name: str) -> tuple[str, str]:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(out_dir, name)
    os.chmod(secret, 0o600)
    return public, secret


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pla4d-backend",
        description="pla4d ZeroMQ job server (see docs/protocol.md)",
        epilog="subcommand: `pla4d-backend keygen [--out DIR] [--name NAME]` writes a CurveZMQ key pair, NAME.key "
        "(public, for clients) and NAME.key_secret (for --curve-key); `pla4d-backend ray-release --help`: free what a "
        "backend that will not come back holds on a Ray cluster",
    )
    p.add_argument("--bind", default=DEFAULT_BIND, help=f"ZeroMQ endpoint (default {DEFAULT_BIND})")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                   help=f"job store, uploads and result files (default ./{DEFAULT_DATA_DIR})")  # fmt: skip
    p.add_argument(
        "--device", default="auto",
        help="worker devices: auto (one worker per visible GPU, else one CPU worker), cpu, cuda:N, or a comma list "
        "(cuda:0,cuda:1); each worker runs one job at a time (default auto)",
    )  # fmt: skip
    p.add_argument("--preset", default="draft", help="quality preset for jobs that name none (default draft)")
    p.add_argument("--secret-file", help="shared secret (HMAC-SHA256-signed envelopes); or $PLA4D_BACKEND_SECRET")
    p.add_argument("--curve-key", help="CurveZMQ server secret key file (from `pla4d-backend keygen`)")
    p.add_argument("--curve-clients", help="folder of allowed client public keys (*.key); default: any client")
    p.add_argument("--rate", type=float, default=500.0,
                   help="messages per second per client (0: unlimited; default 500)")  # fmt: skip
    p.add_argument("--burst", type=float, default=1000.0, help="rate-limit burst size (default 1000)")
    p.add_argument(
        "--max-upload-mb",
        type=int,
        default=1024,
        metavar="MB",
        help="largest upload, in MiB (default 1024); one client's open uploads hold at most 2 times this, all 4 times",
    )
    p.add_argument(
        "--model", action="append", default=[], metavar="ROLE=ID",
        help="a model for text jobs, by id or local folder: video=..., matte=<rembg session>, mesh=..., "
        "mesh_command='...', guidance=... (repeatable; default: the preset's, see `pla4d models list`)",
    )  # fmt: skip
    p.add_argument("--max-queue", type=int, default=256, metavar="N",
                   help="queued jobs at most; a submit beyond is answered QUEUE_FULL (default 256)")  # fmt: skip
    p.add_argument(
        "--max-attempts",
        type=int,
        default=2,
        metavar="N",
        help="runs of a job before it fails: a backend restart costs one (then INTERRUPTED), and with --executor ray "
        "a lost node too (then WORKER_CRASHED) (default 2)",
    )
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without authentication")
    add_cluster_options(p)
    p.add_argument(
        "--no-machine-facts",
        action="store_true",
        help="skip `pla4d doctor`'s check of this machine at start (the hello then carries no facts)",
    )
    return p


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster (docs/cluster.md)")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where jobs run: local worker processes (default) or a Ray cluster")  # fmt: skip
    g.add_argument("--ray-address", metavar="ADDR",
                   help="auto, HOST:PORT or ray://HOST:PORT (default: start a Ray of this machine)")  # fmt: skip
    g.add_argument("--ray-resource", default="GPU", metavar="NAME",
                   help="the Ray resource one job asks for: GPU (default) or a custom resource name")  # fmt: skip
    g.add_argument("--ray-per-job", type=float, default=1.0, metavar="N", help="how much of it (default 1)")
    g.add_argument("--ray-memory-mb", type=int, default=0, metavar="MB",
                   help="memory one job asks Ray for (default 0: no request)")  # fmt: skip
    g.add_argument("--shared-dir", metavar="DIR",
                   help="a folder every node mounts at this path: jobs run there (a retried job resumes from its "
                   "stage cache); default: each node's own disk, results streamed back through Ray")  # fmt: skip


def cluster_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--executor ray``'s options as :class:`backend.executor_ray.RayExecutor` arguments (None: local)."""
    if args.executor != "ray":
        return None
    address = None if args.ray_address in (None, "", "none") else args.ray_address
    return {"address": address, "resource": args.ray_resource, "per_job": args.ray_per_job,
            "memory_mb": args.ray_memory_mb, "shared_dir": args.shared_dir}  # fmt: skip


def _keygen_main(argv: list[str]) -> int:
    kp = argparse.ArgumentParser(prog="pla4d-backend keygen", description="create a CurveZMQ key pair")
    kp.add_argument("--out", default=".", help="folder for NAME.key (public) and NAME.key_secret (default .)")
    kp.add_argument("--name", default="server", help="file name of the pair (default server)")
    ka = kp.parse_args(argv)
    public, secret = keygen(ka.out, ka.name)
    print(json.dumps({"public": public, "secret": secret}))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keygen"]:
        return _keygen_main(argv[1:])
    if argv[:1] == ["ray-release"]:  # docs/cluster.md: a backend that never comes back
        from backend.ray_cleanup import release_main

        return release_main(argv[1:], DEFAULT_DATA_DIR)
    args = build_parser().parse_args(argv)
    os.umask(0o077)  # the data dir's files (and the workers') are the user's only
    try:
        check_private_file(args.secret_file, "secret file")
        check_private_file(args.curve_key, "CurveZMQ secret key")
        secret = load_secret(args.secret_file, os.environ.get("PLA4D_BACKEND_SECRET"))
        models = {}
        for item in args.model:
            role, sep, value = item.partition("=")
            if not sep or not value.strip():
                raise ValueError(f"--model takes ROLE=ID_OR_FOLDER, got {item!r}")
            models[role.strip()] = value.strip()
        server = Server(
            args.data_dir, args.bind, args.device, args.preset, secret, args.curve_key, args.curve_clients,
            args.rate, args.burst, args.max_upload_mb << 20, args.max_queue, args.max_attempts, args.insecure,
            models, machine_facts=not args.no_machine_facts, cluster=cluster_options(args),
        )  # fmt: skip
    except (ValueError, OSError, zmq.ZMQError) as exc:
        print(f"pla4d-backend: error: {exc}", file=sys.stderr)
        return 2

    def stop(signum, frame):
        server.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    (Path(args.data_dir) / "endpoint").write_text(server.endpoint + "\n")
    workers = ",".join(server.devices)
    if server.transport.insecure_public:
        banner = "!" * 78
        print(f"{banner}\nWARNING: pla4d-backend listens on {args.bind} WITHOUT AUTHENTICATION (--insecure): anyone "
              f"who reaches this address can run jobs and read every result.\n{banner}", file=sys.stderr,
              flush=True)  # fmt: skip
    print(f"pla4d-backend {__version__} listening on {server.endpoint} (data {args.data_dir}, workers {workers},"
          f" auth {'hmac' if secret else 'none'}{'+curve' if args.curve_key else ''})", flush=True)  # fmt: skip
    try:
        server.serve_forever()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
