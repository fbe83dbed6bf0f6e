"""Where jobs run: the executor seam between the scheduler and the processes that run the engine.

The scheduler (``backend/scheduler.py``) decides which queued job goes next; an :class:`Executor` owns the device
slots and runs a job on one of them, delivers its events and tells when its run ended. :class:`LocalExecutor`
runs one ``python -m backend.worker`` subprocess per slot on this machine; :class:`backend.executor_ray.RayExecutor`
implements the same interface for jobs on a Ray cluster (imported only with ``--executor ray``). Neither the
scheduler nor the request handlers know which one runs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import zmq

from backend.protocol import unpack

REPO = Path(__file__).resolve().parents[1]
CANCEL_GRACE_S = 15.0  # a worker that has not stopped at an iteration boundary by then is killed
MAX_EVENT_BYTES = 64 << 20


class JobSink(Protocol):
    """What an executor reports to (the scheduler)."""

    def job_event(self, job_id: str, event: dict[str, Any], raw: list[Any]) -> None:
        """An event the job's run emitted (``event["event"]`` names it; ``raw``: preview arrays)."""

    def job_ended(self, job_id: str, reason: str, retry: bool = False) -> None:
        """The job's run is over and its slot is free. Called after its last event; a run that ended without a
        terminal event (``done``/``failed``/``cancelled``) crashed, and ``reason`` says how and where to look.
        ``retry``: the run was lost with its machine (not the job's fault), so it may run again elsewhere."""


class Executor(ABC):
    """Device slots that each run one job at a time.

    A job's durable state is its folder, ``DATA/jobs/ID/`` (``job.json``, ``inputs/``, ``result/``, ``cancel``):
    the run reads its spec there and leaves its result there, whatever machine it ran on."""

    devices: list[str]  # one engine device per slot ("cuda:0", "cpu", ...), for the capabilities

    @abstractmethod
    def attach(self, sink: JobSink) -> None:
        """Where events and ends go; called once, before any other method."""

    @abstractmethod
    def wait_sockets(self) -> list[zmq.Socket]:
        """Sockets that become readable when the executor has news; the server polls them with its own and then
        calls :meth:`pump`."""

    @abstractmethod
    def pump(self) -> None:
        """Deliver pending events and ended runs to the sink, without blocking."""

    @abstractmethod
    def free_slots(self) -> list[int]:
        """Slots that can start a job now, in order."""

    @abstractmethod
    def running(self) -> dict[str, int]:
        """Job id -> slot of every run in progress."""

    @abstractmethod
    def start(self, slot: int, job_id: str) -> None:
        """Start the job (its folder is ready) on a free slot."""

    @abstractmethod
    def cancel(self, job_id: str) -> None:
        """Stop a running job. The scheduler has written its ``cancel`` file already (the run polls it between
        iterations); an executor whose runs cannot see the folder forwards it, and stops a run that does not
        end in time."""

    @abstractmethod
    def recover(self, job_ids: list[str]) -> set[str]:
        """After a server restart: of the jobs the store says were running, those whose runs this executor still
        reaches (they go on and report as usual). The scheduler re-queues or fails the others."""

    @abstractmethod
    def close(self) -> None:
        """Stop every run and free the executor's resources."""

    def node_of(self, job_id: str) -> str | None:
        """The machine that runs (or last ran) the job, for job listings; None where there is only this one."""
        return None


@dataclass
class _Worker:
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


class LocalExecutor(Executor):
    """One worker subprocess per device slot on this machine (``python -m backend.worker JOB_DIR ENDPOINT TOKEN
    PARENT_PID DEVICE``), pushing its events to an ipc socket in a private temporary folder with a per-run token.

    Workers die with the server (``PR_SET_PDEATHSIG``), so after a restart there is nothing to reattach to."""

    def __init__(self, ctx: zmq.Context, jobs_dir: Path, devices: list[str]):
        self.devices = list(devices)
        self.jobs_dir = Path(jobs_dir)
        self.ipc_dir = tempfile.mkdtemp(prefix="pla4d-")
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(f"ipc://{self.ipc_dir}/w")
        self.endpoint = self.pull.getsockopt_string(zmq.LAST_ENDPOINT)
        self.workers: dict[int, _Worker] = {}  # slot -> the worker running there
        self.sink: JobSink | None = None

    def attach(self, sink: JobSink) -> None:
        self.sink = sink

    def wait_sockets(self) -> list[zmq.Socket]:
        return [self.pull]

    def free_slots(self) -> list[int]:
        return [slot for slot in range(len(self.devices)) if slot not in self.workers]

    def running(self) -> dict[str, int]:
        return {w.job_id: slot for slot, w in self.workers.items()}

    def start(self, slot: int, job_id: str) -> None:
        job_dir = self.jobs_dir / job_id
        device = self.devices[slot]
        token = secrets.token_hex(16).encode()
        log = open(job_dir / "worker.log", "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "backend.worker", str(job_dir), self.endpoint, token.decode(),
               str(os.getpid()), device]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(REPO))  # fmt: skip
        log.close()
        self.workers[slot] = _Worker(job_id, proc, token, device)

    def cancel(self, job_id: str) -> None:
        # The worker polls the cancel file itself; this only starts the clock for killing it.
        for worker in self.workers.values():
            if worker.job_id == job_id and worker.cancel_at is None:
                worker.cancel_at = time.monotonic()

    def recover(self, job_ids: list[str]) -> set[str]:
        return set()

    def pump(self) -> None:
        self._drain()
        for slot, w in list(self.workers.items()):
            code = w.proc.poll()
            if code is None:
                if w.cancel_at is not None and time.monotonic() - w.cancel_at > CANCEL_GRACE_S:
                    w.proc.kill()  # did not stop at an iteration boundary in time
                continue
            self._drain()  # its last events come before its end
            del self.workers[slot]
            reason = f"worker exited with status {code} without a result; see jobs/{w.job_id}/worker.log"
            self._sink().job_ended(w.job_id, reason)

    def _drain(self) -> None:
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
                event = unpack(frames[1].bytes, limit=MAX_EVENT_BYTES)
                self._sink().job_event(worker.job_id, event, [f.buffer for f in frames[2:]])
            except Exception:  # one bad event must not stop the loop
                traceback.print_exc()

    def _sink(self) -> JobSink:
        if self.sink is None:
            raise RuntimeError("LocalExecutor.attach was not called")
        return self.sink

    def close(self) -> None:
        for worker in self.workers.values():
            worker.proc.terminate()
        for worker in self.workers.values():
            try:
                worker.proc.wait(5)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
        self.pull.close()
        shutil.rmtree(self.ipc_dir, ignore_errors=True)
