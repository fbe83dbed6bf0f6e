"""``pla4d-backend --executor ray``: jobs on a real Ray cluster of separate node processes on this machine.

Every Ray process runs here (see :class:`backend_helpers.RayCluster` for the addresses Ray uses) and is stopped by
its process group id in the fixture's finalizer. Nodes declare logical GPUs; the jobs run on the CPU.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")

from backend_helpers import TINY  # noqa: E402

from backend import client_cli  # noqa: E402
from backend.client import Client  # noqa: E402

TERMINAL = ("done", "failed", "cancelled")


def wait_workers(client: Client, n: int, timeout: float = 120) -> None:
    """Until the backend sees ``n`` job slots on the cluster (nodes come up in ~20 s on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while client.hello()["workers"] < n:
        assert time.monotonic() < deadline, f"the cluster did not offer {n} slots in {timeout} s"
        time.sleep(0.5)


def collect(client: Client, job_ids: list[str], timeout: float = 240) -> dict[str, list[dict]]:
    """Every job's events, as this client (their submitter) receives them, until each has ended."""
    events: dict[str, list[dict]] = {job_id: [] for job_id in job_ids}
    deadline = time.monotonic() + timeout
    while any(not e or e[-1]["event"] not in TERMINAL for e in events.values()):
        assert time.monotonic() < deadline, {k: [e["event"] for e in v][-3:] for k, v in events.items()}
        event = client.next_event(5)
        if event is not None and event.get("job_id") in events:
            events[event["job_id"]].append(event)
    return events


def fetched(client: Client, job_id: str, out: Path) -> dict[str, bytes]:
    """The job's result files, each checked against the manifest's sha256 here (as well as by the client)."""
    manifest = client.manifest(job_id)["files"]
    client.fetch(job_id, out)
    files = {}
    for entry in manifest:
        data = (out / entry["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["name"]
        files[entry["name"]] = data
    return files


def test_ray_executor_runs_jobs_like_local(cluster, backend_factory, tmp_path, capsys):
    """Three tiny example jobs on a head and a worker node (one logical GPU each), through the real backend and
    client: all finish, results are checked by sha256, events arrive in order, and the job with the local run's
    seed gives the local executor's arrays (float32, rtol 1e-5 / atol 1e-6: thread counts may differ)."""
    local = backend_factory("--rate", "0", name="local")
    with Client(local.endpoint, timeout=60) as client:
        local_id = client.submit("example", TINY)["job_id"]
        cluster.head(gpus=1)  # while the local job runs
        cluster.node(gpus=1)
        local_events = collect(client, [local_id])[local_id]
        assert local_events[-1]["event"] == "done", local_events[-1]
        local_files = fetched(client, local_id, tmp_path / "local")
        assert client.status(local_id)["node"] is None
    local.stop()

    ray_backend = backend_factory("--rate", "0", "--executor", "ray", "--ray-address", cluster.address, name="ray")
    with Client(ray_backend.endpoint, timeout=60) as client:
        wait_workers(client, 2)
        seeds = [None, 1, 2]
        ids = [client.submit("example", {**TINY, **({"seed": s} if s is not None else {})})["job_id"] for s in seeds]
        events = collect(client, ids)
        for job_id in ids:
            names = [e["event"] for e in events[job_id]]
            assert names[-1] == "done", events[job_id][-1]
            stored = [e["seq"] for e in events[job_id] if e["seq"] is not None]
            assert stored == list(range(1, len(stored) + 1))  # in order, none lost
            # The same stages, iterations and previews as a local run.
            assert [e.get("stage") for e in events[job_id] if e["event"] == "stage_started"] == [
                e.get("stage") for e in local_events if e["event"] == "stage_started"
            ]
            assert names.count("progress") == [e["event"] for e in local_events].count("progress")
            assert "preview" in names
        listing = {j["job_id"]: j for j in client.list()}
        assert all(listing[job_id]["state"] == "done" for job_id in ids)
        assert all(listing[job_id]["node"].endswith(")") for job_id in ids)  # "IP (host)" of the node it ran on
        capsys.readouterr()
        assert client_cli.main(["jobs", "--server", ray_backend.endpoint]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert "node" in lines[0].split() and all(listing[i]["node"] in "\n".join(lines) for i in ids)
        remote_files = fetched(client, ids[0], tmp_path / "ray")
    assert set(remote_files) == set(local_files)
    positions = np.frombuffer(remote_files["asset/positions.bin"], "<f4")
    local_positions = np.frombuffer(local_files["asset/positions.bin"], "<f4")
    np.testing.assert_allclose(positions, local_positions, rtol=1e-5, atol=1e-6)
    # The run folder was copied whole into the server's data dir (fetch reads only there).
    assert (ray_backend.data_dir / "jobs" / ids[0] / "result" / "asset" / "positions.bin").is_file()
