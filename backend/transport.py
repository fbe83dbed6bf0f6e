"""The wire side of the backend: one ROUTER socket, envelopes, authentication and limits, dispatch to handlers.

A request reaches a handler only once it is decoded, authenticated (HMAC and/or CurveZMQ), not a replay and within
its client's rate; a handler raises :class:`ProtocolError` for a typed error reply. Nothing here knows about jobs.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import zmq
import zmq.auth

from backend.protocol import ERROR, MAX_MESSAGE_BYTES, REPLAY_WINDOW_S, REPLY, Code, ProtocolError, decode, encode

# A request handler: (client identity, body, raw frames, request id) -> reply body, or None when it replied itself.
Handler = Callable[[bytes, dict[str, Any], list[Any], Any], "dict[str, Any] | None"]
RECEIVE_BATCH = 256  # requests handled per loop turn before the loop looks at its other sockets again
AUTH_NOTICE_S = 5.0  # one unsigned AUTH_FAILED per unauthenticated client this often
HOUSEKEEPING_S = 5.0


def loopback(endpoint: str) -> bool:
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = endpoint.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


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
    ):
        if not loopback(bind) and not (secret or curve_secret_file) and not insecure:
            raise ValueError(
                f"refusing to bind {bind} without authentication: give --secret-file and/or --curve-key "
                "(or --insecure on a trusted network)"
            )
        self.key = secret
        self.rate, self.burst = rate, burst
        self.auth = None
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.SNDHWM, 10_000)
        self.router.setsockopt(zmq.RCVHWM, 10_000)
        if curve_secret_file:
            public, secret_key = zmq.auth.load_certificate(curve_secret_file)
            if secret_key is None:
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
        self.buckets: dict[bytes, list[float]] = {}  # client -> [tokens, last refill]
        self.auth_notified: dict[bytes, float] = {}
        self.seen_macs: dict[bytes, float] = {}  # MAC -> when it leaves the replay window
        self.stats = {"requests": 0, "errors": 0}
        self.running = True

    @property
    def curve(self) -> bool:
        return bool(self.router.curve_server)

    def route(self, handlers: dict[str, Handler]) -> None:
        self.handlers.update(handlers)

    # ------------------------------------------------------------------ loop
    def serve_forever(self, side: Sequence[tuple[zmq.Socket, Callable[[], None]]], tick: Callable[[], None]) -> None:
        """Serve requests until :attr:`running` is False. ``side``: other sockets to wait on, each with what to
        call when it is readable (called before the requests of that turn); ``tick`` runs every turn (at least
        every 100 ms)."""
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        for sock, _ in side:
            poller.register(sock, zmq.POLLIN)
        last_housekeeping = 0.0
        while self.running:
            ready = dict(poller.poll(100))
            for sock, callback in side:
                if sock in ready:
                    callback()
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
        now = time.time()
        if len(self.buckets) > 10_000:
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < 60}
        self.auth_notified = {k: v for k, v in self.auth_notified.items() if now - v < AUTH_NOTICE_S}
        self.seen_macs = {k: v for k, v in self.seen_macs.items() if v > now}

    # ------------------------------------------------------------------ sending
    def send(self, ident: bytes, type_: str, body: dict[str, Any], id_: Any = None, raw: list[Any] | None = None):
        try:
            self.router.send_multipart([ident, *encode(type_, body, id_, raw, self.key)], copy=False, flags=zmq.NOBLOCK)
        except zmq.ZMQError:  # peer gone or its queue full: drop (clients re-request; events replay by seq)
            pass

    def error(self, ident: bytes, code: str, message: str, id_: Any = None, signed: bool = True) -> None:
        self.stats["errors"] += 1
        body = {"code": code, "message": message}
        try:
            frames = encode(ERROR, body, id_, None, self.key if signed else None)
            self.router.send_multipart([ident, *frames], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    # ------------------------------------------------------------------ receiving
    def _rate_ok(self, ident: bytes) -> bool:
        if self.rate <= 0:
            return True
        now = time.time()
        bucket = self.buckets.get(ident)
        if bucket is None:
            bucket = self.buckets[ident] = [self.burst, now]
        bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if bucket[0] < 1:
            return False
        bucket[0] -= 1
        return True

    def handle(self, frames: list[Any]) -> None:
        self.stats["requests"] += 1
        ident = frames[0].bytes
        if not self._rate_ok(ident):
            bucket = self.buckets[ident]
            if bucket[0] > -1:  # one RATE_LIMITED reply per exhausted token, then silence
                bucket[0] -= 1
                self.error(ident, Code.RATE_LIMITED, f"more than {self.rate:g} messages per second")
            return
        env = None
        try:
            if self.key and len(frames) > 1 and len(frames[-1]) == 32:
                mac = frames[-1].bytes
                if mac in self.seen_macs:
                    raise ProtocolError(Code.AUTH_FAILED, "replayed message")
            env, raw = decode(frames[1:], self.key)
            if self.key:
                self.seen_macs[frames[-1].bytes] = time.time() + 2 * REPLAY_WINDOW_S
            handler = self.handlers.get(env["type"])
            if handler is None:
                raise ProtocolError(Code.UNKNOWN_TYPE, f"unknown request type {env['type'][:64]!r}")
            result = handler(ident, env["body"], raw, env["id"])
            if result is not None:
                self.send(ident, REPLY, result, env["id"])
        except ProtocolError as exc:
            if exc.code == Code.AUTH_FAILED:
                # Unauthenticated: one unsigned refusal per client every few seconds, otherwise dropped.
                if ident not in self.auth_notified:
                    self.auth_notified[ident] = time.time()
                    self.error(ident, exc.code, "authentication required", None, signed=False)
                return
            self.error(ident, exc.code, exc.message, env["id"] if env else None)
        except Exception as exc:  # a bug must not take the server down
            traceback.print_exc()
            self.error(ident, Code.INTERNAL, f"internal error: {type(exc).__name__}", env["id"] if env else None)

    def close(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        self.router.close()
