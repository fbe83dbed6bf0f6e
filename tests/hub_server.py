"""A local HTTP server that speaks the part of the Hugging Face hub API that huggingface_hub's downloads use.

Point a client at it with ``HF_ENDPOINT=http://127.0.0.1:<port>``. It serves model repositories from local folders
(the tiny models the tests build), with the headers and status codes the real hub sends:

- ``GET /api/models/{id}[/revision/{rev}]`` (``?blobs=True``: sizes and LFS sha256 per file): repo info with
  ``sha`` (the commit), ``siblings`` and ``gated``;
- ``GET /api/models/{id}/tree/{rev}[/{path}]?recursive=True``: the file listing (git blob id, size, LFS oid/size);
- ``HEAD``/``GET /{id}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag`` (git blob sha1, or the sha256 of an LFS
  file, which is also sent as ``X-Linked-Etag`` with ``X-Linked-Size``), ``Content-Length``, ``Accept-Ranges``, and
  ``Range: bytes=N-`` answered with 206 and ``Content-Range``;
- errors as the hub reports them: unknown repository 401 + ``X-Error-Code: RepoNotFound``, unknown file 404 +
  ``EntryNotFound``, a gated repository's files 401 without a token / 403 with one + ``X-Error-Code: GatedRepo``.

Faults for tests: ``cut_once`` (paths whose first full GET sends the headers and half the body, then drops the
connection), ``fail`` (paths whose GET answers 500). Every request is logged (method, path, Range, Authorization).

Threads are bounded (at most ``max_workers`` requests at once; more wait) and the server stops by itself after
``lifetime`` seconds, so a test that forgets it never leaves it running.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".msgpack", ".h5", ".ckpt", ".pt", ".pth")


@dataclass(frozen=True)
class HubFile:
    path: str
    data: bytes
    lfs: bool

    @property
    def git_oid(self) -> str:
        """The git blob id (sha1 of "blob <size>\\0" + content): the hub's ETag for a regular file."""
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


class HubRepo:
    def __init__(self, repo_id: str, folder: Path, gated: bool = False) -> None:
        self.id, self.gated = repo_id, gated
        self.files: dict[str, HubFile] = {}
        for file in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            rel = file.relative_to(folder).as_posix()
            self.files[rel] = HubFile(rel, file.read_bytes(), rel.endswith(LFS_SUFFIXES))
        listing = "".join(f"{f.path}\0{f.git_oid}\n" for f in self.files.values())
        self.sha = hashlib.sha1(listing.encode()).hexdigest()

    def sibling(self, f: HubFile, blobs: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"rfilename": f.path}
        if blobs:
            entry.update(blobId=f.git_oid, size=len(f.data))
            if f.lfs:
                entry["lfs"] = {"sha256": f.sha256, "size": len(f.data), "pointerSize": 134}
        return entry

    def tree_entry(self, f: HubFile) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": len(f.data), "path": f.path}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}
        return entry


