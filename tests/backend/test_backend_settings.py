"""The backend's settings checks and capabilities come from the one settings table (pla4d/settings.py).

An in-process server (so a test can add a knob to the table) whose executor never starts a job: submits are
checked, stored and queued, and nothing runs."""

from __future__ import annotations

import json
import threading

import pytest
from backend_helpers import TINY

import pla4d.settings as table
from backend.client import BackendError, Client
from backend.executor import Executor, JobSink
from backend.server import Server
from pla4d.config import PRESETS


class HoldingExecutor(Executor):
    """Two slots, never free: every job stays queued (the scheduler sees nothing else)."""

    devices = ["cpu", "cpu"]

    def attach(self, sink: JobSink) -> None:
        self.sink = sink

    def wait_sockets(self) -> list:
        return []

    def pump(self) -> None:
        pass

    def free_slots(self) -> list[int]:
        return []

    def running(self) -> dict[str, int]:
        return {}

    def start(self, slot: int, job_id: str) -> None:
        raise AssertionError("the holding executor starts nothing")

    def cancel(self, job_id: str) -> None:
        pass

    def recover(self, job_ids: list[str]) -> set[str]:
        return set()

    def close(self) -> None:
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    # No model from this machine's caches (the text kind's availability is not what these tests check).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-models" / "hf"))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "no-models" / "u2net"))
    srv = Server(tmp_path / "data", bind="tcp://127.0.0.1:0", rate=0, executor=HoldingExecutor(), machine_facts=False)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.stop()
    thread.join(10)
    srv.close()


def spec_settings(srv: Server, job_id: str) -> dict:
    return json.loads((srv.data / "jobs" / job_id / "job.json").read_text())["settings"]


def refusal(call) -> BackendError:
    with pytest.raises(BackendError) as err:
        call()
    return err.value


def test_bad_value_names_the_setting_and_its_range(server):
    with Client(server.endpoint, timeout=10) as c:
        err = refusal(lambda: c.submit("example", {"values": {"motion.iterations": 0}}))
        assert err.code == "BAD_REQUEST"
        assert err.message == "motion.iterations must be an integer from 1 to 100000 (got 0)"
        # protocol-1 names: the message names the table's path and range
        err = refusal(lambda: c.submit("text", {"generate": {"frames": 500}}, prompt="a fox"))
        assert err.code == "BAD_REQUEST"
        assert err.message == "video.num_frames must be an integer from 2 to 129 (got 500)"
        err = refusal(lambda: c.submit("example", {"fps": 0}))
        assert (err.code, err.message) == ("BAD_REQUEST", "asset.fps must be a number from 1 to 240 (got 0)")
        err = refusal(lambda: c.submit("example", {"seed": -1}))
        assert err.code == "BAD_REQUEST" and "from 0 to 2147483647" in err.message
        err = refusal(lambda: c.submit("example", {"overrides": {"resolutions": [32, 4096]}}))
        assert err.code == "BAD_REQUEST" and "static.resolutions" in err.message and "from 16 to 2048" in err.message
        # a setting that does not act on this kind of job, named in `values`
        err = refusal(lambda: c.submit("example", {"values": {"video.steps": 3}}))
        assert err.code == "BAD_REQUEST" and "video.steps" in err.message and "motion.iterations" in err.message
        # other request fields say their range too
        err = refusal(lambda: c.request("list", {"limit": 5000}))
        assert err.code == "BAD_REQUEST" and "from 1 to 1000" in err.message and "5000" in err.message
        err = refusal(lambda: c.request("delete", {"job_id": "x" * 65}))
        assert err.code == "BAD_REQUEST" and "1 to 64 characters" in err.message
        assert c.request("list", {})["jobs"] == []  # nothing was queued


def test_capabilities_list_the_tables_remote_settings(server):
    with Client(server.endpoint, timeout=10) as c:
        caps = c.hello()
    rows = {row["path"]: row for row in caps["settings"]}
    assert list(rows) == [s.path for s in table.SETTINGS if s.remote]
    assert "video.model" not in rows and "mesh.command" not in rows  # local-only: no client names a server path
    row = rows["motion.iterations"]
    assert (row["type"], row["min"], row["max"]) == ("int", 1, 100_000)
    assert set(row) == {"path", "type", "min", "max", "choices", "help", "kinds", "label", "defaults"}
    assert row["kinds"] == ["example", "video", "text"]
    assert row["defaults"] == {name: p.motion.iterations for name, p in PRESETS.items()}
    assert rows["static.iterations"]["kinds"] == ["lift", "example", "video", "text"]
    # protocol 1's override names stay listed, from the table's aliases
    assert {"iterations", "motion_iterations", "resolutions"} <= set(caps["overrides"])
    assert "num_frames" not in caps["overrides"]


def test_a_knob_added_to_the_table_is_checked_and_offered(server, monkeypatch):
    knob = table.Setting("static.densify_grad_threshold", "float", "gradient norm that densifies a Gaussian",
                         1e-6, 1e-2)  # fmt: skip
    monkeypatch.setattr(table, "SETTINGS", [*table.SETTINGS, knob])
    with Client(server.endpoint, timeout=10) as c:
        row = {r["path"]: r for r in c.hello()["settings"]}["static.densify_grad_threshold"]
        assert (row["type"], row["min"], row["max"], row["help"]) == ("float", 1e-6, 1e-2, knob.help)
        assert row["defaults"]["draft"] == PRESETS["draft"].static.densify_grad_threshold
        lift = {"kind": "lift", "settings": {"values": {"static.densify_grad_threshold": 0.5}}}
        err = refusal(lambda: c.request("submit", lift))  # settings are checked before the uploads
        assert err.code == "BAD_REQUEST"
        assert err.message == "static.densify_grad_threshold must be a number from 1e-06 to 0.01 (got 0.5)"
        job = c.submit("example", {"values": {"static.densify_grad_threshold": 1e-3}})
    assert spec_settings(server, job["job_id"])["values"] == {"static.densify_grad_threshold": 1e-3}


def test_values_and_legacy_forms_store_the_same_spec(server):
    values = {
        "static.iterations": 4, "motion.iterations": 2, "static.num_gaussians": 2000, "static.max_gaussians": 4000,
        "static.resolutions": [32], "static.resolution_steps": [], "static.view_pool": 4, "static.batch_views": 1,
        "example.frames": 2, "example.resolution": 32, "example.supersample": 1, "asset.fps": 12.0,
    }  # fmt: skip
    with Client(server.endpoint, timeout=10) as c:
        legacy = c.submit("example", {**TINY, "seed": 7, "fps": 12})
        new = c.submit("example", {"preset": "draft", "seed": 7, "values": values})
        seed_in_values = c.submit("example", {"preset": "draft", "values": {**values, "job.seed": 7}})
        # protocol 1 ignored settings that do not act on a kind (a text job's video size for an example): still so
        with_generate = c.submit("example", {**TINY, "seed": 7, "fps": 12, "generate": {"frames": 4}})
        default = c.submit("example")
        status = c.status(new["job_id"])
    expected = {"preset": "draft", "seed": 7, "values": dict(sorted(values.items()))}
    for job in (legacy, new, seed_in_values, with_generate):
        assert spec_settings(server, job["job_id"]) == expected
    assert status["settings"] == expected
    assert spec_settings(server, default["job_id"]) == {"preset": "draft", "seed": 0, "values": {}}
