"""One job on a Ray node: its run, kept by the node's host (:class:`backend.ray_host.NodeHost`).

A :class:`JobRunner` runs the very worker a local job runs (:func:`backend.worker.main`, the run engine), in a warm
process the host started ahead of time (``backend.ray_warm``) or, when none is ready, a fresh
``python -m backend.worker``; it collects the worker's events from a node-local ipc socket and hands them to the
server in order when asked (:meth:`JobRunner.events`, a long poll). The host is a detached, named actor, so a
backend killed with -9 and started again finds the run there and picks up the events (and the result) where it
left off. The job folder is either the one every node mounts (``--shared-dir``: the stage cache lives there, so a
retried job resumes) or a node-local temporary folder filled from the bytes the server sends, whose result the
server reads back in chunks.

This module imports neither ray nor torch.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import zmq

CANCEL_KILL_S = 1.5  # a worker still running this long after a cancel is killed (the protocol promises 2 s)
MAX_CHUNK = 8 << 20


def safe_relative(name: str) -> PurePosixPath:
    """A relative path inside a job folder (no absolute path, no ``..``): ValueError otherwise."""
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or any(p in ("", ".", "..") for p in path.parts):
        raise ValueError(f"not a path inside the job folder: {name!r}")
    return path


# launch(argv of backend.worker, the job's log, extra environment) -> the worker's process, started
Launch = Callable[[list[str], Path, dict[str, str]], subprocess.Popen]


def cold_launch(argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    """A fresh ``python -m backend.worker`` (it imports torch and the engine itself)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "backend.worker", *argv], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(os.environ, **env))  # fmt: skip


class JobRunner:
    """A job's run on this node. ``files``: relative path -> bytes of the job folder (``job.json``, ``inputs/...``)
    when there is no shared storage, else None and ``job_dir`` is the shared folder the server filled. ``env``:
    what the job's worker runs with beyond the node's environment (its ``CUDA_VISIBLE_DEVICES``)."""

    def __init__(self, job_id: str, job_dir: str | None, files: dict[str, bytes] | None,
                 launch: Launch = cold_launch, env: dict[str, str] | None = None):  # fmt: skip
        self.since = time.time()  # the run is on its node (dispatch overhead: benchmarks/cluster_bench.py)
        self.warm = False  # its worker was a warm process, ready when the job came (the host says)
        self.job_id = job_id
        self.launch = launch
        self.env = dict(env or {})
        self.private = job_dir is None
        self.tmp = tempfile.mkdtemp(prefix=f"pla4d-{job_id}-")
        self.job_dir = Path(self.tmp) / "job" if job_dir is None else Path(job_dir)
        for name, data in (files or {}).items():
            path = self.job_dir / safe_relative(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.lock = threading.Condition()
        self.events_: list[tuple[bytes, list[bytes]]] = []  # those not yet taken by the server
        self.taken = 0  # events before events_[0]
        self.ended: str | None = None  # why the worker's run is over (set after its last event)
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None
        self.launched = threading.Event()  # the worker's process exists (or its launch failed)

    def start(self) -> None:
        """Start the worker (once: a second call does nothing); returns once its process exists, so the run's
        location (``proc.pid``) is known to whoever asks next (under load the thread may not have launched yet)."""
        with self.lock:
            if self.thread is not None:
                return
            self.thread = threading.Thread(target=self._run, name=f"pla4d-{self.job_id}", daemon=True)
            self.thread.start()
        self.launched.wait(30.0)

    def _run(self) -> None:
        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind(f"ipc://{self.tmp}/w")
        token = secrets.token_hex(16).encode()
        endpoint = pull.getsockopt_string(zmq.LAST_ENDPOINT)
        reason = "the worker did not start"
        try:
            env = {"OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1", **self.env}
            # The same worker a local job runs; it dies with the host (PR_SET_PDEATHSIG) and so with its node.
            argv = [str(self.job_dir), endpoint, token.decode(), str(os.getpid()), "auto"]
            self.proc = self.launch(argv, self.job_dir / "worker.log", env)
            self.launched.set()
            while True:
                if pull.poll(200):
                    self._take(pull, token)
                    continue
                code = self.proc.poll()
                if code is not None:
                    while pull.poll(50):  # its last events come before its end
                        self._take(pull, token)
                    reason = f"worker exited with status {code} without a result; see jobs/{self.job_id}/worker.log"
                    break
        except Exception as exc:  # reported to the server as the run's end
            reason = f"the job could not run on this node: {type(exc).__name__}: {exc}"
        finally:
            self.launched.set()
            pull.close()
            ctx.term()
            with self.lock:
                self.ended = reason
                self.lock.notify_all()

    def _take(self, pull: zmq.Socket, token: bytes) -> None:
        frames = pull.recv_multipart()
        if len(frames) >= 2 and frames[0] == token:
            with self.lock:
                self.events_.append((frames[1], frames[2:]))
                self.lock.notify_all()

    def events(self, since: int, wait_s: float) -> tuple[int, list[tuple[bytes, list[bytes]]], str | None]:
        """Events from index ``since`` on (the server has every earlier one, so they are dropped here), waiting up to
        ``wait_s`` for one; -> (index of the first returned, events, why the run ended or None while it runs)."""
        deadline = time.monotonic() + wait_s
        with self.lock:
            drop = min(max(since - self.taken, 0), len(self.events_))
            del self.events_[:drop]
            self.taken += drop
            while not self.events_ and self.ended is None and (left := deadline - time.monotonic()) > 0:
                self.lock.wait(left)
            return self.taken, list(self.events_), self.ended if not self.events_ else None

    def kill(self) -> None:
        """The worker goes at once (the server's last resort after a cancel)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def cancel(self) -> None:
        """The cancel file the worker polls between iterations, then a kill if it has not stopped in time."""
        (self.job_dir / "cancel").write_text("cancel\n")
        threading.Thread(target=self._kill_late, daemon=True).start()

    def _kill_late(self) -> None:
        deadline = time.monotonic() + CANCEL_KILL_S
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return
            time.sleep(0.05)
        self.kill()

    def files(self, folder: str) -> list[tuple[str, int]]:
        """The files under a folder of the job folder (a finished stage), as (path in the job folder, size)."""
        root = self.job_dir / safe_relative(folder)
        return [
            (p.relative_to(self.job_dir).as_posix(), p.stat().st_size) for p in sorted(root.rglob("*")) if p.is_file()
        ]

    def read(self, name: str, offset: int, size: int) -> bytes:
        """Bytes of a file in the job folder (the result, the worker's log), for a server without shared storage."""
        with open(self.job_dir / safe_relative(name), "rb") as f:
            f.seek(offset)
            return f.read(min(size, MAX_CHUNK))

    def close(self) -> None:
        """Stop the worker if it still runs and remove the node-local folder (a shared one is the server's)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.tmp, ignore_errors=True)
