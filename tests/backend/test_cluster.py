"""``pla4d-backend --executor ray``: jobs on a real Ray cluster of separate node processes on this machine.

Every Ray process runs here (see :class:`backend_helpers.RayCluster` for the addresses Ray uses) and is stopped by
its process id in the fixture's finalizer. Nodes declare logical GPUs (or a custom resource); the jobs run on the
CPU. One test runs in the default suite; the others (another way to reach Ray, a custom resource, a result damaged
on its way) are slow-marked.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")

from backend_helpers import TINY, RayCluster, _start_time  # noqa: E402

from backend import client_cli  # noqa: E402
from backend.client import Client  # noqa: E402
from backend.ray_host import gpus_for  # noqa: E402

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


def node_running(cluster: RayCluster, data_dir: Path, job_id: str):
    """The cluster node whose processes hold the job's run (``ray.json`` names its node host's pid)."""
    pid = json.loads((data_dir / "jobs" / job_id / "ray.json").read_text())["node"]["pid"]
    return next(p for p in cluster.nodes if pid in RayCluster.descendants([p.pid]))


def run_one(endpoint: str, settings: dict = TINY) -> tuple[str, list[dict]]:
    with Client(endpoint, timeout=60) as client:
        wait_workers(client, 1)
        job_id = client.submit("example", settings)["job_id"]
        return job_id, collect(client, [job_id])[job_id]


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
    # Each job ran in a process of its own (a warm one is used once, never for a second job).
    runs = [json.loads((ray_backend.data_dir / "jobs" / i / "ray.json").read_text())["node"] for i in ids]
    assert len({(run["node_id"], run["worker_pid"]) for run in runs}) == 3, runs
    assert set(remote_files) == set(local_files)
    positions = np.frombuffer(remote_files["asset/positions.bin"], "<f4")
    local_positions = np.frombuffer(local_files["asset/positions.bin"], "<f4")
    np.testing.assert_allclose(positions, local_positions, rtol=1e-5, atol=1e-6)
    # The run folder was copied whole into the server's data dir (fetch reads only there).
    assert (ray_backend.data_dir / "jobs" / ids[0] / "result" / "asset" / "positions.bin").is_file()


def test_gpu_indices_like_ray():
    """The node host hands out GPU indices as Ray would: a fraction shares the lowest GPU with room, whole GPUs are
    the lowest free ones, and nothing when the node's GPUs are taken."""
    assert gpus_for({}, 2, 1.0) == [0]
    assert gpus_for({0: 1.0}, 2, 1.0) == [1]
    assert gpus_for({0: 1.0, 1: 1.0}, 2, 1.0) is None
    assert gpus_for({0: 0.5}, 2, 0.5) == [0]
    assert gpus_for({0: 1.0, 1: 0.5}, 2, 0.5) == [1]
    assert gpus_for({1: 1.0}, 4, 2.0) == [0, 2]
    assert gpus_for({0: 0.5, 2: 1.0}, 3, 2.0) is None


