"""The job queue: which job runs next, queue positions, job events to subscribers, recovery after a restart.

Jobs run on the executor's free slots (``backend/executor.py``) in a fair order across clients (:func:`fair_order`,
the rule in docs/protocol.md); the scheduler talks to nothing else about where or how a job runs. The SQLite store
is the truth: a job's state and every stored event live there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.executor import Executor
from backend.protocol import EVENT, TERMINAL_EVENTS, Code
from backend.store import JobStore

# send(ident, message type, body, request id, raw frames): the transport's, to one client.
Send = Callable[[bytes, str, dict[str, Any], Any, list[Any] | None], None]
MAX_SUBSCRIBERS = 256  # per job


def fair_order(queued: list[tuple[str, str]], running_per_client: dict[str, int]) -> list[str]:
    """The order queued jobs start in: round-robin over clients.

    ``queued``: ``(job id, client)`` oldest first; ``running_per_client``: how many jobs each client has running.
    A client's n-th queued job (from 0) is in round ``running + n``; jobs start by round, and within a round in the
    order they were submitted. So a client with twenty jobs queued gets one start per round, and a client who submits
    one job later goes before that client's second job; a client with jobs running waits for those who have none."""
    count: dict[str, int] = {}
    keyed = []
    for index, (job_id, client) in enumerate(queued):
        n = count.get(client, 0)
        count[client] = n + 1
        keyed.append((running_per_client.get(client, 0) + n, index, job_id))
    return [job_id for _, _, job_id in sorted(keyed)]


