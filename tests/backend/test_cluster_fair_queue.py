"""Fair queueing across clients (backend/scheduler.py; the rule in docs/protocol.md), for any executor."""

from __future__ import annotations

import time

from backend_helpers import long_settings

from backend.client import Client
from backend.scheduler import fair_order


def test_fair_order_takes_turns_by_client():
    queued = [(f"a{i}", "A") for i in range(4)] + [("b0", "B"), ("c0", "C"), ("b1", "B")]
    # Nothing running: one job per client per round, by submit order within a round.
    assert fair_order(queued, {}) == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]
    # A client with a job running starts one round later.
    assert fair_order(queued, {"A": 1}) == ["b0", "c0", "a0", "b1", "a1", "a2", "a3"]
    assert fair_order(queued, {"A": 1, "B": 2}) == ["c0", "a0", "a1", "b0", "a2", "b1", "a3"]
    assert fair_order([], {"A": 3}) == []


def test_positions_follow_the_fair_order(backend_factory):
    """One slot; client A's first job runs and two more queue, then client B submits one: B's job is next
    (position 1) and A's queued jobs move back, each told its new position."""
    backend = backend_factory("--rate", "0", "--device", "cpu")
    with Client(backend.endpoint, timeout=30) as a, Client(backend.endpoint, timeout=30) as b:
        running = a.submit("example", long_settings())
        deadline = time.monotonic() + 20
        while (event := a.next_event(10)) is not None and event.get("queue_position") != 0:
            assert time.monotonic() < deadline, "the first job did not start"
        assert event is not None
        a1 = a.submit("example", long_settings())
        a2 = a.submit("example", long_settings())
        assert (a1["queue_position"], a2["queue_position"]) == (1, 2)
        b0 = b.submit("example", long_settings())
        assert b0["queue_position"] == 1
        moves = {}
        deadline = time.monotonic() + 20
        while len(moves) < 2:
            event = a.next_event(10)
            assert event is not None and time.monotonic() < deadline, moves
            if event["event"] == "queue":
                moves[event["job_id"]] = event["queue_position"]
        assert moves == {a1["job_id"]: 2, a2["job_id"]: 3}
        listing = {j["job_id"]: j["queue_position"] for j in a.list(state="queued")}
        assert listing == {b0["job_id"]: 1, a1["job_id"]: 2, a2["job_id"]: 3}
        for job in (b0, a2, a1, running):
            a.cancel(job["job_id"])
