"""Bad input, authentication, rate limits and many clients against real backend processes (loopback only)."""

from __future__ import annotations

import random
import threading
import time

import msgpack
import pytest
import zmq
from backend_helpers import TINY, long_settings

from backend.client import BackendError, Client
from backend.protocol import MAX_MESSAGE_BYTES, REQUESTS, decode, encode

VALUES = [None, True, -1, 0, 2**40, 1.5, "", "x" * 70, "0" * 16, b"\x00\xff", [], [1, "a"], {}, {"a": {"b": []}}]
KEYS = ["job_id", "kind", "settings", "since", "file", "chunk", "count", "chunk_size", "upload_id", "offset", "crc32",
        "name", "size", "sha256", "state", "limit", "prompt", "uploads", "overrides", "preset"]  # fmt: skip


def _fuzz_message(rng: random.Random) -> list[bytes]:
    choice = rng.randrange(6)
    if choice == 0:  # random bytes, random frame counts
        return [rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randrange(1, 4))]
    if choice == 1:  # a valid envelope, truncated
        frame = encode(rng.choice(REQUESTS), {"job_id": "abc"}, 1)[0]
        return [frame[: rng.randrange(0, len(frame))]]
    if choice == 2:  # oversize envelope (below zmq.MAXMSGSIZE)
        return [msgpack.packb({"v": 1, "type": "hello", "id": 1, "body": {"pad": "x" * 300_000}})]
    if choice == 3:  # wrongly typed envelope fields
        env = {"v": rng.choice([1, 2, "1", None]), "type": rng.choice(VALUES + ["hello"]), "id": rng.choice(VALUES),
               "body": rng.choice(VALUES)}  # fmt: skip
        return [msgpack.packb(env, use_bin_type=True)]
    body = {rng.choice(KEYS): rng.choice(VALUES) for _ in range(rng.randrange(0, 5))}
    if body.get("kind") in ("example", "lift"):
        body["kind"] = "bogus"
    type_ = rng.choice(REQUESTS) if choice == 4 else rng.choice(["", "x" * 500, "__init__", "_handle", "reply"])
    raw = [rng.randbytes(rng.randrange(0, 64))] if rng.random() < 0.2 else []
    return [bytes(f) for f in encode(type_, body, rng.randrange(1 << 30), raw)]


def test_fuzz_10000_bad_messages(shared_backend):
    rng = random.Random(1234)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(shared_backend.endpoint)
    answered = 0

    def drain(expected: int, timeout: float = 20) -> int:
        got = 0
        deadline = time.monotonic() + timeout
        while got < expected and time.monotonic() < deadline:
            if sock.poll(200):
                env, _ = decode(sock.recv_multipart())
                got += env["type"] in ("reply", "error")
        return got

    sent = 0
    rss_start = None
    for batch in range(20):
        for _ in range(500):
            sock.send_multipart(_fuzz_message(rng))
        sent += 500
        answered += drain(500)
        if batch == 1:
            rss_start = shared_backend.rss_kb()
    assert sent == 10_000
    assert answered == sent, "every message gets exactly one typed reply"
    # Messages over zmq.MAXMSGSIZE: ZeroMQ drops that peer's connection; everyone else carries on.
    big = ctx.socket(zmq.DEALER)
    big.setsockopt(zmq.LINGER, 0)
    big.connect(shared_backend.endpoint)
    for _ in range(3):
        big.send_multipart([b"x" * (MAX_MESSAGE_BYTES + 1024)])
    big.close()
    sock.close()
    assert shared_backend.proc.poll() is None
    growth_mb = (shared_backend.rss_kb() - rss_start) / 1024
    assert growth_mb < 40, f"server memory grew {growth_mb:.1f} MB during the fuzz run"
    with Client(shared_backend.endpoint, timeout=10) as c:  # well-formed requests are still answered right
        assert c.hello()["protocol"] == 1
        assert c.status(shared_backend.job_id)["state"] == "done"
        assert c.manifest(shared_backend.job_id)["files"]


