"""Jobs on a Ray cluster: :class:`RayExecutor`, the executor behind ``pla4d-backend --executor ray`` (docs/cluster.md).

Each job asks Ray for its resource (one GPU by default, or a custom resource for mixed farms) and its memory with a
detached placement group of one bundle, named after the job; Ray places it on whichever node has them free, and that
node's host (:class:`backend.ray_host.NodeHost`, one long-lived actor per node, asking for nothing) runs the job in
a warm worker process that has torch and the engine imported already: the same worker (the run engine) a local job
runs, one fresh process per job. No process starts between a submit and the job's first event. The scheduler keeps
the queue: the executor offers as many slots as the cluster's alive nodes hold of the resource (read again every
few seconds, so a node that joins gets its host and starts taking queued jobs), so queue positions stay exact and
Ray never holds a backlog of its own.

Events: one thread per running job long-polls the job's host (``events(key, since)``) and passes each event, with
its index, to the server's loop over an inproc ZeroMQ socket, one job's events in the order the worker sent them.
Events go through Ray rather than a socket back to the server, so the nodes need no route to the server, only the
cluster's own ports; and since the host keeps what the server has not taken, a backend killed with -9 and started
again finds the run there (``ray.json`` in the job folder names the host, the placement group and how many events
were taken) and goes on.

Results (:mod:`backend.ray_files`): on the worker's ``done`` the thread copies every file of its manifest into
``DATA/jobs/ID/result`` (from ``--shared-dir``, or read from the host in chunks), checks each file's size and sha256,
and only then passes the ``done`` on, so ``fetch`` is unchanged. A node lost mid-job ends the run as retryable: the
scheduler queues the job again (up to ``--max-attempts`` runs) and the next run resumes from its last finished stage:
from the stage cache in ``--shared-dir``, or, without it, from the stages the backend copied back as each one finished.

Placement groups that no run of this backend owns (:mod:`backend.ray_cleanup`) are removed when it starts and every
minute while it runs.
"""

from __future__ import annotations

import importlib
import json
import queue
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
from backend.protocol import TERMINAL_EVENTS, unpack
from backend.ray_cleanup import HOSTS_NAMESPACE, backend_id, group_name, release
from backend.ray_files import STAGES_DIR, RunFiles, node_label
from backend.ray_host import NodeHost
from backend.ray_job import CANCEL_KILL_S

STATE_FILE = "ray.json"  # in the job folder: the run's placement group, host, attempt and the events taken
CAPACITY_TTL_S = 2.0
CONNECT_TRIES = 3  # through ray://
SWEEP_S = 60.0  # how often the backend's placement groups that no run owns are removed (backend/ray_cleanup.py)
RELEASE_WAIT_S = 2.0  # longest wait for Ray to count a finished job's resource free again
POLL_S = 1.0  # longest wait of one events poll (a stopping server waits for it)
UNAVAILABLE_S = 20.0  # a host Ray cannot reach this long is given up as lost (Ray's node check is ~15 s)
KILL_AFTER_CANCEL_S = CANCEL_KILL_S + 1.0  # a run that has not ended by then: its host kills its worker ...
ABANDON_AFTER_CANCEL_S = KILL_AFTER_CANCEL_S + 2.0  # ... and one still not ended is given up (its host is stuck)


@dataclass
class _Run:
    job_id: str
    slot: int
    name: str  # of its placement group, and its run's key on the host
    attempt: int
    seen: int = 0  # events taken and delivered
    node: dict[str, Any] | None = None
    host: Any = None  # the node host's actor handle, once the run is placed
    host_name: str | None = None
    job_dir: str | None = None  # the shared job folder, or
    files: dict[str, bytes] | None = None  # the job folder's files for a node-local one (until it started)
    pg: Any = None  # its placement group (None when adopted: it has started)
    copies: queue.Queue | None = None  # stages to copy back (no shared storage): _copier
    copier: threading.Thread | None = None
    cancel_at: float | None = None
    abandon: bool = False
    thread: threading.Thread | None = None


