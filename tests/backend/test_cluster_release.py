"""Placement groups a backend leaves on a real Ray cluster (slow): a restarting backend removes the stale ones of its
own and keeps those of the runs it adopts; ``pla4d-backend ray-release`` frees those of a backend that never comes
back, and stops its runs on the nodes.

Every Ray process runs on this machine (addresses: see :class:`backend_helpers.RayCluster`) and is stopped by its id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from backend_helpers import REPO, TINY, long_settings  # noqa: E402
from test_cluster import collect, wait_workers  # noqa: E402
from test_cluster_faults import until  # noqa: E402

from backend.client import Client  # noqa: E402
from backend.ray_cleanup import backend_id  # noqa: E402

pytestmark = pytest.mark.slow

# A Ray driver of its own (the test process stays out of Ray): optionally makes a detached placement group asking for
# one GPU in a namespace, then prints every placement group Ray has not removed, name -> state.
GROUPS = """
import json, sys
import ray
from ray.util.placement_group import placement_group, placement_group_table
address, namespace, make = sys.argv[1:4]
ray.init(address=address, namespace=namespace, log_to_driver=False)
if make:
    placement_group([{"GPU": 1}], name=make, lifetime="detached")
print(json.dumps({g["name"]: g["state"] for g in placement_group_table().values() if g["state"] != "REMOVED"}))
ray.shutdown()
"""


def groups(address: str, namespace: str = "pla4d-test", make: str = "") -> dict[str, str]:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run([sys.executable, "-c", GROUPS, address, namespace, make], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def groups_until(address: str, check, timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while not check(held := groups(address)):
        assert time.monotonic() < deadline, held
        time.sleep(1)
    return held


def test_stale_groups_freed_on_restart_and_by_ray_release(cluster, backend_factory):
    """Two backends share a node with two logical GPUs, one job running each; both are killed -9. A pending group of
    the first backend that no job owns (as a kill between making a job's group and recording it leaves) waits for a
    GPU. ``ray-release`` on the second backend's data dir frees its group and stops its run's worker; the stale group
    then takes that GPU. The first backend, started again, adopts its job (its group stays) and removes the stale
    group, so a new job gets the GPU beside the adopted one; a stale group made while it runs goes at its next sweep
    (every minute); at the end neither backend holds a group."""
    cluster.head(gpus=2)
    args = ("--rate", "0", "--executor", "ray", "--ray-address", cluster.address)
    mine = backend_factory(*args, name="mine")
    gone = backend_factory(*args, name="gone")
    ns_mine, ns_gone = backend_id(mine.data_dir), backend_id(gone.data_dir)  # made at their first start
    running = {}
    for backend in (mine, gone):
        with Client(backend.endpoint, timeout=60) as client:
            wait_workers(client, 2)
            job_id = client.submit("example", long_settings())["job_id"]
            until(client, job_id, lambda e: e["event"] == "progress")
            running[backend.data_dir.name] = job_id
    kept, lost = f"{ns_mine}-job-{running['mine']}-1", f"{ns_gone}-job-{running['gone']}-1"
    lost_worker = json.loads((gone.data_dir / "jobs" / running["gone"] / "ray.json").read_text())["node"]["worker_pid"]
    mine.kill9()
    gone.kill9()
    stale = f"{ns_mine}-job-{'0' * 16}-1"
    held = groups(cluster.address, ns_mine, make=stale)
    assert held[stale] == "PENDING" and held[kept] == "CREATED" and held[lost] == "CREATED", held

    release = [sys.executable, "-m", "backend", "ray-release", "--ray-address", cluster.address]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_WAIT_POLICY="PASSIVE")
    listed = subprocess.run([*release, "--data-dir", str(gone.data_dir), "--dry-run"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=180)  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert f"would free placement group {lost} (CREATED)" in listed.stdout, listed.stdout
    assert f"would free run {ns_gone}/{lost} on host-" in listed.stdout, listed.stdout
    assert kept not in listed.stdout and stale not in listed.stdout  # another backend's: never touched
    freed = subprocess.run([*release, "--backend", ns_gone], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=180)  # fmt: skip
    assert freed.returncode == 0, freed.stderr[-3000:]
    assert f"freed placement group {lost} (CREATED)" in freed.stdout and f"freed run {ns_gone}/{lost}" in freed.stdout
    assert f"{ns_gone}: 2 freed" in freed.stdout, freed.stdout
    assert not Path(f"/proc/{lost_worker}").exists()  # the host stopped (and reaped) the run's worker
    # The GPU it held went to the stale group: without the restart's clean-up no new job would run beside `kept`.
    held = groups_until(cluster.address, lambda held: held.get(stale) == "CREATED")
    assert lost not in held and held[kept] == "CREATED", held

    mine.start()  # removes its stale group before it serves
    held = groups(cluster.address)
    assert stale not in held and held[kept] == "CREATED", held
    with Client(mine.endpoint, timeout=60) as client:
        assert client.status(running["mine"])["state"] == "running"  # adopted
        tiny = client.submit("example", TINY)["job_id"]
        assert collect(client, [tiny], timeout=240)[tiny][-1]["event"] == "done"
        assert client.status(running["mine"])["state"] == "running"  # the new job ran beside it
        # A stale group that appears while the backend runs (as a removal that failed leaves) goes within a minute.
        later = f"{ns_mine}-job-{'1' * 16}-1"
        assert later in groups(cluster.address, ns_mine, make=later)  # on the GPU the new job freed
        client.subscribe(running["mine"], since=client.status(running["mine"])["last_seq"])
        client.cancel(running["mine"])
        assert collect(client, [running["mine"]], timeout=60)[running["mine"]][-1]["event"] == "cancelled"
        assert client.status(running["mine"])["attempts"] == 1
    groups_until(cluster.address, lambda held: not [n for n in held if n.startswith((ns_mine, ns_gone))], 120)
    log = (mine.data_dir.parent / "mine.log").read_text()
    assert f"freed placement group {stale} (CREATED)" in log and f"freed placement group {later} (" in log
    assert "Traceback" not in log, log[-3000:]
