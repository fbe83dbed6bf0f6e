"""``pla4d-backend``: the ZeroMQ job server (ROUTER socket, SQLite job store, one worker process per device).

The socket loop never runs engine code: each job runs in a ``backend.worker`` subprocess that pushes its events
over an ipc socket; the loop stores them, forwards them to subscribers and serves everyone else meanwhile.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from backend import __version__
from backend.protocol import (
    CHUNK,
    DEFAULT_CHUNK_SIZE,
    ERROR,
    EVENT,
    MAX_CHUNK_SIZE,
    MAX_FETCH_WINDOW,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    REPLY,
    TERMINAL_EVENTS,
    Code,
    ProtocolError,
    decode,
    encode,
    load_secret,
)
from backend.store import JobStore

KINDS = ("example", "lift", "video", "text")
MESH_EXTENSIONS = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")
# Uploads per job kind: role -> (file endings accepted, what the file must be).
KIND_UPLOADS: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
    "lift": {"image": ((".png",), "a PNG (RGBA, object matted)"), "mesh": (MESH_EXTENSIONS, "a mesh file")},
    "video": {"frames": ((".zip",), "a .zip of RGBA PNG frames (frame 1 first by name)"),
              "mesh": (MESH_EXTENSIONS, "the first frame's mesh")},
}  # fmt: skip
# Settings a client may override, with their types and bounds (static stage; motion_iterations: the 4D stage).
OVERRIDES: dict[str, tuple[type | tuple[type, ...], float, float]] = {
    "iterations": (int, 1, 100_000),
    "motion_iterations": (int, 1, 100_000),
    "batch_views": (int, 0, 32),
    "num_gaussians": (int, 16, 2_000_000),
    "max_gaussians": (int, 16, 4_000_000),
    "view_pool": (int, 1, 1024),
    "resolutions": (list, 16, 2048),
    "resolution_steps": (list, 0.0, 1.0),
    "perceptual_weight": ((int, float), 0.0, 10.0),
    "perceptual_max_size": (int, 16, 2048),
    "densify_every": (int, 1, 100_000),
}
EXAMPLE_LIMITS = {"frames": (1, 64, 8), "resolution": (16, 512, 128), "supersample": (1, 4, 2)}
# Text jobs (settings.generate): the video's frame count / size / denoising steps, the matte size and the image-to-mesh
# model's steps and grid; absent ones keep the preset's values.
GENERATE_LIMITS = {
    "frames": (2, 129), "width": (64, 1920), "height": (64, 1920), "steps": (1, 200), "matte_size": (32, 1024),
    "mesh_steps": (1, 256), "mesh_grid": (16, 512),
}  # fmt: skip
MODEL_ROLES = ("video", "matte", "mesh", "mesh_command", "guidance")
MODELS_CHECK_TTL_S = 30.0


def _loopback(endpoint: str) -> bool:
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = endpoint.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def _get(body: dict[str, Any], name: str, types: Any, default: Any = ..., check: Any = None) -> Any:
    """A validated request field: BAD_REQUEST when missing, of the wrong type or failing ``check``."""
    if name not in body or body[name] is None:
        if default is ...:
            raise ProtocolError(Code.BAD_REQUEST, f"missing field {name!r}")
        return default
    value = body[name]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        raise ProtocolError(Code.BAD_REQUEST, f"field {name!r} has the wrong type ({type(value).__name__})")
    if check is not None and not check(value):
        raise ProtocolError(Code.BAD_REQUEST, f"field {name!r} is out of range")
    return value


def _tuple(types: Any) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


@dataclass
class Upload:
    id: str
    name: str
    size: int
    sha256: str
    path: Path
    received: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)
    touched: float = field(default_factory=time.time)

    @property
    def complete(self) -> bool:
        return self.received == self.size


@dataclass
class Worker:
    job_id: str
    proc: subprocess.Popen
    token: bytes
    device: str
    cancel_at: float | None = None


def _visible_gpus() -> int:
    """NVIDIA GPUs this process may use, without importing torch (the socket loop stays light):
    ``CUDA_VISIBLE_DEVICES`` when set, else the driver's list."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [e for e in visible.split(",") if e.strip()]
        return 0 if not entries or entries[0].strip() == "-1" else len(entries)
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def resolve_devices(spec: str) -> list[str]:
    """``--device`` -> one engine device per worker slot (each slot runs one job at a time).

    ``auto``: one slot per visible GPU (``cuda:0``, ``cuda:1``, ...), one CPU slot without a GPU. A comma list
    names the slots: ``cuda:0,cuda:2`` uses two GPUs; ``cpu,cpu`` runs two CPU jobs side by side."""
    parts = [p.strip().lower() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ValueError("--device needs a value: auto, cpu, cuda, cuda:N or a comma list of them")
    if parts == ["auto"]:
        return [f"cuda:{i}" for i in range(_visible_gpus())] or ["cpu"]
    for part in parts:
        if not (part in ("cpu", "cuda") or (part.startswith("cuda:") and part[5:].isdigit())):
            raise ValueError(f"unknown device {part!r}: use auto, cpu, cuda, cuda:N or a comma list of them")
    return ["cuda:0" if p == "cuda" else p for p in parts]


class Server:
    def __init__(
        self,
        data_dir: str | Path,
        bind: str = "tcp://127.0.0.1:5555",
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
    ):
        from pla4d.config import PRESETS  # light: dataclasses only, no torch

        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if not _loopback(bind) and not (secret or curve_secret_file) and not insecure:
            raise ValueError(
                f"refusing to bind {bind} without authentication: give --secret-file and/or --curve-key "
                "(or --insecure on a trusted network)"
            )
        self.presets = list(PRESETS)
        self.data = Path(data_dir)
        (self.data / "jobs").mkdir(parents=True, exist_ok=True)
        (self.data / "uploads").mkdir(parents=True, exist_ok=True)
        self.devices = resolve_devices(device)
        self.models = dict(models or {})
        unknown = set(self.models) - set(MODEL_ROLES)
        if unknown:
            raise ValueError(f"unknown model roles {sorted(unknown)}; use {', '.join(MODEL_ROLES)}")
        self._models_checked: dict[tuple[str, bool], tuple[float, str | None]] = {}
        self.default_preset = preset
        self.key = secret
        self.rate, self.burst = rate, burst
        self.max_upload, self.max_queue, self.max_attempts = max_upload, max_queue, max_attempts
        self.store = JobStore(self.data / "jobs.sqlite")
        self.ctx = zmq.Context()
        self.auth = None
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.SNDHWM, 10_000)
        self.router.setsockopt(zmq.RCVHWM, 10_000)
        if curve_secret_file:
            public, secret_key = zmq.auth.load_certificate(curve_secret_file)
            if secret_key is None:
                raise ValueError(f"{curve_secret_file} holds no secret key (use the .key_secret file)")
            if curve_clients_dir:
                from zmq.auth.thread import ThreadAuthenticator

                self.auth = ThreadAuthenticator(self.ctx)
                self.auth.start()
                self.auth.configure_curve(domain="*", location=str(curve_clients_dir))
            self.router.curve_secretkey = secret_key
            self.router.curve_publickey = public
            self.router.curve_server = True
        self.router.bind(bind)
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.ipc_dir = tempfile.mkdtemp(prefix="pla4d-")
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(f"ipc://{self.ipc_dir}/w")
        self.pull_endpoint = self.pull.getsockopt_string(zmq.LAST_ENDPOINT)
        self.uploads: dict[str, Upload] = {}
        self.subs: dict[str, set[bytes]] = {}
        self.workers: dict[int, Worker] = {}  # device slot -> the worker running there
        self.previews: dict[str, tuple[dict[str, Any], list[Any]]] = {}
        self.buckets: dict[bytes, list[float]] = {}
        self.auth_notified: dict[bytes, float] = {}
        self.seen_macs: dict[bytes, float] = {}
        self.positions: dict[str, int] = {}
        self.running = True
        self.stats = {"requests": 0, "errors": 0}
        self._recover()

    # ------------------------------------------------------------------ startup / shutdown
    def _recover(self) -> None:
        """After a crash or kill -9: running jobs are requeued (their cached stages kept) or failed."""
        requeued = []
        for job in self.store.list(state="running", limit=1_000_000):
            job_dir = self.data / "jobs" / job["id"]
            if (job_dir / "cancel").exists():
                self._finish(job["id"], "cancelled", {"reason": "cancelled before the backend stopped"})
            elif job["attempts"] < self.max_attempts:
                self.store.update(job["id"], state="queued", stage=None)
                requeued.append(job["id"])
            else:
                self._finish(
                    job["id"], "failed",
                    {"code": Code.INTERRUPTED,
                     "message": f"the backend stopped while this job ran ({job['attempts']} attempts); not retried"},
                )  # fmt: skip
        for meta in (self.data / "uploads").glob("*.json"):
            try:
                info = json.loads(meta.read_text())
                up = Upload(info["id"], info["name"], info["size"], info["sha256"], meta.with_suffix(".part"))
                with open(up.path, "rb") as handle:
                    for block in iter(lambda h=handle: h.read(1 << 20), b""):
                        up.hasher.update(block)
                        up.received += len(block)
                self.uploads[up.id] = up
            except (OSError, ValueError, KeyError):
                meta.unlink(missing_ok=True)
        self._update_positions(announce=False)
        for job_id in requeued:
            reason = "the backend restarted while this job ran; it runs again (cached stages are kept)"
            self._event(job_id, {"event": "queue", "queue_position": self.positions[job_id], "reason": reason})

    def close(self) -> None:
        for worker in self.workers.values():
            worker.proc.terminate()
        for worker in self.workers.values():
            try:
                worker.proc.wait(5)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
        if self.auth is not None:
            self.auth.stop()
        self.router.close()
        self.pull.close()
        self.ctx.term()
        self.store.close()
        shutil.rmtree(self.ipc_dir, ignore_errors=True)

    # ------------------------------------------------------------------ main loop
    def serve_forever(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.pull, zmq.POLLIN)
        last_housekeeping = 0.0
        while self.running:
            ready = dict(poller.poll(100))
            if self.pull in ready:
                self._drain_worker()
            if self.router in ready:
                for _ in range(256):
                    try:
                        frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._handle(frames)
            self._check_worker()
            self._schedule()
            now = time.monotonic()
            if now - last_housekeeping > 5:
                last_housekeeping = now
                self._housekeeping()

    def _housekeeping(self) -> None:
        now = time.time()
        for uid, up in list(self.uploads.items()):
            if now - up.touched > 3600:
                self._drop_upload(uid)
        if len(self.buckets) > 10_000:
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < 60}
        self.auth_notified = {k: v for k, v in self.auth_notified.items() if now - v < 5}
        self.seen_macs = {k: v for k, v in self.seen_macs.items() if v > now}

    # ------------------------------------------------------------------ client messages
    def _send(self, ident: bytes, type_: str, body: dict[str, Any], id_: Any = None, raw: list[Any] | None = None):
        try:
            self.router.send_multipart([ident, *encode(type_, body, id_, raw, self.key)], copy=False, flags=zmq.NOBLOCK)
        except zmq.ZMQError:  # peer gone or its queue full: drop (clients re-request; events replay by seq)
            pass

    def _error(self, ident: bytes, code: str, message: str, id_: Any = None, signed: bool = True) -> None:
        self.stats["errors"] += 1
        body = {"code": code, "message": message}
        try:
            frames = encode(ERROR, body, id_, None, self.key if signed else None)
            self.router.send_multipart([ident, *frames], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _rate_ok(self, ident: bytes) -> bool:
        if self.rate <= 0:
            return True
        now = time.time()
        bucket = self.buckets.get(ident)
        if bucket is None:
            bucket = self.buckets[ident] = [self.burst, now]
        bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if bucket[0] < 1:
            return False
        bucket[0] -= 1
        return True

    def _handle(self, frames: list[Any]) -> None:
        self.stats["requests"] += 1
        ident = frames[0].bytes
        if not self._rate_ok(ident):
            bucket = self.buckets[ident]
            if bucket[0] > -1:  # one RATE_LIMITED reply per exhausted token, then silence
                bucket[0] -= 1
                self._error(ident, Code.RATE_LIMITED, f"more than {self.rate:g} messages per second")
            return
        env = None
        try:
            if self.key and len(frames) > 1 and len(frames[-1]) == 32:
                mac = frames[-1].bytes
                if mac in self.seen_macs:
                    raise ProtocolError(Code.AUTH_FAILED, "replayed message")
            env, raw = decode(frames[1:], self.key)
            if self.key:
                self.seen_macs[frames[-1].bytes] = time.time() + 2 * 300
            handler = getattr(self, f"_on_{env['type']}", None)
            if handler is None:
                raise ProtocolError(Code.UNKNOWN_TYPE, f"unknown request type {env['type'][:64]!r}")
            result = handler(ident, env["body"], raw, env["id"])
            if result is not None:
                self._send(ident, REPLY, result, env["id"])
        except ProtocolError as exc:
            if exc.code == Code.AUTH_FAILED:
                # Unauthenticated: one unsigned refusal per client every few seconds, otherwise dropped.
                if ident not in self.auth_notified:
                    self.auth_notified[ident] = time.time()
                    self._error(ident, exc.code, "authentication required", None, signed=False)
                return
            self._error(ident, exc.code, exc.message, env["id"] if env else None)
        except Exception as exc:  # a bug must not take the server down
            traceback.print_exc()
            self._error(ident, Code.INTERNAL, f"internal error: {type(exc).__name__}", env["id"] if env else None)

    def _no_raw(self, raw: list[Any]) -> None:
        if raw:
            raise ProtocolError(Code.BAD_REQUEST, "this request takes no binary frames")

    def _job(self, body: dict[str, Any]) -> dict[str, Any]:
        job_id = _get(body, "job_id", str, check=lambda v: 0 < len(v) <= 64)
        job = self.store.get(job_id)
        if job is None:
            raise ProtocolError(Code.NOT_FOUND, f"no job {job_id!r}")
        return job

    def _public(self, job: dict[str, Any]) -> dict[str, Any]:
        req = job["request"]
        out = {k: job[k] for k in ("id", "kind", "state", "created", "started", "finished", "attempts", "stage")}
        out.update(
            job_id=job["id"], queue_position=self.positions.get(job["id"]), settings=req.get("settings", {}),
            prompt=req.get("prompt"), last_seq=job["last_seq"], summary=job["summary"],
            error={"code": job["error_code"], "message": job["error_message"]} if job["error_code"] else None,
        )  # fmt: skip
        return out

    def _models_missing(self, preset_name: str, text: bool) -> str | None:
        """None when the models a text job (``text``) or a video job without a mesh need are here, else the
        registry's message naming them and the pull command. Checked on disk only, cached for a few seconds."""
        key = (preset_name, text)
        now = time.monotonic()
        cached = self._models_checked.get(key)
        if cached is not None and now - cached[0] < MODELS_CHECK_TTL_S:
            return cached[1]
        from pla4d.config import get_preset
        from pla4d.errors import MissingWeightsError
        from pla4d.models import apply_models, needed_models, require

        preset = apply_models(get_preset(preset_name), self.models)
        try:
            require(needed_models(preset, video=text, matte=text, guidance=False))
            message = None
        except MissingWeightsError as exc:
            message = str(exc)
        self._models_checked[key] = (now, message)
        return message

    @staticmethod
    def _kind_status(missing: str | None) -> dict[str, Any]:
        if missing is None:
            return {"available": True}
        return {"available": False, "code": Code.MODEL_UNAVAILABLE, "message": missing}

    def _model_ids(self) -> dict[str, str | None]:
        from pla4d.config import get_preset
        from pla4d.models import apply_models

        preset = apply_models(get_preset(self.default_preset), self.models)
        return {
            "text_to_video": preset.video.model,
            "matting": preset.matte.session,
            "image_to_mesh": preset.mesh.command if preset.mesh.model == "external" else preset.mesh.model,
            "guidance": preset.motion.guidance_model,
        }

    def capabilities(self) -> dict[str, Any]:
        import pla4d

        device = "cuda" if any(d.startswith("cuda") for d in self.devices) else "cpu"
        return {
            "server": "pla4d-backend",
            "server_version": __version__,
            "engine_version": pla4d.__version__,
            "protocol": PROTOCOL_VERSION,
            "device": device,
            "workers": len(self.devices),
            "devices": list(self.devices),
            "presets": self.presets,
            "default_preset": self.default_preset,
            "kinds": {
                "example": {"available": True},
                "lift": {"available": True, "uploads": ["image", "mesh"], "mesh_extensions": list(MESH_EXTENSIONS)},
                "video": {
                    "available": True,
                    "uploads": ["frames", "mesh"],
                    "frames": "zip of RGBA PNGs",
                    "mesh_required": self._models_missing(self.default_preset, text=False) is not None,
                    "mesh_extensions": list(MESH_EXTENSIONS),
                },
                "text": self._kind_status(self._models_missing(self.default_preset, text=True)),
            },  # fmt: skip
            "models": self._model_ids(),
            "overrides": sorted(OVERRIDES),
            "limits": {
                "max_message_bytes": MAX_MESSAGE_BYTES,
                "max_chunk_size": MAX_CHUNK_SIZE,
                "default_chunk_size": DEFAULT_CHUNK_SIZE,
                "max_fetch_window": MAX_FETCH_WINDOW,
                "max_upload_bytes": self.max_upload,
                "max_queue": self.max_queue,
                "rate_per_s": self.rate,
                "burst": self.burst,
            },
            "auth": {"hmac": bool(self.key), "curve": bool(self.router.curve_server)},
        }

    def _on_hello(self, ident, body, raw, id_):
        self._no_raw(raw)
        return self.capabilities()

    def _on_ping(self, ident, body, raw, id_):
        self._no_raw(raw)
        return {"t": time.time()}

    # uploads -------------------------------------------------------------
    def _on_upload_open(self, ident, body, raw, id_):
        self._no_raw(raw)
        resume = _get(body, "upload_id", str, None)
        if resume is not None:
            up = self.uploads.get(resume)
            if up is None:
                raise ProtocolError(Code.NOT_FOUND, f"no upload {resume!r}")
            return {"upload_id": up.id, "received": up.received, "complete": up.complete}
        name = _get(body, "name", str, check=lambda v: 0 < len(v) <= 255 and "/" not in v and "\\" not in v)
        size = _get(body, "size", int, check=lambda v: 0 < v <= self.max_upload)
        sha = _get(body, "sha256", str, check=lambda v: len(v) == 64 and all(c in "0123456789abcdef" for c in v))
        if len(self.uploads) >= 64:
            raise ProtocolError(Code.QUEUE_FULL, "too many open uploads; finish or let them expire")
        if sum(u.size for u in self.uploads.values()) + size > 4 * self.max_upload:
            raise ProtocolError(Code.TOO_LARGE, "upload space exhausted")
        uid = uuid.uuid4().hex[:16]
        up = Upload(uid, name, size, sha, self.data / "uploads" / f"{uid}.part")
        up.path.write_bytes(b"")
        (self.data / "uploads" / f"{uid}.json").write_text(json.dumps({"id": uid, "name": name, "size": size,
                                                                       "sha256": sha}))  # fmt: skip
        self.uploads[uid] = up
        return {"upload_id": uid, "received": 0, "complete": False, "chunk_size": DEFAULT_CHUNK_SIZE}

    def _on_upload_chunk(self, ident, body, raw, id_):
        up = self.uploads.get(_get(body, "upload_id", str))
        if up is None:
            raise ProtocolError(Code.NOT_FOUND, "no such upload")
        offset = _get(body, "offset", int)
        crc = _get(body, "crc32", int)
        if len(raw) != 1:
            raise ProtocolError(Code.BAD_REQUEST, "upload_chunk carries exactly one binary frame")
        data = raw[0]
        if offset != up.received:
            raise ProtocolError(Code.BAD_REQUEST, f"offset {offset} != received {up.received}: resume from there")
        if up.received + len(data) > up.size:
            raise ProtocolError(Code.TOO_LARGE, "chunk runs past the declared size")
        if zlib.crc32(data) != crc:
            raise ProtocolError(Code.CHECKSUM_MISMATCH, "chunk crc32 mismatch; send it again")
        with open(up.path, "ab") as handle:
            handle.write(data)
        up.hasher.update(data)
        up.received += len(data)
        up.touched = time.time()
        if up.complete and up.hasher.hexdigest() != up.sha256:
            self._drop_upload(up.id)
            raise ProtocolError(Code.CHECKSUM_MISMATCH, "whole-file sha256 mismatch; upload discarded")
        return {"upload_id": up.id, "received": up.received, "complete": up.complete}

    def _drop_upload(self, uid: str) -> None:
        up = self.uploads.pop(uid, None)
        if up is not None:
            up.path.unlink(missing_ok=True)
            up.path.with_suffix(".json").unlink(missing_ok=True)

    # jobs ----------------------------------------------------------------
    def _settings(self, body: dict[str, Any]) -> dict[str, Any]:
        settings = _get(body, "settings", dict, {})
        preset = _get(settings, "preset", str, self.default_preset)
        if preset not in self.presets:
            raise ProtocolError(Code.BAD_REQUEST, f"unknown preset {preset[:64]!r}; choose one of {self.presets}")
        out: dict[str, Any] = {"preset": preset, "seed": _get(settings, "seed", int, 0, lambda v: 0 <= v < 2**31)}
        fps = _get(settings, "fps", (int, float), None, lambda v: 1 <= v <= 240)
        if fps is not None:
            out["fps"] = float(fps)
        overrides = _get(settings, "overrides", dict, {})
        clean = {}
        for name, value in overrides.items():
            if name not in OVERRIDES:
                raise ProtocolError(
                    Code.BAD_REQUEST, f"override {str(name)[:64]!r} not allowed; allowed: {sorted(OVERRIDES)}"
                )
            types, lo, hi = OVERRIDES[name]
            if types is list:
                if not isinstance(value, list) or len(value) > 8:
                    raise ProtocolError(Code.BAD_REQUEST, f"override {name!r} must be a short list")
                items = value
            else:
                items = [value]
            for item in items:
                ok_type = (int, float) if types is list or types == (int, float) else types
                if isinstance(item, bool) or not isinstance(item, ok_type) or not lo <= item <= hi:
                    raise ProtocolError(Code.BAD_REQUEST, f"override {name!r}: bad value {str(item)[:32]}")
            clean[name] = value
        if clean:
            from pla4d.config import get_preset

            try:
                get_preset(preset).replace_static(
                    **{k: tuple(v) if isinstance(v, list) else v for k, v in clean.items() if k != "motion_iterations"}
                )
            except (TypeError, ValueError) as exc:
                raise ProtocolError(Code.BAD_REQUEST, f"overrides rejected: {exc}") from None
            out["overrides"] = clean
        example = _get(settings, "example", dict, {})
        ex = {}
        for name, (lo, hi, default) in EXAMPLE_LIMITS.items():
            ex[name] = _get(example, name, int, default, lambda v, lo=lo, hi=hi: lo <= v <= hi)
        unknown = set(example) - set(EXAMPLE_LIMITS)
        if unknown:
            raise ProtocolError(Code.BAD_REQUEST, f"unknown example settings {sorted(map(str, unknown))[:4]}")
        out["example"] = ex
        generate = _get(settings, "generate", dict, {})
        unknown = set(generate) - set(GENERATE_LIMITS)
        if unknown:
            raise ProtocolError(Code.BAD_REQUEST, f"unknown generate settings {sorted(map(str, unknown))[:4]}")
        gen = {}
        for name, (lo, hi) in GENERATE_LIMITS.items():
            value = _get(generate, name, int, None, lambda v, lo=lo, hi=hi: lo <= v <= hi)
            if value is not None:
                gen[name] = value
        if gen:
            out["generate"] = gen
        return out

    def _on_submit(self, ident, body, raw, id_):
        self._no_raw(raw)
        kind = _get(body, "kind", str)
        if kind not in KINDS:
            raise ProtocolError(Code.UNSUPPORTED_KIND, f"unknown job kind {kind[:64]!r}; kinds: {list(KINDS)}")
        prompt = None
        if kind == "text":
            prompt = _get(body, "prompt", str, check=lambda v: 0 < len(v.strip()) and len(v) <= 2000).strip()
        settings = self._settings(body)
        if kind == "text" and (missing := self._models_missing(settings["preset"], text=True)) is not None:
            raise ProtocolError(Code.MODEL_UNAVAILABLE, missing)
        inputs: dict[str, Upload] = {}
        if kind in KIND_UPLOADS:
            uploads = _get(body, "uploads", dict)
            roles = dict(KIND_UPLOADS[kind])
            if kind == "video" and uploads.get("mesh") is None:
                missing = self._models_missing(settings["preset"], text=False)
                if missing is not None:
                    raise ProtocolError(
                        Code.MODEL_UNAVAILABLE, "a video without its first frame's mesh needs the image-to-mesh "
                        f"model (or upload the mesh as uploads.mesh): {missing}",
                    )  # fmt: skip
                roles.pop("mesh")
            for role, (endings, what) in roles.items():
                uid = _get(uploads, role, str)
                up = self.uploads.get(uid)
                if up is None:
                    raise ProtocolError(Code.NOT_FOUND, f"no upload {uid[:64]!r} for {role}")
                if not up.complete:
                    raise ProtocolError(Code.UPLOAD_INCOMPLETE, f"{role} upload has {up.received} of {up.size} bytes")
                if not up.name.lower().endswith(endings):
                    raise ProtocolError(Code.BAD_REQUEST, f"{role} must be {what} ({', '.join(endings)})")
                inputs[role] = up
        if len(self.store.queued_ids()) >= self.max_queue:
            raise ProtocolError(Code.QUEUE_FULL, f"{self.max_queue} jobs queued already")
        request = {"kind": kind, "settings": settings, "prompt": prompt}
        job = self.store.create(kind, request)
        job_dir = self.data / "jobs" / job["id"]
        (job_dir / "inputs").mkdir(parents=True)
        spec_inputs = {}
        for role, up in inputs.items():
            suffix = Path(up.name).suffix.lower()
            target = job_dir / "inputs" / f"{role}{suffix}"
            os.replace(up.path, target)
            self._drop_upload(up.id)
            spec_inputs[role] = f"inputs/{role}{suffix}"
        spec = {"kind": kind, "settings": settings, "inputs": spec_inputs, "default_preset": self.default_preset,
                "prompt": prompt, "models": self.models}  # fmt: skip
        (job_dir / "job.json").write_text(json.dumps(spec, indent=1))
        self.subs.setdefault(job["id"], set()).add(ident)
        self._update_positions(announce=False)
        position = self.positions.get(job["id"], 0)
        seq = self._event(job["id"], {"event": "accepted", "queue_position": position})
        return {"job_id": job["id"], "state": "queued", "queue_position": position, "seq": seq}

    def _on_status(self, ident, body, raw, id_):
        self._no_raw(raw)
        return self._public(self._job(body))

    def _on_list(self, ident, body, raw, id_):
        self._no_raw(raw)
        state = _get(body, "state", str, None)
        limit = _get(body, "limit", int, 100, lambda v: 0 < v <= 1000)
        return {"jobs": [self._public(j) for j in self.store.list(state, limit)]}

    def _on_cancel(self, ident, body, raw, id_):
        self._no_raw(raw)
        job = self._job(body)
        if job["state"] == "queued":
            self._finish(job["id"], "cancelled", {"reason": "cancelled while queued"})
            self._update_positions()
            return {"job_id": job["id"], "state": "cancelled"}
        if job["state"] == "running":
            (self.data / "jobs" / job["id"] / "cancel").write_text("cancel\n")
            for worker in self.workers.values():
                if worker.job_id == job["id"] and worker.cancel_at is None:
                    worker.cancel_at = time.monotonic()
            return {"job_id": job["id"], "state": "cancelling"}
        return {"job_id": job["id"], "state": job["state"]}

    def _on_delete(self, ident, body, raw, id_):
        self._no_raw(raw)
        job = self._job(body)
        if job["state"] in ("queued", "running"):
            raise ProtocolError(Code.JOB_ACTIVE, f"job is {job['state']}; cancel it first")
        shutil.rmtree(self.data / "jobs" / job["id"], ignore_errors=True)
        self.store.delete(job["id"])
        self.subs.pop(job["id"], None)
        return {"job_id": job["id"], "deleted": True}

    def _on_subscribe(self, ident, body, raw, id_):
        self._no_raw(raw)
        job = self._job(body)
        since = _get(body, "since", int, 0, lambda v: v >= 0)
        reply = {"job_id": job["id"], "state": job["state"], "last_seq": job["last_seq"]}
        if job["state"] in ("queued", "running"):
            subs = self.subs.setdefault(job["id"], set())
            if len(subs) >= 256:
                raise ProtocolError(Code.QUEUE_FULL, "too many subscribers to this job")
            subs.add(ident)
        self._send(ident, REPLY, reply, id_)
        for seq, event in self.store.events_since(job["id"], since):
            self._send(ident, EVENT, {"job_id": job["id"], "seq": seq, **event})
        if job["id"] in self.previews:
            preview, frames = self.previews[job["id"]]
            self._send(ident, EVENT, preview, None, frames)
        return None

    def _on_unsubscribe(self, ident, body, raw, id_):
        self._no_raw(raw)
        job = self._job(body)
        self.subs.get(job["id"], set()).discard(ident)
        return {"job_id": job["id"]}

    def _on_fetch(self, ident, body, raw, id_):
        self._no_raw(raw)
        job = self._job(body)
        if job["state"] != "done":
            raise ProtocolError(Code.NOT_READY, f"job is {job['state']}; results exist only for done jobs")
        chunk_size = _get(body, "chunk_size", int, DEFAULT_CHUNK_SIZE, lambda v: 65536 <= v <= MAX_CHUNK_SIZE)
        files = {f["name"]: f for f in job["manifest"] or []}
        name = _get(body, "file", str, None)
        if name is None:
            listing = [dict(f, chunks=max(1, -(-f["size"] // chunk_size))) for f in files.values()]
            return {"job_id": job["id"], "chunk_size": chunk_size, "files": listing}
        if name not in files:
            raise ProtocolError(Code.NOT_FOUND, f"no result file {name[:128]!r}")
        info = files[name]
        chunks = max(1, -(-info["size"] // chunk_size))
        first = _get(body, "chunk", int, 0, lambda v: 0 <= v < chunks)
        count = _get(body, "count", int, 1, lambda v: 1 <= v <= MAX_FETCH_WINDOW)
        path = self.data / "jobs" / job["id"] / "result" / name
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            raise ProtocolError(Code.NOT_FOUND, f"result file {name!r} is missing on the server") from None
        try:
            for index in range(first, min(chunks, first + count)):
                data = os.pread(fd, chunk_size, index * chunk_size)
                meta = {"job_id": job["id"], "file": name, "chunk": index, "chunks": chunks,
                        "offset": index * chunk_size, "size": len(data), "crc32": zlib.crc32(data),
                        "file_size": info["size"], "sha256": info["sha256"]}  # fmt: skip
                self._send(ident, CHUNK, meta, id_, [data])
        finally:
            os.close(fd)
        return None

    # ------------------------------------------------------------------ jobs and events
    def _event(
        self, job_id: str, event: dict[str, Any], raw: list[Any] | None = None, store: bool = True
    ) -> int | None:
        seq = self.store.add_event(job_id, event) if store else None
        body = {"job_id": job_id, "seq": seq, **event}
        for ident in list(self.subs.get(job_id, ())):
            self._send(ident, EVENT, body, None, raw)
        return seq

    def _finish(self, job_id: str, state: str, info: dict[str, Any]) -> None:
        fields: dict[str, Any] = {"state": state, "finished": time.time()}
        if state == "failed":
            fields.update(error_code=info.get("code", Code.INTERNAL), error_message=info.get("message", ""))
        if state == "done":
            fields.update(manifest=info.get("manifest"), summary=info.get("summary"))
        self.store.update(job_id, **fields)
        event = {"failed": "failed", "done": "done", "cancelled": "cancelled"}[state]
        self._event(job_id, {"event": event, **info})
        self.subs.pop(job_id, None)
        self.previews.pop(job_id, None)
        self.positions.pop(job_id, None)

    def _update_positions(self, announce: bool = True) -> None:
        new = {job_id: i + 1 for i, job_id in enumerate(self.store.queued_ids())}
        for worker in self.workers.values():
            new[worker.job_id] = 0
        for job_id, pos in new.items():
            if announce and self.positions.get(job_id) != pos and job_id in self.positions:
                self._event(job_id, {"event": "queue", "queue_position": pos})
        self.positions = new

    def _schedule(self) -> None:
        for slot, device in enumerate(self.devices):
            if slot in self.workers:
                continue
            queued = self.store.queued_ids()
            if not queued:
                return
            self._start_worker(slot, device, queued[0])

    def _start_worker(self, slot: int, device: str, job_id: str) -> None:
        job = self.store.get(job_id)
        job_dir = self.data / "jobs" / job_id
        token = secrets.token_hex(16).encode()
        log = open(job_dir / "worker.log", "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "backend.worker", str(job_dir), self.pull_endpoint, token.decode(),
               str(os.getpid()), device]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(Path(__file__).resolve().parents[1]))  # fmt: skip
        log.close()
        self.workers[slot] = Worker(job_id, proc, token, device)
        self.store.update(job_id, state="running", started=time.time(), attempts=job["attempts"] + 1)
        self._update_positions()

    def _drain_worker(self) -> None:
        while True:
            try:
                frames = self.pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue
            worker = next((w for w in self.workers.values() if w.token == frames[0].bytes), None)
            if worker is None:
                continue
            try:
                from backend.protocol import unpack

                event = unpack(frames[1].bytes, limit=64 << 20)
                self._worker_event(worker.job_id, event, [f.buffer for f in frames[2:]])
            except Exception:
                traceback.print_exc()

    def _worker_event(self, job_id: str, event: dict[str, Any], raw: list[Any]) -> None:
        name = event.get("event")
        if name in TERMINAL_EVENTS:
            info = {k: v for k, v in event.items() if k != "event"}
            self._finish(job_id, name, info)
            return
        if name == "stage_started":
            self.store.update(job_id, stage=event.get("stage"))
        if name == "preview":
            body = {"job_id": job_id, "seq": None, **event}
            self.previews[job_id] = (body, [bytes(r) for r in raw])
            self._event(job_id, event, raw, store=False)
            return
        self._event(job_id, event)

    def _check_worker(self) -> None:
        for slot, w in list(self.workers.items()):
            code = w.proc.poll()
            if code is None:
                if w.cancel_at is not None and w.cancel_at > 0 and time.monotonic() - w.cancel_at > 15:
                    w.proc.kill()  # did not stop at an iteration boundary in time
                continue
            self._drain_worker()
            job = self.store.get(w.job_id)
            del self.workers[slot]
            if job is not None and job["state"] == "running":
                if (self.data / "jobs" / w.job_id / "cancel").exists():
                    self._finish(w.job_id, "cancelled", {"reason": "worker stopped on cancel"})
                else:
                    self._finish(
                        w.job_id, "failed",
                        {"code": Code.WORKER_CRASHED,
                         "message": f"worker exited with status {code} without a result; "
                                    f"see jobs/{w.job_id}/worker.log"},
                    )  # fmt: skip
            self._update_positions()


def keygen(out_dir: str, name: str) -> tuple[str, str]:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(out_dir, name)
    os.chmod(secret, 0o600)
    return public, secret


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pla4d-backend", description="pla4d ZeroMQ job server (see docs/protocol.md)")
    p.add_argument("--bind", default="tcp://127.0.0.1:5555", help="ZeroMQ endpoint (default tcp://127.0.0.1:5555)")
    p.add_argument("--data-dir", default="pla4d-backend-data", help="job store and result files")
    p.add_argument(
        "--device", default="auto",
        help="worker devices: auto (one worker per visible GPU, else one CPU worker), cpu, cuda:N, or a comma list "
        "(cuda:0,cuda:1); each worker runs one job at a time",
    )  # fmt: skip
    p.add_argument("--preset", default="draft", help="default quality preset for jobs that name none")
    p.add_argument("--secret-file", help="shared secret (HMAC-SHA256-signed envelopes); or $PLA4D_BACKEND_SECRET")
    p.add_argument("--curve-key", help="CurveZMQ server secret key file (from `pla4d-backend keygen`)")
    p.add_argument("--curve-clients", help="folder of allowed client public keys (*.key); default: any client")
    p.add_argument("--rate", type=float, default=500.0, help="messages per second per client (0: unlimited)")
    p.add_argument("--burst", type=float, default=1000.0, help="rate-limit burst size")
    p.add_argument("--max-upload-mb", type=int, default=1024)
    p.add_argument(
        "--model", action="append", default=[], metavar="ROLE=ID",
        help="a model for text jobs, by id or local folder: video=..., matte=<rembg session>, mesh=..., "
        "mesh_command='...', guidance=... (repeatable; default: the preset's, see `pla4d models list`)",
    )  # fmt: skip
    p.add_argument("--max-queue", type=int, default=256)
    p.add_argument("--max-attempts", type=int, default=2, help="runs of a job across backend restarts")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without authentication")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keygen"]:
        kp = argparse.ArgumentParser(prog="pla4d-backend keygen", description="create a CurveZMQ key pair")
        kp.add_argument("--out", default=".", help="folder for NAME.key (public) and NAME.key_secret")
        kp.add_argument("--name", default="server")
        ka = kp.parse_args(argv[1:])
        public, secret = keygen(ka.out, ka.name)
        print(json.dumps({"public": public, "secret": secret}))
        return 0
    args = build_parser().parse_args(argv)
    try:
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
            models,
        )  # fmt: skip
    except (ValueError, OSError, zmq.ZMQError) as exc:
        print(f"pla4d-backend: error: {exc}", file=sys.stderr)
        return 2

    def stop(signum, frame):
        server.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    (Path(args.data_dir) / "endpoint").write_text(server.endpoint + "\n")
    workers = ",".join(server.devices)
    print(f"pla4d-backend {__version__} listening on {server.endpoint} (data {args.data_dir}, workers {workers},"
          f" auth {'hmac' if secret else 'none'}{'+curve' if args.curve_key else ''})", flush=True)  # fmt: skip
    try:
        server.serve_forever()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
