"""Fixtures: real backend processes on loopback (127.0.0.1 only)."""

from __future__ import annotations

import pytest

pytest.importorskip("zmq")
pytest.importorskip("msgpack")

from backend_helpers import TINY, Backend, RayCluster  # noqa: E402


@pytest.fixture
def cluster():
    """A Ray cluster on this machine (``backend_helpers.RayCluster``), stopped by its processes' ids afterwards."""
    ray_cluster = RayCluster()
    try:
        yield ray_cluster
    finally:
        ray_cluster.stop()


@pytest.fixture
def backend_factory(tmp_path):
    started: list[Backend] = []

    def make(*extra: str, name: str = "data", env: dict[str, str] | None = None) -> Backend:
        backend = Backend(tmp_path / name, *extra, env=env)
        backend.data_dir.mkdir(parents=True, exist_ok=True)
        started.append(backend)
        return backend.start()

    yield make
    for backend in started:
        backend.stop()


@pytest.fixture(scope="module")
def shared_backend(tmp_path_factory):
    """One rate-unlimited backend per test module, with one finished tiny example job."""
    from backend.client import Client

    data = tmp_path_factory.mktemp("shared") / "data"
    data.mkdir()
    backend = Backend(data, "--rate", "0").start()
    with Client(backend.endpoint, timeout=60) as client:
        job = client.submit("example", TINY)
        events = list(client.follow(job["job_id"], timeout=120))
    assert events[-1]["event"] == "done", events[-1]
    backend.job_id = job["job_id"]
    backend.events = events
    yield backend
    backend.stop()
