"""Protocol encoding, signing, the job store and the client's import weight (no sockets)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("zmq")

from backend_helpers import REPO  # noqa: E402

from backend.protocol import (  # noqa: E402
    Code,
    ProtocolError,
    array_frames,
    decode,
    encode,
    frames_to_arrays,
    pack,
)
from backend.store import JobStore  # noqa: E402

KEY = b"0123456789abcdef0123456789abcdef"


def test_round_trip_with_arrays():
    arrays = {"positions": np.arange(12, dtype=np.float32).reshape(4, 3), "ids": np.arange(5, dtype=np.int64)}
    descs, raw = array_frames(arrays)
    frames = encode("event", {"event": "preview", "arrays": descs}, 7, raw)
    env, got = decode([bytes(f) for f in frames])
    assert env["type"] == "event" and env["id"] == 7 and env["v"] == 1
    back = frames_to_arrays(env["body"]["arrays"], got)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(back[name], arr)
        assert back[name].dtype == arr.dtype


def test_hmac_signing():
    frames = [bytes(f) for f in encode("hello", {"a": 1}, 1, [b"payload"], key=KEY)]
    env, raw = decode(frames, KEY)
    assert env["body"] == {"a": 1} and raw == [b"payload"]
    with pytest.raises(ProtocolError) as err:
        decode(frames, b"another key that is long enough")
    assert err.value.code == Code.AUTH_FAILED
    tampered = list(frames)
    tampered[1] = b"Payload"
    with pytest.raises(ProtocolError, match="bad signature"):
        decode(tampered, KEY)
    with pytest.raises(ProtocolError, match="not signed"):
        decode([bytes(f) for f in encode("hello", {}, 1)], KEY)
    old = {"v": 1, "type": "hello", "id": 1, "ts": time.time() - 3600, "body": {}}
    from backend.protocol import _mac

    stale = [pack(old)]
    stale.append(_mac(KEY, stale))
    with pytest.raises(ProtocolError, match="replay window"):
        decode(stale, KEY)


@pytest.mark.parametrize(
    "frames, code",
    [
        ([], Code.BAD_MESSAGE),
        ([b"\xc1garbage"], Code.BAD_MESSAGE),
        ([pack([1, 2, 3])], Code.BAD_MESSAGE),
        ([pack({"v": 99, "type": "hello", "id": 1})], Code.BAD_VERSION),
        ([pack({"v": 1, "id": 1})], Code.BAD_MESSAGE),
        ([pack({"v": 1, "type": "hello", "id": 1.5})], Code.BAD_MESSAGE),
        ([pack({"v": 1, "type": "hello", "id": 1, "body": [1]})], Code.BAD_MESSAGE),
        ([pack({"v": 1, "type": "hello", "id": 1, "body": {}, "pad": b"x" * 300_000})], Code.TOO_LARGE),
        ([pack({1: 2})], Code.BAD_MESSAGE),
    ],
)
def test_malformed_envelopes(frames, code):
    with pytest.raises(ProtocolError) as err:
        decode(frames)
    assert err.value.code == code


def test_job_store_events(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    job = store.create("example", {"kind": "example", "settings": {}})
    assert store.queued_ids() == [job["id"]]
    seqs = [store.add_event(job["id"], {"event": "progress", "iteration": i}) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert [e["iteration"] for _, e in store.events_since(job["id"], 3)] == [3, 4]
    store.update(job["id"], state="done", manifest=[{"name": "a", "size": 1, "sha256": "0" * 64}])
    store.close()
    again = JobStore(tmp_path / "jobs.sqlite")
    assert again.get(job["id"])["manifest"][0]["name"] == "a" and again.get(job["id"])["last_seq"] == 5


def test_client_imports_without_torch_numba_or_engine():
    code = (
        "import sys, backend.client, backend.client_cli\n"
        "bad = [m for m in ('torch', 'numba', 'pla4d', 'bpy', 'numpy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    lines = sum(len((REPO / "backend" / f).read_text().splitlines()) for f in ("client.py", "protocol.py"))
    assert lines < 700, lines


def test_console_routes_engine_commands():
    out = subprocess.run(
        [sys.executable, "-m", "backend.console", "--version"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0 and "0." in out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-m", "backend.console", "jobs", "--server", "tcp://127.0.0.1:9",
                          "--timeout", "0.3"], capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert out.returncode == 2 and out.stderr.strip().startswith("pla4d: error: TIMEOUT")


def test_device_slots(monkeypatch):
    from backend.server import resolve_devices

    assert resolve_devices("cpu") == ["cpu"]
    assert resolve_devices("cuda,cuda:3") == ["cuda:0", "cuda:3"]
    assert resolve_devices(" cpu , cpu ") == ["cpu", "cpu"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert resolve_devices("auto") == ["cuda:0", "cuda:1"]  # one worker per visible GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert resolve_devices("auto") == ["cpu"]
    for bad in ("", "gpu", "cuda:x", "auto,cpu"):
        with pytest.raises(ValueError):
            resolve_devices(bad)
