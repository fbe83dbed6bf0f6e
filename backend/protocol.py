"""The wire protocol shared by the backend and its clients (see docs/protocol.md).

Only the standard library and msgpack: the Blender add-on imports this through :mod:`backend.client`.

A message is a list of ZeroMQ frames: ``[envelope, *raw_frames]`` plus, on a keyed connection, one trailing
32-byte HMAC-SHA256 frame over every frame before it. The envelope is a msgpack map
``{"v": 1, "type": str, "id": int | str | None, "ts": float, "body": map}``; large binary data (upload and
fetch chunks, preview point arrays) travels in the raw frames, described in the body.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import struct
import time
from typing import Any

import msgpack

PROTOCOL_VERSION = 1
MAC_SIZE = 32
MAX_ENVELOPE_BYTES = 256 * 1024  # control part of any message
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
MAX_CHUNK_SIZE = 8 * 1024 * 1024
MAX_MESSAGE_BYTES = MAX_CHUNK_SIZE + 1024 * 1024  # zmq.MAXMSGSIZE: one chunk plus its envelope
MAX_FETCH_WINDOW = 16  # chunks one fetch request may ask for
REPLAY_WINDOW_S = 300.0  # keyed servers refuse envelopes whose timestamp is further off than this

# Request types a client may send.
REQUESTS = (
    "hello",
    "ping",
    "upload_open",
    "upload_chunk",
    "submit",
    "status",
    "list",
    "cancel",
    "delete",
    "subscribe",
    "unsubscribe",
    "fetch",
)
# Message types the server sends.
REPLY, ERROR, EVENT, CHUNK = "reply", "error", "event", "chunk"

# Job events (body["event"] of an EVENT message).
JOB_EVENTS = (
    "accepted",
    "queue",
    "stage_started",
    "stage_finished",
    "stage_skipped",
    "progress",
    "preview",
    "done",
    "failed",
    "cancelled",
)
TERMINAL_EVENTS = ("done", "failed", "cancelled")
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")


class Code:
    """Typed error codes (``error`` replies and ``failed`` events)."""

    BAD_MESSAGE = "BAD_MESSAGE"  # not a decodable envelope
    BAD_VERSION = "BAD_VERSION"
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    BAD_REQUEST = "BAD_REQUEST"  # a field missing, of the wrong type or out of range
    TOO_LARGE = "TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    AUTH_FAILED = "AUTH_FAILED"
    NOT_FOUND = "NOT_FOUND"
    JOB_ACTIVE = "JOB_ACTIVE"
    NOT_READY = "NOT_READY"
    QUEUE_FULL = "QUEUE_FULL"
    UPLOAD_INCOMPLETE = "UPLOAD_INCOMPLETE"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"
    UNSUPPORTED_KIND = "UNSUPPORTED_KIND"
    INTERNAL = "INTERNAL"
    # job failures
    INVALID_INPUT = "INVALID_INPUT"
    ENGINE_ERROR = "ENGINE_ERROR"
    WORKER_CRASHED = "WORKER_CRASHED"
    INTERRUPTED = "INTERRUPTED"


class ProtocolError(Exception):
    """A request that gets a typed error reply."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes, limit: int = MAX_ENVELOPE_BYTES) -> Any:
    if len(data) > limit:
        raise ProtocolError(Code.TOO_LARGE, f"envelope of {len(data)} bytes exceeds {limit}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types (ExtraData, StackError, ValueError, ...)
        raise ProtocolError(Code.BAD_MESSAGE, f"undecodable msgpack: {type(exc).__name__}") from None


def _mac(key: bytes, frames: list[bytes | memoryview]) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256)
    for frame in frames:
        h.update(struct.pack("<Q", len(frame)))
        h.update(frame)
    return h.digest()


def encode(
    type_: str,
    body: dict[str, Any] | None = None,
    id_: int | str | None = None,
    raw: list[Any] | None = None,
    key: bytes | None = None,
) -> list[Any]:
    """Frames for one message (signed when ``key`` is given)."""
    env = {"v": PROTOCOL_VERSION, "type": type_, "id": id_, "ts": time.time(), "body": body or {}}
    frames: list[Any] = [pack(env), *(raw or [])]
    if key:
        frames.append(_mac(key, frames))
    return frames


