"""A Ray run's files between the backend's data dir and the run's node (docs/cluster.md, "Storage").

With ``--shared-dir`` the job runs in ``SHARED/jobs/ID`` (made once from ``DATA/jobs/ID``, so a retry finds its stage
cache there) and its result is copied from there; without it the job folder's files travel to the node's host through
Ray's object store, each finished stage is copied back into ``DATA/jobs/ID/stages`` as it finishes (a retry on another
node is sent them and resumes), and the result is read back in chunks. Either way the result lands in
``DATA/jobs/ID/result`` only once each file's size and sha256 match what the node computed.
"""

from __future__ import annotations

import hashlib
import queue
import shutil
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.executor import MAX_EVENT_BYTES
from backend.protocol import Code, pack, unpack
from backend.ray_job import MAX_CHUNK, safe_relative
from backend.worker import RESULT_DIR

STAGES_DIR = "stages"  # in the job folder, without shared storage: the stages a lost run had finished


def node_label(node: dict[str, Any] | None) -> str:
    if not node:
        return "a node not yet known"
    if not node.get("ip"):  # placed, not yet started there
        return f"node id {str(node.get('node_id'))[:8]}"
    return f"node {node.get('ip')} ({node.get('host')}, id {str(node.get('node_id'))[:8]})"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class RunFiles:
    """The files of the runs of one backend. ``key(run)``: the run's key on its node's host; a run (the executor's
    ``_Run``) has ``job_id``, ``host``, ``node`` and the ``copies`` / ``copier`` of its stage copies."""

    def __init__(self, ray: Any, jobs_dir: Path, shared: Path | None, key: Callable[[Any], str],
                 stopping: threading.Event):  # fmt: skip
        self.ray = ray
        self.jobs_dir = jobs_dir
        self.shared = shared
        self.key = key
        self.stopping = stopping

    def job_files(self, job_id: str) -> tuple[str | None, dict[str, bytes] | None]:
        """The job folder the run uses: the shared copy (made once, so a retry finds its stage cache), or the bytes
        of ``job.json`` and ``inputs/`` for a node-local one."""
        src = self.jobs_dir / job_id
        wanted = [src / "job.json", *sorted(p for p in (src / "inputs").rglob("*") if p.is_file())]
        if self.shared is None:
            files = {p.relative_to(src).as_posix(): p.read_bytes() for p in wanted}
            # The stages an earlier attempt finished (see :meth:`_keep_stage`): the run's stage cache skips them.
            stages = [d for d in (src / STAGES_DIR).glob("*") if d.is_dir() and not d.name.endswith(".partial")]
            for path in sorted(p for stage in stages for p in stage.rglob("*") if p.is_file()):
                files[f"{RESULT_DIR}/{path.relative_to(src / STAGES_DIR).as_posix()}"] = path.read_bytes()
            return None, files
        dest = self.shared / "jobs" / job_id
        for path in wanted:
            target = dest / path.relative_to(src)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target.with_name(target.name + ".partial"))
                target.with_name(target.name + ".partial").replace(target)
        return str(dest), None

    def stage_finished(self, run: Any, stage: str) -> None:
        """Without shared storage: copy the stage back (see :meth:`_keep_stage`), one stage after another in a thread
        of the run's own: its events do not wait for the copies."""
        if run.copies is None:
            run.copies = queue.Queue()
            run.copier = threading.Thread(target=self._copy_stages, args=(run, run.copies), daemon=True)
            run.copier.start()
        run.copies.put(stage)

    def _copy_stages(self, run: Any, copies: queue.Queue) -> None:
        while (stage := copies.get()) is not None:
            self._keep_stage(run, stage)

    def copied(self, run: Any) -> None:
        """Until the run's stage copies asked for so far are done (or failed)."""
        if run.copies is not None and run.copier is not None:
            run.copies.put(None)
            while run.copier.is_alive() and not self.stopping.is_set():
                run.copier.join(0.1)
            run.copies = run.copier = None

    def collect(self, run: Any, envelope: bytes) -> bytes:
        """Bring the finished run's files into ``DATA/jobs/ID/result``, each checked by size and sha256; the ``done``
        passes on when all arrived, else a ``failed`` event says which file did not."""
        event = unpack(envelope, limit=MAX_EVENT_BYTES)
        dest = self.jobs_dir / run.job_id / "result"
        partial = dest.with_name("result.partial")
        shutil.rmtree(partial, ignore_errors=True)
        self.copied(run)  # the stages' copies end before the result is in place, which makes them needless
        try:
            for entry in event.get("manifest") or []:
                target = partial / entry["name"]
                target.parent.mkdir(parents=True, exist_ok=True)
                self._copy(run, f"result/{entry['name']}", target)
                if target.stat().st_size != entry["size"] or sha256_file(target) != entry["sha256"]:
                    raise ValueError(f"{entry['name']} arrived with another size or sha256 than the node computed")
            shutil.rmtree(dest, ignore_errors=True)
            partial.replace(dest)
            shutil.rmtree(self.jobs_dir / run.job_id / STAGES_DIR, ignore_errors=True)  # the result has them all
        except Exception as exc:
            shutil.rmtree(partial, ignore_errors=True)
            message = f"the result could not be brought from {node_label(run.node)}: {type(exc).__name__}: {exc}"
            return pack({"event": "failed", "code": Code.CHECKSUM_MISMATCH, "message": message})
        return envelope

    def _keep_stage(self, run: Any, stage: str) -> None:
        """Without shared storage: a stage the run finished is copied into ``DATA/jobs/ID/stages/STAGE`` as it
        finishes (its folder is whole once the runner has written its marker and said so), so that a retry on another
        node starts with it in its stage cache. A stage that cannot be brought is redone by a retry."""
        dest = self.jobs_dir / run.job_id / STAGES_DIR / safe_relative(stage)
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            listing = self.ray.get(run.host.files.remote(self.key(run), f"{RESULT_DIR}/{stage}"), timeout=60)
            for name, size in listing:
                target = partial / Path(name).relative_to(f"{RESULT_DIR}/{stage}")
                target.parent.mkdir(parents=True, exist_ok=True)
                self._copy(run, name, target)
                if target.stat().st_size != size:
                    raise ValueError(f"{name} arrived with {target.stat().st_size} bytes of {size}")
            shutil.rmtree(dest, ignore_errors=True)
            partial.replace(dest)
        except Exception:
            traceback.print_exc()
            shutil.rmtree(partial, ignore_errors=True)

    def _copy(self, run: Any, name: str, target: Path) -> None:
        if self.shared is not None:
            shutil.copyfile(self.shared / "jobs" / run.job_id / name, target)
            return
        with open(target, "wb") as out:
            offset = 0
            while True:
                chunk = self.ray.get(run.host.read.remote(self.key(run), name, offset, MAX_CHUNK))
                if not chunk:
                    return
                out.write(chunk)
                offset += len(chunk)

    def bring_log(self, run: Any) -> None:
        try:
            self._copy(run, "worker.log", self.jobs_dir / run.job_id / "worker.log")
        except Exception:  # the log is for people; a run without one still ends
            pass