@pytest.fixture
def keyed(backend_factory, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("correct horse battery staple 1234\n")
    secret.chmod(0o600)  # the server refuses a secret others can read
    return backend_factory("--secret-file", str(secret), "--rate", "40", "--burst", "40"), secret


def test_keyed_server_refuses_unauthenticated(keyed):
    backend, secret = keyed
    for key in (None, b"the wrong secret, long enough"):
        with Client(backend.endpoint, secret=key, timeout=2) as c:
            # Nothing at all goes back to a peer that has not authenticated (docs/protocol.md, Security).
            with pytest.raises(BackendError) as err:
                c.hello()
            assert err.value.code == "TIMEOUT"
            with pytest.raises(BackendError):  # dropped again
                c.list()
            assert not c.sock.poll(200), "an unauthenticated client got an answer"
    key = secret.read_text().strip().encode()
    with Client(backend.endpoint, secret=key, timeout=5) as c:
        assert c.hello()["auth"]["hmac"] is True
        # A captured signed message replayed verbatim is refused.
        frames = encode("list", {}, 99, None, key)
        c.sock.send_multipart(frames)
        c.sock.send_multipart(frames)
        replies = [decode(c.sock.recv_multipart(), None) for _ in range(1 + (c.sock.poll(2000) > 0))]
        assert sum(env["type"] == "reply" for env, _ in replies) == 1
        # Per-client rate limit: a burst past the bucket gets RATE_LIMITED, then the client is served again.
        for _ in range(80):
            c.send("ping")
        codes = []
        while c.sock.poll(500):
            env, _ = decode(c.sock.recv_multipart(), key)
            codes.append(env["body"].get("code"))
        assert "RATE_LIMITED" in codes
        time.sleep(1.5)
        assert c.ping() < 1


def test_curve_keys(backend_factory, tmp_path):
    from backend.server import keygen

    public, secret = keygen(str(tmp_path / "keys"), "server")
    backend = backend_factory("--curve-key", secret, name="curve")
    import zmq.auth

    server_key = zmq.auth.load_certificate(public)[0]
    with Client(backend.endpoint, curve_server_key=server_key, timeout=5) as c:
        assert c.hello()["auth"]["curve"] is True
    with Client(backend.endpoint, timeout=1.5) as c:  # plain-text client cannot talk to a CURVE server
        with pytest.raises(BackendError, match="TIMEOUT"):
            c.hello()

    # --curve-clients: only the client public keys in that folder get in.
    allowed_public, allowed_secret = keygen(str(tmp_path / "clients"), "artist")
    _, stranger_secret = keygen(str(tmp_path / "others"), "stranger")
    locked = backend_factory("--curve-key", secret, "--curve-clients", str(tmp_path / "clients"), name="locked")
    with Client(locked.endpoint, curve_server_key=server_key, curve_keypair=zmq.auth.load_certificate(allowed_secret),
                timeout=5) as c:  # fmt: skip
        assert c.hello()["auth"]["curve"] is True
    for keypair in (zmq.auth.load_certificate(stranger_secret), None):  # a known-unknown key; a fresh random one
        with Client(locked.endpoint, curve_server_key=server_key, curve_keypair=keypair, timeout=1.5) as c:
            with pytest.raises(BackendError, match="TIMEOUT"):
                c.hello()


def _clients_run(backend, n_clients: int, n_jobs: int) -> None:
    with Client(backend.endpoint, timeout=60) as boss:
        blocker = boss.submit("example", long_settings())
        for event in boss.follow(blocker["job_id"], timeout=30):  # running (position 0) before the others submit
            if event.get("queue_position") == 0:
                break
        accepted = {}
        errors = []
        results: dict[int, list] = {}
        lock = threading.Lock()

        def client_main(i: int) -> None:
            try:
                with Client(backend.endpoint, timeout=120) as c:
                    assert c.hello()["protocol"] == 1
                    if i < n_jobs:
                        with lock:  # submissions in a known order
                            job = c.submit("example", TINY)
                            accepted[i] = job["queue_position"]
                        events = list(c.follow(job["job_id"], timeout=180))
                        results[i] = events
                        stats = c.fetch(
                            job["job_id"], backend.data_dir.parent / f"client{i}", files=["focal/camera.json"]
                        )
                        assert stats["files"]
                    else:
                        assert isinstance(c.list(), list)
                        c.subscribe(blocker["job_id"], 0)
                        assert c.next_event(30)["event"] == "accepted"
            except Exception as exc:  # pragma: no cover - reported below
                errors.append((i, repr(exc)))

        threads = [threading.Thread(target=client_main, args=(i,)) for i in range(n_clients)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(accepted) < n_jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(accepted.values()) == list(range(1, n_jobs + 1))
        boss.cancel(blocker["job_id"])
        for t in threads:
            t.join(300)
        assert not errors, errors
    for i, events in results.items():
        names = [e["event"] for e in events]
        assert names[0] == "accepted" and names[-1] == "done", names
        positions = [e["queue_position"] for e in events if e["event"] in ("accepted", "queue")]
        assert positions == sorted(positions, reverse=True) and positions[-1] == 0 and positions[0] == accepted[i]
        assert len(positions) == accepted[i] + 1  # one announcement per step forward, none lost
        seqs = [e["seq"] for e in events if e["seq"] is not None]
        assert seqs == list(range(1, len(seqs) + 1)), "every stored event reached its client, in order"


def test_20_clients_at_once_small(backend_factory):
    _clients_run(backend_factory("--rate", "0"), n_clients=20, n_jobs=3)


@pytest.mark.slow
def test_20_clients_each_submitting(backend_factory):
    _clients_run(backend_factory("--rate", "0"), n_clients=20, n_jobs=20)
