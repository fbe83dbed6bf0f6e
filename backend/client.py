"""The pla4d backend client: pyzmq + msgpack only (no torch, no pla4d), for the Blender add-on and scripts.

with Client("tcp://127.0.0.1:5555") as c:
    job = c.submit("example", settings={"preset": "draft", "values": {"motion.iterations": 200}})
    for event in c.follow(job["job_id"]):
        print(event["event"], event.get("iteration"))
    c.fetch(job["job_id"], "out/")
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zmq

from .protocol import (
    CHUNK,
    DEFAULT_CHUNK_SIZE,
    ERROR,
    EVENT,
    MAX_FETCH_WINDOW,
    TERMINAL_EVENTS,
    Code,
    ProtocolError,
    decode,
    encode,
    frames_to_arrays,
)

UPLOAD_CHUNK = 1 << 20


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` when it is a ZeroMQ address a client can connect to; otherwise ValueError saying what a valid
    one looks like (ZeroMQ itself only says "Invalid argument")."""

    def valid(text: str) -> bool:
        scheme, sep, rest = text.partition("://")
        if scheme in ("ipc", "inproc"):
            return bool(sep and rest)
        host, colon, port = rest.rpartition(":")
        bare = host.strip("[]")
        return (scheme == "tcp" and bool(sep and colon and bare) and (":" not in host or host.startswith("["))
                and port.isdigit() and 0 < int(port) < 65536)  # fmt: skip

    if valid(endpoint):
        return endpoint
    scheme, sep, rest = endpoint.partition("://")
    host = rest if sep else endpoint
    guess = next((g for g in (f"tcp://{host}", f"tcp://{host}:5555") if valid(g)), "tcp://127.0.0.1:5555")
    raise ValueError(f"{endpoint!r} is not a backend address: write tcp://HOST:PORT, e.g. {guess}")


