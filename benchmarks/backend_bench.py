"""Backend benchmarks on loopback: result fetch throughput and control round trip while a job trains.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/backend_bench.py [--size-mb 256] [--pings 2000]

Starts a real `python -m backend` on 127.0.0.1 (a temporary data dir), runs one tiny example job, adds a
synthetic SIZE-MB result file to it (standing in for a 4D asset), then measures `Client.fetch` (crc32 per chunk,
sha256 of the file, written to disk) and `ping` round trips idle and while a long job trains. Writes
benchmarks/results/backend.json.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "backend"))

from backend_helpers import TINY, Backend, long_settings  # noqa: E402

from backend.client import Client  # noqa: E402
from backend.store import JobStore  # noqa: E402
from backend.worker import file_manifest  # noqa: E402


def percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))] * 1000  # noqa: E731
    return {"p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99), "max_ms": values[-1] * 1000,
            "mean_ms": statistics.fmean(values) * 1000, "n": len(values)}  # fmt: skip


def pings(client: Client, n: int) -> list[float]:
    for _ in range(20):
        client.ping()
    return [client.ping() for _ in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "backend.json"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    tmp = Path(tempfile.mkdtemp(prefix="pla4d-bench-"))
    data = tmp / "data"
    data.mkdir()
    backend = Backend(data, "--rate", "0").start()
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    try:
        with Client(backend.endpoint, timeout=120) as c:
            job = c.submit("example", TINY)
            assert list(c.follow(job["job_id"], timeout=300))[-1]["event"] == "done"
        backend.stop()
        result_dir = data / "jobs" / job["job_id"] / "result"
        with open(result_dir / "asset.bin", "wb") as handle:
            for _ in range(args.size_mb):
                handle.write(os.urandom(1 << 20))
        store = JobStore(data / "jobs.sqlite")
        store.update(job["job_id"], manifest=file_manifest(result_dir))
        store.close()
        backend.start()
        fetch = []
        with Client(backend.endpoint, timeout=60) as c:
            for chunk_mb in (1, 4, 8):
                for window in (4, 8):
                    out = tmp / f"fetch{chunk_mb}_{window}"
                    start = time.perf_counter()
                    c.fetch(job["job_id"], out, files=["asset.bin"], chunk_size=chunk_mb << 20, window=window)
                    seconds = time.perf_counter() - start
                    row = {"chunk_mb": chunk_mb, "window_requests": window, "mb": args.size_mb}
                    row.update(seconds=round(seconds, 3), mb_per_s=round(args.size_mb / seconds, 1))
                    fetch.append(row)
                    print(json.dumps(fetch[-1]), flush=True)
                    shutil.rmtree(out)
            results["fetch"] = fetch
            results["rtt_idle"] = percentiles(pings(c, args.pings))
            print("idle", json.dumps(results["rtt_idle"]), flush=True)
            busy = c.submit("example", long_settings(100_000))
            for event in c.follow(busy["job_id"], timeout=120):
                if event["event"] == "progress" and event["iteration"] >= 3:
                    break
            results["rtt_training"] = percentiles(pings(c, args.pings))
            training_ok = c.status(busy["job_id"])["state"] == "running"
            results["rtt_training"]["job_running_throughout"] = training_ok
            print("training", json.dumps(results["rtt_training"]), flush=True)
            c.cancel(busy["job_id"])
    finally:
        backend.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    results["targets"] = {"fetch_mb_per_s": 300, "rtt_p99_ms": 5}
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
