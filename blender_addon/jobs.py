"""Talking to the backend without ever blocking Blender's UI.

Every network operation (hello, submit + follow + download, watch an existing job, list, cancel, delete, fetch)
runs in a background thread with its own ``pla4d_client.Client`` (ZeroMQ sockets belong to one thread each).
Threads never touch ``bpy``: they put plain messages on a queue, and ``job_updates.tick`` (a ``bpy.app.timers``
callback, which tests call directly because timers never fire in background mode) applies them to the scene
on the main thread: job states, progress, live-preview points, imports. Every failure ends as a one-line
message in the panel (``scene.pla4d.status``), never a traceback.
"""

from __future__ import annotations

import ipaddress
import queue
import re
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINAL = ("done", "failed", "cancelled")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
STATIC_PLY = "static/canonical.ply"  # a lift job's result: the run folder's static stage (docs/protocol.md)

_inbox: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
_threads: dict[str, Task] = {}  # key (job id, or "hello", "list", ...) -> running task
_last_hello: dict[str, Any] = {}


@dataclass
class Settings:
    """A snapshot of the add-on preferences a thread needs (threads must not read bpy)."""

    server: str = "tcp://127.0.0.1:5555"
    secret: str = ""
    curve_server_key: str = ""
    timeout: float = 10.0
    stall_timeout: float = 600.0
    download_dir: str = ""


class UserError(Exception):
    """A problem the user can fix (bad address, offline, missing file): shown as is."""


# ------------------------------------------------------------------------------------------------ addresses


def parse_address(address: str) -> tuple[str, str]:
    """(scheme, host) of a ZeroMQ endpoint; raises :class:`UserError` for anything a DEALER cannot connect to."""
    address = address.strip()
    match = re.fullmatch(r"(tcp)://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})", address)
    if match:
        host, port = match.group(2).strip("[]"), int(match.group(3))
        if not 0 < port < 65536:
            raise UserError(f"Backend address {address!r}: port {port} is out of range")
        return "tcp", host
    if re.fullmatch(r"ipc://\S+", address):
        return "ipc", ""
    raise UserError(
        f"Backend address {address!r} is not valid: use tcp://HOST:PORT (e.g. tcp://127.0.0.1:5555) or ipc://PATH"
    )


def is_local(address: str) -> bool:
    scheme, host = parse_address(address)
    if scheme == "ipc":
        return True
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address(address: str, online_access: bool) -> None:
    """Refuse non-local backends while Blender's "Allow Online Access" is off (the extension guidelines)."""
    if not is_local(address) and not online_access:
        raise UserError(
            f"Blender's online access is off, so the add-on may not connect to {address}. Allow it in "
            "Preferences > System > Network, or run the backend on this computer (tcp://127.0.0.1:5555)."
        )


# ------------------------------------------------------------------------------------------------ messages


def describe(code: str, message: str, server: str) -> str:
    """A backend error code + message -> one sentence for the panel."""
    if code == "TIMEOUT":
        return (
            f"No answer from the pla4d backend at {server}: is pla4d-backend running there, is the address right, "
            "and is the auth key the same as its --secret-file? (a keyed backend answers nothing to a wrong key)"
        )
    if code == "AUTH_FAILED":
        return (
            f"The backend at {server} refused the connection ({message}): set the same auth key as its "
            "--secret-file in the add-on preferences."
        )
    if code == "QUEUE_FULL":
        return f"The backend is busy (its queue is full: {message}); try again when some jobs have finished."
    if code == "RATE_LIMITED":
        return "The backend is busy (too many requests); try again in a moment."
    if code == "MODEL_UNAVAILABLE":
        return f"Not available on this backend: {message}. Use the built-in example or your video frames + mesh."
    if code == "JOB_ACTIVE":
        return f"The job is still queued or running; cancel it first ({message})."
    if code == "NOT_FOUND":
        return f"The backend does not know this: {message}."
    if code in ("INVALID_INPUT", "ENGINE_ERROR", "WORKER_CRASHED", "INTERRUPTED"):
        return f"The job failed ({code}): {message}"
    return f"The backend answered {code}: {message}"