class Scheduler:
    def __init__(self, store: JobStore, jobs_dir: Path, executor: Executor, send: Send, max_attempts: int):
        self.store = store
        self.jobs_dir = Path(jobs_dir)
        self.executor = executor
        self.send = send
        self.max_attempts = max_attempts
        self.subs: dict[str, set[bytes]] = {}  # job id -> client identities that get its events
        self.previews: dict[str, tuple[dict[str, Any], list[Any]]] = {}  # job id -> its latest preview
        self.positions: dict[str, int] = {}  # job id -> queue position (0: running)
        self.clients: dict[str, str] = {}  # job id -> the client that submitted it (for the fair order)
        executor.attach(self)

    # ------------------------------------------------------------------ events
    def event(self, job_id: str, event: dict[str, Any], raw: list[Any] | None = None, store: bool = True) -> int | None:
        """Store the event (previews are live only: ``store=False``) and send it to the job's subscribers."""
        seq = self.store.add_event(job_id, event) if store else None
        body = {"job_id": job_id, "seq": seq, **event}
        for ident in list(self.subs.get(job_id, ())):
            self.send(ident, EVENT, body, None, raw)
        return seq

    def subscribe(self, job_id: str, ident: bytes, limit: bool = True) -> bool:
        """Add a subscriber; False when the job has too many (``limit``; its submitter is always added)."""
        subs = self.subs.setdefault(job_id, set())
        if limit and len(subs) >= MAX_SUBSCRIBERS:
            return False
        subs.add(ident)
        return True

    def unsubscribe(self, job_id: str, ident: bytes) -> None:
        self.subs.get(job_id, set()).discard(ident)

    def peer_gone(self, ident: bytes) -> None:
        """A client's connection closed: its subscriptions go (a reconnecting client is a new identity and
        subscribes again)."""
        for subs in self.subs.values():
            subs.discard(ident)

    def finish(self, job_id: str, state: str, info: dict[str, Any]) -> None:
        fields: dict[str, Any] = {"state": state, "finished": time.time()}
        if state == "failed":
            fields.update(error_code=info.get("code", Code.INTERNAL), error_message=info.get("message", ""))
        if state == "done":
            fields.update(manifest=info.get("manifest"), summary=info.get("summary"))
        self.store.update(job_id, **fields)
        event = {"failed": "failed", "done": "done", "cancelled": "cancelled"}[state]
        self.event(job_id, {"event": event, **info})
        self.subs.pop(job_id, None)
        self.previews.pop(job_id, None)
        self.positions.pop(job_id, None)
        self.clients.pop(job_id, None)

    def forget(self, job_id: str) -> None:
        """A deleted job: no subscribers are kept for it."""
        self.subs.pop(job_id, None)

    # ------------------------------------------------------------------ queue
    def client_of(self, job_id: str) -> str:
        """Who submitted a job (its request's ``client``; jobs from before that was kept share one name)."""
        if job_id not in self.clients:
            job = self.store.get(job_id)
            self.clients[job_id] = str((job or {}).get("request", {}).get("client", ""))
        return self.clients[job_id]

    def queue_order(self) -> list[str]:
        """The queued jobs in the order they will start (:func:`fair_order`)."""
        running: dict[str, int] = {}
        for job_id in self.executor.running():
            client = self.client_of(job_id)
            running[client] = running.get(client, 0) + 1
        return fair_order([(job_id, self.client_of(job_id)) for job_id in self.store.queued_ids()], running)

    def update_positions(self, announce: bool = True) -> None:
        new = {job_id: i + 1 for i, job_id in enumerate(self.queue_order())}
        for job_id in self.executor.running():
            new[job_id] = 0
        for job_id, pos in new.items():
            if announce and self.positions.get(job_id) != pos and job_id in self.positions:
                self.event(job_id, {"event": "queue", "queue_position": pos})
        self.positions = new

    def schedule(self) -> None:
        """Start queued jobs, in the fair order, on the executor's free slots."""
        for slot in self.executor.free_slots():
            queued = self.queue_order()
            if not queued:
                return
            job = self.store.get(queued[0])
            self.executor.start(slot, job["id"])
            self.store.update(job["id"], state="running", started=time.time(), attempts=job["attempts"] + 1)
            self.update_positions()

    def cancel(self, job: dict[str, Any]) -> str:
        """Cancel a queued or running job; the state the client is told."""
        if job["state"] == "queued":
            self.finish(job["id"], "cancelled", {"reason": "cancelled while queued"})
            self.update_positions()
            return "cancelled"
        if job["state"] == "running":
            (self.jobs_dir / job["id"] / "cancel").write_text("cancel\n")
            self.executor.cancel(job["id"])
            return "cancelling"
        return job["state"]

    def recover(self) -> None:
        """After a crash or kill -9: running jobs the executor cannot reach are re-queued (their cached stages
        kept) or, after ``max_attempts`` runs, failed."""
        running = self.store.list(state="running", limit=1_000_000)
        adopted = self.executor.recover([job["id"] for job in running])
        requeued = []
        for job in running:
            if job["id"] in adopted:
                continue
            if (self.jobs_dir / job["id"] / "cancel").exists():
                self.finish(job["id"], "cancelled", {"reason": "cancelled before the backend stopped"})
            elif job["attempts"] < self.max_attempts:
                self.store.update(job["id"], state="queued", stage=None)
                requeued.append(job["id"])
            else:
                self.finish(
                    job["id"], "failed",
                    {"code": Code.INTERRUPTED,
                     "message": f"the backend stopped while this job ran ({job['attempts']} attempts); not retried"},
                )  # fmt: skip
        self.update_positions(announce=False)
        for job_id in requeued:
            reason = "the backend restarted while this job ran; it runs again (cached stages are kept)"
            self.event(job_id, {"event": "queue", "queue_position": self.positions[job_id], "reason": reason})

    # ------------------------------------------------------------------ what the executor reports (JobSink)
    def job_event(self, job_id: str, event: dict[str, Any], raw: list[Any]) -> None:
        name = event.get("event")
        if name in TERMINAL_EVENTS:
            info = {k: v for k, v in event.items() if k != "event"}
            self.finish(job_id, name, info)
            return
        if name == "stage_started":
            self.store.update(job_id, stage=event.get("stage"))
        if name == "preview":
            body = {"job_id": job_id, "seq": None, **event}
            self.previews[job_id] = (body, [bytes(r) for r in raw])
            self.event(job_id, event, raw, store=False)
            return
        self.event(job_id, event)

    def job_ended(self, job_id: str, reason: str, retry: bool = False) -> None:
        job = self.store.get(job_id)
        if job is not None and job["state"] == "running":
            if (self.jobs_dir / job_id / "cancel").exists():
                self.finish(job_id, "cancelled", {"reason": "worker stopped on cancel"})
            elif retry and job["attempts"] < self.max_attempts:
                # Lost with its machine: it runs again on another (cached stages kept where they are shared).
                self.store.update(job_id, state="queued", stage=None)
                self.positions.pop(job_id, None)  # its own position comes with the reason, below
                self.update_positions()
                why = f"{reason}; it runs again (attempt {job['attempts'] + 1} of {self.max_attempts})"
                self.event(job_id, {"event": "queue", "queue_position": self.positions[job_id], "reason": why})
                return
            elif retry:
                message = f"{reason}; failed after {job['attempts']} attempts (--max-attempts {self.max_attempts})"
                self.finish(job_id, "failed", {"code": Code.WORKER_CRASHED, "message": message})
            else:
                self.finish(job_id, "failed", {"code": Code.WORKER_CRASHED, "message": reason})
        self.update_positions()
