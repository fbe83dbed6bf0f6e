"""The durable job store: one SQLite database (WAL) in the data dir; result files live beside it."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    request TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error_code TEXT,
    error_message TEXT,
    stage TEXT,
    manifest TEXT,
    summary TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (job_id, seq)
);
"""
COLUMNS = (
    "id",
    "kind",
    "state",
    "created",
    "started",
    "finished",
    "request",
    "attempts",
    "error_code",
    "error_message",
    "stage",
    "manifest",
    "summary",
    "last_seq",
)


class JobStore:
    def __init__(self, path: str | Path):
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def create(self, kind: str, request: dict[str, Any]) -> dict[str, Any]:
        job_id = uuid.uuid4().hex[:16]
        self.db.execute(
            "INSERT INTO jobs (id, kind, state, created, request) VALUES (?, ?, 'queued', ?, ?)",
            (job_id, kind, time.time(), json.dumps(request)),
        )
        return self.get(job_id)

    def get(self, job_id: str) -> dict[str, Any] | None:
        row = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else self._row(row)

    def list(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(COLUMNS)} FROM jobs"
        args: tuple[Any, ...] = ()
        if state:
            sql += " WHERE state = ?"
            args = (state,)
        sql += " ORDER BY created DESC LIMIT ?"
        return [self._row(r) for r in self.db.execute(sql, (*args, limit))]

    def queued_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created, rowid")]

    def update(self, job_id: str, **fields: Any) -> None:
        for name in ("manifest", "summary"):
            if name in fields and fields[name] is not None:
                fields[name] = json.dumps(fields[name])
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))

    def delete(self, job_id: str) -> None:
        self.db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
        self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def add_event(self, job_id: str, event: dict[str, Any]) -> int:
        """Store an event (preview arrays are never stored) and return its sequence number."""
        row = self.db.execute("UPDATE jobs SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq", (job_id,))
        seq = row.fetchone()[0]
        self.db.execute(
            "INSERT INTO events (job_id, seq, body) VALUES (?, ?, ?)",
            (job_id, seq, msgpack.packb(event, use_bin_type=True)),
        )
        return seq

    def events_since(self, job_id: str, since: int, limit: int = 10_000) -> list[tuple[int, dict[str, Any]]]:
        rows = self.db.execute(
            "SELECT seq, body FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?", (job_id, since, limit)
        )
        return [(seq, msgpack.unpackb(body, raw=False)) for seq, body in rows]

    @staticmethod
    def _row(row: tuple[Any, ...]) -> dict[str, Any]:
        job = dict(zip(COLUMNS, row, strict=True))
        job["request"] = json.loads(job["request"])
        for name in ("manifest", "summary"):
            job[name] = json.loads(job[name]) if job[name] else None
        return job