def post(message: str, /, **payload: Any) -> None:
    """Queue a message for the main thread (``job_updates.tick``); ``message`` names what happened."""
    _inbox.put((message, payload))


def pending() -> int:
    """How many messages wait for ``job_updates.tick`` (tests)."""
    return _inbox.qsize()


def busy() -> bool:
    return any(task.is_alive() for task in _threads.values())


def last_hello() -> dict[str, Any]:
    return dict(_last_hello)


# ------------------------------------------------------------------------------------------------ threads


def _client(settings: Settings) -> Any:
    from .pla4d_client.client import Client

    secret = settings.secret.encode() if settings.secret else None
    curve = settings.curve_server_key.strip() or None
    return Client(settings.server, secret=secret, timeout=settings.timeout, curve_server_key=curve)


@dataclass(eq=False)
class Task(threading.Thread):
    """One background network operation; subclasses implement :meth:`work`. Failures become ``error`` posts."""

    settings: Settings
    key: str
    scene: str = ""
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, name=f"pla4d-{self.key}", daemon=True)

    def run(self) -> None:
        from .pla4d_client.client import BackendError

        try:
            self.work()
        except BackendError as exc:
            post("error", key=self.key, scene=self.scene, code=exc.code,
                 text=describe(exc.code, exc.message, self.settings.server))  # fmt: skip
        except UserError as exc:
            post("error", key=self.key, scene=self.scene, code="USER", text=str(exc))
        except Exception as exc:  # a bug or an OS error: still one line for the user, details on the console
            traceback.print_exc()
            post("error", key=self.key, scene=self.scene, code="INTERNAL",
                 text=f"pla4d: {type(exc).__name__}: {exc} (see the system console)")  # fmt: skip
        finally:
            post("task_finished", key=self.key, scene=self.scene)

    def work(self) -> None:
        raise NotImplementedError


@dataclass(eq=False)
class HelloTask(Task):
    def work(self) -> None:
        with _client(self.settings) as client:
            start = time.perf_counter()
            info = client.hello()
            info["latency_ms"] = (time.perf_counter() - start) * 1000.0
        post("hello", key=self.key, scene=self.scene, info=info, server=self.settings.server)


@dataclass(eq=False)
class ListTask(Task):
    def work(self) -> None:
        with _client(self.settings) as client:
            jobs = client.list(limit=100)
        post("jobs", key=self.key, scene=self.scene, jobs=jobs)


@dataclass(eq=False)
class SimpleTask(Task):
    """cancel / delete one job."""

    action: str = "cancel"
    job_id: str = ""

    def work(self) -> None:
        with _client(self.settings) as client:
            reply = client.cancel(self.job_id) if self.action == "cancel" else client.delete(self.job_id)
        post(self.action, key=self.key, scene=self.scene, job_id=self.job_id, reply=reply)