def verify(frames: list[Any], key: bytes) -> list[Any]:
    """The frames before a valid MAC (AUTH_FAILED when the last frame is not one); nothing is parsed."""
    if len(frames) < 2 or len(frames[-1]) != MAC_SIZE:
        raise ProtocolError(Code.AUTH_FAILED, "message is not signed")
    if not hmac.compare_digest(bytes(frames[-1]), _mac(key, frames[:-1])):
        raise ProtocolError(Code.AUTH_FAILED, "bad signature")
    return frames[:-1]


def decode(frames: list[Any], key: bytes | None = None, signed: bool = False) -> tuple[dict[str, Any], list[Any]]:
    """(envelope, raw frames) of a received message; raises :class:`ProtocolError`.

    With ``key``, the last frame must be a valid MAC (AUTH_FAILED otherwise), checked before anything is parsed.
    ``signed``: the caller verified the MAC already (frames without it); the timestamp is still checked.
    """
    frames = [f.buffer if hasattr(f, "buffer") else f for f in frames]  # zmq.Frame -> memoryview
    if not frames:
        raise ProtocolError(Code.BAD_MESSAGE, "empty message")
    if key:
        frames = verify(frames, key)
    env = unpack(bytes(frames[0]))
    if not isinstance(env, dict):
        raise ProtocolError(Code.BAD_MESSAGE, "envelope is not a map")
    if env.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            Code.BAD_VERSION, f"protocol version {env.get('v')!r} not supported (want {PROTOCOL_VERSION})"
        )
    if not isinstance(env.get("type"), str):
        raise ProtocolError(Code.BAD_MESSAGE, "envelope has no type")
    if "id" not in env:
        raise ProtocolError(Code.BAD_MESSAGE, "envelope has no id (give an integer, a string or nil)")
    if not isinstance(env["id"], int | str | type(None)) or isinstance(env["id"], bool):
        raise ProtocolError(Code.BAD_MESSAGE, "envelope id must be an integer, a string or nil")
    if isinstance(env["id"], str) and len(env["id"]) > 128:
        raise ProtocolError(Code.BAD_MESSAGE, "envelope id too long")
    if not isinstance(env.get("body", {}), dict):
        raise ProtocolError(Code.BAD_MESSAGE, "envelope body is not a map")
    env.setdefault("body", {})
    if key or signed:
        ts = env.get("ts")
        # NaN compares false with everything: without isfinite, ts=NaN would pass any window.
        if not isinstance(ts, int | float) or not math.isfinite(ts) or abs(time.time() - ts) > REPLAY_WINDOW_S:
            raise ProtocolError(Code.AUTH_FAILED, "timestamp outside the replay window")
    return env, frames[1:]


def array_frames(arrays: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Any]]:
    """numpy arrays -> (descriptors, raw frames); the frames share memory with the arrays."""
    descs, raw = [], []
    for name, arr in arrays.items():
        descs.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)})
        raw.append(memoryview(arr.reshape(-1).view("u1")) if arr.flags.c_contiguous else arr.tobytes())
    return descs, raw


def frames_to_arrays(descs: list[dict[str, Any]], raw: list[Any]) -> dict[str, Any]:
    """Inverse of :func:`array_frames` (numpy imported here only)."""
    import numpy as np

    out = {}
    for desc, frame in zip(descs, raw, strict=True):
        out[desc["name"]] = np.frombuffer(frame, dtype=np.dtype(desc["dtype"])).reshape(desc["shape"])
    return out


def load_secret(path: str | os.PathLike[str] | None = None, value: str | None = None) -> bytes | None:
    """The shared secret from a file (first line, stripped) or a string; None when neither is given."""
    if path:
        with open(path, "rb") as handle:
            data = handle.read().strip()
        if len(data) < 16:
            raise ValueError(f"secret in {path} is too short (at least 16 bytes)")
        return data
    if value:
        if len(value) < 16:
            raise ValueError("secret is too short (at least 16 characters)")
        return value.encode()
    return None