class HubServer:
    """``with HubServer({"owner/name": folder}) as hub: ...``; ``hub.endpoint``, ``hub.log``."""

    def __init__(
        self,
        repos: dict[str, Path],
        *,
        gated: Iterable[str] = (),
        cut_once: Iterable[str] = (),
        fail: Iterable[str] = (),
        lifetime: float = 120.0,
        max_workers: int = 8,
    ) -> None:
        gated = set(gated)
        self.repos = {rid: HubRepo(rid, Path(folder), rid in gated) for rid, folder in repos.items()}
        self.cut_once, self.fail = set(cut_once), set(fail)
        self.log: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_workers)
        self._lifetime = lifetime
        self._httpd: ThreadingHTTPServer | None = None
        self._timer: threading.Timer | None = None

    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "the server is not running"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def requests(self, method: str | None = None, path_contains: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.log if (method is None or r["method"] == method) and path_contains in r["path"]]

    def __enter__(self) -> HubServer:
        server = self

        class Handler(_HubHandler):
            hub = server

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def process_request(self, request: Any, client_address: Any) -> None:
                server._slots.acquire()  # bounded: a request waits for a free slot instead of adding a thread
                try:
                    super().process_request(request, client_address)
                except Exception:
                    server._slots.release()
                    raise

            def process_request_thread(self, request: Any, client_address: Any) -> None:
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    server._slots.release()

        self._httpd = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._timer = threading.Timer(self._lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _HubHandler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # the server keeps its own log

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._route(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._route(head=False)

    # ------------------------------------------------------------------------------------------------ routing

    def _route(self, head: bool) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        with self.hub._lock:
            self.hub.log.append({"method": self.command, "path": path, "range": self.headers.get("Range"),
                                 "auth": self.headers.get("Authorization")})  # fmt: skip
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo = self._repo("/".join(parts[2:4]))
            if repo is None:
                return
            rest = parts[4:]
            if not rest or rest[0] == "revision":
                return self._info(repo, query)
            if rest[0] == "tree":
                return self._tree(repo, "/".join(rest[2:]))
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self._repo("/".join(parts[:2]))
            if repo is not None:
                self._resolve(repo, "/".join(parts[4:]), head)
            return
        self._send(404, b"not found", {"X-Error-Code": "RepoNotFound"})

    def _repo(self, repo_id: str) -> HubRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:  # the hub answers 401 for unknown (or private) repositories
            self._send(401, b"Repository not found", {"X-Error-Code": "RepoNotFound",
                                                      "X-Error-Message": "Repository not found"})  # fmt: skip
        return repo

    def _info(self, repo: HubRepo, query: dict[str, list[str]]) -> None:
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        body = {"id": repo.id, "modelId": repo.id, "sha": repo.sha, "private": False,
                "gated": "manual" if repo.gated else False, "disabled": False,
                "siblings": [repo.sibling(f, blobs) for f in repo.files.values()]}  # fmt: skip
        self._json(body)

    def _tree(self, repo: HubRepo, under: str) -> None:
        prefix = under.rstrip("/") + "/" if under else ""
        files = [f for f in repo.files.values() if f.path.startswith(prefix)]
        folders = sorted({str(Path(f.path).parent) for f in files} - {"."})
        entries = [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in folders]
        self._json(entries + [repo.tree_entry(f) for f in files])

    def _resolve(self, repo: HubRepo, name: str, head: bool) -> None:
        file = repo.files.get(name)
        if file is None:
            return self._send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.sha})
        if repo.gated:
            token = self.headers.get("Authorization")
            message = (f"Access to model {repo.id} is restricted. You must have access to it and be authenticated to "
                       "access it. Please log in." if token is None else
                       f"Access to model {repo.id} is restricted and you are not in the authorized list. Visit "
                       f"https://huggingface.co/{repo.id} to ask for access.")  # fmt: skip
            return self._send(401 if token is None else 403, message.encode(),
                              {"X-Error-Code": "GatedRepo", "X-Error-Message": message})  # fmt: skip
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{file.etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}  # fmt: skip
        if file.lfs:
            headers.update({"X-Linked-Etag": f'"{file.sha256}"', "X-Linked-Size": str(len(file.data))})
        if head:
            return self._send(200, b"", {**headers, "Content-Length": str(len(file.data))}, body=False)
        if name in self.hub.fail:
            return self._send(500, b"Internal Error", {"X-Error-Message": "injected failure"})
        start = 0
        ranged = self.headers.get("Range")
        if ranged and ranged.startswith("bytes=") and ranged.endswith("-"):
            start = int(ranged[len("bytes=") : -1])
        data = file.data[start:]
        status = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(file.data) - 1}/{len(file.data)}"
        with self.hub._lock:
            cut = not start and name in self.hub.cut_once
            self.hub.cut_once.discard(name)
        if cut:  # announce the whole file, send half, drop the connection
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(status, data, headers)

    # ------------------------------------------------------------------------------------------------ replies

    def _json(self, body: Any) -> None:
        self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool = True) -> None:
        self.send_response(status)
        headers = {"Content-Length": str(len(data)), **headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(data)
