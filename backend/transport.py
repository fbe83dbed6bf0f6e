"""The wire side of the backend: one ROUTER socket, envelopes, authentication and limits, dispatch to handlers.

A request reaches a handler only once it is decoded, authenticated (HMAC and/or CurveZMQ), not a replay and within
its client's rate; a handler raises :class:`ProtocolError` for a typed error reply. Nothing here knows about jobs.
"""

from __future__ import annotations

import ipaddress
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from backend.peers import PeerWatch, SeenMacs
from backend.protocol import (
    ERROR,
    MAC_SIZE,
    MAX_ENVELOPE_BYTES,
    MAX_MESSAGE_BYTES,
    REPLY,
    Code,
    ProtocolError,
    decode,
    encode,
    verify,
)

# A request handler: (client identity, body, raw frames, request id) -> reply body, or None when it replied itself.
Handler = Callable[[bytes, dict[str, Any], list[Any], Any], "dict[str, Any] | None"]
RECEIVE_BATCH = 256  # requests handled per loop turn before the loop looks at its other sockets again
HOUSEKEEPING_S = 5.0
RECEIVE_HWM = 64  # messages queued per peer before ZeroMQ stops reading its connection
# A keyed server's peers that have not yet sent one valid signed message: their messages are refused by size and
# rate before any MAC is computed, and get no answer at all.
UNAUTH_MAX_BYTES = MAX_ENVELOPE_BYTES + MAC_SIZE + 4096
UNAUTH_RATE, UNAUTH_BURST = 10.0, 20.0  # per peer
UNAUTH_TOTAL_RATE, UNAUTH_TOTAL_BURST = 200.0, 400.0  # all unauthenticated peers together
MAX_PEERS_TRACKED = 100_000


def endpoints(bind: str) -> list[str]:
    """The endpoints of a ``;``-separated bind list (ZeroMQ reads ``tcp://A;B`` as two addresses)."""
    scheme, sep, rest = bind.partition("://")
    parts = [p.strip() for p in rest.split(";")] if sep else [bind.strip()]
    return [p if "://" in p else f"{scheme}://{p}" for p in parts if p]


def _loopback_one(endpoint: str) -> bool:
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface or a host name: may be public
        return False


def loopback(bind: str) -> bool:
    """True when every endpoint of ``bind`` is on this machine only (127.0.0.0/8, ::1, localhost, ipc, inproc)."""
    parts = endpoints(bind)
    return bool(parts) and all(_loopback_one(p) for p in parts)


def _malloc_trim() -> Callable[[], Any]:
    """glibc's malloc_trim: hands freed heap memory back to the system (a flood of large messages leaves free
    blocks that glibc would otherwise keep); a no-op elsewhere."""
    try:
        import ctypes

        trim = ctypes.CDLL("libc.so.6").malloc_trim
        return lambda: trim(0)
    except (OSError, AttributeError):
        return lambda: None


def check_bind(bind: str, authenticated: bool, insecure: bool) -> bool:
    """Refuse (ValueError) a bind list with any endpoint off this machine unless the server authenticates or
    ``insecure`` says so; True when it will listen publicly without authentication (``--insecure``)."""
    public = [p for p in endpoints(bind) if not _loopback_one(p)] or ([] if endpoints(bind) else [bind])
    if public and not authenticated and not insecure:
        raise ValueError(
            f"refusing to bind {', '.join(public)} without authentication (every endpoint of a bind list must be "
            "127.0.0.1, ::1 or localhost): give --secret-file and/or --curve-key (or --insecure on a trusted network)"
        )
    return bool(public) and not authenticated


class Bucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst``."""

    __slots__ = ("tokens", "last")

    def __init__(self, burst: float):
        self.tokens, self.last = burst, time.monotonic()

    def take(self, rate: float, burst: float) -> bool:
        now = time.monotonic()
        self.tokens = min(burst, self.tokens + (now - self.last) * rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def get_field(
    body: dict[str, Any], name: str, types: Any, default: Any = ..., check: Any = None, allowed: str = ""
) -> Any:
    """A validated request field: BAD_REQUEST when missing, of the wrong type or failing ``check`` (the message
    then says what is ``allowed``, e.g. "an integer from 1 to 1000")."""
    if name not in body or body[name] is None:
        if default is ...:
            raise ProtocolError(Code.BAD_REQUEST, f"missing field {name!r}")
        return default
    value = body[name]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        raise ProtocolError(Code.BAD_REQUEST, f"field {name!r} has the wrong type ({type(value).__name__})")
    if check is not None and not check(value):
        raise ProtocolError(Code.BAD_REQUEST, f"field {name!r} must be {allowed or 'in range'} (got {_show(value)})")
    return value


def _tuple(types: Any) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def no_raw(raw: list[Any]) -> None:
    if raw:
        raise ProtocolError(Code.BAD_REQUEST, "this request takes no binary frames")


class Transport:
    def __init__(
        self,
        ctx: zmq.Context,
        bind: str,
        secret: bytes | None = None,
        curve_secret_file: str | None = None,
        curve_clients_dir: str | None = None,
        rate: float = 500.0,
        burst: float = 1000.0,
        insecure: bool = False,
        seen_path: str | Path | None = None,
    ):
        """``seen_path``: where the MACs of accepted signed messages are kept (SQLite), so that a replay is refused
        after a restart too; None keeps them in memory only."""
        self.insecure_public = check_bind(bind, bool(secret or curve_secret_file), insecure)
        self.key = secret
        self.rate, self.burst = rate, burst
        self.auth = None
        self.curve_users = bool(curve_clients_dir)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.SNDHWM, 10_000)
        self.router.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        self.gone_hooks: list[Callable[[bytes], None]] = []
        self.peers = PeerWatch(self.router, self._gone)
        self.seen = SeenMacs(seen_path) if secret else None
        if curve_secret_file:
            public, secret_key = zmq.auth.load_certificate(curve_secret_file)
            if secret_key is None:
                self.close()
                raise ValueError(f"{curve_secret_file} holds no secret key (use the .key_secret file)")
            if curve_clients_dir:
                from zmq.auth.thread import ThreadAuthenticator

                self.auth = ThreadAuthenticator(ctx)
                self.auth.start()
                self.auth.configure_curve(domain="*", location=str(curve_clients_dir))
            self.router.curve_secretkey = secret_key
            self.router.curve_publickey = public
            self.router.curve_server = True
        try:
            self.router.bind(bind)
        except zmq.ZMQError:
            self.close()
            raise
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.handlers: dict[str, Handler] = {}
        self.buckets: dict[bytes, Bucket] = {}  # client -> its rate bucket
        self.authed: set[bytes] = set()  # keyed server: peers that sent a valid, fresh, unreplayed signed message
        self.unauth_buckets: dict[bytes, Bucket] = {}
        self.unauth_total = Bucket(UNAUTH_TOTAL_BURST)
        self.users: dict[bytes, str] = {}  # peer -> its CurveZMQ public key (with --curve-clients)
        self.stats = {"requests": 0, "errors": 0, "dropped": 0}
        self.dropped_bytes = 0  # refused before authentication, since the last malloc_trim
        self.trim = _malloc_trim()
        self.poll_ms = 100
        self.running = True

    @property
    def curve(self) -> bool:
        return bool(self.router.curve_server)

    def route(self, handlers: dict[str, Handler]) -> None:
        self.handlers.update(handlers)

    def on_gone(self, hook: Callable[[bytes], None]) -> None:
        """Call ``hook(ident)`` when a peer's connection has closed (its subscriptions, queues ... can go)."""
        self.gone_hooks.append(hook)

    def client_id(self, ident: bytes) -> str:
        """Who a peer is, for per-client limits: its CurveZMQ public key when --curve-clients authenticates it,
        else the connection (a ROUTER identity; a shared HMAC secret does not tell clients apart)."""
        user = self.users.get(ident)
        return f"curve:{user}" if user else f"peer:{ident.hex()}"

    def _gone(self, ident: bytes) -> None:
        self.buckets.pop(ident, None)
        self.unauth_buckets.pop(ident, None)
        self.authed.discard(ident)
        self.users.pop(ident, None)
        for hook in self.gone_hooks:
            try:
                hook(ident)
            except Exception:  # one hook's bug must not keep the others from cleaning up
                traceback.print_exc()

    # ------------------------------------------------------------------ loop
    def serve_forever(self, side: Sequence[tuple[zmq.Socket, Callable[[], None]]], tick: Callable[[], None]) -> None:
        """Serve requests until :attr:`running` is False. ``side``: other sockets to wait on, each with what to
        call when it is readable (called before the requests of that turn); ``tick`` runs every turn (at least
        every :attr:`poll_ms`)."""
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.peers.monitor, zmq.POLLIN)
        for sock, _ in side:
            poller.register(sock, zmq.POLLIN)
        last_housekeeping = 0.0
        while self.running:
            ready = dict(poller.poll(self.poll_ms))
            for sock, callback in side:
                if sock in ready:
                    callback()
            self.peers.drain()
            if self.router not in ready and self.dropped_bytes:  # quiet again after refusing large messages
                self.dropped_bytes = 0
                self.trim()
            if self.router in ready:
                for _ in range(RECEIVE_BATCH):
                    try:
                        frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self.handle(frames)
            tick()
            now = time.monotonic()
            if now - last_housekeeping > HOUSEKEEPING_S:
                last_housekeeping = now
                self._housekeeping()

    def _housekeeping(self) -> None:
        now = time.monotonic()
        for table in (self.buckets, self.unauth_buckets):
            if len(table) > 10_000:
                for ident in [k for k, v in table.items() if now - v.last > 60]:
                    del table[ident]
        if len(self.authed) > MAX_PEERS_TRACKED:  # peers the monitor could not tie to a connection
            self.authed.clear()
        if self.seen is not None:
            self.seen.prune()

    # ------------------------------------------------------------------ sending
    def send(
        self, ident: bytes, type_: str, body: dict[str, Any], id_: Any = None, raw: list[Any] | None = None,
        track: bool = False,
    ) -> Any:  # fmt: skip
        """Send one message; with ``track``, a :class:`zmq.MessageTracker` that is done once ZeroMQ has handed the
        message to the kernel (None when it was dropped)."""
        try:
            return self.router.send_multipart([ident, *encode(type_, body, id_, raw, self.key)], copy=False,
                                              flags=zmq.NOBLOCK, track=track)  # fmt: skip
        except zmq.ZMQError:  # peer gone or its queue full: drop (clients re-request; events replay by seq)
            return None

    def error(self, ident: bytes, code: str, message: str, id_: Any = None) -> None:
        self.stats["errors"] += 1
        body = {"code": code, "message": message}
        try:
            self.router.send_multipart([ident, *encode(ERROR, body, id_, None, self.key)], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    # ------------------------------------------------------------------ receiving
    def _rate_ok(self, ident: bytes) -> bool:
        if self.rate <= 0:
            return True
        bucket = self.buckets.get(ident)
        if bucket is None:
            bucket = self.buckets[ident] = Bucket(self.burst)
        return bucket.take(self.rate, self.burst)

    def _admit_unauthenticated(self, ident: bytes, frames: list[Any]) -> bool:
        """Cheap checks on a keyed server's not-yet-authenticated peer, before any MAC is computed."""
        if sum(len(f) for f in frames[1:]) > UNAUTH_MAX_BYTES:
            return False
        bucket = self.unauth_buckets.get(ident)
        if bucket is None:
            bucket = self.unauth_buckets[ident] = Bucket(UNAUTH_BURST)
        return bucket.take(UNAUTH_RATE, UNAUTH_BURST) and self.unauth_total.take(UNAUTH_TOTAL_RATE,
                                                                                  UNAUTH_TOTAL_BURST)  # fmt: skip

    def _authenticate(self, ident: bytes, frames: list[Any]) -> tuple[dict[str, Any], list[Any]] | None:
        """A keyed server's message: (envelope, raw) when it is signed, fresh and not a replay. Otherwise None (the
        message is dropped without an answer) for a peer that has not authenticated, and a signed AUTH_FAILED for
        one that has (its clock may be off; a replay names no secret). Errors after the MAC are the client's."""
        try:
            body = verify([f.buffer for f in frames[1:]], self.key)
        except ProtocolError:
            return None
        known = ident in self.authed
        try:
            env, raw = decode(body, None, signed=True)
        except ProtocolError as exc:
            if exc.code == Code.AUTH_FAILED and not known:  # a stale timestamp from a stranger
                return None
            if exc.code != Code.AUTH_FAILED:
                self.authed.add(ident)
            raise
        if not self.seen.add(frames[-1].bytes):  # a replay: same MAC as an accepted message
            if known:
                raise ProtocolError(Code.AUTH_FAILED, "replayed message")
            return None
        self.authed.add(ident)
        return env, raw

    def _note_user(self, ident: bytes, frames: list[Any]) -> None:
        try:
            user = frames[1].get("User-Id")
        except (zmq.ZMQError, IndexError):  # no ZAP user on this message
            return
        if user:
            self.users[ident] = user

    def handle(self, frames: list[Any]) -> None:
        self.stats["requests"] += 1
        ident = frames[0].bytes
        if len(frames) > 1:
            self.peers.note(ident, frames[1])
        if self.key and ident not in self.authed and not self._admit_unauthenticated(ident, frames):
            self.stats["dropped"] += 1
            self.dropped_bytes += sum(len(f) for f in frames)
            return
        if (not self.key or ident in self.authed) and not self._rate_ok(ident):
            bucket = self.buckets[ident]
            if bucket.tokens > -1:  # one RATE_LIMITED reply per exhausted token, then silence
                bucket.tokens -= 1
                self.error(ident, Code.RATE_LIMITED, f"more than {self.rate:g} messages per second")
            return
        env = None
        try:
            if self.key:
                got = self._authenticate(ident, frames)
                if got is None:
                    self.stats["dropped"] += 1
                    return
                env, raw = got
            else:
                env, raw = decode(frames[1:], None)
            if self.curve_users and ident not in self.users:
                self._note_user(ident, frames)
            handler = self.handlers.get(env["type"])
            if handler is None:
                raise ProtocolError(Code.UNKNOWN_TYPE, f"unknown request type {env['type'][:64]!r}")
            result = handler(ident, env["body"], raw, env["id"])
            if result is not None:
                self.send(ident, REPLY, result, env["id"])
        except ProtocolError as exc:
            self.error(ident, exc.code, exc.message, env["id"] if env else None)
        except Exception as exc:  # a bug must not take the server down
            traceback.print_exc()
            self.error(ident, Code.INTERNAL, f"internal error: {type(exc).__name__}", env["id"] if env else None)

    def close(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        self.peers.close()
        self.router.close()
        if self.seen is not None:
            self.seen.close()
