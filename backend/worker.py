"""A job's worker process: ``python -m backend.worker JOB_DIR ENDPOINT TOKEN PARENT_PID DEVICE``.

Reads ``JOB_DIR/job.json``, runs the engine and pushes events to the server over a ZeroMQ PUSH socket
(``[token, envelope, *raw]``). Cancellation: the server creates ``JOB_DIR/cancel``; the engine polls it between
iterations. The worker dies with its server (PR_SET_PDEATHSIG, plus a parent check in the cancel poll).
Stage cache: the example clip is rendered once per job (``inputs/clip/.complete``); a resumed job skips it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import zmq

from backend.protocol import Code, array_frames, pack

RESULT_DIR = "result"
# settings.generate (names and bounds checked by the server) -> (preset section, field).
GENERATE_FIELDS = {
    "frames": ("video", "num_frames"), "width": ("video", "width"), "height": ("video", "height"),
    "steps": ("video", "steps"), "matte_size": ("matte", "size"), "mesh_steps": ("mesh", "steps"),
    "mesh_grid": ("mesh", "grid_size"),
}  # fmt: skip
MAX_FRAMES = 1024
MAX_FRAMES_BYTES = 4 << 30  # uncompressed, all frames together


def extract_frames(archive: Path, dest: Path) -> Path:
    """The PNG frames of an uploaded zip into ``dest`` (flat, by name), refusing anything else.

    The zip comes from the network: members are checked before anything is written (only ``*.png`` files, no
    paths that climb out, bounded count and uncompressed size, so a zip bomb is refused up front)."""
    import zipfile

    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"the frames upload is not a zip file: {exc}") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        names = [Path(m.filename).name for m in members]
        bad = [m.filename for m in members if not m.filename.lower().endswith(".png")]
        if bad:
            raise ValueError(f"the frames zip may hold PNG files only; found {bad[:3]}")
        if len(members) < 2 or len(members) > MAX_FRAMES:
            raise ValueError(f"the frames zip holds {len(members)} PNGs; give 2 to {MAX_FRAMES}")
        if len(set(names)) != len(names):
            raise ValueError("the frames zip holds two frames with the same file name")
        if sum(m.file_size for m in members) > MAX_FRAMES_BYTES:
            raise ValueError(f"the frames zip unpacks to more than {MAX_FRAMES_BYTES >> 30} GiB")
        dest.mkdir(parents=True, exist_ok=True)
        for member, name in zip(members, names, strict=True):
            with zf.open(member) as src, open(dest / name, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    return dest


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the parent check in should_cancel still applies
        pass


def file_manifest(folder: Path) -> list[dict[str, Any]]:
    from pla4d.runfolder import sha256_of

    return [
        {"name": path.relative_to(folder).as_posix(), "size": path.stat().st_size, "sha256": sha256_of(path)}
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    ]


class Reporter:
    def __init__(self, endpoint: str, token: bytes, job_dir: Path, parent: int):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 10_000)
        self.sock.connect(endpoint)
        self.token = token
        self.job_dir = job_dir
        self.parent = parent

    def emit(self, event: dict[str, Any]) -> None:
        event = dict(event)
        name = event.pop("type")
        raw: list[Any] = []
        if name == "preview":
            descs, raw = array_frames(event.pop("points"))
            event["arrays"] = descs
        self.sock.send_multipart([self.token, pack({"event": name, **_plain(event)}), *raw], copy=False)

    def should_cancel(self) -> bool:
        if os.getppid() != self.parent:
            os._exit(3)  # the server is gone: stop burning the device
        return (self.job_dir / "cancel").exists()

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def _plain(value: Any) -> Any:
    """numpy scalars and tuples -> msgpack-friendly values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not hasattr(value, "shape") or getattr(value, "shape", None) == ():
        return value.item()
    return value