class BackendError(Exception):
    """An error reply from the backend (``code`` is one of :class:`backend.protocol.Code`), or a timeout."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Client:
    def __init__(
        self,
        server: str = "tcp://127.0.0.1:5555",
        secret: bytes | str | None = None,
        timeout: float = 30.0,
        curve_server_key: bytes | str | None = None,
        curve_keypair: tuple[bytes, bytes] | None = None,
    ):
        self.server = check_endpoint(server)
        self.key = secret.encode() if isinstance(secret, str) else secret
        self.timeout = timeout
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 10_000)
        if curve_server_key:
            public, secret_key = curve_keypair or zmq.curve_keypair()
            self.sock.curve_serverkey = (
                curve_server_key.encode() if isinstance(curve_server_key, str) else curve_server_key
            )
            self.sock.curve_publickey, self.sock.curve_secretkey = public, secret_key
        self.sock.connect(server)
        self._ids = itertools.count(1)
        self._replies: dict[Any, tuple[dict[str, Any], list[Any]]] = {}
        self._chunks: collections.deque = collections.deque()
        self._events: collections.deque = collections.deque()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def send(self, type_: str, body: dict[str, Any] | None = None, raw: list[Any] | None = None) -> int:
        id_ = next(self._ids)
        self.sock.send_multipart(encode(type_, body, id_, raw, self.key), copy=False)
        return id_

    def _pump(self, timeout: float) -> bool:
        """Receive one message into the reply / chunk / event queues; False on timeout."""
        if not self.sock.poll(max(0, int(timeout * 1000))):
            return False
        frames = self.sock.recv_multipart(copy=False)
        try:
            env, raw = decode(frames, self.key)
        except ProtocolError as exc:
            if exc.code == Code.AUTH_FAILED and self.key:
                try:  # the server's unsigned refusal of our key
                    env, raw = decode(frames, None)
                except ProtocolError:
                    return True
                if env["type"] == ERROR:
                    self._replies[env["id"]] = (env, raw)
                    self._replies["auth"] = (env, raw)
            return True
        if env["type"] == EVENT:
            body = env["body"]
            if body.get("arrays"):
                try:
                    body["points"] = frames_to_arrays(body["arrays"], raw)
                except Exception:  # numpy missing or bad descriptors: raw buffers then
                    body["raw"] = [bytes(r) for r in raw]
            self._events.append(body)
        elif env["type"] == CHUNK:
            self._chunks.append((env, raw))
        else:
            self._replies[env["id"]] = (env, raw)
        return True

    def request(self, type_: str, body: dict[str, Any] | None = None, raw: list[Any] | None = None,
                timeout: float | None = None) -> dict[str, Any]:  # fmt: skip
        id_ = self.send(type_, body, raw)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while id_ not in self._replies:
            if "auth" in self._replies or None in self._replies:  # refusals that cannot name a request id
                env, _ = self._replies.pop("auth", None) or self._replies.pop(None)
                raise BackendError(env["body"].get("code", Code.AUTH_FAILED), env["body"].get("message", ""))
            left = deadline - time.monotonic()
            if left <= 0 or not self._pump(left):
                if id_ in self._replies:
                    break
                raise BackendError("TIMEOUT", f"no answer from {self.server} (is pla4d-backend running there? a server "
                                   "with a secret answers nothing to a client without the same secret)")  # fmt: skip
        env, _ = self._replies.pop(id_)
        if env["type"] == ERROR:
            raise BackendError(env["body"].get("code", "ERROR"), env["body"].get("message", ""))
        return env["body"]

    # ------------------------------------------------------------------ requests
    def hello(self) -> dict[str, Any]:
        return self.request("hello", {"client": "pla4d.backend.client"})

    def ping(self) -> float:
        start = time.perf_counter()
        self.request("ping")
        return time.perf_counter() - start

    def upload(
        self,
        data: bytes | str | os.PathLike[str],
        name: str | None = None,
        resume: str | None = None,
        on_chunk: Callable[[str, int, int], None] | None = None,
    ) -> str:
        """Upload a file (or bytes) in checksummed chunks; returns the upload id for :meth:`submit`.

        ``resume``: the id of an upload that an earlier connection (or process) began; the server says how many
        bytes it holds and only the rest is sent (the server keeps partial uploads for an hour, across restarts).
        ``on_chunk(upload_id, received, size)`` runs after every acknowledged chunk, e.g. to record the id."""
        if not isinstance(data, bytes):
            name = name or Path(data).name
            data = Path(data).read_bytes()
        if not name:
            raise ValueError("name is required when uploading bytes")
        reply = None
        if resume is not None:
            try:
                reply = self.request("upload_open", {"upload_id": resume})
            except BackendError as exc:
                if exc.code != Code.NOT_FOUND:
                    raise
                reply = None  # expired or discarded: start again
        if reply is None:
            reply = self.request(
                "upload_open", {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            )
        uid, offset = reply["upload_id"], reply["received"]
        while offset < len(data):
            chunk = data[offset : offset + UPLOAD_CHUNK]
            reply = self.request(
                "upload_chunk", {"upload_id": uid, "offset": offset, "crc32": zlib.crc32(chunk)}, [chunk]
            )
            offset = reply["received"]
            if on_chunk is not None:
                on_chunk(uid, offset, len(data))
        return uid

    def submit(
        self,
        kind: str = "example",
        settings: dict[str, Any] | None = None,
        prompt: str | None = None,
        image: Any = None,
        mesh: Any = None,
        frames: Any = None,
    ) -> dict[str, Any]:
        """Submit a job: ``example``; ``lift`` (``image`` PNG and ``mesh`` file); ``video`` (``frames``: a folder
        of RGBA PNGs or a .zip of them, and ``mesh``: frame 1's mesh); ``text`` (``prompt``). Files are paths or
        upload ids from :meth:`upload`.

        Returns ``{"job_id", "state", "queue_position", "seq"}``; this client then receives the job's events."""
        body: dict[str, Any] = {"kind": kind, "settings": settings or {}}
        if prompt is not None:
            body["prompt"] = prompt
        if kind == "video" and frames is not None and os.path.isdir(frames):
            frames = (zip_frames(frames), Path(frames).name + ".zip")
        roles = {"lift": (("image", image), ("mesh", mesh)), "video": (("frames", frames), ("mesh", mesh))}
        if kind in roles:
            body["uploads"] = {role: self._upload_ref(value) for role, value in roles[kind] if value is not None}
        return self.request("submit", body)

    def _upload_ref(self, value: Any) -> str:
        if isinstance(value, tuple):  # (bytes, name)
            return self.upload(value[0], value[1])
        if isinstance(value, str) and not os.path.exists(value):
            return value  # an upload id
        return self.upload(value)

    def status(self, job_id: str) -> dict[str, Any]:
        return self.request("status", {"job_id": job_id})

    def list(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self.request("list", {"state": state, "limit": limit})["jobs"]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.request("cancel", {"job_id": job_id})

    def delete(self, job_id: str) -> dict[str, Any]:
        return self.request("delete", {"job_id": job_id})

    def subscribe(self, job_id: str, since: int = 0) -> dict[str, Any]:
        """Follow a job (again, e.g. after reconnecting): replays stored events with seq > ``since``, then live."""
        return self.request("subscribe", {"job_id": job_id, "since": since})

    def next_event(self, timeout: float | None = None) -> dict[str, Any] | None:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._events:
            left = deadline - time.monotonic()
            if left <= 0 or not self._pump(left):
                if not self._events:
                    return None
        return self._events.popleft()

    def follow(self, job_id: str, since: int | None = None, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield the job's events until done / failed / cancelled. With ``since``, (re)subscribe first.

        ``timeout``: the longest silence tolerated (BackendError TIMEOUT after it)."""
        if since is not None:
            reply = self.subscribe(job_id, since)
            if reply["state"] not in ("queued", "running") and reply["last_seq"] <= since:
                return
        while True:
            event = self.next_event(timeout)
            if event is None:
                raise BackendError("TIMEOUT", f"no event for job {job_id} from {self.server}")
            if event.get("job_id") != job_id:
                continue
            yield event
            if event.get("event") in TERMINAL_EVENTS:
                return

    # ------------------------------------------------------------------ results
    def manifest(self, job_id: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict[str, Any]:
        return self.request("fetch", {"job_id": job_id, "chunk_size": chunk_size})

    def fetch(
        self,
        job_id: str,
        out_dir: str | os.PathLike[str],
        files: list[str] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        window: int = 8,
        on_chunk: Callable[[str, int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Download a done job's result files into ``out_dir``; resumes partial downloads (``NAME.part``).

        Every chunk's crc32 and every file's sha256 are checked. Returns ``{"files", "chunks", "bytes"}``."""
        manifest = self.manifest(job_id, chunk_size)
        out = Path(out_dir)
        stats = {"files": [], "chunks": 0, "bytes": 0, "skipped": 0}
        for info in manifest["files"]:
            if files is not None and info["name"] not in files:
                continue
            dest = out / info["name"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists() and dest.stat().st_size == info["size"] and _sha256(dest) == info["sha256"]:
                stats["files"].append(str(dest))
                stats["skipped"] += 1
                continue
            self._fetch_file(job_id, info, dest, manifest["chunk_size"], window, stats, on_chunk)
            stats["files"].append(str(dest))
        return stats

    def _fetch_file(self, job_id, info, dest, chunk_size, window, stats, on_chunk) -> None:
        part, state_path = dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")
        n = info["chunks"]
        prefix = 0
        if part.exists() and state_path.exists():
            try:
                state = json.loads(state_path.read_text())
                if state["sha256"] == info["sha256"] and state["chunk_size"] == chunk_size:
                    prefix = min(int(state["prefix"]), n)
            except (ValueError, KeyError):
                prefix = 0
        done = set(range(prefix))
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            per = min(4, MAX_FETCH_WINDOW)
            pending: set[int] = set()
            next_chunk = prefix
            retries = 0
            while len(done) < n:
                while len(pending) < window * per and next_chunk < n:
                    count = min(per, n - next_chunk)
                    self.send("fetch", {"job_id": job_id, "file": info["name"], "chunk": next_chunk, "count": count,
                                        "chunk_size": chunk_size})  # fmt: skip
                    pending.update(range(next_chunk, next_chunk + count))
                    next_chunk += count
                got = self._next_chunk(info["name"])
                if got is None:  # lost chunks (e.g. the server dropped them): ask again for what is missing
                    retries += 1
                    if retries > 3:
                        raise BackendError("TIMEOUT", f"fetching {info['name']} from {self.server} stalled")
                    next_chunk = min(pending) if pending else next_chunk
                    pending.clear()
                    continue
                meta, data = got
                index = meta["chunk"]
                if zlib.crc32(data) != meta["crc32"] or len(data) != meta["size"]:
                    pending.discard(index)
                    self.send("fetch", {"job_id": job_id, "file": info["name"], "chunk": index, "count": 1,
                                        "chunk_size": chunk_size})  # fmt: skip
                    pending.add(index)
                    continue
                if index in done:
                    continue
                os.pwrite(fd, data, index * chunk_size)
                done.add(index)
                pending.discard(index)
                stats["chunks"] += 1
                stats["bytes"] += len(data)
                if prefix in done:
                    while prefix in done:
                        prefix += 1
                    state_path.write_text(json.dumps({"sha256": info["sha256"], "chunk_size": chunk_size,
                                                      "prefix": prefix}))  # fmt: skip
                if on_chunk is not None:
                    on_chunk(info["name"], index, n)
            os.ftruncate(fd, info["size"])
        finally:
            os.close(fd)
        if _sha256(part) != info["sha256"]:
            part.unlink()
            state_path.unlink(missing_ok=True)
            raise BackendError(Code.CHECKSUM_MISMATCH, f"{info['name']}: sha256 mismatch after download")
        os.replace(part, dest)
        state_path.unlink(missing_ok=True)

    def _next_chunk(self, name: str) -> tuple[dict[str, Any], Any] | None:
        deadline = time.monotonic() + self.timeout
        while True:
            while self._chunks:
                env, raw = self._chunks.popleft()
                if env["body"].get("file") == name and raw:
                    return env["body"], raw[0]
            errors = [k for k, (env, _) in self._replies.items() if env["type"] == ERROR]
            if errors:
                env, _ = self._replies.pop(errors[0])
                raise BackendError(env["body"].get("code", "ERROR"), env["body"].get("message", ""))
            left = deadline - time.monotonic()
            if left <= 0 or not self._pump(left):
                return None

    def fetch_bytes(self, job_id: str, name: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
        """One result file into memory (checked like :meth:`fetch`)."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            self.fetch(job_id, tmp, files=[name], chunk_size=chunk_size)
            return (Path(tmp) / name).read_bytes()

    def fetch_array(self, job_id: str, name: str) -> Any:
        """A ``.npy`` result file as a numpy array (numpy imported here only)."""
        import io

        import numpy as np

        return np.load(io.BytesIO(self.fetch_bytes(job_id, name)), allow_pickle=False)


def zip_frames(folder: str | os.PathLike[str]) -> bytes:
    """A folder's PNG frames as one zip (stored, not deflated: PNGs are compressed already)."""
    import io
    import zipfile

    pngs = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() == ".png")
    if len(pngs) < 2:
        raise ValueError(f"{folder} holds {len(pngs)} PNG frame(s); a video needs at least 2")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for png in pngs:
            archive.write(png, png.name)
    return buffer.getvalue()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
