"""Issue 18, the limits: upload space per client (and its expiry across restarts), stale subscribers, fetch data a
client never reads, and the bytes a frames zip unpacks to; real backend processes on 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile
import zlib

import pytest
import zmq
from backend_helpers import long_settings

from backend.client import BackendError, Client
from backend.protocol import decode, encode

MIB = 1 << 20


def _open(c: Client, name: str = "a.png", size: int = MIB, sha: str = "0" * 64) -> str:
    return c.request("upload_open", {"name": name, "size": size, "sha256": sha})["upload_id"]


def _chunk(c: Client, uid: str, offset: int, data: bytes) -> dict:
    return c.request("upload_chunk", {"upload_id": uid, "offset": offset, "crc32": zlib.crc32(data)}, [data])


def _code(call) -> str | None:
    try:
        call()
    except BackendError as exc:
        return exc.code
    return None


def _png(size: int = 16) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGBA", (size, size), (255, 0, 0, 255)).save(out, "PNG")
    return out.getvalue()


# ---------------------------------------------------------------- 3 (and 11): upload space per client
def test_one_client_cannot_take_everyones_upload_space(backend_factory, tmp_path):
    backend = backend_factory("--max-upload-mb", "1", "--rate", "0")
    with Client(backend.endpoint, timeout=10) as hog, Client(backend.endpoint, timeout=10) as other:
        limits = hog.hello()["limits"]
        assert limits["max_open_uploads_per_client"] == 16 and limits["max_open_uploads"] == 64
        assert limits["upload_space_per_client_bytes"] == 2 * MIB and limits["upload_space_bytes"] == 4 * MIB
        empties, codes = [], []
        for _ in range(64):  # 64 empty uploads from one client
            try:
                empties.append(_open(hog))
            except BackendError as exc:
                codes.append(exc.code)
        assert len(empties) == 16 and set(codes) == {"QUEUE_FULL"}, (len(empties), set(codes))
        assert _open(other)  # another client still opens uploads

    with Client(backend.endpoint, timeout=10) as hog, Client(backend.endpoint, timeout=10) as other:
        declared = [_open(hog) for _ in range(4)]  # 4 uploads of the largest declared size, nearly empty
        for uid in declared:
            assert _chunk(hog, uid, 0, os.urandom(4700))["received"] == 4700
        blob = tmp_path / "blob.bin"
        blob.write_bytes(os.urandom(MIB))
        assert other.upload(blob)  # a whole upload of the largest size from another client goes through

        # Charged as bytes arrive: one client holds at most 2 x --max-upload-mb of received bytes.
    with Client(backend.endpoint, timeout=10) as filler:
        data = os.urandom(MIB)
        full = [_open(filler, sha=hashlib.sha256(data).hexdigest()) for _ in range(2)]
        for uid in full:
            for offset in range(0, MIB, MIB // 4):
                _chunk(filler, uid, offset, data[offset : offset + MIB // 4])
        third = _open(filler)
        assert _code(lambda: _chunk(filler, third, 0, b"x" * 4096)) == "TOO_LARGE"

    # Expiry survives a restart: the ages come from the files, not from when the server started.
    backend.stop()
    uploads = backend.data_dir / "uploads"
    two_hours_ago = time.time() - 7200
    for uid in declared:
        for path in (uploads / f"{uid}.json", uploads / f"{uid}.part"):
            os.utime(path, (two_hours_ago, two_hours_ago))
    ten_minutes_ago = time.time() - 600
    for uid in empties:  # never sent a byte: their short lease is over
        os.utime(uploads / f"{uid}.json", (ten_minutes_ago, ten_minutes_ago))
        os.utime(uploads / f"{uid}.part", (ten_minutes_ago, ten_minutes_ago))
    backend.start()
    with Client(backend.endpoint, timeout=10) as c:
        for uid in declared + empties:
            assert _code(lambda u=uid: c.request("upload_open", {"upload_id": u})) == "NOT_FOUND", uid
        assert c.request("upload_open", {"upload_id": full[0]})["received"] == MIB  # a recent one stays
    left = {p.stem for p in uploads.iterdir()}
    assert not left & set(declared + empties), "expired uploads leave nothing on disk"
    assert (uploads / f"{full[0]}.json").stat().st_mode & 0o777 == 0o600


def test_unpacked_frames_count_against_the_clients_space(backend_factory, tmp_path):
    backend = backend_factory("--max-upload-mb", "1", "--rate", "0")
    bomb = tmp_path / "frames.zip"  # 2 valid PNG headers, each followed by 1.5 MiB of zeros: ~10 KB zipped
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(2):
            archive.writestr(f"{i:03d}.png", _png() + bytes(3 * MIB // 2))
    assert bomb.stat().st_size < 64 * 1024
    mesh = tmp_path / "mesh.glb"
    mesh.write_bytes(b"glTF" + bytes(64))
    with Client(backend.endpoint, timeout=10) as c:
        with pytest.raises(BackendError) as err:
            c.submit("video", {"preset": "draft"}, frames=bomb, mesh=mesh)
        assert err.value.code == "TOO_LARGE" and "unpacks to 3 MiB" in err.value.message, err.value
    assert not list((backend.data_dir / "jobs").iterdir()), "nothing was queued or extracted"


# ---------------------------------------------------------------- 4. stale subscribers
def test_subscribers_that_disconnected_do_not_block_new_ones(shared_backend):
    with Client(shared_backend.endpoint, timeout=30) as boss:
        job = boss.submit("example", long_settings())["job_id"]
        try:
            ctx = zmq.Context.instance()
            for i in range(300):  # subscribe, get the answer, disconnect
                sock = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(shared_backend.endpoint)
                sock.send_multipart(encode("subscribe", {"job_id": job}, i))
                assert sock.poll(10_000), "subscribe answered"
                env, _ = decode(sock.recv_multipart())
                assert env["type"] in ("reply", "error"), env
                sock.close()
            deadline = time.monotonic() + 10
            with Client(shared_backend.endpoint, timeout=10) as fresh:  # a reconnecting Blender
                while True:
                    try:
                        assert fresh.subscribe(job)["job_id"] == job
                        break
                    except BackendError as exc:
                        assert exc.code == "QUEUE_FULL" and time.monotonic() < deadline, exc
                        time.sleep(0.2)
        finally:
            boss.cancel(job)


# ---------------------------------------------------------------- 5. fetch data nobody reads
def test_a_client_that_never_reads_cannot_grow_server_memory(shared_backend, tmp_path):
    with Client(shared_backend.endpoint, timeout=30) as c:
        files = c.manifest(shared_backend.job_id, chunk_size=MIB)["files"]
    big = max(files, key=lambda f: f["size"])
    assert big["size"] > 100_000, big
    time.sleep(0.5)
    idle_kb = shared_backend.rss_kb()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1)  # this client's own queue stays tiny: what it does not read stays upstream
    sock.setsockopt(zmq.RCVBUF, 64 * 1024)
    sock.connect(shared_backend.endpoint)
    request = {"job_id": shared_backend.job_id, "file": big["name"], "chunk": 0, "count": 16, "chunk_size": MIB}
    asked = 300 * big["size"] * min(16, big["chunks"])
    for i in range(300):
        sock.send_multipart(encode("fetch", request, i))
    time.sleep(3)
    peak_kb = shared_backend.rss_kb()
    growth_mb = (peak_kb - idle_kb) / 1024
    print(f"\nunread fetches: {asked / MIB:.0f} MiB asked for; server RSS idle {idle_kb / 1024:.1f} MB, "
          f"with the reader stalled {peak_kb / 1024:.1f} MB (+{growth_mb:.1f})")  # fmt: skip
    assert growth_mb < 48, f"server memory grew {growth_mb:.0f} MB for a client that reads nothing"
    # Another client is served meanwhile.
    with Client(shared_backend.endpoint, timeout=30) as other:
        stats = other.fetch(shared_backend.job_id, tmp_path / "out", files=[big["name"]])
        got = tmp_path / "out" / big["name"]
        assert stats["files"] and hashlib.sha256(got.read_bytes()).hexdigest() == big["sha256"]
    sock.close()
    time.sleep(1.5)
    after_kb = shared_backend.rss_kb()
    print(f"after the stalled client left: {after_kb / 1024:.1f} MB")
    assert after_kb - idle_kb < 64 * 1024
