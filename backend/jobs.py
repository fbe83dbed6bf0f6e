"""Job requests: capabilities, submit (settings and model checks), status, list, cancel, delete, subscribe, fetch.

A submit's settings are checked against the one settings table (:mod:`pla4d.settings`) before anything is queued,
and stored in the job's spec in one canonical form, ``{"preset", "seed", "values": {path: value}}``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backend import __version__
from backend.fetches import CLIENT_BUDGET
from backend.inputs import check_frames_zip, check_png
from backend.protocol import (
    DEFAULT_CHUNK_SIZE,
    EVENT,
    MAX_CHUNK_SIZE,
    MAX_FETCH_WINDOW,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    REPLY,
    Code,
    ProtocolError,
)
from backend.scheduler import Scheduler
from backend.store import JobStore
from backend.transport import Handler, Transport, get_field, no_raw
from backend.uploads import CLIENT_SPACE_FACTOR, MAX_OPEN, MAX_OPEN_PER_CLIENT, SPACE_FACTOR, Upload, Uploads

KINDS = ("example", "lift", "video", "text")
MESH_EXTENSIONS = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")
# Uploads per job kind: role -> (file endings accepted, what the file must be).
KIND_UPLOADS: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
    "lift": {"image": ((".png",), "a PNG (RGBA, object matted)"), "mesh": (MESH_EXTENSIONS, "a mesh file")},
    "video": {"frames": ((".zip",), "a .zip of RGBA PNG frames (frame 1 first by name)"),
              "mesh": (MESH_EXTENSIONS, "the first frame's mesh")},
}  # fmt: skip
LEGACY_GROUPS = ("overrides", "generate", "example")  # protocol-1 settings maps, still accepted
MODEL_ROLES = ("video", "matte", "mesh", "mesh_command", "guidance")
MODELS_CHECK_TTL_S = 30.0
MAX_PROMPT = 2000


def job_settings(settings: Mapping[str, Any], kind: str, presets: list[str], default_preset: str) -> dict[str, Any]:
    """A submit's ``settings`` checked for ``kind`` -> ``{"preset", "seed", "values": {path: canonical value}}``.

    ``values`` (paths of :data:`pla4d.settings.SETTINGS`) must all act on this kind. The protocol-1 maps
    (``overrides``, ``generate``, ``example``, top-level ``fps``) are translated; their values are range-checked,
    and those that do not act on this kind are dropped, as protocol 1 ignored them. A bad value is BAD_REQUEST
    naming the setting and its range."""
    from pla4d import settings as table  # light: dataclasses only, no torch
    from pla4d.config import get_preset

    preset = get_field(settings, "preset", str, default_preset)
    if preset not in presets:
        raise ProtocolError(Code.BAD_REQUEST, f"unknown preset {preset[:64]!r}; choose one of {presets}")
    values = get_field(settings, "values", dict, {})
    try:
        # None in a protocol-1 map meant "absent" (the preset's or the example's default).
        legacy_body = {k: settings[k] for k in ("fps", *LEGACY_GROUPS) if k in settings}
        for group in LEGACY_GROUPS:
            if isinstance(legacy_body.get(group), Mapping):
                legacy_body[group] = {k: v for k, v in legacy_body[group].items() if v is not None}
        legacy = table.from_legacy(legacy_body)
        if settings.get("seed") is not None:
            legacy["job.seed"] = settings["seed"]
        known = table.by_path()
        acting = {s.path for s in table.settings_for(kind, remote_only=True)}
        merged = {path: known[path].check(value) for path, value in legacy.items()}
        merged = {path: value for path, value in merged.items() if path in acting}
        for path, value in table.check(values, kind).items():
            if path in merged and merged[path] != value:
                raise table.SettingError(f"{path} is given twice with different values ({merged[path]!r}, {value!r})")
            merged[path] = value
        seed = merged.pop("job.seed", known["job.seed"].default)
        table.apply(get_preset(preset), merged)  # the preset accepts them (field names)
    except table.SettingError as exc:
        raise ProtocolError(Code.BAD_REQUEST, str(exc)) from None
    canonical = {path: list(v) if isinstance(v, tuple) else v for path, v in sorted(merged.items())}
    return {"preset": preset, "seed": int(seed), "values": canonical}


def legacy_override_names() -> list[str]:
    """Protocol 1's ``overrides`` names, from the table's aliases (capabilities keep listing them)."""
    from pla4d.settings import SETTINGS

    return sorted(a.split(".", 1)[1] for s in SETTINGS for a in s.aliases if a.startswith("overrides."))


class Jobs:
    def __init__(
        self,
        data: Path,
        store: JobStore,
        scheduler: Scheduler,
        transport: Transport,
        uploads: Uploads,
        default_preset: str,
        models: dict[str, str],
        max_queue: int,
        machine: Any = None,
    ):
        """``default_preset`` and the ``models`` roles are checked by the caller (before any socket exists);
        ``machine``: a :class:`backend.machine.MachineFacts` whose facts the hello carries (None: none)."""
        self.machine = machine
        from pla4d.config import PRESETS  # light: dataclasses only, no torch

        self.data = Path(data)
        self.jobs_dir = self.data / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.store, self.scheduler, self.transport, self.uploads = store, scheduler, transport, uploads
        self.presets = list(PRESETS)
        self.default_preset = default_preset
        self.models = dict(models)
        self.max_queue = max_queue
        self._models_checked: dict[tuple[str, bool], tuple[float, str | None]] = {}

    def handlers(self) -> dict[str, Handler]:
        return {
            "hello": self.on_hello, "ping": self.on_ping, "submit": self.on_submit, "status": self.on_status,
            "list": self.on_list, "cancel": self.on_cancel, "delete": self.on_delete, "subscribe": self.on_subscribe,
            "unsubscribe": self.on_unsubscribe,
        }  # fmt: skip

    # ------------------------------------------------------------------ models and capabilities
    def models_missing(self, preset_name: str, text: bool) -> str | None:
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
        from pla4d.config import PRESETS
        from pla4d.settings import wire_table

        devices = self.scheduler.executor.devices
        return {
            "server": "pla4d-backend",
            "server_version": __version__,
            "engine_version": pla4d.__version__,
            "protocol": PROTOCOL_VERSION,
            "device": "cuda" if any(d.startswith("cuda") for d in devices) else "cpu",
            "workers": len(devices),
            "devices": list(devices),
            "presets": self.presets,
            "default_preset": self.default_preset,
            "kinds": {
                "example": {"available": True},
                "lift": {"available": True, "uploads": ["image", "mesh"], "mesh_extensions": list(MESH_EXTENSIONS)},
                "video": {
                    "available": True,
                    "uploads": ["frames", "mesh"],
                    "frames": "zip of RGBA PNGs",
                    "mesh_required": self.models_missing(self.default_preset, text=False) is not None,
                    "mesh_extensions": list(MESH_EXTENSIONS),
                },
                "text": self._kind_status(self.models_missing(self.default_preset, text=True)),
            },
            "models": self._model_ids(),
            "settings": wire_table(PRESETS[name] for name in self.presets),
            "overrides": legacy_override_names(),
            "limits": {
                "max_message_bytes": MAX_MESSAGE_BYTES,
                "max_chunk_size": MAX_CHUNK_SIZE,
                "default_chunk_size": DEFAULT_CHUNK_SIZE,
                "max_fetch_window": MAX_FETCH_WINDOW,
                "max_upload_bytes": self.uploads.max_upload,
                "upload_space_per_client_bytes": CLIENT_SPACE_FACTOR * self.uploads.max_upload,
                "upload_space_bytes": SPACE_FACTOR * self.uploads.max_upload,
                "max_open_uploads_per_client": MAX_OPEN_PER_CLIENT,
                "max_open_uploads": MAX_OPEN,
                "fetch_bytes_in_flight_per_client": CLIENT_BUDGET,
                "max_queue": self.max_queue,
                "rate_per_s": self.transport.rate,
                "burst": self.transport.burst,
            },
            "machine": None if self.machine is None else self.machine.get(),
            "auth": {
                "hmac": bool(self.transport.key),
                "curve": self.transport.curve,
                "insecure_public": self.transport.insecure_public,
            },
        }

    def on_hello(self, ident, body, raw, id_):
        no_raw(raw)
        return self.capabilities()

    def on_ping(self, ident, body, raw, id_):
        no_raw(raw)
        return {"t": time.time()}

    # ------------------------------------------------------------------ jobs
    def _job(self, body: dict[str, Any]) -> dict[str, Any]:
        job_id = get_field(body, "job_id", str, check=lambda v: 0 < len(v) <= 64, allowed="1 to 64 characters")
        job = self.store.get(job_id)
        if job is None:
            raise ProtocolError(Code.NOT_FOUND, f"no job {job_id!r}")
        return job

    def _public(self, job: dict[str, Any]) -> dict[str, Any]:
        req = job["request"]
        out = {k: job[k] for k in ("id", "kind", "state", "created", "started", "finished", "attempts", "stage")}
        out.update(
            job_id=job["id"], queue_position=self.scheduler.positions.get(job["id"]),
            settings=req.get("settings", {}), prompt=req.get("prompt"), last_seq=job["last_seq"],
            summary=job["summary"], node=self.scheduler.executor.node_of(job["id"]),
            error={"code": job["error_code"], "message": job["error_message"]} if job["error_code"] else None,
        )  # fmt: skip
        return out

    def _inputs(self, kind: str, body: dict[str, Any], preset: str) -> dict[str, Upload]:
        """The finished uploads a submit names, by role."""
        if kind not in KIND_UPLOADS:
            return {}
        uploads = get_field(body, "uploads", dict)
        roles = dict(KIND_UPLOADS[kind])
        if kind == "video" and uploads.get("mesh") is None:
            missing = self.models_missing(preset, text=False)
            if missing is not None:
                raise ProtocolError(
                    Code.MODEL_UNAVAILABLE, "a video without its first frame's mesh needs the image-to-mesh "
                    f"model (or upload the mesh as uploads.mesh): {missing}",
                )  # fmt: skip
            roles.pop("mesh")
        return {
            role: self.uploads.complete(role, get_field(uploads, role, str), endings, what)
            for role, (endings, what) in roles.items()
        }

    def _check_inputs(self, ident: bytes, inputs: dict[str, Upload]) -> None:
        """INVALID_INPUT for images and frame zips the engine would refuse, before anything is queued; the bytes a
        frames zip unpacks to count against the submitting client's upload space (TOO_LARGE beyond it)."""
        try:
            if "image" in inputs:
                check_png(inputs["image"].path, "the image upload")
            if "frames" in inputs:
                unpacked = check_frames_zip(inputs["frames"].path)
                self.uploads.check_space(self.transport.client_id(ident), unpacked, "the frames zip unpacks to "
                                         f"{unpacked >> 20} MiB")  # fmt: skip
        except ValueError as exc:
            raise ProtocolError(Code.INVALID_INPUT, str(exc)) from None

    def on_submit(self, ident, body, raw, id_):
        no_raw(raw)
        kind = get_field(body, "kind", str)
        if kind not in KINDS:
            raise ProtocolError(Code.UNSUPPORTED_KIND, f"unknown job kind {kind[:64]!r}; kinds: {list(KINDS)}")
        prompt = None
        if kind == "text":
            prompt = get_field(body, "prompt", str, check=lambda v: 0 < len(v.strip()) and len(v) <= MAX_PROMPT,
                               allowed=f"text of 1 to {MAX_PROMPT} characters").strip()  # fmt: skip
        settings = job_settings(get_field(body, "settings", dict, {}), kind, self.presets, self.default_preset)
        if kind == "text" and (missing := self.models_missing(settings["preset"], text=True)) is not None:
            raise ProtocolError(Code.MODEL_UNAVAILABLE, missing)
        inputs = self._inputs(kind, body, settings["preset"])
        if len(self.store.queued_ids()) >= self.max_queue:
            raise ProtocolError(Code.QUEUE_FULL, f"{self.max_queue} jobs queued already (--max-queue)")
        self._check_inputs(ident, inputs)
        client = self.transport.client_id(ident)  # the scheduler's fair order takes turns by client
        job = self.store.create(kind, {"kind": kind, "settings": settings, "prompt": prompt, "client": client})
        job_dir = self.jobs_dir / job["id"]
        (job_dir / "inputs").mkdir(parents=True)
        spec_inputs = {}
        for role, up in inputs.items():
            # The ending that made the upload acceptable, also for a name that is nothing but it (".zip").
            name = role + next(e for e in KIND_UPLOADS[kind][role][0] if up.name.lower().endswith(e))
            self.uploads.move(up, job_dir / "inputs" / name)
            spec_inputs[role] = f"inputs/{name}"
        # The worker's whole contract: job.json (read by backend/worker.py).
        spec = {"kind": kind, "settings": settings, "inputs": spec_inputs, "default_preset": self.default_preset,
                "prompt": prompt, "models": self.models}  # fmt: skip
        (job_dir / "job.json").write_text(json.dumps(spec, indent=1))
        self.scheduler.subscribe(job["id"], ident, limit=False)
        self.scheduler.update_positions()  # a new client's job may move others back (the fair order)
        position = self.scheduler.positions.get(job["id"], 0)
        seq = self.scheduler.event(job["id"], {"event": "accepted", "queue_position": position})
        return {"job_id": job["id"], "state": "queued", "queue_position": position, "seq": seq}

    def on_status(self, ident, body, raw, id_):
        no_raw(raw)
        return self._public(self._job(body))

    def on_list(self, ident, body, raw, id_):
        no_raw(raw)
        state = get_field(body, "state", str, None)
        limit = get_field(body, "limit", int, 100, lambda v: 0 < v <= 1000, allowed="an integer from 1 to 1000")
        return {"jobs": [self._public(j) for j in self.store.list(state, limit)]}

    def on_cancel(self, ident, body, raw, id_):
        no_raw(raw)
        job = self._job(body)
        return {"job_id": job["id"], "state": self.scheduler.cancel(job)}

    def on_delete(self, ident, body, raw, id_):
        no_raw(raw)
        job = self._job(body)
        if job["state"] in ("queued", "running"):
            raise ProtocolError(Code.JOB_ACTIVE, f"job is {job['state']}; cancel it first")
        shutil.rmtree(self.jobs_dir / job["id"], ignore_errors=True)
        self.store.delete(job["id"])
        self.scheduler.forget(job["id"])
        return {"job_id": job["id"], "deleted": True}

    def on_subscribe(self, ident, body, raw, id_):
        no_raw(raw)
        job = self._job(body)
        since = get_field(body, "since", int, 0, lambda v: 0 <= v < 1 << 62, allowed="an integer from 0 to 2**62")
        reply = {"job_id": job["id"], "state": job["state"], "last_seq": job["last_seq"]}
        events = self.store.events_since(job["id"], since)  # before anything is sent: one answer per request
        if job["state"] in ("queued", "running") and not self.scheduler.subscribe(job["id"], ident):
            raise ProtocolError(Code.QUEUE_FULL, "too many subscribers to this job")
        send = self.transport.send
        send(ident, REPLY, reply, id_)
        for seq, event in events:
            send(ident, EVENT, {"job_id": job["id"], "seq": seq, **event})
        if job["id"] in self.scheduler.previews:
            preview, frames = self.scheduler.previews[job["id"]]
            send(ident, EVENT, preview, None, frames)
        return None

    def on_unsubscribe(self, ident, body, raw, id_):
        no_raw(raw)
        job = self._job(body)
        self.scheduler.unsubscribe(job["id"], ident)
        return {"job_id": job["id"]}
