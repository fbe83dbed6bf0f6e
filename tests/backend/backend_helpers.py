"""Helpers: real backend processes on loopback (127.0.0.1 only) for the backend tests."""

from __future__ import annotations

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
        deadline = time.monotonic() + 30
        while not endpoint_file.exists():
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
