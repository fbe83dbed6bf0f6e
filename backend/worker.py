"""A job's worker process: ``python -m backend.worker JOB_DIR ENDPOINT TOKEN PARENT_PID DEVICE``.

Reads ``JOB_DIR/job.json``, runs the engine and pushes events to the server over a ZeroMQ PUSH socket
(``[token, envelope, *raw]``). Cancellation: the server creates ``JOB_DIR/cancel``; the engine polls it between
iterations. The worker dies with its server (PR_SET_PDEATHSIG, plus a parent check in the cancel poll).
Stage cache: the engine's runner (pla4d.runner), in the job's ``result/`` folder; a resumed job skips every stage
that finished.
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

from backend.inputs import check_frames_zip, frame_members
from backend.protocol import Code, array_frames, pack

RESULT_DIR = "result"
STAMP_EVENTS = os.environ.get("PLA4D_EVENT_CLOCK") == "1"  # each event carries the wall time it was sent at
FRAMES_DIR = "inputs/frames"


def extract_frames(archive: Path, dest: Path) -> Path:
    """The PNG frames of an uploaded zip into ``dest`` (flat, by name), refusing anything else.

    The zip comes from the network: it is checked in full before anything is written (only ``*.png`` files, no
    paths that climb out, bounded count and uncompressed size, every CRC, each PNG's declared size: see
    :func:`backend.inputs.check_frames_zip`), so a zip bomb or a damaged zip is refused up front."""
    import zipfile

    check_frames_zip(archive)
    with zipfile.ZipFile(archive) as zf:
        members = frame_members(zf)
        dest.mkdir(parents=True, exist_ok=True)
        for member in members:
            with zf.open(member) as src, open(dest / Path(member.filename).name, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    return dest


def relative_message(text: str, job_dir: Path) -> str:
    """An error message with the job folder's paths made relative to it (clients never see server paths)."""
    for folder in {str(job_dir.resolve()), str(job_dir.absolute()), str(job_dir)}:
        text = text.replace(folder + os.sep, "").replace(folder, ".")
    return text


def remove_extracted(job_dir: Path) -> None:
    """A failed job's unpacked frames go (the zip it came from stays with the job)."""
    frames = job_dir / FRAMES_DIR
    shutil.rmtree(frames, ignore_errors=True)
    shutil.rmtree(frames.with_name("frames.partial"), ignore_errors=True)


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
        if STAMP_EVENTS:
            event["sent_at"] = time.time()  # benchmarks/cluster_bench.py: event latency to the client
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
    """One job through the engine's runner; a resumed job continues from its last finished stage."""
    from pla4d import settings as table
    from pla4d.config import get_preset
    from pla4d.runner import run_example, run_generate, run_lift, run_video_to_4d

    kind = spec["kind"]
    if kind not in ("example", "lift", "video", "text"):
        raise ValueError(f"job kind {kind!r} cannot run in this worker")
    given = spec.get("settings", {})
    # The server checked the values against the settings table; a job file from an older server has the older maps.
    values = table.check(given["values"] if "values" in given else table.from_legacy(given), kind)
    preset = table.apply(get_preset(given.get("preset", spec.get("default_preset", "draft"))), values)
    run_values = table.run_values(values, kind)
    common: dict[str, Any] = {
        "seed": int(given.get("seed", run_values["job.seed"])), "device": spec.get("device", "auto"),
        "on_event": rep.emit, "should_cancel": rep.should_cancel, "show_progress": False,
    }  # fmt: skip
    out = job_dir / RESULT_DIR
    inputs = spec.get("inputs", {})
    if kind == "example":
        summary = run_example(out, preset, run_values, **common)
    elif kind == "lift":
        summary = run_lift(job_dir / inputs["image"], job_dir / inputs["mesh"], out, preset, **common)
    elif kind == "video" and "mesh" in inputs:
        frames = _job_frames(job_dir, spec)
        summary = run_video_to_4d(frames, job_dir / inputs["mesh"], out, preset, fps=run_values["asset.fps"],
                                  **common)  # fmt: skip
    else:  # text jobs, and video jobs without a mesh: `pla4d generate`
        video = _job_frames(job_dir, spec) if kind == "video" else None
        summary = run_generate(spec.get("prompt"), out, preset, video=video, models=spec.get("models") or None,
                               **common)  # fmt: skip
    return {"summary": _plain(summary), "manifest": file_manifest(out)}


def _job_frames(job_dir: Path, spec: dict[str, Any]) -> Path:
    """A video job's uploaded frames, unpacked once: into a temporary folder renamed into place when whole, so a
    resumed job finds them ready and a crash mid-way leaves nothing that looks finished."""
    frames_dir = job_dir / FRAMES_DIR
    if not frames_dir.is_dir():
        partial = frames_dir.with_name("frames.partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            extract_frames(job_dir / spec["inputs"]["frames"], partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(frames_dir)
    return frames_dir


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
        except Exception as exc:
            traceback.print_exc()
            remove_extracted(job_dir)
            code = Code.INVALID_INPUT if isinstance(exc, ValueError | OSError) else Code.ENGINE_ERROR
            message = relative_message(f"{type(exc).__name__}: {exc}", job_dir)
            rep.emit({"type": "failed", "code": code, "message": message})
            return 1
        rep.emit({"type": "done", **result})
        return 0
    finally:
        rep.close()


if __name__ == "__main__":
    sys.exit(main())
