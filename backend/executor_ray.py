"""Jobs on a Ray cluster: :class:`RayExecutor`, the executor behind ``pla4d-backend --executor ray`` (docs/cluster.md).

Each job becomes one detached actor (:class:`backend.ray_job.JobRunner`) asking for the job's resource (one GPU by
default, or a custom resource for mixed farms) and its memory; Ray places it on whichever node has them free, and
the actor runs the same worker (the run engine) a local job runs. The scheduler keeps the queue: the executor
offers as many slots as the cluster's alive nodes hold of the resource (read again every few seconds, so a node that
joins starts taking queued jobs), so queue positions stay exact and Ray never holds a backlog of its own.

Events: one thread per running job long-polls its actor (``events(since)``) and passes each event, with its index,
to the server's loop over an inproc ZeroMQ socket, one job's events in the order the worker sent them. Events go
through Ray rather than a socket back to the server, so the nodes need no route to the server, only the cluster's
own ports; and since the actor keeps what the server has not taken, a backend killed with -9 and started again
adopts the actor by name (``ray.json`` in the job folder names it and how many events were taken) and goes on.

Results: on the worker's ``done`` the thread copies every file of its manifest into ``DATA/jobs/ID/result`` (from
``--shared-dir``, or read from the actor in chunks), checks each file's size and sha256, and only then passes the
``done`` on, so ``fetch`` is unchanged. A node lost mid-job ends the run as retryable: the scheduler queues the job
again (up to ``--max-attempts`` runs) and, with ``--shared-dir``, the next run resumes from the stage cache there.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from backend.executor import MAX_EVENT_BYTES, Executor, JobSink, _visible_gpus
from backend.protocol import Code, pack, unpack
from backend.ray_job import CANCEL_KILL_S, MAX_CHUNK, JobRunner

STATE_FILE = "ray.json"  # in the job folder: the actor's name, the run's attempt, the events taken
CAPACITY_TTL_S = 2.0
POLL_S = 1.0  # longest wait of one events poll (a stopping server waits for it)
UNAVAILABLE_S = 20.0  # an actor Ray cannot reach this long is given up as lost (Ray's node check is ~15 s)
KILL_AFTER_CANCEL_S = CANCEL_KILL_S + 1.0  # an actor whose run has not ended by then is killed with its worker


@dataclass
class _Run:
    job_id: str
    slot: int
    actor: Any
    name: str
    attempt: int
    seen: int = 0  # events taken and delivered
    node: dict[str, Any] | None = None
    cancel_at: float | None = None
    thread: threading.Thread | None = None


def node_label(node: dict[str, Any] | None) -> str:
    if not node:
        return "a node not yet known"
    return f"node {node.get('ip')} ({node.get('host')}, id {str(node.get('node_id'))[:8]})"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class RayExecutor(Executor):
    """Slots on a Ray cluster. ``address``: ``auto``, ``HOST:PORT``, ``ray://HOST:PORT``, or None to start a Ray
    of this machine alone. ``resource``: what one job asks for, ``per_job`` of it (``GPU``: ``num_gpus``);
    ``memory_mb``: Ray's memory request per job (0: none); ``shared_dir``: a folder every node mounts."""

    def __init__(
        self,
        ctx: zmq.Context,
        jobs_dir: Path,
        address: str | None = None,
        resource: str = "GPU",
        per_job: float = 1.0,
        memory_mb: int = 0,
        shared_dir: str | Path | None = None,
    ):
        import ray

        if per_job <= 0:
            raise ValueError("--ray-per-job must be positive")
        self.ray = ray
        self.jobs_dir = Path(jobs_dir)
        self.resource, self.per_job, self.memory_mb = resource, float(per_job), int(memory_mb)
        self.shared = Path(shared_dir).resolve() if shared_dir else None
        if self.shared is not None:
            (self.shared / "jobs").mkdir(parents=True, exist_ok=True)
        # One namespace per data dir: two backends on one cluster never adopt each other's actors.
        namespace = "pla4d-" + hashlib.sha256(str(self.jobs_dir.resolve()).encode()).hexdigest()[:12]
        options: dict[str, Any] = {"namespace": namespace, "log_to_driver": False, "ignore_reinit_error": True}
        if address:
            ray.init(address=address, **options)
        else:
            # A Ray of this machine alone: its GPUs, or one logical unit of the resource so that a machine without
            # one still runs a job at a time.
            gpus = _visible_gpus()
            if resource == "GPU":
                options["num_gpus"] = gpus or self.per_job
            else:
                options.update(num_gpus=gpus, resources={resource: self.per_job})
            ray.init(include_dashboard=False, **options)
        self.remote = ray.remote(JobRunner)
        self.ctx = ctx
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.inproc = f"inproc://pla4d-ray-{secrets.token_hex(8)}"
        self.pull.bind(self.inproc)
        self.runs: dict[int, _Run] = {}  # slot -> the run there
        self.sink: JobSink | None = None
        self.stopping = threading.Event()
        self._capacity = 0
        self._capacity_at = float("-inf")

    # ------------------------------------------------------------------ slots
    @property
    def devices(self) -> list[str]:  # type: ignore[override]
        return [f"ray:{self.resource}"] * max(self.capacity(), len(self.runs))

    def capacity(self) -> int:
        """Jobs the cluster's alive nodes can hold at once (the resource over what one job asks for)."""
        now = time.monotonic()
        if now - self._capacity_at > CAPACITY_TTL_S:
            self._capacity_at = now
            try:
                total = self.ray.cluster_resources().get(self.resource, 0.0)
                self._capacity = int(total / self.per_job + 1e-9)
            except Exception:  # the cluster is unreachable for now: no new starts, runs go on
                traceback.print_exc()
                self._capacity = 0
        return self._capacity

    def attach(self, sink: JobSink) -> None:
        self.sink = sink

    def wait_sockets(self) -> list[zmq.Socket]:
        return [self.pull]

    def free_slots(self) -> list[int]:
        return [slot for slot in range(self.capacity()) if slot not in self.runs]

    def running(self) -> dict[str, int]:
        return {run.job_id: slot for slot, run in self.runs.items()}

    def node_of(self, job_id: str) -> str | None:
        """The node that runs the job, or ran its last attempt (None before Ray has placed it)."""
        run = next((r for r in self.runs.values() if r.job_id == job_id), None)
        node = run.node if run is not None else self._state(job_id).get("node")
        return None if not node else f"{node.get('ip')} ({node.get('host')})"

    # ------------------------------------------------------------------ runs
    def _state(self, job_id: str) -> dict[str, Any]:
        try:
            return json.loads((self.jobs_dir / job_id / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, run: _Run) -> None:
        state = {"actor": run.name, "attempt": run.attempt, "seen": run.seen, "node": run.node}
        path = self.jobs_dir / run.job_id / STATE_FILE
        path.with_suffix(".tmp").write_text(json.dumps(state))
        path.with_suffix(".tmp").replace(path)

    def _job_files(self, job_id: str) -> tuple[str | None, dict[str, bytes] | None]:
        """The job folder the run uses: the shared copy (made once, so a retry finds its stage cache), or the bytes
        of ``job.json`` and ``inputs/`` for a node-local one."""
        src = self.jobs_dir / job_id
        wanted = [src / "job.json", *sorted(p for p in (src / "inputs").rglob("*") if p.is_file())]
        if self.shared is None:
            return None, {p.relative_to(src).as_posix(): p.read_bytes() for p in wanted}
        dest = self.shared / "jobs" / job_id
        for path in wanted:
            target = dest / path.relative_to(src)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target.with_name(target.name + ".partial"))
                target.with_name(target.name + ".partial").replace(target)
        return str(dest), None

    def start(self, slot: int, job_id: str) -> None:
        attempt = int(self._state(job_id).get("attempt", 0)) + 1
        name = f"job-{job_id}-{attempt}"
        job_dir, files = self._job_files(job_id)
        options: dict[str, Any] = {"name": name, "lifetime": "detached", "max_restarts": 0, "max_concurrency": 8,
                                   "num_cpus": 0}  # fmt: skip
        if self.resource == "GPU":
            options["num_gpus"] = self.per_job
        else:
            options["resources"] = {self.resource: self.per_job}
        if self.memory_mb:
            options["memory"] = self.memory_mb << 20
        actor = self.remote.options(**options).remote(job_id, job_dir, files)
        actor.start.remote()
        run = _Run(job_id, slot, actor, name, attempt)
        self._save(run)
        self._follow(run)

    def _follow(self, run: _Run) -> None:
        self.runs[run.slot] = run
        run.thread = threading.Thread(target=self._relay, args=(run,), name=f"ray-{run.job_id}", daemon=True)
        run.thread.start()

    def cancel(self, job_id: str) -> None:
        for run in self.runs.values():
            if run.job_id == job_id and run.cancel_at is None:
                run.cancel_at = time.monotonic()
                run.actor.cancel.remote()

    def recover(self, job_ids: list[str]) -> set[str]:
        """Adopt the actors of the jobs that ran when the backend stopped, where they are still alive."""
        adopted = set()
        for job_id in job_ids:
            state = self._state(job_id)
            if not state.get("actor"):
                continue
            try:
                actor = self.ray.get_actor(state["actor"])
            except Exception:  # gone with its node: the scheduler queues the job again
                continue
            try:
                node = self.ray.get(actor.where.remote(), timeout=30)
            except Exception:  # never placed (or unreachable): it must not take a GPU later, the job runs again
                self.ray.kill(actor)
                continue
            slot = next(s for s in range(len(self.runs) + 1) if s not in self.runs)
            run = _Run(job_id, slot, actor, state["actor"], int(state.get("attempt", 1)), int(state.get("seen", 0)),
                       node)  # fmt: skip
            self._follow(run)
            adopted.add(job_id)
        return adopted

    # ------------------------------------------------------------------ the relay thread of one run
    def _relay(self, run: _Run) -> None:
        push = self.ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(self.inproc)
        key = run.job_id.encode()
        node = run.node
        try:
            if node is None:
                node = self._wait(run.actor.where.remote())
                if node is None:
                    return
                push.send_multipart([b"node", key, json.dumps(node).encode()])
            seen = run.seen
            unavailable_since = None
            while not self.stopping.is_set():
                try:
                    first, batch, ended = self.ray.get(run.actor.events.remote(seen, POLL_S))
                    unavailable_since = None
                except self.ray.exceptions.ActorUnavailableError:
                    # Ray cannot reach the actor for now (it may still run): a lost node is declared by Ray
                    # (ActorDiedError) or, failing that, after UNAVAILABLE_S of silence.
                    unavailable_since = unavailable_since or time.monotonic()
                    if time.monotonic() - unavailable_since > UNAVAILABLE_S:
                        raise
                    time.sleep(0.5)
                    continue
                for i, (envelope, raw) in enumerate(batch):
                    if unpack(envelope, limit=MAX_EVENT_BYTES).get("event") == "done":
                        envelope = self._collect(run, envelope)
                    push.send_multipart([b"ev", key, str(first + i).encode(), envelope, *raw])
                seen = first + len(batch)
                if ended is not None:
                    self._bring_log(run)
                    self._release(run)
                    push.send_multipart([b"end", key, ended.encode()])
                    return
        except Exception as exc:
            if self.stopping.is_set():
                return
            if not isinstance(exc, self.ray.exceptions.RayError):
                traceback.print_exc()
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
            why = next((line for line in lines if "because" in line), lines[0])[:300]  # Ray's cause, where it says
            reason = f"{node_label(node)} was lost while running this job ({type(exc).__name__}: {why})"
            try:
                self.ray.kill(run.actor)  # should it still run somewhere, it must not run beside its retry
            except Exception:
                pass
            push.send_multipart([b"lost", key, reason.encode()])
        finally:
            push.close()

    def _wait(self, ref: Any) -> Any:
        """``ray.get`` that gives up when the backend stops (an actor waits for a free node as long as it takes)."""
        while not self.stopping.is_set():
            try:
                return self.ray.get(ref, timeout=POLL_S)
            except self.ray.exceptions.GetTimeoutError:
                continue
        return None

    def _collect(self, run: _Run, envelope: bytes) -> bytes:
        """Bring the finished run's files into ``DATA/jobs/ID/result``, each checked by size and sha256; the ``done``
        passes on when all arrived, else a ``failed`` event says which file did not."""
        event = unpack(envelope, limit=MAX_EVENT_BYTES)
        dest = self.jobs_dir / run.job_id / "result"
        partial = dest.with_name("result.partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            for entry in event.get("manifest") or []:
                target = partial / entry["name"]
                target.parent.mkdir(parents=True, exist_ok=True)
                self._copy(run, f"result/{entry['name']}", target)
                if target.stat().st_size != entry["size"] or sha256_file(target) != entry["sha256"]:
                    raise ValueError(f"{entry['name']} arrived with another size or sha256 than the node computed")
            shutil.rmtree(dest, ignore_errors=True)
            partial.replace(dest)
        except Exception as exc:
            shutil.rmtree(partial, ignore_errors=True)
            message = f"the result could not be brought from {node_label(run.node)}: {type(exc).__name__}: {exc}"
            return pack({"event": "failed", "code": Code.CHECKSUM_MISMATCH, "message": message})
        return envelope

    def _copy(self, run: _Run, name: str, target: Path) -> None:
        if self.shared is not None:
            shutil.copyfile(self.shared / "jobs" / run.job_id / name, target)
            return
        with open(target, "wb") as out:
            offset = 0
            while True:
                chunk = self.ray.get(run.actor.read.remote(name, offset, MAX_CHUNK))
                if not chunk:
                    return
                out.write(chunk)
                offset += len(chunk)

    def _bring_log(self, run: _Run) -> None:
        try:
            self._copy(run, "worker.log", self.jobs_dir / run.job_id / "worker.log")
        except Exception:  # the log is for people; a run without one still ends
            pass

    def _release(self, run: _Run) -> None:
        try:
            self.ray.get(run.actor.close.remote(), timeout=10)
        except Exception:
            pass
        self.ray.kill(run.actor)

    # ------------------------------------------------------------------ the server's loop
    def pump(self) -> None:
        dirty: dict[str, _Run] = {}
        while True:
            try:
                frames = self.pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            kind, job_id = frames[0].bytes, frames[1].bytes.decode()
            run = next((r for r in self.runs.values() if r.job_id == job_id), None)
            if run is None:
                continue
            try:
                if kind == b"node":
                    run.node = json.loads(frames[2].bytes)
                    dirty[job_id] = run
                elif kind == b"ev":
                    event = unpack(frames[3].bytes, limit=MAX_EVENT_BYTES)
                    self._sink().job_event(job_id, event, [f.buffer for f in frames[4:]])
                    run.seen = int(frames[2].bytes) + 1
                    dirty[job_id] = run
                else:  # b"end", b"lost": the run is over
                    dirty.pop(job_id, None)
                    del self.runs[run.slot]
                    self._end(run, kind == b"lost", frames[2].bytes.decode())
            except Exception:  # one bad message must not stop the loop
                traceback.print_exc()
        for run in dirty.values():
            self._save(run)
        now = time.monotonic()
        for run in self.runs.values():
            if run.cancel_at is not None and now - run.cancel_at > KILL_AFTER_CANCEL_S:
                run.cancel_at = float("inf")  # once
                self.ray.kill(run.actor)  # its relay reports it lost; the cancel file makes that a cancel

    def _end(self, run: _Run, lost: bool, reason: str) -> None:
        if not lost and self.shared is not None:
            shutil.rmtree(self.shared / "jobs" / run.job_id, ignore_errors=True)
        self._sink().job_ended(run.job_id, reason, retry=lost)

    def _sink(self) -> JobSink:
        if self.sink is None:
            raise RuntimeError("RayExecutor.attach was not called")
        return self.sink

    def close(self) -> None:
        """Stop relaying; the detached actors go on, and a backend started again adopts them (:meth:`recover`)."""
        self.stopping.set()
        for run in self.runs.values():
            if run.thread is not None:
                run.thread.join(POLL_S + 2)
        self.pull.close()
        self.ray.shutdown()