@dataclass(eq=False)
class JobTask(Task):
    """Submit (or re-attach to) a job, follow its events, download its 4D asset, then ask for the import."""

    kind: str = "example"
    submit_settings: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    uploads: dict[str, str] = field(default_factory=dict)
    job_id: str = ""  # set: follow this existing job instead of submitting
    since: int = 0
    fetch_only: bool = False

    def work(self) -> None:
        with _client(self.settings) as client:
            if not self.job_id:
                self._submit(client)
            elif not self.fetch_only:
                client.subscribe(self.job_id, self.since)
                post("following", key=self.key, scene=self.scene, job_id=self.job_id)
            if not self.fetch_only:
                final = self._follow(client)
                if final != "done":
                    return
            self._download(client)

    def _submit(self, client: Any) -> None:
        kwargs: dict[str, Any] = {"settings": self.submit_settings}
        if self.prompt is not None:
            kwargs["prompt"] = self.prompt
        for role, path in self.uploads.items():
            if not Path(path).exists():
                raise UserError(f"The {role} file {path} does not exist")
            post("progress_text", key=self.key, scene=self.scene, text=f"Uploading {Path(path).name} ...")
            kwargs[role] = path
        reply = client.submit(self.kind, **kwargs)
        self.job_id = reply["job_id"]
        post("submitted", key=self.key, scene=self.scene, job_id=self.job_id, kind=self.kind,
             label=self.prompt or self.kind, queue_position=reply.get("queue_position", 0))  # fmt: skip

    def _follow(self, client: Any) -> str:
        from .pla4d_client.client import BackendError

        cancel_sent = False
        last_heard = time.monotonic()
        while True:
            if self.cancel_requested.is_set() and not cancel_sent:
                client.cancel(self.job_id)
                cancel_sent = True
            event = client.next_event(timeout=0.2)
            if event is None:
                silent = time.monotonic() - last_heard
                if silent > self.settings.stall_timeout:
                    client.status(self.job_id)  # raises TIMEOUT when the backend is gone
                    last_heard = time.monotonic()
                continue
            if event.get("job_id") != self.job_id:
                continue
            last_heard = time.monotonic()
            name = event.get("event")
            if name == "preview":
                points = event.get("points")
                if points is not None:
                    # Copy out of the ZeroMQ frame: the main thread uses the arrays later.
                    points = {k: v.copy() for k, v in points.items()}
                    post("preview", key=self.key, scene=self.scene, job_id=self.job_id, points=points)
                continue
            post("event", key=self.key, scene=self.scene, job_id=self.job_id, event=event)
            if name in TERMINAL:
                return str(name)
            if name is None:
                raise BackendError("BAD_MESSAGE", "event without a name")

    def _download(self, client: Any) -> None:
        manifest = client.manifest(self.job_id)
        names = [f["name"] for f in manifest["files"]]
        wanted = [n for n in names if n.startswith("asset/")]
        if not wanted:  # a lift job's result: the static stage's Gaussians
            wanted = [n for n in names if n == STATIC_PLY]
        if not wanted:
            raise UserError(f"Job {self.job_id} finished without a 4D asset or Gaussians to import")
        dest = Path(self.settings.download_dir) / self.job_id
        total = len(wanted)
        post("progress_text", key=self.key, scene=self.scene, text=f"Downloading {total} files ...")

        def on_chunk(name: str, index: int, count: int) -> None:
            post("download", key=self.key, scene=self.scene, job_id=self.job_id, file=name, chunk=index + 1,
                 chunks=count)  # fmt: skip

        client.fetch(self.job_id, dest, files=wanted, on_chunk=on_chunk)
        path = dest / "asset" if any(n.startswith("asset/") for n in wanted) else dest / STATIC_PLY
        post("downloaded", key=self.key, scene=self.scene, job_id=self.job_id, path=str(path))


def start(task: Task) -> Task:
    """Run ``task`` unless one with the same key is running (returns the running one then)."""
    running = _threads.get(task.key)
    if running is not None and running.is_alive():
        return running
    _threads[task.key] = task
    task.start()
    return task


def task(key: str) -> Task | None:
    return _threads.get(key)


def request_cancel(job_id: str) -> bool:
    """Ask the thread following ``job_id`` to cancel it; False when no thread follows it."""
    running = _threads.get(job_id) or next(
        (t for t in _threads.values() if isinstance(t, JobTask) and t.job_id == job_id), None
    )
    if running is None or not running.is_alive():
        return False
    running.cancel_requested.set()
    return True


def join_all(timeout: float = 5.0) -> None:
    """Wait for the threads (unregister, tests)."""
    for task_ in list(_threads.values()):
        task_.cancel_requested.set()
        task_.join(timeout)


def drain() -> list[tuple[str, dict[str, Any]]]:
    """Every waiting message, previews coalesced to the latest per job (older point sets are stale)."""
    items: list[tuple[str, dict[str, Any]]] = []
    while True:
        try:
            items.append(_inbox.get_nowait())
        except queue.Empty:
            break
    latest_preview: dict[str, int] = {}
    for index, (kind, payload) in enumerate(items):
        if kind == "preview":
            latest_preview[payload["job_id"]] = index
    return [
        item for index, item in enumerate(items)
        if item[0] != "preview" or latest_preview.get(item[1]["job_id"]) == index
    ]  # fmt: skip


def remember_hello(info: dict[str, Any]) -> None:
    _last_hello.clear()
    _last_hello.update(info)