@pytest.mark.slow
def test_backend_starts_its_own_ray(backend_factory):
    """``--ray-address none``: the backend starts a Ray of this machine alone (Ray's address "local": it joins no
    other Ray running here), with one logical GPU on a machine without one, runs a job on it, and its Ray ends with
    it. Its session files go under a private RAY_TMPDIR; like any Ray it listens on all interfaces (see
    :class:`backend_helpers.RayCluster`). A Ray started by ``ray.init`` turns on Ray's token authentication and,
    without a token, writes one to ~/.ray/auth_token, after which every ``ray start --head`` of this user asks for
    it (the other cluster tests' nodes would be refused): the test gives the token in the environment instead.
    Every process of that Ray is found by pid below the backend's and checked gone (killed by pid should one
    stay)."""
    ray_tmp = tempfile.mkdtemp(prefix="pla4d-rt-", dir="/tmp")
    env = {"RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    token_file = Path.home() / ".ray" / "auth_token"
    had_token = token_file.exists()
    backend = backend_factory("--rate", "0", "--executor", "ray", "--ray-address", "none", name="own", env=env)
    below: list[tuple[int, str | None]] = []
    try:
        job_id, events = run_one(backend.endpoint)
        assert events[-1]["event"] == "done", events[-1]
        node = json.loads((backend.data_dir / "jobs" / job_id / "ray.json").read_text())["node"]
        below = [(pid, _start_time(pid)) for pid in RayCluster.descendants([backend.proc.pid])]
        assert node["pid"] in [pid for pid, _ in below]  # the job's node host is a process of the backend's Ray
        backend.stop()
        alive = lambda: [pid for pid, t in below if t is not None and _start_time(pid) == t]  # noqa: E731
        deadline = time.monotonic() + 30
        while alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not (left := alive()), f"processes of the backend's Ray outlived it: {left}"
        assert token_file.exists() == had_token  # no token file left behind for this user's other Ray clusters
    finally:
        for pid, started in below:
            if started is not None and _start_time(pid) == started:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_ray_client_address(cluster, backend_factory, tmp_path):
    """``--ray-address ray://HOST:PORT``: the backend drives the cluster through Ray's client server on the head."""
    cluster.head(gpus=1)
    backend = backend_factory("--rate", "0", "--executor", "ray", "--ray-address",
                              f"ray://127.0.0.1:{cluster.client_port}", name="client")  # fmt: skip
    job_id, events = run_one(backend.endpoint)
    assert events[-1]["event"] == "done", events[-1]
    with Client(backend.endpoint, timeout=60) as client:
        fetched(client, job_id, tmp_path / "got")
    log = (backend.data_dir.parent / "client.log").read_text()
    assert "Traceback" not in log, log[-3000:]  # its start's clean-up (backend/ray_cleanup.py) works through ray://


@pytest.mark.slow
def test_custom_resource_only_on_nodes_declaring_it(cluster, backend_factory):
    """``--ray-resource pla4d_x``: only a node declaring it takes jobs; the head, with a GPU but no pla4d_x, takes
    none (it is not counted as a slot and gets no host)."""
    cluster.head(gpus=1)
    x_node = cluster.node(gpus=0, resources={"pla4d_x": 1})
    backend = backend_factory("--rate", "0", "--executor", "ray", "--ray-address", cluster.address,
                              "--ray-resource", "pla4d_x", name="x")  # fmt: skip
    with Client(backend.endpoint, timeout=60) as client:
        wait_workers(client, 1)
        hello = client.hello()
        assert hello["workers"] == 1 and hello["devices"] == ["ray:pla4d_x"], hello
        ids = [client.submit("example", {**TINY, "seed": seed})["job_id"] for seed in (1, 2)]
        events = collect(client, ids)
        assert all(events[i][-1]["event"] == "done" for i in ids), [events[i][-1] for i in ids]
    assert all(node_running(cluster, backend.data_dir, i) is x_node for i in ids)


# Imported by every Python process of the node it is given to (through PYTHONPATH): the node's host then hands the
# server the result's positions with one byte flipped, as if damaged between the node and the server.
CORRUPT_ON_THE_WAY = """
try:
    from backend import ray_job
except Exception:
    pass
else:
    _read = ray_job.JobRunner.read

    def _flipped(self, name, offset, size):
        data = _read(self, name, offset, size)
        if name == "result/asset/positions.bin" and offset == 0 and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    ray_job.JobRunner.read = _flipped
"""


@pytest.mark.slow
def test_result_damaged_on_the_way_fails_with_checksum_mismatch(backend_factory, tmp_path):
    """Without ``--shared-dir`` the result comes back in chunks through Ray; a file whose bytes differ from what the
    node computed fails the job with CHECKSUM_MISMATCH naming the file and the node, and leaves no result."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CORRUPT_ON_THE_WAY)
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    cluster = RayCluster({"PYTHONPATH": path})
    try:
        cluster.head(gpus=1)
        backend = backend_factory("--rate", "0", "--executor", "ray", "--ray-address", cluster.address, name="bad")
        job_id, events = run_one(backend.endpoint)
        end = events[-1]
        assert end["event"] == "failed" and end["code"] == "CHECKSUM_MISMATCH", end
        node = json.loads((backend.data_dir / "jobs" / job_id / "ray.json").read_text())["node"]
        assert "asset/positions.bin arrived with another size or sha256" in end["message"], end
        assert f"node {node['ip']} ({node['host']}, id {node['node_id'][:8]})" in end["message"], end
        assert not (backend.data_dir / "jobs" / job_id / "result").exists()
        with Client(backend.endpoint, timeout=60) as client:
            assert client.status(job_id)["state"] == "failed"
    finally:
        cluster.stop()
