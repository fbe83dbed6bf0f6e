"""Helpers: real backend processes on loopback (127.0.0.1 only) for the backend tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A job that takes a few seconds on 2 CPU cores (most of it the worker importing torch).
TINY = {
    "preset": "draft",
    "overrides": {
        "iterations": 4, "motion_iterations": 2, "num_gaussians": 2000, "max_gaussians": 4000, "resolutions": [32],
        "resolution_steps": [], "view_pool": 4, "batch_views": 1,
    },
    "example": {"frames": 2, "resolution": 32, "supersample": 1},
}  # fmt: skip


def long_settings(iterations: int = 20_000) -> dict:
    settings = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    settings["overrides"]["iterations"] = iterations
    return settings


class Backend:
    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None, machine_facts: bool = False):
        self.data_dir = Path(data_dir)
        # The doctor's check of the machine costs each server a few CPU seconds: only the test of it asks for it.
        self.extra = [*extra] if machine_facts else ["--no-machine-facts", *extra]
        # No model from this machine's caches: a backend under test sees only the models a test gives it.
        empty = self.data_dir.parent / "no-models"
        self.env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(empty / "hf"), "U2NET_HOME": str(empty / "u2net"),
                    **(env or {})}  # fmt: skip
        self.bind = "tcp://127.0.0.1:0"
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""

    def start(self, *extra: str) -> Backend:
        endpoint_file = self.data_dir / "endpoint"
        endpoint_file.unlink(missing_ok=True)
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", **self.env)
        cmd = [sys.executable, "-m", "backend", "--bind", self.bind, "--data-dir", str(self.data_dir),
               *self.extra, *extra]  # fmt: skip
        self.log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        # A Ray backend connects to its cluster before it binds (through ray://, to a server process the head starts
        # for it): on this loaded machine that alone has taken over 30 s.
        args = [*self.extra, *extra]
        uses_ray = "--executor" in args[:-1] and args[args.index("--executor") + 1] == "ray"
        deadline = time.monotonic() + (120 if uses_ray else 30)
        # The server writes the file (open, then write): whole once its line has its newline.
        while not (endpoint_file.exists() and endpoint_file.read_text().endswith("\n")):
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("backend did not start")
            time.sleep(0.05)
        self.endpoint = endpoint_file.read_text().strip()
        assert self.endpoint.startswith("tcp://127.0.0.1:")
        self.bind = self.endpoint  # a restart reuses the port
        return self

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self.log.close()

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


def worker_pids(data_dir: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"backend.worker" in cmd and any(str(data_dir).encode() in part for part in cmd):
            pids.append(int(proc.name))
    return pids


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_time(pid: int) -> str | None:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split())[19]
    except (OSError, IndexError):
        return None


class RayCluster:
    """A real Ray cluster of separate node processes on this machine (``ray start --block``, one process group per
    node, stopped by its id: never ``ray stop``, which kills by name). Each node declares logical GPUs.

    Address: Ray replaces 127.0.0.1 by the machine's own interface address (``resolve_ip_for_localhost`` in
    ray/_private/services.py) and its GCS and raylets listen on all interfaces; every process is on this machine,
    the nodes join through 127.0.0.1:PORT and the backend under test binds 127.0.0.1 only."""

    RAY = str(Path(sys.executable).with_name("ray"))

    def __init__(self, env: dict[str, str] | None = None):
        import tempfile

        # Ray's unix sockets live under the temp dir: a short path keeps them under the 107-byte limit.
        self.temp = tempfile.mkdtemp(prefix="pla4d-ray-", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.client_port = free_port()  # the head's Ray client server: ray://127.0.0.1:PORT
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1",
                    # a lost node is noticed in ~3 s instead of ~30 s
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                    "RAY_health_check_initial_delay_ms": "1000", **(env or {})}  # fmt: skip
        self.nodes: list[subprocess.Popen] = []

    def _start(self, args: list[str], name: str, cpus: str | None) -> subprocess.Popen:
        log = open(Path(self.temp) / f"{name}.log", "ab")  # noqa: SIM115
        cmd = [self.RAY, "start", *args, "--block", "--disable-usage-stats", "--num-cpus", "1"]
        if cpus is not None:  # one core per node, so that nodes do not share cores (benchmarks)
            cmd = ["taskset", "-c", cpus, *cmd]
        proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        log.close()
        self.nodes.append(proc)
        # One node at a time: nodes of one machine share the head's session folder, and two starting together
        # can time out ("The current node timed out during startup").
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in (Path(self.temp) / f"{name}.log").read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray node {name} did not start: see {self.temp}/{name}.log")
            time.sleep(0.2)
        return proc

    def head(self, gpus: int = 1, cpus: str | None = None) -> subprocess.Popen:
        return self._start(["--head", "--port", str(self.port), "--node-ip-address", "127.0.0.1", "--num-gpus",
                            str(gpus), "--include-dashboard", "false", "--temp-dir", self.temp,
                            "--ray-client-server-port", str(self.client_port)], "head", cpus)  # fmt: skip

    def node(self, gpus: int = 1, cpus: str | None = None, resources: dict | None = None) -> subprocess.Popen:
        extra = ["--resources", json.dumps(resources)] if resources else []
        return self._start(["--address", self.address, "--num-gpus", str(gpus), *extra], f"node{len(self.nodes)}",
                           cpus)  # fmt: skip

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        """A node's sudden death: its processes (raylet, workers, the job's worker) get SIGKILL at once."""
        below = RayCluster.descendants([proc.pid])
        for pid in [proc.pid, *below]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(10)

    @staticmethod
    def descendants(pids: list[int]) -> list[int]:
        """Every process below these (Ray's workers start sessions of their own, so process groups miss them)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], list(pids)
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found

    def stop(self) -> None:
        # Before their parents go and they are re-parented; each with its start time, so a reused pid is spared.
        below = [(pid, _start_time(pid)) for pid in self.descendants([p.pid for p in self.nodes])]
        for proc in self.nodes:  # all at once: a test cluster's state is not worth a clean shutdown's wait
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in self.nodes:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.nodes:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # anything of that node still alive
            except ProcessLookupError:
                pass
            proc.wait(10)
        for pid, started in below:
            if started is not None and _start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        import shutil

        shutil.rmtree(self.temp, ignore_errors=True)
