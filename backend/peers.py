"""What the transport knows about its peers beyond one message: which signatures it has seen (kept on disk, so a
replay is refused across restarts too) and which connections are gone (ZeroMQ's ROUTER has no disconnect
notification; a socket monitor reports each connection's file descriptor, which each message also carries)."""

from __future__ import annotations

import sqlite3
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from backend.protocol import REPLAY_WINDOW_S

SEEN_TTL_S = 2 * REPLAY_WINDOW_S + 60  # a MAC older than this carries a timestamp the window refuses anyway


class SeenMacs:
    """MACs of accepted signed messages, in SQLite (WAL; a ``kill -9`` loses nothing the OS was handed), pruned
    once they are older than any timestamp the replay window accepts. ``path`` None: in memory only."""

    def __init__(self, path: str | Path | None):
        self.db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS seen (mac BLOB PRIMARY KEY, expires REAL NOT NULL)")
        self.prune()

    def add(self, mac: bytes) -> bool:
        """Record ``mac``; False when it was seen before (a replay)."""
        try:
            self.db.execute("INSERT INTO seen (mac, expires) VALUES (?, ?)", (mac, time.time() + SEEN_TTL_S))
        except sqlite3.IntegrityError:
            return False
        return True

    def prune(self) -> None:
        self.db.execute("DELETE FROM seen WHERE expires < ?", (time.time(),))

    def close(self) -> None:
        self.db.close()


class PeerWatch:
    """Tells which ROUTER identities have disconnected.

    A message's source file descriptor (``zmq.SRCFD``) ties its identity to a connection; the monitor's
    ``DISCONNECTED`` event names that descriptor. Monitor events are drained before a new identity is recorded,
    so a descriptor reused by a new connection is never confused with the one that closed before it."""

    def __init__(self, router: zmq.Socket, on_gone: Callable[[bytes], None]):
        self.monitor = router.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self.on_gone = on_gone
        self.fd_of: dict[bytes, int] = {}
        self.idents: dict[int, set[bytes]] = {}
        self.open_fds: set[int] = set()

    def note(self, ident: bytes, frame: Any) -> None:
        if ident in self.fd_of:
            return
        try:
            fd = frame.get(zmq.SRCFD)
        except (zmq.ZMQError, AttributeError):
            return
        if fd < 0:  # not a tcp/ipc connection: nothing to watch
            return
        self.drain()
        if fd not in self.open_fds:  # it closed before we read its message
            self.on_gone(ident)
            return
        self.fd_of[ident] = fd
        self.idents.setdefault(fd, set()).add(ident)

    def drain(self) -> None:
        while True:
            try:
                frames = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event, fd = struct.unpack("=hi", frames[0][:6])
            if event == zmq.EVENT_ACCEPTED:
                self.open_fds.add(fd)
            elif event == zmq.EVENT_DISCONNECTED:
                self.open_fds.discard(fd)
                for ident in self.idents.pop(fd, ()):
                    self.fd_of.pop(ident, None)
                    self.on_gone(ident)

    def close(self) -> None:
        self.monitor.close(linger=0)
