"""The pla4d host of one Ray node: a long-lived actor that keeps warm job workers and runs the node's jobs.

One :class:`NodeHost` per node (a detached, named actor pinned to its node with ``NodeAffinitySchedulingStrategy``,
asking for nothing: it only waits and relays) keeps as many warm processes as the node has job slots
(``backend.ray_warm``: torch and the engine imported, no GPU touched), so that a job starts in well under a second
instead of paying a Ray worker's start and a cold worker's imports (docs/cluster.md, "How a job runs").

A job's resource is held by its own placement group, made by the backend before it calls :meth:`NodeHost.start`:
Ray counts the GPU (or the custom resource) and the memory as taken while the job runs, and only while it runs.
Each job gets a fresh process, handed over once and never reused, and a replacement starts at once: a job's
crash, leak or stray state cannot reach the next one. The job's worker is the host's child and dies with it
(``PR_SET_PDEATHSIG``), so a lost node or a killed host ends its jobs, and the backend sees the host gone.

This module imports neither ray nor torch at the top: the executor wraps :class:`NodeHost` with ``ray.remote``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from backend.ray_job import JobRunner, cold_launch

REFILL_BACKOFF_S = 10.0  # a warm process that died before its job is not replaced more often than this
KEEP_WARM_S = 5.0  # how often the pool is checked between jobs


class _Warm:
    """One warm worker waiting for its job; ``ready`` once its imports are done."""

    def __init__(self, log_dir: str):
        with open(Path(log_dir) / "warm.log", "ab") as log:  # what a warm process says before it has a job
            self.proc = subprocess.Popen([sys.executable, "-m", "backend.ray_warm"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log)  # fmt: skip
        self.ready = threading.Event()
        threading.Thread(target=self._wait_ready, daemon=True).start()

    def _wait_ready(self) -> None:
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() == b"ready":
            self.ready.set()
        self.proc.stdout.close()

    def alive(self) -> bool:
        return self.proc.poll() is None


def gpus_for(used: dict[int, float], total: int, per_job: float) -> list[int] | None:
    """The node's GPU indices for a job asking ``per_job`` GPUs, given what the node's running jobs use (``used``:
    index -> share): the lowest GPU with room for a fraction, else the lowest whole free ones (as Ray assigns
    them). None when they are not free."""
    if per_job <= 1:
        room = next((i for i in range(total) if 1.0 - used.get(i, 0.0) >= per_job - 1e-9), None)
        return None if room is None else [room]
    free = [i for i in range(total) if used.get(i, 0.0) <= 1e-9]
    need = int(per_job + 1 - 1e-9)
    return free[:need] if len(free) >= need else None


class NodeHost:
    """pla4d's jobs on this node. Runs are keyed ``NAMESPACE/JOB-ATTEMPT`` (several backends may share a cluster and
    so this host: the GPU indices it gives out cover all of them)."""

    def __init__(self, warm: int = 1):
        self.lock = threading.Lock()
        self.start_lock = threading.Lock()
        self.runs: dict[str, JobRunner] = {}
        self.gpus: dict[str, list[tuple[int, float]]] = {}  # run key -> (GPU index, share) it holds
        self.warm_target = max(int(warm), 1)
        self.pool: list[_Warm] = []
        self.log_dir = tempfile.mkdtemp(prefix="pla4d-host-")
        self.last_failure = float("-inf")
        self.visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        self._refill()
        threading.Thread(target=self._keep_warm, daemon=True).start()

    # ------------------------------------------------------------------ the warm pool
    def _keep_warm(self) -> None:
        """Warm processes that died while waiting are replaced (no more often than REFILL_BACKOFF_S)."""
        while True:
            time.sleep(KEEP_WARM_S)
            self._refill()

    def _refill(self) -> None:
        with self.lock:
            for warm in [w for w in self.pool if not w.alive()]:
                self.pool.remove(warm)
                warm.proc.wait()
                self.last_failure = time.monotonic()
            if time.monotonic() - self.last_failure < REFILL_BACKOFF_S:
                return
            while len(self.pool) < self.warm_target:
                self.pool.append(_Warm(self.log_dir))

    def _take(self) -> _Warm | None:
        """A warm process for a job: a ready one first, else one still importing (it takes the job when done)."""
        with self.lock:
            alive = [w for w in self.pool if w.alive()]
            pick = next((w for w in alive if w.ready.is_set()), alive[0] if alive else None)
            if pick is not None:
                self.pool.remove(pick)
        threading.Thread(target=self._refill, daemon=True).start()
        return pick

    def _launch(self, argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
        warm = self._take()
        if warm is not None:
            line = json.dumps({"argv": argv, "log": str(log_path), "env": env}) + "\n"
            assert warm.proc.stdin is not None
            try:
                warm.proc.stdin.write(line.encode())
                warm.proc.stdin.close()
                return warm.proc
            except OSError:  # it died since: the job goes to a cold worker
                warm.proc.kill()
                warm.proc.wait()
        # None started or all died: a cold worker does the same, only slower.
        return cold_launch(argv, log_path, env)

    def wait_warm(self, timeout_s: float) -> bool:
        """Until every warm process is ready (benchmarks, tests: a warm cluster)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                pool = list(self.pool)
            if len(pool) >= self.warm_target and all(w.ready.is_set() for w in pool):
                return True
            time.sleep(0.1)
        return False

    # ------------------------------------------------------------------ runs
    def start(self, key: str, job_dir: str | None, files: dict[str, bytes] | None, resource: str, per_job: float,
              node_total: float) -> dict[str, Any]:  # fmt: skip
        """Start a run (idempotent: a backend that adopts it after a restart may call again); -> where it runs.
        ``node_total``: how much of ``resource`` the node has (its GPU count, for the GPU indices)."""
        with self.start_lock:  # one start at a time: a run is made once, and GPUs are claimed one run after another
            with self.lock:
                run = self.runs.get(key)
            if run is None:
                env = {}
                if resource == "GPU":
                    env["CUDA_VISIBLE_DEVICES"] = self._claim_gpus(key, int(node_total + 1e-9), per_job)
                with self.lock:
                    ready = any(w.ready.is_set() and w.alive() for w in self.pool)
                run = JobRunner(key.rsplit("/", 1)[-1], job_dir, files, launch=self._launch, env=env)
                run.warm = ready
                with self.lock:
                    self.runs[key] = run
                run.start()
        return self.where(key)

    def _claim_gpus(self, key: str, total: int, per_job: float) -> str:
        with self.lock:
            used: dict[int, float] = {}
            for held in self.gpus.values():
                for index, share in held:
                    used[index] = used.get(index, 0.0) + share
            picked = gpus_for(used, total, per_job)
            if picked is None:
                raise RuntimeError(f"no GPU of this node is free for {per_job} GPU (in use: {used})")
            share = min(per_job, 1.0)
            self.gpus[key] = [(i, share) for i in picked]
        # Ray's own mapping: indices into the node's CUDA_VISIBLE_DEVICES when it has one.
        return ",".join(self.visible[i] if i < len(self.visible) else str(i) for i in picked)

    def where(self, key: str) -> dict[str, Any]:
        """The node the run is on (for listings and failure messages); its host's pid, its worker's pid."""
        import ray

        run = self._run(key)
        ctx = ray.get_runtime_context()
        return {"node_id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(), "host": socket.gethostname(),
                "pid": os.getpid(), "worker_pid": run.proc.pid if run.proc is not None else None,
                "since": run.since, "warm": run.warm}  # fmt: skip

    def has(self, key: str) -> bool:
        with self.lock:
            return key in self.runs

    def keys(self, prefix: str) -> list[str]:
        """The keys of the runs of one backend (``prefix``: its namespace and a slash), finished ones too, until the
        backend closes them (:func:`backend.ray_cleanup.release` closes those it no longer owns)."""
        with self.lock:
            return [key for key in self.runs if key.startswith(prefix)]

    def _run(self, key: str) -> JobRunner:
        with self.lock:
            run = self.runs.get(key)
        if run is None:
            raise KeyError(f"this node has no run {key}")
        return run

    def events(self, key: str, since: int, wait_s: float) -> tuple[int, list[tuple[bytes, list[bytes]]], str | None]:
        return self._run(key).events(since, wait_s)

    def cancel(self, key: str) -> None:
        self._run(key).cancel()

    def kill(self, key: str) -> None:
        with self.lock:
            run = self.runs.get(key)
        if run is not None:
            run.kill()

    def files(self, key: str, folder: str) -> list[tuple[str, int]]:
        return self._run(key).files(folder)

    def read(self, key: str, name: str, offset: int, size: int) -> bytes:
        return self._run(key).read(name, offset, size)

    def close(self, key: str) -> None:
        """The run is over for the backend: its worker goes if it still runs, its node-local folder and GPUs too."""
        with self.lock:
            run = self.runs.pop(key, None)
            self.gpus.pop(key, None)
        if run is not None:
            run.close()