def run_job(job_dir: Path, spec: dict[str, Any], rep: Reporter) -> dict[str, Any]:
    from pla4d.config import get_preset
    from pla4d.errors import Cancelled
    from pla4d.lift import run_lift

    settings = spec.get("settings", {})
    preset = get_preset(settings.get("preset", spec.get("default_preset", "draft")))
    overrides = dict(settings.get("overrides") or {})
    motion_iterations = overrides.pop("motion_iterations", None)
    if overrides:
        preset = preset.replace_static(**{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    if motion_iterations is not None:
        preset = preset.replace_motion(iterations=int(motion_iterations), epochs=None)
    seed = int(settings.get("seed", 0))
    kind = spec["kind"]
    if kind == "text" or (kind == "video" and "mesh" not in spec["inputs"]):
        return _run_generate(job_dir, spec, preset, seed, rep)
    if kind == "example":
        clip = job_dir / "inputs" / "clip"
        rep.emit({"type": "stage_started", "stage": "example"})
        start = time.perf_counter()
        cached = (clip / ".complete").exists()
        if not cached:
            from pla4d.example.clip import ExampleSettings, write_example_clip

            shutil.rmtree(clip, ignore_errors=True)
            ex = settings.get("example", {})
            write_example_clip(
                clip,
                ExampleSettings(
                    num_frames=int(ex.get("frames", 8)),
                    resolution=int(ex.get("resolution", 128)),
                    supersample=int(ex.get("supersample", 2)),
                    novel_azimuths=(),
                ),
            )
            (clip / ".complete").write_text("ok\n")
        rep.emit(
            {"type": "stage_finished", "stage": "example", "seconds": time.perf_counter() - start, "cached": cached}
        )
        image, mesh = clip / "input" / "000.png", clip / "first_frame.glb"
    elif kind == "lift":
        image, mesh = job_dir / spec["inputs"]["image"], job_dir / spec["inputs"]["mesh"]
    elif kind == "video":
        frames_dir = _job_frames(job_dir, spec)
        mesh = job_dir / spec["inputs"]["mesh"]
    else:
        raise ValueError(f"job kind {kind!r} cannot run in this worker")
    if rep.should_cancel():
        raise Cancelled()
    out = job_dir / RESULT_DIR
    if kind in ("example", "video"):
        from pla4d.pipeline import run_video_to_4d

        frames = clip / "input" if kind == "example" else frames_dir
        fps = float(settings.get("fps", 16.0 if kind == "example" else 8.0))
        # Video-to-4D with the engine's stage cache: a resumed job continues from its last finished stage.
        summary = run_video_to_4d(
            frames, mesh, out, preset, seed=seed, device=spec.get("device", "auto"), fps=fps,
            on_event=rep.emit, should_cancel=rep.should_cancel, show_progress=False,
        )  # fmt: skip
        return {"summary": _plain(summary), "manifest": file_manifest(out)}
    shutil.rmtree(out, ignore_errors=True)  # a resumed lift job redoes the static stage from its start
    summary = run_lift(
        image, mesh, out, preset, seed=seed, device=spec.get("device", "auto"),
        on_event=rep.emit, should_cancel=rep.should_cancel, show_progress=False,
    )  # fmt: skip
    return {"summary": _plain(summary), "manifest": file_manifest(out)}


def _job_frames(job_dir: Path, spec: dict[str, Any]) -> Path:
    """A video job's uploaded frames, unpacked once (a resumed job finds them ready)."""
    frames_dir = job_dir / "inputs" / "frames"
    if not (frames_dir / ".complete").exists():
        shutil.rmtree(frames_dir, ignore_errors=True)
        extract_frames(job_dir / spec["inputs"]["frames"], frames_dir)
        (frames_dir / ".complete").write_text("ok\n")
    return frames_dir


def _run_generate(job_dir: Path, spec: dict[str, Any], preset: Any, seed: int, rep: Reporter) -> dict[str, Any]:
    """Text jobs, and video jobs without a mesh: ``pla4d generate``'s entry point, with its stage cache."""
    from pla4d.generate import run_generate

    settings = spec.get("settings", {})
    changes: dict[str, dict[str, Any]] = {"video": {}, "matte": {}, "mesh": {}}
    for name, value in settings.get("generate", {}).items():
        section, field = GENERATE_FIELDS[name]
        changes[section][field] = value
    for section, values in changes.items():
        if values:
            preset = getattr(preset, f"replace_{section}")(**values)
    video = _job_frames(job_dir, spec) if spec["kind"] == "video" else None
    out = job_dir / RESULT_DIR
    summary = run_generate(
        spec.get("prompt"), out, preset, seed=seed, device=spec.get("device", "auto"), video=video,
        on_event=rep.emit, should_cancel=rep.should_cancel, show_progress=False, models=spec.get("models") or None,
    )  # fmt: skip
    return {"summary": _plain(summary), "manifest": file_manifest(out)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job_dir, endpoint, token = Path(argv[0]), argv[1], argv[2].encode()
    parent = int(argv[3]) if len(argv) > 3 else os.getppid()
    device = argv[4] if len(argv) > 4 else "auto"  # the server's device slot for this job
    _die_with_parent()
    if os.getppid() != parent:
        return 3
    rep = Reporter(endpoint, token, job_dir, parent)
    try:
        from pla4d.errors import Cancelled, MissingWeightsError

        spec = json.loads((job_dir / "job.json").read_text())
        spec["device"] = device
        try:
            result = run_job(job_dir, spec, rep)
        except Cancelled:
            rep.emit({"type": "cancelled"})
            return 0
        except MissingWeightsError as exc:
            rep.emit({"type": "failed", "code": Code.MODEL_UNAVAILABLE, "message": str(exc)})
            return 1
        except (ValueError, FileNotFoundError, OSError) as exc:
            traceback.print_exc()
            rep.emit({"type": "failed", "code": Code.INVALID_INPUT, "message": f"{type(exc).__name__}: {exc}"})
            return 1
        except Exception as exc:
            traceback.print_exc()
            rep.emit({"type": "failed", "code": Code.ENGINE_ERROR, "message": f"{type(exc).__name__}: {exc}"})
            return 1
        rep.emit({"type": "done", **result})
        return 0
    finally:
        rep.close()


if __name__ == "__main__":
    sys.exit(main())
