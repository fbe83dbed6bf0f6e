"""Ray executor benchmarks on this machine: dispatch overhead, 1 vs 2 nodes throughput, event latency local vs Ray.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/cluster_bench.py [--jobs 6] [--dispatch 5]

Starts a real Ray cluster of separate node processes (``ray start --block``, stopped by process id at the end; see
tests/backend/backend_helpers.RayCluster for the addresses Ray uses) and real backends on 127.0.0.1.

- Dispatch overhead: on a warm one-node cluster (the node's host has its warm worker ready: waited for before each
  job), submit to the first event the job's worker sends (its first ``stage_started``), for tiny example jobs one
  after another; the same for the local executor, whose every job starts a cold worker (most of its figure is that
  worker importing torch and the engine). For Ray, each job's breakdown: submit to its placement group granted,
  to its run handed to a worker on the node, to the first event sent, to it received.
- Throughput: N tiny example jobs on one node, then on two. Logical GPUs on one machine share its cores, so each
  node is pinned to a core of its own (``taskset -c 0`` / ``taskset -c 1`` on ``ray start``: the raylet, the job's
  actor and its worker inherit it) and every job runs with ``OMP_NUM_THREADS=1``: a second node adds one core, as a
  second GPU box would add one GPU. The machine is shared with other work, so the ratio is a lower bound.
- Event latency: the worker stamps each event with its send time (``PLA4D_EVENT_CLOCK=1``); the client's receive
  time minus that, over every stored event of a job with 200 static iterations, for the local and the Ray executor.

Writes benchmarks/results/cluster.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "backend"))

from backend_helpers import TINY, Backend, RayCluster, long_settings  # noqa: E402

from backend.client import Client  # noqa: E402

TERMINAL = ("done", "failed", "cancelled")


def percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))] * 1000  # noqa: E731
    return {"p50_ms": round(pick(0.5), 2), "p99_ms": round(pick(0.99), 2), "max_ms": round(values[-1] * 1000, 2),
            "mean_ms": round(statistics.fmean(values) * 1000, 2), "n": len(values)}  # fmt: skip


def run_jobs(client: Client, settings: list[dict], timeout: float = 900) -> dict[str, list[tuple[float, dict]]]:
    """Submit every job at once and gather (receive time, event) per job until all have ended."""
    ids = [client.submit("example", s)["job_id"] for s in settings]
    events: dict[str, list[tuple[float, dict]]] = {job_id: [] for job_id in ids}
    deadline = time.monotonic() + timeout
    while any(not e or e[-1][1]["event"] not in TERMINAL for e in events.values()):
        if time.monotonic() > deadline:
            raise RuntimeError("jobs did not end in time")
        event = client.next_event(5)
        if event is not None and event.get("job_id") in events:
            events[event["job_id"]].append((time.time(), event))
    for job_id, evs in events.items():
        if evs[-1][1]["event"] != "done":
            raise RuntimeError(f"job {job_id} ended {evs[-1][1]}")
    return events


def dispatch(client: Client, n: int, jobs_dir: Path | None = None, warm=None) -> list[float]:
    """Submit to the first event from the job's worker, one job at a time. With ``jobs_dir`` (Ray), each job's
    breakdown goes to ``breakdown``: submit to the server's reply (``replied``), to the job's placement group asked
    for (``asked``) and granted (``placed``), to its run handed to a worker on the node (``on_node``), to the
    worker's first event sent (``first_sent``) and received here, and whether that worker was a warm one.
    ``warm``: called before each job, to wait until the cluster is warm again."""
    out = []
    for _ in range(n):
        if warm is not None:
            warm()
        t0 = time.time()
        job_id = client.submit("example", TINY)["job_id"]
        replied = time.time() - t0
        first = sent = None
        while True:
            event = client.next_event(120)
            if event is None:
                raise RuntimeError("no event")
            if event.get("job_id") != job_id:
                continue
            if first is None and "sent_at" in event:
                first, sent = time.time() - t0, event["sent_at"] - t0
            if event["event"] in TERMINAL:
                break
        out.append(first)
        if jobs_dir is not None:
            node = json.loads((jobs_dir / job_id / "ray.json").read_text())["node"]
            breakdown.append({"replied": round(replied, 3), "asked": round(node["created"] - t0, 3),
                              "placed": round(node["placed"] - t0, 3), "on_node": round(node["since"] - t0, 3),
                              "first_sent": round(sent, 3), "first_received": round(first, 3),
                              "warm": node["warm"]})  # fmt: skip
    return out


breakdown: list[dict] = []


def warm_hosts(address: str, timeout: float = 180):
    """A function that waits until every node host's warm workers are ready (the cluster is warm)."""
    import ray

    from backend.executor_ray import HOSTS_NAMESPACE

    def wait() -> None:
        if not ray.is_initialized():
            ray.init(address=address, namespace=HOSTS_NAMESPACE, log_to_driver=False)
        for node in ray.nodes():
            if node["Alive"] and node["Resources"].get("GPU"):
                host = ray.get_actor(f"host-{node['NodeID']}", namespace=HOSTS_NAMESPACE)
                if not ray.get(host.wait_warm.remote(timeout)):
                    raise RuntimeError("a node's warm workers did not get ready")

    return wait


