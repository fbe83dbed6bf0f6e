"""Resumable uploads: a client opens an upload (name, size, sha256), sends it in crc-checked chunks from any
connection, and names it in a submit. Partial uploads live in ``DATA/uploads/`` and survive a restart."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.protocol import DEFAULT_CHUNK_SIZE, Code, ProtocolError
from backend.transport import Handler, get_field, no_raw

MAX_OPEN = 64  # open uploads, all clients together
MAX_OPEN_PER_CLIENT = 16
SPACE_FACTOR = 4  # bytes received into open uploads, all clients together: at most this many times --max-upload-mb
CLIENT_SPACE_FACTOR = 2  # ... and per client
EXPIRY_S = 3600.0  # an upload untouched this long is dropped
EMPTY_LEASE_S = 120.0  # an upload that has received nothing this long after its opening is dropped


@dataclass
class Upload:
    id: str
    name: str
    size: int
    sha256: str
    path: Path
    owner: str = ""  # the client that opened it (Transport.client_id)
    received: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)
    created: float = field(default_factory=time.time)
    touched: float = field(default_factory=time.time)

    @property
    def complete(self) -> bool:
        return self.received == self.size


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


class Uploads:
    """Open uploads, charged to the client that opened them by the bytes that have arrived (a declared size
    reserves nothing). ``client_id(ident)`` says which client a connection is."""

    def __init__(self, folder: Path, max_upload: int, client_id: Callable[[bytes], str] = bytes.hex):
        self.folder = Path(folder)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.max_upload = max_upload
        self.client_id = client_id
        self.open: dict[str, Upload] = {}
        self._recover()
        self.expire()

    def handlers(self) -> dict[str, Handler]:
        return {"upload_open": self.on_open, "upload_chunk": self.on_chunk}

    def _recover(self) -> None:
        """Partial uploads from before a restart, each resumable at the bytes on disk; its ages come from the
        files (the .json's time: opened; the .part's: last chunk), so expiry does not restart with the server."""
        for meta in self.folder.glob("*.json"):
            try:
                info = json.loads(meta.read_text())
                part = meta.with_suffix(".part")
                up = Upload(info["id"], info["name"], info["size"], info["sha256"], part, info.get("owner", ""),
                            created=meta.stat().st_mtime, touched=part.stat().st_mtime)  # fmt: skip
                with open(up.path, "rb") as handle:
                    for block in iter(lambda h=handle: h.read(1 << 20), b""):
                        up.hasher.update(block)
                        up.received += len(block)
                self.open[up.id] = up
            except (OSError, ValueError, KeyError, TypeError):
                meta.unlink(missing_ok=True)
                meta.with_suffix(".part").unlink(missing_ok=True)

    def used(self, owner: str | None = None) -> int:
        """Bytes received into open uploads (of ``owner``, or of everyone)."""
        return sum(u.received for u in self.open.values() if owner is None or u.owner == owner)

    def check_space(self, owner: str, extra: int, what: str) -> None:
        """TOO_LARGE unless ``extra`` more bytes fit in ``owner``'s and everyone's upload space."""
        if self.used(owner) + extra > CLIENT_SPACE_FACTOR * self.max_upload:
            raise ProtocolError(Code.TOO_LARGE, f"{what}: this client's upload space ({CLIENT_SPACE_FACTOR} x "
                                "--max-upload-mb) is full; finish or let its uploads expire")  # fmt: skip
        if self.used() + extra > SPACE_FACTOR * self.max_upload:
            raise ProtocolError(Code.TOO_LARGE, f"{what}: the server's upload space ({SPACE_FACTOR} x "
                                "--max-upload-mb) is full; try again later")  # fmt: skip

    def on_open(self, ident: bytes, body: dict[str, Any], raw: list[Any], id_: Any) -> dict[str, Any]:
        no_raw(raw)
        resume = get_field(body, "upload_id", str, None)
        if resume is not None:
            up = self.open.get(resume)
            if up is None:
                raise ProtocolError(Code.NOT_FOUND, f"no upload {resume[:64]!r}")
            return {"upload_id": up.id, "received": up.received, "complete": up.complete}
        name = get_field(body, "name", str, check=lambda v: 0 < len(v) <= 255 and "/" not in v and "\\" not in v,
                         allowed="a file name of 1 to 255 characters without / or \\")  # fmt: skip
        size = get_field(body, "size", int, check=lambda v: 0 < v <= self.max_upload,
                         allowed=f"a byte count from 1 to {self.max_upload} (--max-upload-mb)")  # fmt: skip
        sha = get_field(body, "sha256", str, check=_is_sha256, allowed="64 lowercase hex digits")
        owner = self.client_id(ident)
        self.expire()
        if sum(u.owner == owner for u in self.open.values()) >= MAX_OPEN_PER_CLIENT:
            raise ProtocolError(Code.QUEUE_FULL, f"this client has {MAX_OPEN_PER_CLIENT} open uploads; finish them "
                                "or let them expire")  # fmt: skip
        if len(self.open) >= MAX_OPEN:
            raise ProtocolError(Code.QUEUE_FULL, f"the server has {MAX_OPEN} open uploads; try again later")
        uid = uuid.uuid4().hex[:16]
        up = Upload(uid, name, size, sha, self.folder / f"{uid}.part", owner)
        up.path.write_bytes(b"")
        info = {"id": uid, "name": name, "size": size, "sha256": sha, "owner": owner}
        (self.folder / f"{uid}.json").write_text(json.dumps(info))
        self.open[uid] = up
        return {"upload_id": uid, "received": 0, "complete": False, "chunk_size": DEFAULT_CHUNK_SIZE}

    def on_chunk(self, ident: bytes, body: dict[str, Any], raw: list[Any], id_: Any) -> dict[str, Any]:
        up = self.open.get(get_field(body, "upload_id", str))
        if up is None:
            raise ProtocolError(Code.NOT_FOUND, "no such upload")
        offset = get_field(body, "offset", int)
        crc = get_field(body, "crc32", int)
        if len(raw) != 1:
            raise ProtocolError(Code.BAD_REQUEST, "upload_chunk carries exactly one binary frame")
        data = raw[0]
        if offset != up.received:
            raise ProtocolError(Code.BAD_REQUEST, f"offset {offset} != received {up.received}: resume from there")
        if up.received + len(data) > up.size:
            raise ProtocolError(Code.TOO_LARGE, "chunk runs past the declared size")
        self.check_space(up.owner, len(data), "chunk refused")
        if zlib.crc32(data) != crc:
            raise ProtocolError(Code.CHECKSUM_MISMATCH, "chunk crc32 mismatch; send it again")
        with open(up.path, "ab") as handle:
            handle.write(data)
        up.hasher.update(data)
        up.received += len(data)
        up.touched = time.time()
        if up.complete and up.hasher.hexdigest() != up.sha256:
            self.drop(up.id)
            raise ProtocolError(Code.CHECKSUM_MISMATCH, "whole-file sha256 mismatch; upload discarded")
        return {"upload_id": up.id, "received": up.received, "complete": up.complete}

    def complete(self, role: str, uid: str, endings: tuple[str, ...], what: str) -> Upload:
        """A finished upload a submit names for ``role``; NOT_FOUND / UPLOAD_INCOMPLETE / BAD_REQUEST otherwise."""
        up = self.open.get(uid)
        if up is None:
            raise ProtocolError(Code.NOT_FOUND, f"no upload {uid[:64]!r} for {role}")
        if not up.complete:
            raise ProtocolError(Code.UPLOAD_INCOMPLETE, f"{role} upload has {up.received} of {up.size} bytes")
        if not up.name.lower().endswith(endings):
            raise ProtocolError(Code.BAD_REQUEST, f"{role} must be {what} ({', '.join(endings)})")
        return up

    def move(self, up: Upload, target: Path) -> None:
        """Hand a finished upload's file over (to a job's inputs); the upload is closed."""
        os.replace(up.path, target)
        self.drop(up.id)

    def drop(self, uid: str) -> None:
        up = self.open.pop(uid, None)
        if up is not None:
            up.path.unlink(missing_ok=True)
            up.path.with_suffix(".json").unlink(missing_ok=True)

    def expire(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for uid, up in list(self.open.items()):
            if now - up.touched > EXPIRY_S or (up.received == 0 and now - up.created > EMPTY_LEASE_S):
                self.drop(uid)
