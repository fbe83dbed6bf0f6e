"""Result downloads: the manifest, and chunks sent as the client takes them (bytes in flight bounded per client).

A ``fetch`` for chunks is queued; chunks leave while the client's chunks still inside ZeroMQ (sent, not yet handed
to the kernel: a message tracker says when) stay under :data:`CLIENT_BUDGET`, and everyone's under
:data:`TOTAL_BUDGET`. A client that reads slowly is served slowly; one that never reads holds at most its budget of
server memory (and its requests wait, :data:`MAX_WAITING` at most, beyond which they are refused RATE_LIMITED).
"""

from __future__ import annotations

import collections
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.protocol import CHUNK, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MAX_FETCH_WINDOW, Code, ProtocolError
from backend.store import JobStore
from backend.transport import Handler, Transport, get_field, no_raw

CLIENT_BUDGET = 32 << 20  # chunk bytes queued inside the server per client
TOTAL_BUDGET = 256 << 20  # ... for all clients together
MAX_WAITING = 64  # fetch requests of one client waiting for its chunks to drain


@dataclass
class _Request:
    id_: Any
    job_id: str
    info: dict[str, Any]
    path: Path
    chunk_size: int
    chunks: int
    next: int
    end: int


class Fetches:
    def __init__(self, jobs_dir: Path, store: JobStore, transport: Transport):
        self.jobs_dir = Path(jobs_dir)
        self.store = store
        self.transport = transport
        self.waiting: dict[bytes, collections.deque[_Request]] = {}
        self.inflight: dict[bytes, collections.deque[tuple[Any, int]]] = {}  # client -> (tracker, bytes)
        self.queued: dict[bytes, int] = {}
        self.total = 0
        transport.on_gone(self.peer_gone)

    def handlers(self) -> dict[str, Handler]:
        return {"fetch": self.on_fetch}

    def busy(self) -> bool:
        """Chunks are waiting to be sent (the loop then turns faster than its idle poll)."""
        return bool(self.waiting)

    def on_fetch(self, ident, body, raw, id_):
        no_raw(raw)
        job_id = get_field(body, "job_id", str, check=lambda v: 0 < len(v) <= 64, allowed="1 to 64 characters")
        job = self.store.get(job_id)
        if job is None:
            raise ProtocolError(Code.NOT_FOUND, f"no job {job_id!r}")
        if job["state"] != "done":
            raise ProtocolError(Code.NOT_READY, f"job is {job['state']}; results exist only for done jobs")
        chunk_size = get_field(body, "chunk_size", int, DEFAULT_CHUNK_SIZE, lambda v: 65536 <= v <= MAX_CHUNK_SIZE,
                               allowed=f"an integer from 65536 to {MAX_CHUNK_SIZE}")  # fmt: skip
        files = {f["name"]: f for f in job["manifest"] or []}
        name = get_field(body, "file", str, None)
        if name is None:
            listing = [dict(f, chunks=max(1, -(-f["size"] // chunk_size))) for f in files.values()]
            return {"job_id": job["id"], "chunk_size": chunk_size, "files": listing}
        if name not in files:
            raise ProtocolError(Code.NOT_FOUND, f"no result file {name[:128]!r}")
        info = files[name]
        chunks = max(1, -(-info["size"] // chunk_size))
        first = get_field(body, "chunk", int, 0, lambda v: 0 <= v < chunks,
                          allowed=f"an integer from 0 to {chunks - 1} (this file's chunks)")  # fmt: skip
        count = get_field(body, "count", int, 1, lambda v: 1 <= v <= MAX_FETCH_WINDOW,
                          allowed=f"an integer from 1 to {MAX_FETCH_WINDOW}")  # fmt: skip
        path = self.jobs_dir / job["id"] / "result" / name
        if not path.is_file():
            raise ProtocolError(Code.NOT_FOUND, f"result file {name!r} is missing on the server")
        queue = self.waiting.setdefault(ident, collections.deque())
        if len(queue) >= MAX_WAITING:
            raise ProtocolError(Code.RATE_LIMITED, f"{MAX_WAITING} fetches wait for this client to read the chunks "
                                "it asked for; read them, then ask for more")  # fmt: skip
        queue.append(_Request(id_, job["id"], info, path, chunk_size, chunks, first, min(chunks, first + count)))
        self.pump()
        return None

    def pump(self) -> None:
        """Release the chunks ZeroMQ has sent, then send waiting chunks within the budgets."""
        for ident in list(self.inflight):
            self._release(ident)
        for ident in list(self.waiting):
            queue = self.waiting[ident]
            while queue and self.total < TOTAL_BUDGET and self.queued.get(ident, 0) < CLIENT_BUDGET:
                request = queue[0]
                self._send_chunk(ident, request)
                request.next += 1
                if request.next >= request.end:
                    queue.popleft()
            if not queue:
                del self.waiting[ident]

    def _send_chunk(self, ident: bytes, r: _Request) -> None:
        try:
            fd = os.open(r.path, os.O_RDONLY)
        except OSError:  # deleted meanwhile
            self.transport.error(ident, Code.NOT_FOUND, f"result file {r.info['name']!r} is gone", r.id_)
            r.next = r.end - 1
            return
        try:
            data = os.pread(fd, r.chunk_size, r.next * r.chunk_size)
        finally:
            os.close(fd)
        meta = {"job_id": r.job_id, "file": r.info["name"], "chunk": r.next, "chunks": r.chunks,
                "offset": r.next * r.chunk_size, "size": len(data), "crc32": zlib.crc32(data),
                "file_size": r.info["size"], "sha256": r.info["sha256"]}  # fmt: skip
        tracker = self.transport.send(ident, CHUNK, meta, r.id_, [data], track=True)
        if tracker is not None and not tracker.done:
            self.inflight.setdefault(ident, collections.deque()).append((tracker, len(data)))
            self.queued[ident] = self.queued.get(ident, 0) + len(data)
            self.total += len(data)

    def _release(self, ident: bytes) -> None:
        queue = self.inflight[ident]
        while queue and queue[0][0].done:
            _, size = queue.popleft()
            self.queued[ident] -= size
            self.total -= size
        if not queue:
            del self.inflight[ident]
            self.queued.pop(ident, None)

    def peer_gone(self, ident: bytes) -> None:
        """Its waiting requests go; its chunks inside ZeroMQ are freed as ZeroMQ drops them (the trackers say)."""
        self.waiting.pop(ident, None)
