"""Faults on a real Ray cluster (slow): a node lost mid-job, a node that joins later, cancel, a backend killed -9.

Every Ray process runs on this machine (addresses: see :class:`backend_helpers.RayCluster`) and is stopped by its id.
"""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("ray")

from backend_helpers import TINY, long_settings  # noqa: E402
from test_cluster import collect, fetched, node_running, wait_workers  # noqa: E402

from backend.client import Client  # noqa: E402

pytestmark = pytest.mark.slow


def until(client: Client, job_id: str, check, timeout: float = 180) -> list[dict]:
    """The job's events up to the first one ``check`` accepts."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, [e["event"] for e in seen][-5:]
        event = client.next_event(5)
        if event is None or event.get("job_id") != job_id:
            continue
        seen.append(event)
        assert event["event"] not in ("failed", "cancelled"), event
        if check(event):
            return seen


def stage_times(events: list[dict]) -> list[tuple[str, str, float | None]]:
    return [(e["event"], e["stage"], e.get("seconds")) for e in events if e["event"].startswith("stage_")]


def test_node_lost_mid_job_resumes_elsewhere(cluster, backend_factory, tmp_path):
    """With --shared-dir the retry on the other node skips the stages that finished; with no attempt left the job
    fails naming the node and the reason."""
    cluster.head(gpus=0)
    cluster.node(gpus=1)
    cluster.node(gpus=1)
    backend = backend_factory("--rate", "0", "--executor", "ray", "--ray-address", cluster.address, "--shared-dir",
                              str(tmp_path / "shared"), "--max-attempts", "2", name="ray")  # fmt: skip
    settings = long_settings(200)
    with Client(backend.endpoint, timeout=60) as client:
        wait_workers(client, 2)
        job_id = client.submit("example", settings)["job_id"]
        first = until(client, job_id, lambda e: e["event"] == "progress" and e.get("stage") == "static")
        victim = node_running(cluster, backend.data_dir, job_id)
        cluster.kill(victim)
        rest = collect(client, [job_id], timeout=300)[job_id]
        assert rest[-1]["event"] == "done", rest[-1]
        requeued = [e for e in rest if e["event"] == "queue" and "reason" in e]
        assert requeued and "was lost while running this job" in requeued[0]["reason"], requeued
        assert "attempt 2 of 2" in requeued[0]["reason"]
        times = stage_times(first + rest)
        print("stage events and seconds:", times)
        after = stage_times(rest[rest.index(requeued[0]) :])
        assert ("stage_skipped", "example", None) in after and ("stage_skipped", "focal", None) in after
        assert client.status(job_id)["attempts"] == 2
        fetched(client, job_id, tmp_path / "got")

        # One node left and one attempt allowed: losing it fails the job, naming the node.
        cluster.node(gpus=1)  # the replacement node, so the job has somewhere to run
        wait_workers(client, 2)
        job2 = client.submit("example", settings)["job_id"]
        until(client, job2, lambda e: e["event"] == "progress")
        ip = json.loads((backend.data_dir / "jobs" / job2 / "ray.json").read_text())["node"]["ip"]
        cluster.kill(node_running(cluster, backend.data_dir, job2))
        # attempts: job2's first run is attempt 1 of 2, so kill its second node too.
        until(client, job2, lambda e: e["event"] == "queue" and "reason" in e)
        until(client, job2, lambda e: e["event"] == "progress", timeout=240)
        cluster.kill(node_running(cluster, backend.data_dir, job2))
        end = collect(client, [job2], timeout=120)[job2][-1]
        assert end["event"] == "failed" and end["code"] == "WORKER_CRASHED", end
        assert "was lost while running this job" in end["message"] and "failed after 2 attempts" in end["message"]
        assert f"node {ip} (" in end["message"]


def test_node_lost_without_shared_dir_resumes_from_copied_stages(cluster, backend_factory, tmp_path):
    """Without --shared-dir the backend copies each stage back as it finishes, so the retry on the other node
    skips the stages the lost node had finished, as with shared storage; the copies go when the job is done."""
    cluster.head(gpus=0)
    cluster.node(gpus=1)
    cluster.node(gpus=1)
    backend = backend_factory("--rate", "0", "--executor", "ray", "--ray-address", cluster.address, "--max-attempts",
                              "2", name="ray")  # fmt: skip
    with Client(backend.endpoint, timeout=60) as client:
        wait_workers(client, 2)
        job_id = client.submit("example", long_settings(200))["job_id"]
        first = until(client, job_id, lambda e: e["event"] == "progress" and e.get("stage") == "static")
        kept = backend.data_dir / "jobs" / job_id / "stages"
        deadline = time.monotonic() + 60  # copied beside the events, not before them
        while not all((kept / stage / "stage.json").is_file() for stage in ("example", "focal")):
            assert time.monotonic() < deadline, list(kept.glob("*"))
            time.sleep(0.2)
        cluster.kill(node_running(cluster, backend.data_dir, job_id))
        rest = collect(client, [job_id], timeout=300)[job_id]
        assert rest[-1]["event"] == "done", rest[-1]
        requeued = [e for e in rest if e["event"] == "queue" and "reason" in e]
        assert requeued and "attempt 2 of 2" in requeued[0]["reason"], requeued
        print("stage events and seconds:", stage_times(first + rest))
        after = stage_times(rest[rest.index(requeued[0]) :])
        assert ("stage_skipped", "example", None) in after and ("stage_skipped", "focal", None) in after
        assert ("stage_started", "static", None) in after
        assert client.status(job_id)["attempts"] == 2
        fetched(client, job_id, tmp_path / "got")
        assert not kept.exists()


def test_join_cancel_and_backend_restart(cluster, backend_factory, tmp_path):
    """A node that joins later takes a queued job; a cancel stops a remote job within 2 s; a late subscriber gets
    the events from then on; a backend killed -9 and started again adopts its running job and loses no result."""
    cluster.head(gpus=1)
    backend = backend_factory("--rate", "0", "--executor", "ray", "--ray-address", cluster.address, name="ray")
    with Client(backend.endpoint, timeout=60) as client:
        wait_workers(client, 1)
        long_id = client.submit("example", long_settings())["job_id"]
        until(client, long_id, lambda e: e["event"] == "progress")
        tiny_id = client.submit("example", TINY)["job_id"]
        assert client.status(tiny_id)["queue_position"] == 1
        cluster.node(gpus=1)  # joins now: the queued job runs there while the long one goes on
        done = collect(client, [tiny_id], timeout=240)[tiny_id]
        assert done[-1]["event"] == "done" and client.status(long_id)["state"] == "running"

        with Client(backend.endpoint, timeout=30) as late:
            last = client.status(long_id)["last_seq"]
            late.subscribe(long_id, since=last)
            stored = [e for e in (late.next_event(30) for _ in range(6)) if e is not None and e["seq"] is not None]
            assert [e["seq"] for e in stored] == list(range(last + 1, last + 1 + len(stored))) and stored
        asked = time.monotonic()
        assert client.cancel(long_id)["state"] == "cancelling"
        end = collect(client, [long_id], timeout=30)[long_id][-1]
        stopped = time.monotonic() - asked
        print(f"cancel to cancelled: {stopped:.2f} s")
        assert end["event"] == "cancelled" and stopped < 2.0

        job_id = client.submit("example", long_settings(300))["job_id"]
        until(client, job_id, lambda e: e["event"] == "progress")
    backend.kill9()
    backend.start()
    with Client(backend.endpoint, timeout=60) as client:
        assert client.status(tiny_id)["state"] == "done"
        fetched(client, tiny_id, tmp_path / "tiny")
        assert client.status(job_id)["state"] == "running"  # adopted, not re-queued
        reply = client.subscribe(job_id, since=0)
        events = collect(client, [job_id], timeout=300)[job_id]
        assert events[-1]["event"] == "done", events[-1]
        assert client.status(job_id)["attempts"] == 1 and reply["state"] == "running"
        fetched(client, job_id, tmp_path / "after")