def latencies(events: list[tuple[float, dict]]) -> list[float]:
    return [got - e["sent_at"] for got, e in events if "sent_at" in e and e["seq"] is not None]


def wait_workers(client: Client, n: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while client.hello()["workers"] < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cluster did not offer {n} slots")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=6, help="tiny jobs per throughput run")
    parser.add_argument("--dispatch", type=int, default=5, help="jobs timed for the dispatch overhead")
    parser.add_argument("--dispatch-only", action="store_true", help="measure the dispatch overhead only")
    parser.add_argument("--no-local", action="store_true", help="skip the local executor's figures")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cluster.json"))
    args = parser.parse_args()
    import ray

    env = {"PLA4D_EVENT_CLOCK": "1", "OMP_NUM_THREADS": "1"}
    os.environ.update(env)
    tmp = Path(tempfile.mkdtemp(prefix="pla4d-cbench-"))
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__},
                     "jobs": args.jobs}  # fmt: skip
    cluster = RayCluster(env)
    backends: list[Backend] = []
    keep = False

    def backend(name: str, *extra: str) -> Backend:
        (tmp / name).mkdir()
        b = Backend(tmp / name, "--rate", "0", *extra, env=env)
        backends.append(b)
        return b.start()

    try:
        cluster.head(gpus=0, cpus="0")
        cluster.node(gpus=1, cpus="0")
        if not args.no_local:
            local = backend("local", "--device", "cpu")
            with Client(local.endpoint, timeout=120) as client:
                results["local_dispatch_s"] = [round(v, 3) for v in dispatch(client, args.dispatch)]
                events = run_jobs(client, [long_settings(200)])
                results["local_event_latency"] = percentiles(latencies(next(iter(events.values()))))
            local.stop()
        ray_backend = backend("ray", "--executor", "ray", "--ray-address", cluster.address)
        with Client(ray_backend.endpoint, timeout=120) as client:
            wait_workers(client, 1)
            dispatch(client, 1)  # warm: the node's host and its first warm worker
            warm = warm_hosts(cluster.address)
            results["ray_dispatch_s"] = [round(v, 3) for v in dispatch(client, args.dispatch, tmp / "ray" / "jobs",
                                                                       warm)]  # fmt: skip
            results["ray_dispatch_breakdown_s"] = list(breakdown)
            if args.dispatch_only:
                return report(results, args.out)
            events = run_jobs(client, [long_settings(200)])
            results["ray_event_latency"] = percentiles(latencies(next(iter(events.values()))))
            t0 = time.monotonic()
            run_jobs(client, [TINY] * args.jobs)
            results["one_node_s"] = round(time.monotonic() - t0, 2)
            cluster.node(gpus=1, cpus="1")
            wait_workers(client, 2)
            dispatch(client, 2)  # warm the new node (its host) as the first one was
            warm_hosts(cluster.address)()
            t0 = time.monotonic()
            run_jobs(client, [TINY] * args.jobs)
            results["two_nodes_s"] = round(time.monotonic() - t0, 2)
        results["throughput_ratio"] = round(results["one_node_s"] / results["two_nodes_s"], 2)
        return report(results, args.out)
    except BaseException:
        # Ray's driver exits the process 60 s after its cluster is gone, before Python would print the error.
        traceback.print_exc()
        print(f"cluster_bench: backend logs kept in {tmp}", file=sys.stderr, flush=True)
        keep = True
        raise
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for b in backends:
            b.stop()
        cluster.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def report(results: dict, out: str) -> int:
    for key in ("local_dispatch_s", "ray_dispatch_s"):
        if results.get(key):
            results[key[: -len("_s")] + "_median_s"] = round(statistics.median(results[key]), 3)
    if results.get("ray_dispatch_breakdown_s"):
        parts = ("replied", "asked", "placed", "on_node", "first_sent", "first_received")
        rows = results["ray_dispatch_breakdown_s"]
        results["ray_dispatch_breakdown_median_s"] = {p: round(statistics.median(r[p] for r in rows), 3) for p in parts}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
