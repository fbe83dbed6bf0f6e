"""The hello carries what the backend's machine can run (`pla4d doctor`'s facts, gathered once in a child process
at start), so the Blender panel can show it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("zmq")

from backend_helpers import Backend  # noqa: E402

from backend.client import Client  # noqa: E402


def test_hello_carries_the_doctors_facts(tmp_path: Path) -> None:
    backend = Backend(tmp_path / "data", "--rate", "0", machine_facts=True).start()
    try:
        with Client(backend.endpoint, timeout=10) as client:
            first = client.request("hello", {})
            deadline = time.monotonic() + 180
            info = first
            while info.get("machine") is None and time.monotonic() < deadline:
                time.sleep(1.0)  # the doctor's child process imports torch and scans the model caches
                info = client.request("hello", {})
    finally:
        backend.stop()
    machine = info["machine"]
    assert machine is not None and "error" not in machine, machine
    assert machine["cuda"]["available"] is False and machine["python"].count(".") == 2
    assert set(machine["models"]) == set(info["presets"])
    # the same facts as `pla4d doctor` here: every draft model this backend's empty caches lack is named
    assert all(not m["present"] for m in machine["models"]["draft"] if not m["optional"])
