"""One client connection end to end: ClientHello, route, connect, relay, one log line.

I/O. The routing decision is made from the raw ClientHello before any TLS code runs; a rejected
connection is closed without an alert or a handshake (SPEC.md §10.3). The snapshot is read once,
after the hello, and kept for the connection's life. Nothing raised here reaches the listener:
`handle` is the per-connection boundary.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import random
import re
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from gateway.dataplane.clienthello import MAX_HELLO_BYTES, ClientHelloError, ClientHelloParser
from gateway.dataplane.relay import (
    SPLICE_AVAILABLE,
    End,
    PipePool,
    PlainEnd,
    Transfer,
    relay,
    relay_ends,
)
from gateway.dataplane.tls import ContextRegistry, choose_certificate, subject_alt_names_match
from gateway.dataplane.tlsstream import TlsConnection, TlsError
from gateway.metrics import Metrics
from gateway.routing.snapshot import (
    Backend,
    BackendTLS,
    Endpoint,
    ListenerTable,
    Rejected,
    Snapshot,
)

log = logging.getLogger(__name__)
access_log = logging.getLogger("tlsgate.access")

#: Endpoints of one backend tried per connection before the client is closed.
CONNECT_ATTEMPTS = 3
#: Expected ways for a connection to fail: one log line, no traceback.
EXPECTED_ERRORS = (OSError, TlsError, trio.BrokenResourceError, trio.ClosedResourceError)


@attrs.frozen(kw_only=True)
class ProxyConfig:
    hello_timeout: float = 10.0
    connect_timeout: float = 5.0
    idle_timeout: float = 3600.0
    max_hello_bytes: int = MAX_HELLO_BYTES
    splice: bool = SPLICE_AVAILABLE
    #: Seed of the weighted backend choice; tests fix it so that weight checks are exact.
    seed: int | None = None


@attrs.define
class HelloWork:
    """What the ClientHello parsers were fed and what they examined, summed over connections:
    a hostile hello (1-byte records, sent slowly) can only cost work linear in what it sends."""

    fed: int = 0
    scanned: int = 0


@attrs.define
class Connection:
    """What one access-log line says about a connection."""

    peer: tuple[str, int]
    bind: tuple[str, int]
    started: float = attrs.field(factory=time.monotonic)
    sni: str | None = None
    gateway: str = "-"
    listener: str = "-"
    route: str = "-"
    backend: str = "-"
    endpoint: str = "-"
    outcome: str = "closed"
    detail: str = ""
    transfer: Transfer | None = None

    def fields(self) -> dict[str, object]:
        """The access-log fields, in order (ARCHITECTURE.md "Logging"; never key material)."""
        host, port = self.peer[:2]
        out: dict[str, object] = {
            "client": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "bind": f"{self.bind[0]}:{self.bind[1]}",
            "sni": self.sni or "-",
            "listener": f"{self.gateway}/{self.listener}",
            "route": self.route,
            "backend": self.backend,
            "endpoint": self.endpoint,
            "bytes_up": self.transfer.up if self.transfer else 0,
            "bytes_down": self.transfer.down if self.transfer else 0,
            "duration": round(time.monotonic() - self.started, 3),
            "outcome": self.outcome,
        }
        if self.detail:
            out["detail"] = self.detail
        return out

    @staticmethod
    def line(fields: dict[str, object]) -> str:
        """The text access-log line, logfmt style: a value that is not a plain token is written
        as a quoted string with JSON escapes, so whatever a client put in its SNI (CR, LF, NUL,
        quotes, `key=value`) the line stays one line and a value cannot fake another field."""
        texts = [str(value) for value in fields.values()]
        if all(texts) and _PLAIN_LOG_VALUE.fullmatch("".join(texts)):  # the usual line, at once
            return " ".join(f"{key}={text}" for key, text in zip(fields, texts, strict=True))
        return " ".join(
            f"{key}={_log_value(text)}" for key, text in zip(fields, texts, strict=True)
        )


#: A log value written as is: printable ASCII except space, `"`, `=` and backslash.
_PLAIN_LOG_VALUE = re.compile(r"[!#-<>-\[\]-~]+")


def _log_value(text: str) -> str:
    if _PLAIN_LOG_VALUE.fullmatch(text):
        return text
    # ensure_ascii escapes every control and non-ASCII character (U+2028 and NEL split lines
    # in some readers too); DEL is the one non-printable character JSON leaves alone.
    return json.dumps(text).replace("\x7f", "\\u007f")


class Proxy:
    """The data plane's per-process context: configuration, the snapshot source, endpoint
    round robin, the pipe pool, and the count of live connections."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        config: ProxyConfig,
        pool: PipePool | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._snapshot = snapshot
        self.metrics = metrics or Metrics()
        self.contexts = ContextRegistry()
        self.config = config
        self._rng = random.Random(config.seed)
        self.pool = pool if pool is not None else (PipePool() if config.splice else None)
        self._next: dict[str, int] = {}
        self.active = 0
        self.hello_work = HelloWork()
        self.idle = trio.Event()
        self.idle.set()

    async def handle(
        self, sock: socket.socket, peer: tuple[str, int], bind: tuple[str, int]
    ) -> None:
        """Serve one accepted connection; never raises (ARCHITECTURE.md "Errors")."""
        self._enter()
        conn = Connection(peer=peer, bind=bind)
        try:
            await self._serve(sock, conn)
        except BaseException as exc:
            # The relay's nursery wraps failures in exception groups: judge the leaves.
            leaves = _leaves(exc)
            if not all(isinstance(leaf, Exception) for leaf in leaves):
                conn.outcome = "shutdown"  # Cancelled (drain timeout), KeyboardInterrupt...
                raise
            if all(isinstance(leaf, EXPECTED_ERRORS) for leaf in leaves):
                conn.outcome = conn.outcome if conn.outcome != "closed" else "error"
                first = leaves[0]
                conn.detail = conn.detail or f"{type(first).__name__}: {first}"
            else:  # the one broad except: a bug must not stop the server
                conn.outcome = "internal-error"
                log.exception("unexpected error on connection from %s", conn.peer)
                conn.detail = type(exc).__name__
        finally:
            sock.close()
            if access_log.isEnabledFor(logging.INFO):
                fields = conn.fields()
                access_log.info("%s", Connection.line(fields), extra={"fields": fields})
            self._account(conn)
            self._leave()

    def _account(self, conn: Connection) -> None:
        metrics = self.metrics
        metrics.connections_finished.labels(
            conn.gateway, conn.listener, conn.route, conn.outcome
        ).inc()
        if conn.transfer is not None:
            metrics.route_bytes.labels(conn.route, "up").inc(conn.transfer.up)
            metrics.route_bytes.labels(conn.route, "down").inc(conn.transfer.down)

    def _enter(self) -> None:
        if self.active == 0:
            self.idle = trio.Event()
        self.active += 1
        self.metrics.connections_active.inc()

    def _leave(self) -> None:
        self.active -= 1
        self.metrics.connections_active.dec()
        if self.active == 0:
            self.idle.set()

    async def _serve(self, client: socket.socket, conn: Connection) -> None:
        hello_bytes = await self._read_hello(client, conn)
        if hello_bytes is None:
            return
        # One read of the table for the connection's life: it holds all the connection needs.
        snapshot = self._snapshot()
        decision = snapshot.lookup(conn.bind[0], conn.bind[1], conn.sni)
        if isinstance(decision, Rejected):
            if decision.listener is not None:
                conn.gateway, conn.listener = decision.listener.gateway, decision.listener.name
            conn.outcome, conn.detail = f"rejected-{decision.reason}", decision.message
            return
        listener = decision.listener
        conn.gateway, conn.listener = listener.gateway, listener.name
        conn.route = decision.target.route
        backend = decision.target.choose(self._rng.randrange(decision.target.total_weight))
        conn.backend = backend.name
        if backend.reject is not None:
            # An invalid backend keeps its share of the weight: that share is closed (§10.4),
            # before any handshake, in both modes.
            conn.outcome, conn.detail = "rejected-invalid-backend", backend.reject
            return
        if listener.mode == "Passthrough":
            upstream = await self._connect(backend, conn)
            if upstream is None:
                return
            with upstream:
                await self._relay(client, upstream, hello_bytes, conn)
            return
        await self._terminate(client, hello_bytes, conn, snapshot, listener, backend)

    async def _terminate(
        self,
        client: socket.socket,
        hello_bytes: bytes,
        conn: Connection,
        snapshot: Snapshot,
        listener: ListenerTable,
        backend: Backend,
    ) -> None:
        """Terminate mode (SPEC.md §10.6): finish the handshake by replaying the hello into
        the TLS engine with the certificate that best matches the SNI, then connect the
        backend at once (it may speak first) and relay plaintext."""
        certificates = self.contexts.server_certificates(snapshot.generation, listener)
        if not certificates:
            conn.outcome = "rejected-listener-not-programmed"
            conn.detail = "no certificate could be loaded"
            return
        tls = TlsConnection(
            client,
            choose_certificate(certificates, conn.sni),
            server_side=True,
            initial=hello_bytes,
        )
        started = time.monotonic()
        with trio.move_on_after(self.config.hello_timeout) as timeout:
            try:
                await tls.handshake()
            except TlsError as exc:
                conn.outcome, conn.detail = "tls-handshake-failed", str(exc)
                return
        if timeout.cancelled_caught:
            conn.outcome = "handshake-timeout"
            return
        self.metrics.handshake_duration.observe(time.monotonic() - started)
        upstream = await self._connect(backend, conn)
        if upstream is None:
            return
        with upstream:
            end: End = PlainEnd(upstream)
            if backend.tls is not None:
                reencrypted = await self._reencrypt(upstream, backend.tls, listener, conn)
                if reencrypted is None:
                    return
                end = reencrypted
            conn.transfer = Transfer(idle_timeout=self.config.idle_timeout)
            await relay_ends(tls, end, conn.transfer)
            if conn.transfer.scope.cancelled_caught:
                conn.outcome = "idle-timeout"

    async def _reencrypt(
        self,
        upstream: socket.socket,
        policy: BackendTLS,
        listener: ListenerTable,
        conn: Connection,
    ) -> TlsConnection | None:
        """TLS to the backend as its BackendTLSPolicy says (SPEC.md §10.7)."""
        try:
            context = self.contexts.backend_context(policy, listener.backend_client_certificate)
        except (ssl.SSLError, ValueError) as exc:
            conn.outcome, conn.detail = "backend-tls-failed", f"policy {policy.policy}: {exc}"
            return None
        tls = TlsConnection(upstream, context, server_side=False, server_hostname=policy.hostname)
        with trio.move_on_after(self.config.connect_timeout) as timeout:
            try:
                await tls.handshake()
            except TlsError as exc:
                conn.outcome, conn.detail = "backend-tls-failed", str(exc)
                return None
        if timeout.cancelled_caught:
            conn.outcome, conn.detail = "backend-tls-failed", "handshake timed out"
            return None
        peer = tls.peer_certificate()
        if policy.subject_alt_names and (
            peer is None or not subject_alt_names_match(peer, policy.subject_alt_names)
        ):
            conn.outcome = "backend-tls-failed"
            conn.detail = "the backend certificate has none of the policy's subjectAltNames"
            return None
        return tls

    async def _read_hello(self, client: socket.socket, conn: Connection) -> bytes | None:
        # The parser keeps its reassembly state: each byte is examined a bounded number of times
        # however finely the client fragments the hello, and it bounds what is buffered (at most
        # max_hello_bytes of handshake plus 5 bytes per record, MAX_HELLO_RECORDS records, before
        # the chunk that completes the hello).
        parser = ClientHelloParser(self.config.max_hello_bytes)
        buffer = bytearray()
        try:
            with trio.move_on_after(self.config.hello_timeout) as timeout:
                while True:
                    try:
                        chunk = client.recv(16384)
                    except BlockingIOError:
                        await trio.lowlevel.wait_readable(client)
                        continue
                    if not chunk:
                        conn.outcome = "client-closed"
                        return None
                    buffer += chunk
                    try:
                        hello = parser.feed(chunk)
                    except ClientHelloError as exc:
                        conn.outcome, conn.detail = "rejected-not-tls", str(exc)
                        return None
                    if hello is not None:
                        conn.sni = hello.server_name
                        self.metrics.client_hello_duration.observe(time.monotonic() - conn.started)
                        return bytes(buffer)
        finally:
            self.hello_work.fed += parser.fed
            self.hello_work.scanned += parser.scanned
        assert timeout.cancelled_caught
        conn.outcome = "hello-timeout"
        return None

    async def _connect(self, backend: Backend, conn: Connection) -> socket.socket | None:
        """Round robin over ready endpoints; on failure try the next, up to CONNECT_ATTEMPTS."""
        endpoints = backend.endpoints
        start = self._next.get(backend.name, 0)
        self._next[backend.name] = start + 1
        errors = []
        for attempt in range(min(CONNECT_ATTEMPTS, len(endpoints))):
            endpoint = endpoints[(start + attempt) % len(endpoints)]
            conn.endpoint = str(endpoint)
            with trio.move_on_after(self.config.connect_timeout):
                try:
                    return await _open(endpoint)
                except OSError as exc:
                    errors.append(f"{endpoint}: {exc.strerror or exc}")
                    self.metrics.backend_connect_failures.labels(backend.name).inc()
                    continue
            errors.append(f"{endpoint}: timed out")
            self.metrics.backend_connect_failures.labels(backend.name).inc()
        conn.outcome = "connect-failed"
        conn.detail = "; ".join(errors) or "no endpoint"
        return None

    async def _relay(
        self, client: socket.socket, upstream: socket.socket, hello_bytes: bytes, conn: Connection
    ) -> None:
        conn.transfer = Transfer(idle_timeout=self.config.idle_timeout)
        # The buffered hello goes first, verbatim: the backend sees the client's own SNI.
        await send_all(upstream, hello_bytes)
        conn.transfer.up += len(hello_bytes)
        await relay(client, upstream, conn.transfer, self.pool)
        if conn.transfer.scope.cancelled_caught:
            conn.outcome = "idle-timeout"


async def _open(endpoint: Endpoint) -> socket.socket:
    """A non-blocking TCP connection to the endpoint; FQDN endpoints are resolved now (API.md:
    a docker-compose service name works)."""
    try:
        ipaddress.ip_address(endpoint.address)
        addresses: list[tuple[int, tuple[Any, ...]]] = [
            (
                socket.AF_INET6 if ":" in endpoint.address else socket.AF_INET,
                (endpoint.address, endpoint.port),
            )
        ]
    except ValueError:
        infos = await trio.socket.getaddrinfo(
            endpoint.address, endpoint.port, type=socket.SOCK_STREAM
        )
        addresses = [(family, address) for family, _, _, _, address in infos]
    error: OSError = OSError(f"{endpoint.address} did not resolve")
    for family, address in addresses:
        try:
            return await _connect_one(family, address)
        except OSError as exc:
            error = exc
    raise error


async def _connect_one(family: int, address: tuple[Any, ...]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(address)
        if code in (errno.EINPROGRESS, errno.EAGAIN):
            await trio.lowlevel.wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
    except BaseException:
        sock.close()
        raise
    return sock


async def send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]