def connect(ray: Any, address: str, options: dict[str, Any]) -> None:
    """``ray.init`` to a running cluster. Through ``ray://`` it is tried again a few times: the head's client server
    starts a server process for each connection, and that start fails now and then (one in four first connections to
    a freshly started head, on this loaded machine: "Starting Ray client server failed"), where the next one works."""
    for attempt in range(1, CONNECT_TRIES + 1):
        try:
            ray.init(address=address, **options)
            return
        except ConnectionError as exc:  # ConnectionAbortedError: the server-side start failed; nothing is left behind
            if not address.startswith("ray://") or attempt == CONNECT_TRIES:
                raise
            why = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
            print(f"pla4d-backend: connecting to {address} failed ({why}); trying again", flush=True)
            time.sleep(2.0)


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
        # The backend's id, kept in its data dir, is its namespace: two backends never adopt each other's runs.
        namespace = backend_id(self.jobs_dir.parent, create=True)
        options: dict[str, Any] = {"namespace": namespace, "log_to_driver": False, "ignore_reinit_error": True}
        if address:
            connect(ray, address, options)
        else:
            # A Ray of this machine alone: its GPUs, or one logical unit of the resource so that a machine without
            # one still runs a job at a time.
            gpus = _visible_gpus()
            if resource == "GPU":
                options["num_gpus"] = gpus or self.per_job
            else:
                options.update(num_gpus=gpus, resources={resource: self.per_job})
            # "local": a Ray of its own even when this machine runs another (None would join the newest one).
            ray.init(address="local", include_dashboard=False, **options)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # The module: ``ray.util.placement_group`` as an attribute is the function of that name.
        self.pg_api = importlib.import_module("ray.util.placement_group")
        self.affinity = NodeAffinitySchedulingStrategy
        self.namespace = namespace
        self.remote_host = ray.remote(NodeHost)
        self.hosts: dict[str, Any] = {}  # node id -> its host's handle
        self.node_totals: dict[str, float] = {}  # node id -> how much of the resource it has
        self.hosts_lock = threading.Lock()
        self.ctx = ctx
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.inproc = f"inproc://pla4d-ray-{secrets.token_hex(8)}"
        self.pull.bind(self.inproc)
        self.runs: dict[int, _Run] = {}  # slot -> the run there
        self.sink: JobSink | None = None
        self.stopping = threading.Event()
        self.files = RunFiles(ray, self.jobs_dir, self.shared, self.key, self.stopping)
        self._capacity = 0
        self._capacity_at = float("-inf")
        self._swept_at = time.monotonic()

    # ------------------------------------------------------------------ slots
    @property
    def devices(self) -> list[str]:  # type: ignore[override]
        return [f"ray:{self.resource}"] * max(self.capacity(), len(self.runs))

    def capacity(self) -> int:
        """Jobs the cluster's alive nodes can hold at once (the resource over what one job asks for). Each such node
        gets its host as soon as it is seen, so its warm workers are ready before its first job."""
        now = time.monotonic()
        if now - self._capacity_at > CAPACITY_TTL_S:
            self._capacity_at = now
            try:
                totals = {n["NodeID"]: n["Resources"].get(self.resource, 0.0) for n in self.ray.nodes() if n["Alive"]}
                totals = {node: total for node, total in totals.items() if total >= self.per_job - 1e-9}
                with self.hosts_lock:
                    self.node_totals = totals
                    for node in set(self.hosts) - set(totals):  # gone with its node
                        del self.hosts[node]
                for node in totals:
                    self._host(node)
                self._capacity = sum(int(total / self.per_job + 1e-9) for total in totals.values())
            except Exception:  # the cluster is unreachable for now: no new starts, runs go on
                traceback.print_exc()
                self._capacity = 0
        return self._capacity

    def _host(self, node_id: str) -> Any:
        """The node's host actor: found by name, or started there (pinned to the node, asking for nothing)."""
        with self.hosts_lock:
            host = self.hosts.get(node_id)
            total = self.node_totals.get(node_id, self.per_job)
        if host is None:
            host = self.remote_host.options(
                name=f"host-{node_id}", namespace=HOSTS_NAMESPACE, get_if_exists=True, lifetime="detached",
                num_cpus=0, max_concurrency=256, max_restarts=0,
                scheduling_strategy=self.affinity(node_id=node_id, soft=False),
            ).remote(max(int(total / self.per_job + 1e-9), 1))  # fmt: skip
            with self.hosts_lock:
                self.hosts[node_id] = host
        return host

    def _forget_host(self, node_id: str | None, host: Any) -> None:
        """A host that failed a call is looked up (or started) again next time."""
        with self.hosts_lock:
            if node_id is not None and self.hosts.get(node_id) is host:
                del self.hosts[node_id]

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
        return None if not node or not node.get("ip") else f"{node.get('ip')} ({node.get('host')})"

    # ------------------------------------------------------------------ runs
    def _state(self, job_id: str) -> dict[str, Any]:
        try:
            return json.loads((self.jobs_dir / job_id / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, run: _Run) -> None:
        state = {"pg": run.name, "host": run.host_name, "attempt": run.attempt, "seen": run.seen, "node": run.node}
        path = self.jobs_dir / run.job_id / STATE_FILE
        path.with_suffix(".tmp").write_text(json.dumps(state))
        path.with_suffix(".tmp").replace(path)

    def start(self, slot: int, job_id: str) -> None:
        attempt = int(self._state(job_id).get("attempt", 0)) + 1
        name = group_name(self.namespace, job_id, attempt)
        job_dir, files = self.files.job_files(job_id)
        bundle = {self.resource: self.per_job}
        if self.memory_mb:
            bundle["memory"] = float(self.memory_mb << 20)
        # The job's claim on the cluster, held until its run is over; detached, so it outlives a backend restart.
        created = time.time()
        pg = self.pg_api.placement_group([bundle], strategy="PACK", name=name, lifetime="detached")
        run = _Run(job_id, slot, name, attempt, job_dir=job_dir, files=files, pg=pg, node={"created": created})
        self._save(run)
        self._follow(run)

    def key(self, run: _Run) -> str:
        return f"{self.namespace}/{run.name}"

    def _follow(self, run: _Run) -> None:
        self.runs[run.slot] = run
        run.thread = threading.Thread(target=self._relay, args=(run,), name=f"ray-{run.job_id}", daemon=True)
        run.thread.start()

    def cancel(self, job_id: str) -> None:
        for run in self.runs.values():
            if run.job_id == job_id and run.cancel_at is None:
                run.cancel_at = time.monotonic()
                if run.host is not None:
                    run.host.cancel.remote(self.key(run))
                # else its relay sees cancel_at before it starts the run

    def recover(self, job_ids: list[str]) -> set[str]:
        """Adopt the runs of the jobs that ran when the backend stopped, where their hosts still keep them."""
        adopted = set()
        for job_id in job_ids:
            state = self._state(job_id)
            if not state.get("pg"):
                continue
            run = _Run(job_id, -1, state["pg"], int(state.get("attempt", 1)), int(state.get("seen", 0)),
                       state.get("node"), host_name=state.get("host"))  # fmt: skip
            try:
                if not run.host_name:
                    raise LookupError("never placed")
                run.host = self.ray.get_actor(run.host_name, namespace=HOSTS_NAMESPACE)
                if not self.ray.get(run.host.has.remote(self.key(run)), timeout=30):
                    raise LookupError("not on its host")
            except Exception:  # gone with its node, or never started: the scheduler queues the job again
                self._remove_pg(run.name)
                continue
            run.slot = next(s for s in range(len(self.runs) + 1) if s not in self.runs)
            self._follow(run)
            adopted.add(job_id)
        self._sweep(hosts=True)
        return adopted

    def _sweep(self, hosts: bool) -> None:
        """Remove this backend's placement groups (and, with ``hosts``, its runs on the node hosts) that none of its
        runs owns: left by a backend killed between making a job's group and recording it, or by a failed removal."""
        self._swept_at = time.monotonic()
        try:
            for line in release(self.ray, self.namespace, {run.name for run in self.runs.values()}, hosts=hosts):
                print(f"pla4d-backend: freed {line}, which no job of this backend owns", flush=True)
        except Exception:  # the cluster is unreachable for now: the next sweep tries again
            traceback.print_exc()

    def _remove_pg(self, name: str) -> None:
        """Give the job's resource back to the cluster (and stop Ray from placing it again after a lost node)."""
        try:
            self.pg_api.remove_placement_group(self.pg_api.get_placement_group(name))
        except Exception:  # already gone
            pass

    # ------------------------------------------------------------------ the relay thread of one run
    def _relay(self, run: _Run) -> None:
        push = self.ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(self.inproc)
        key = run.job_id.encode()
        try:
            if run.host is None:
                if not self._place(run):
                    return
                if run.cancel_at is not None:  # cancelled before it started: its cancel file makes this a cancel
                    self._remove_pg(run.name)
                    push.send_multipart([b"end", key, b"cancelled before it started"])
                    return
                node_id = run.node["node_id"]
                run.host = self._host(node_id)
                with self.hosts_lock:
                    total = self.node_totals.get(node_id, self.per_job)
                where = self._wait(run.host.start.remote(self.key(run), run.job_dir, run.files, self.resource,
                                                          self.per_job, total))  # fmt: skip
                if where is None:
                    return
                run.files = None
                run.host_name = f"host-{node_id}"
                run.node = {**run.node, **where}  # with when it was asked for and placed (cluster_bench.py)
                push.send_multipart([b"node", key, json.dumps(run.node).encode()])
            seen = run.seen
            unavailable_since = None
            while not self.stopping.is_set():
                if run.abandon:
                    raise TimeoutError(f"the run did not stop {ABANDON_AFTER_CANCEL_S:.1f} s after its cancel")
                try:
                    first, batch, ended = self.ray.get(run.host.events.remote(self.key(run), seen, POLL_S))
                    unavailable_since = None
                except self.ray.exceptions.ActorUnavailableError:
                    # Ray cannot reach the host for now (it may still run): a lost node is declared by Ray
                    # (ActorDiedError) or, failing that, after UNAVAILABLE_S of silence.
                    unavailable_since = unavailable_since or time.monotonic()
                    if time.monotonic() - unavailable_since > UNAVAILABLE_S:
                        raise
                    time.sleep(0.5)
                    continue
                terminal = False
                for i, (envelope, raw) in enumerate(batch):
                    event = unpack(envelope, limit=MAX_EVENT_BYTES)
                    name = event.get("event")
                    if name == "done":
                        envelope = self.files.collect(run, envelope)
                    elif name == "stage_finished" and self.shared is None:
                        self.files.stage_finished(run, str(event.get("stage")))
                    push.send_multipart([b"ev", key, str(first + i).encode(), envelope, *raw])
                    terminal = terminal or name in TERMINAL_EVENTS
                seen = first + len(batch)
                if terminal and ended is None:
                    # The job is over and its result here: the slot is free now, not when its worker has exited.
                    ended = f"the run ended ({name})"
                if ended is not None:
                    self.files.copied(run)
                    self.files.bring_log(run)
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
            reason = f"{node_label(run.node)} was lost while running this job ({type(exc).__name__}: {why})"
            if run.host is not None:
                try:  # should it still run there, it must not run beside its retry
                    run.host.kill.remote(self.key(run))
                    run.host.close.remote(self.key(run))
                except Exception:
                    pass
                if isinstance(exc, self.ray.exceptions.RayActorError):
                    self._forget_host((run.node or {}).get("node_id"), run.host)
            self._remove_pg(run.name)
            self.files.copied(run)  # what a retry resumes from is in place before the job is queued again
            push.send_multipart([b"lost", key, reason.encode()])
        finally:
            self.files.copied(run)
            push.close()

    def _place(self, run: _Run) -> bool:
        """Wait for Ray to grant the job's placement group; its node goes into ``run.node`` (False: stopping)."""
        if self._wait(run.pg.ready()) is None:
            return False
        node_id = self.pg_api.placement_group_table(run.pg)["bundles_to_node_id"][0]
        run.node = {**(run.node or {}), "node_id": node_id, "placed": time.time()}
        return True

    def _wait(self, ref: Any) -> Any:
        """``ray.get`` that gives up when the backend stops (a placement group waits for a free node as long as it
        takes)."""
        while not self.stopping.is_set():
            try:
                return self.ray.get(ref, timeout=POLL_S)
            except self.ray.exceptions.GetTimeoutError:
                continue
        return None

    def _release(self, run: _Run) -> None:
        try:
            self.ray.get(run.host.close.remote(self.key(run)), timeout=10)
        except Exception:  # the host went meanwhile: so did the run
            pass
        try:
            before = self.ray.available_resources().get(self.resource, 0.0)
        except Exception:
            before = None
        self._remove_pg(run.name)
        # The slot frees once Ray counts the resource free again (~0.1 s): a group asked for before that waits for
        # Ray's next try (~1 s), which the next job's dispatch would pay.
        deadline = time.monotonic() + RELEASE_WAIT_S
        while before is not None and time.monotonic() < deadline:
            try:
                if self.ray.available_resources().get(self.resource, 0.0) >= before + self.per_job - 1e-9:
                    break
            except Exception:
                break
            time.sleep(0.02)

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
        if now - self._swept_at > SWEEP_S:
            self._sweep(hosts=False)
        for run in self.runs.values():
            if run.cancel_at is None or run.host is None:
                continue
            if now - run.cancel_at > ABANDON_AFTER_CANCEL_S:
                run.abandon = True  # its relay reports it lost; the cancel file makes that a cancel
            elif now - run.cancel_at > KILL_AFTER_CANCEL_S and not run.abandon:
                run.host.kill.remote(self.key(run))

    def _end(self, run: _Run, lost: bool, reason: str) -> None:
        if not lost and self.shared is not None:
            shutil.rmtree(self.shared / "jobs" / run.job_id, ignore_errors=True)
        if not lost:
            shutil.rmtree(self.jobs_dir / run.job_id / STAGES_DIR, ignore_errors=True)
        self._sink().job_ended(run.job_id, reason, retry=lost)

    def _sink(self) -> JobSink:
        if self.sink is None:
            raise RuntimeError("RayExecutor.attach was not called")
        return self.sink

    def close(self) -> None:
        """Stop relaying; the runs go on on their hosts, and a backend started again adopts them (:meth:`recover`)."""
        self.stopping.set()
        for run in self.runs.values():
            if run.thread is not None:
                run.thread.join(POLL_S + 2)
        self.pull.close()
        self.ray.shutdown()
