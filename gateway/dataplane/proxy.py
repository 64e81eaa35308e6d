"""One client connection end to end: ClientHello, route, connect, relay, one log line.

I/O. Nothing raised here reaches the listener: `handle` is the per-connection boundary.

Theory of operation. A connection is one task (the listener's accept loop starts it in the
connections nursery). Once routed and connected it sleeps, once, and the process's relay loop
moves its bytes: as they are in passthrough (`relay`), through the TLS engines in Terminate
(`terminated`):

0. A ClientTrafficPolicy's clientIPs close a connection at accept, before a byte is read,
   when no listener of its socket would serve that address (and none takes a PROXY header
   from it, whose carried address decides instead).
1. Read the ClientHello with a resumable sans-IO parser (`clienthello`) under the hello
   timeout, keeping the bytes. Nothing is decided before the hello is complete. First, on a
   socket whose listeners read PROXY headers, a header from a trusted peer
   (`proxy_protocol.py`): its address is the client's from then on; then a PostgreSQL
   client's SSLRequest, answered `S` (a GSSENCRequest `N`), `postgres.py`.
2. Read the snapshot once and look up (address, port, SNI) in it (SPEC.md §10.1-§10.2). The
   connection keeps that snapshot for its life: a configuration change never moves it.
3. A rejection (no SNI, no listener, a listener not programmed, no route, a share of an invalid
   backend) closes the socket without an alert or a handshake (SPEC.md §10.3, §10.4); so does
   the listener's ClientTrafficPolicy (a PROXY header it does not take or lacks, clientIPs).
4. Passthrough: start connecting a backend endpoint (`dial`) and hand both sockets to the
   relay loop, which waits for the connect (a failed one moves on to the next endpoint),
   replays the hello bytes verbatim (the backend sees the client's own SNI; after an
   SSLRequest of its own that the backend must answer `S`, if the client sent one), then splices
   both ways until both ends are done: half-close propagates, the idle timeout covers both
   directions at once.
5. Terminate: feed the hello into a TLS engine with the best certificate for the SNI
   (`tlsstream`), finish the handshake under the hello timeout, connect the backend (plain,
   or TLS as its BackendTLSPolicy says, §10.7, after an SSLRequest if the client sent one)
   and `relay_terminated` the plaintext. TLS has
   no half-close: when the backend ends, the client's TLS is closed.
6. Always: close the socket, write one access-log line (`access`), count it in the metrics.
   A failure the network explains (a reset, a TLS alert) is an outcome, not a traceback; a
   bug is logged with its traceback and still ends only this connection.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import attrs
import trio

from gateway.api.names import TLSMode
from gateway.dataplane.access import AccessRecord, Outcome
from gateway.dataplane.clienthello import MAX_HELLO_BYTES, ClientHelloError, ClientHelloParser
from gateway.dataplane.dial import Dialer, start_connect
from gateway.dataplane.limits import SharedCounts
from gateway.dataplane.postgres import ACCEPT, LENGTH, REFUSE, SSL_REQUEST, Prelude, prelude
from gateway.dataplane.proxy_protocol import (
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    NeedMore,
    ProxyHeaderError,
    could_be_header,
    parse,
    v1_header,
    v2_header,
)
from gateway.dataplane.relay import (
    SPLICE_AVAILABLE,
    ConnectError,
    PipePool,
    RelayLoop,
    Transfer,
    blame,
)
from gateway.dataplane.terminated import relay_terminated
from gateway.dataplane.tls import (
    SESSION_TICKETS,
    ContextRegistry,
    choose_certificate,
    subject_alt_names_match,
)
from gateway.dataplane.tlsstream import TlsConnection, TlsError
from gateway.logs import info_with_fields
from gateway.metrics import Metrics, Open, count_open
from gateway.routing.snapshot import (
    IP,
    Backend,
    LimitRule,
    ListenerTable,
    Rejected,
    Snapshot,
    ip_of,
)

# Every logger is under `tlsgate.` (docs/configuration.md lists them).
log = logging.getLogger("tlsgate.proxy")
access_log = logging.getLogger("tlsgate.access")

#: Access-log lines a process keeps for the dashboard (`Proxy.recent`).
RECENT_LINES = 256

#: Expected ways for a connection to fail: one log line, no traceback.
EXPECTED_ERRORS = (OSError, TlsError, trio.BrokenResourceError, trio.ClosedResourceError)


@attrs.frozen(kw_only=True)
class ProxyConfig:
    hello_timeout: float = 10.0
    connect_timeout: float = 5.0
    idle_timeout: float = 3600.0
    max_hello_bytes: int = MAX_HELLO_BYTES
    splice: bool = SPLICE_AVAILABLE
    #: TLS 1.3 session tickets after a full handshake on Terminate listeners (tls.py).
    session_tickets: int = SESSION_TICKETS
    #: Seed of the weighted backend choice; tests fix it so that weight checks are exact.
    seed: int | None = None


@attrs.define
class HelloWork:
    """What the ClientHello parsers were fed and what they examined, summed over connections:
    a hostile hello (1-byte records, sent slowly) can only cost work linear in what it sends."""

    fed: int = 0
    scanned: int = 0


class Proxy:
    """The data plane's per-process context: configuration, the snapshot source, endpoint
    round robin, the pipe pool, and the count of live connections."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        config: ProxyConfig,
        pool: PipePool | None = None,
        metrics: Metrics | None = None,
        worker: int | None = None,
        limits: SharedCounts | None = None,
    ) -> None:
        self._snapshot = snapshot
        #: ClientTrafficPolicy limits' counters, shared by the process tree's workers.
        self.limits = limits if limits is not None else SharedCounts.private()
        #: The worker process's id, written in every access-log line (None: single process).
        self.worker = worker
        self.metrics = metrics or Metrics()
        self.contexts = ContextRegistry(config.session_tickets)
        self.config = config
        self._rng = random.Random(config.seed)
        #: Every passthrough connection's relay; its `run` task is the data plane's to start.
        #: Without a pipe pool it relays with reads and writes (the caller decides).
        self.relays = RelayLoop(pool)
        self.dialer = Dialer(config.connect_timeout, self.metrics, self._rng)
        self.active = 0
        #: Connections finished so far (a worker reports its counts when this moves).
        self.finished = 0
        self.hello_work = HelloWork()
        #: Connections open per (gateway, listener, route), from the ClientHello on.
        self.open: Open = {}
        #: The last access-log lines, (Unix time, fields), for the dashboard; and how many
        #: were ever added (a worker sends the main process those it has not sent yet).
        self.recent: deque[tuple[float, dict[str, object]]] = deque(maxlen=RECENT_LINES)
        self.recent_count = 0
        self.idle = trio.Event()
        self.idle.set()
        # Read at scrape time: nothing to count per connection.
        self.metrics.connections_active.set_function(lambda: self.active)

    @property
    def pool(self) -> PipePool | None:
        """The splice relay's pipes (the owner closes them at exit)."""
        return self.relays.pool

    async def handle(
        self, sock: socket.socket, peer: tuple[str, int], bind: tuple[str, int]
    ) -> None:
        """Serve one accepted connection; never raises (ARCHITECTURE.md "Errors")."""
        self._enter()
        conn = AccessRecord(peer=peer, bind=bind, worker=self.worker)
        try:
            # Routing returns the rest of the connection's work, and its frame is gone
            # while that runs: an idle connection holds as few frames as can be.
            rest = await self._route(sock, conn)
            if rest is not None:
                await rest
        except BaseException as exc:
            # A connection opens no nursery (its relay is the loop's), so no exception group
            # reaches here: the exception itself says how the connection ended.
            if not isinstance(exc, Exception):
                conn.outcome = Outcome.SHUTDOWN  # Cancelled (drain timeout), KeyboardInterrupt...
                raise
            if isinstance(exc, EXPECTED_ERRORS):
                conn.failed = getattr(exc, "side", None)
                if isinstance(exc, trio.ClosedResourceError):
                    conn.failed = "gateway"  # the relay loop closed under it: a shutdown
                elif conn.failed is None and not conn.endpoint:
                    conn.failed = "client"  # no backend yet: only the client's socket in play
                if conn.outcome is Outcome.CLOSED:
                    conn.outcome = Outcome.ERROR
                conn.detail = conn.detail or f"{type(exc).__name__}: {exc}"
            else:  # the one broad except: a bug must not stop the server
                conn.outcome = Outcome.INTERNAL_ERROR
                log.exception("unexpected error on connection from %s", conn.peer)
                conn.detail = type(exc).__name__
        finally:
            sock.close()
            if conn.held is not None:
                self.limits.release(conn.held)
            fields = conn.fields()
            if access_log.isEnabledFor(logging.INFO):
                info_with_fields(access_log, AccessRecord.line(fields), fields, "connection")
            self.recent.append((time.time(), fields))
            self.recent_count += 1
            self._account(conn)
            self._leave()

    def _count_in(self, conn: AccessRecord) -> None:
        """The connection's ClientHello chose a listener (and maybe a route): it counts in
        the listener's figures from now to its close (`_account`)."""
        conn.counted = (conn.gateway, conn.listener, conn.route)
        self.metrics.listener_connections.add(conn.counted)
        count_open(self.open, conn.counted, 1)

    def _account(self, conn: AccessRecord) -> None:
        metrics = self.metrics
        metrics.connections_finished.add((conn.gateway, conn.listener, conn.route, conn.outcome))
        if conn.counted is not None:
            count_open(self.open, conn.counted, -1)
        if conn.transfer is not None:
            up, down = conn.transfer.up, conn.transfer.down
            metrics.route_bytes.add((conn.route, "up"), up)
            metrics.route_bytes.add((conn.route, "down"), down)
            metrics.listener_bytes.add((conn.listener, "up"), up)
            metrics.listener_bytes.add((conn.listener, "down"), down)

    def _enter(self) -> None:
        if self.active == 0:
            self.idle = trio.Event()
        self.active += 1

    def _leave(self) -> None:
        self.active -= 1
        self.finished += 1
        if self.active == 0:
            self.idle.set()

    async def _route(
        self, client: socket.socket, conn: AccessRecord
    ) -> Coroutine[Any, Any, None] | None:
        """Read the hello and decide; the mode's work to await, or None when the connection
        is done (rejected, or the hello never came)."""
        # At accept, the table in force now screens the peer (step 0) and says whether a
        # PROXY header may come; routing reads it again once the hello is in.
        bound = self._snapshot().binds.get(conn.bind)
        peer_ip = None  # parsed once, and only where a policy will look at it
        if bound is not None and bound.screened:
            peer_ip = ip_of(conn.peer[0])
            refused = bound.refusal_at_accept(peer_ip or conn.peer[0])
            if refused is not None:
                self._refuse(conn, Outcome.REFUSED_CLIENT_IP, refused)
                return None
            counted = bound.limits_at_accept(peer_ip or conn.peer[0])
            if counted and not self._admit(conn, counted, peer_ip or conn.peer[0]):
                return None
        else:
            counted = ()
        headers = bound is not None and bound.expects_proxy_headers()
        trusted = headers and bound is not None and bound.trusts(peer_ip or conn.peer[0])
        hello_timeout = (
            bound.hello_timeout(self.config.hello_timeout)
            if bound is not None
            else self.config.hello_timeout
        )
        hello_bytes = await self._read_hello(
            client,
            conn,
            headers=headers,
            trusted=trusted,
            hello_by=trio.current_time() + hello_timeout,
        )
        if hello_bytes is None:
            return None
        # One read of the table for the connection's life: it holds all the connection needs.
        snapshot = self._snapshot()
        decision = snapshot.lookup(conn.bind[0], conn.bind[1], conn.sni)
        if isinstance(decision, Rejected):
            if decision.listener is not None:
                conn.gateway, conn.listener = decision.listener.gateway, decision.listener.full_name
                self._count_in(conn)
            conn.outcome, conn.detail = Outcome.rejected(decision.reason), decision.message
            return None
        listener = decision.listener
        conn.gateway, conn.listener = listener.gateway, listener.full_name
        if not self._screen(conn, listener, peer_ip, counted):
            self._count_in(conn)  # refused by the listener's policy: no route
            return None
        conn.route = decision.target.route
        self._count_in(conn)
        backend = decision.target.choose(self._rng.randrange(decision.target.total_weight))
        conn.backend = backend.name
        if backend.reject is not None:
            # An invalid backend keeps its share of the weight: that share is closed (§10.4),
            # before any handshake, in both modes.
            conn.outcome, conn.detail = Outcome.REJECTED_INVALID_BACKEND, backend.reject
            return None
        if listener.mode == TLSMode.PASSTHROUGH:
            # The buffered hello goes first, verbatim: the backend sees the client's own SNI.
            # The transfer holds it, and lets go of it once sent (up to 64 KiB).
            header = _proxy_header(client, backend, conn, conn.alpn)
            if conn.prelude is not None:
                # The header goes before the SSLRequest, the hello after the backend's S.
                transfer = Transfer(idle_timeout=self._idle_timeout(listener), first=hello_bytes)
                del hello_bytes
                return self._passthrough_postgres(client, backend, transfer, conn, header)
            transfer = Transfer(
                idle_timeout=self._idle_timeout(listener), first=header + hello_bytes
            )
            del hello_bytes
            return self._passthrough(client, backend, transfer, conn)
        return self._terminate(client, hello_bytes, conn, snapshot, listener, backend)

    async def _passthrough(
        self, client: socket.socket, backend: Backend, transfer: Transfer, conn: AccessRecord
    ) -> None:
        """Passthrough (SPEC.md §10.5): each endpoint in turn until one connects, then relay.
        The relay loop waits for the connect, so the task waits once for the whole
        connection; a failed or timed-out connect has sent nothing, and the next endpoint
        gets the same first bytes. (One function, not one per endpoint: each frame is
        memory an idle connection holds.)"""
        conn.transfer = transfer
        errors: list[str] = []
        for endpoint in self.dialer.attempts(backend, conn.peer[0]):
            conn.endpoint = endpoint.text
            deadline = trio.current_time() + self.dialer.timeout(backend)
            try:
                candidates = await self.dialer.addresses(endpoint, deadline)
            except (OSError, UnicodeError) as exc:  # UnicodeError: IDNA refuses the name
                reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
                self.dialer.failed(backend, endpoint, reason, errors)
                continue
            reason = "no address"
            for family, address in candidates:
                try:
                    upstream = start_connect(family, address)
                except OSError as exc:
                    reason = exc.strerror or str(exc)
                    continue
                transfer.on_connect = self.dialer.on_connect(backend, endpoint)
                with upstream:
                    try:
                        await self.relays.relay(
                            client, upstream, transfer, connect_deadline=deadline
                        )
                    except ConnectError as exc:
                        reason = exc.strerror or str(exc)
                        continue
                if transfer.connected:
                    if transfer.scope.cancelled_caught:
                        conn.outcome = Outcome.IDLE_TIMEOUT
                    return
                reason = "timed out"
                break  # the deadline passed: the next endpoint
            self.dialer.failed(backend, endpoint, reason, errors)
        self.dialer.give_up(conn, errors)

    def _idle_timeout(self, listener: ListenerTable) -> float:
        client = listener.client
        if client is not None and client.idle_timeout is not None:
            return client.idle_timeout
        return self.config.idle_timeout

    def _screen(
        self,
        conn: AccessRecord,
        listener: ListenerTable,
        peer_ip: IP | None,
        counted: tuple[LimitRule, ...],
    ) -> bool:
        """The listener's ClientTrafficPolicy, once the hello has named the listener: the
        PROXY header (taken or lacking), clientIPs, and the limits not counted at accept.
        False when the connection is refused."""
        peer = conn.via or conn.peer
        policy = listener.client
        if policy is None:
            if not conn.proxied:
                return True
            conn.peer, conn.via = peer, None
            self._refuse(
                conn,
                Outcome.REFUSED_PROXY_PROTOCOL,
                f"a PROXY header on listener {listener.full_name}, which takes none",
            )
            return False
        socket_ip = peer_ip or ip_of(peer[0]) or peer[0]
        client_ip = ip_of(conn.peer[0]) if conn.via is not None else socket_ip
        refusal = policy.refusal(socket_ip, client_ip or conn.peer[0], conn.proxied)
        if refusal is not None:
            reason, message = refusal
            if not policy.trusts(socket_ip):
                conn.peer, conn.via = peer, None  # an untrusted header's claim is no fact
            outcome = (
                Outcome.REFUSED_CLIENT_IP
                if reason == "client-ip"
                else Outcome.REFUSED_PROXY_PROTOCOL
            )
            self._refuse(conn, outcome, message)
            return False
        rules = policy.limits
        if rules and rules != counted:  # those of the listener alone: now it is known
            # By key: a limit whose value changed in a swap since accept is counted once.
            keys = {rule.key for rule in counted}
            rest = tuple(rule for rule in rules if rule.key not in keys)
            if rest and not self._admit(conn, rest, client_ip or conn.peer[0]):
                return False
        return True

    def _admit(self, conn: AccessRecord, rules: tuple[LimitRule, ...], client: str | IP) -> bool:
        """Count the connection under its listener's limits (every worker's counts
        together); False, with the connection refused, if one is reached."""
        text = str(client)
        limits = self.limits
        untracked = limits.untracked
        # CLOCK_MONOTONIC: one clock for every process of the machine, and it never steps.
        held, over = limits.admit(rules, text, time.monotonic())
        if limits.untracked != untracked:
            self.metrics.limits_untracked.add((), limits.untracked - untracked)
        if over is not None:
            self._refuse(conn, Outcome(f"refused-{over.kind}"), over.refusal(text))
            return False
        assert held is not None
        if conn.held is None:
            conn.held = held
        else:
            conn.held.entries += held.entries
            conn.held.rated += held.rated
        return True

    def _refuse(self, conn: AccessRecord, outcome: Outcome, detail: str) -> None:
        """Closed by a ClientTrafficPolicy: nothing sent back, no backend contacted. What
        it counted at accept toward a rate is taken back: it was not admitted."""
        conn.outcome, conn.detail = outcome, detail
        if conn.held is not None:
            self.limits.refund(conn.held)
        self.metrics.connections_refused.add((outcome.value.removeprefix("refused-"),))

    async def _passthrough_postgres(
        self,
        client: socket.socket,
        backend: Backend,
        transfer: Transfer,
        conn: AccessRecord,
        header: bytes = b"",
    ) -> None:
        """Passthrough of a PostgreSQL client (API.md "PostgreSQL"): the backend gets the
        SSLRequest the client sent, must answer `S` as the client was told, and only then the
        ClientHello. Connected first, so the exchange can wait for its answer."""
        upstream = await self.dialer.connect(backend, conn)
        if upstream is None:
            return
        with upstream:
            if not await self._request_ssl(upstream, backend, conn, header):
                return
            conn.transfer = transfer
            await self.relays.relay(client, upstream, transfer)
            if transfer.scope.cancelled_caught:
                conn.outcome = Outcome.IDLE_TIMEOUT

    async def _request_ssl(
        self, upstream: socket.socket, backend: Backend, conn: AccessRecord, header: bytes = b""
    ) -> bool:
        """Send PostgreSQL's SSLRequest (after a PROXY header, if one is due) and read its
        one-byte answer (never more: what follows an `S` is TLS, the client's or ours),
        within the backend's connect timeout; True if it is `S`."""
        answer = b""
        with trio.move_on_after(self.dialer.timeout(backend)):
            try:
                # A few bytes on a fresh connection: the socket buffer takes them whole.
                upstream.send(header + SSL_REQUEST)
                while True:
                    try:
                        answer = upstream.recv(1)
                        break
                    except BlockingIOError:
                        await trio.lowlevel.wait_readable(upstream)
            except OSError as exc:
                blame(exc, "backend")
                raise
        if answer == ACCEPT:
            return True
        conn.outcome = Outcome.BACKEND_TLS_FAILED
        if not answer:
            conn.detail = "the backend did not answer the SSLRequest with S"
        else:
            conn.detail = f"the backend answered the SSLRequest with {answer!r}, not S"
        return False

    async def _terminate(
        self,
        client: socket.socket,
        hello_bytes: bytes,
        conn: AccessRecord,
        snapshot: Snapshot,
        listener: ListenerTable,
        backend: Backend,
    ) -> None:
        """Terminate mode (SPEC.md §10.6): finish the handshake by replaying the hello into
        the TLS engine with the certificate that best matches the SNI, then connect the
        backend at once (it may speak first) and relay plaintext."""
        certificates = self.contexts.server_certificates(snapshot.generation, listener)
        if not certificates:
            conn.outcome = Outcome.REJECTED_LISTENER_NOT_PROGRAMMED
            conn.detail = "no certificate could be loaded"
            return
        tls = TlsConnection(
            client,
            choose_certificate(certificates, conn.sni),
            server_side=True,
            initial=hello_bytes,
        )
        # This frame lives as long as the connection: it keeps none of the handshake's
        # leftovers (the hello bytes, the timeout's cancel scope).
        del hello_bytes, certificates
        started = time.monotonic()
        policy = listener.client
        handshake_timeout = (
            policy.handshake_timeout
            if policy is not None and policy.handshake_timeout is not None
            else self.config.hello_timeout
        )
        with trio.move_on_after(handshake_timeout) as timeout:
            try:
                await tls.handshake()
            except TlsError as exc:
                conn.outcome, conn.detail = Outcome.TLS_HANDSHAKE_FAILED, str(exc)
                return
        if timeout.cancelled_caught:
            conn.outcome = Outcome.HANDSHAKE_TIMEOUT
            return
        del timeout
        self.metrics.handshake_duration.observe(time.monotonic() - started)
        upstream = await self.dialer.connect(backend, conn)
        if upstream is None:
            return
        with upstream:
            header = _proxy_header(client, backend, conn, tls.tls.selected_alpn_protocol())
            if header:
                try:
                    upstream.send(header)  # a fresh connection's buffer takes it whole
                except OSError as exc:
                    blame(exc, "backend")
                    raise
            backend_tls = None
            if backend.tls is not None:
                backend_tls = await self._reencrypt(upstream, backend, listener, conn)
                if backend_tls is None:
                    return
            conn.transfer = Transfer(idle_timeout=self._idle_timeout(listener))
            await relay_terminated(self.relays, tls, upstream, backend_tls, conn.transfer)
            if conn.transfer.scope.cancelled_caught:
                conn.outcome = Outcome.IDLE_TIMEOUT

    async def _reencrypt(
        self,
        upstream: socket.socket,
        backend: Backend,
        listener: ListenerTable,
        conn: AccessRecord,
    ) -> TlsConnection | None:
        """TLS to the backend as its BackendTLSPolicy says (SPEC.md §10.7), within its
        connect timeout; a PostgreSQL backend is asked with an SSLRequest first, as its
        client asked tlsgate."""
        policy = backend.tls
        assert policy is not None
        if conn.prelude is not None and not await self._request_ssl(upstream, backend, conn):
            return None
        try:
            context = self.contexts.backend_context(policy, listener.backend_client_certificate)
        except (ssl.SSLError, ValueError) as exc:
            conn.outcome, conn.detail = Outcome.BACKEND_TLS_FAILED, f"policy {policy.policy}: {exc}"
            return None
        tls = TlsConnection(upstream, context, server_side=False, server_hostname=policy.hostname)
        with trio.move_on_after(self.dialer.timeout(backend)) as timeout:
            try:
                await tls.handshake()
            except TlsError as exc:
                conn.outcome, conn.detail = Outcome.BACKEND_TLS_FAILED, str(exc)
                return None
        if timeout.cancelled_caught:
            conn.outcome, conn.detail = Outcome.BACKEND_TLS_FAILED, "handshake timed out"
            return None
        peer = tls.peer_certificate()
        if policy.subject_alt_names and (
            peer is None or not subject_alt_names_match(peer, policy.subject_alt_names)
        ):
            conn.outcome = Outcome.BACKEND_TLS_FAILED
            conn.detail = "the backend certificate has none of the policy's subjectAltNames"
            return None
        return tls

    async def _read_hello(
        self,
        client: socket.socket,
        conn: AccessRecord,
        *,
        headers: bool = False,
        trusted: bool = False,
        hello_by: float | None = None,
    ) -> bytes | None:
        # The parser keeps its reassembly state: each byte is examined a bounded number of times
        # however finely the client fragments the hello, and it bounds what is buffered (at most
        # max_hello_bytes of handshake plus 5 bytes per record, MAX_HELLO_RECORDS records, before
        # the chunk that completes the hello).
        parser = ClientHelloParser(self.config.max_hello_bytes)
        buffer = bytearray()
        opening = _Opening(1 if headers else 0, trusted=trusted)
        # The listener hands over connections whose hello is queued (TCP_DEFER_ACCEPT), so
        # most are read without a wait: the deadline costs a cancel scope only per wait.
        deadline = trio.current_time() + self.config.hello_timeout if hello_by is None else hello_by
        try:
            while True:
                try:
                    chunk = client.recv(16384)
                except BlockingIOError:
                    with trio.move_on_at(deadline) as timeout:
                        await trio.lowlevel.wait_readable(client)
                    if timeout.cancelled_caught:
                        conn.outcome = Outcome.HELLO_TIMEOUT
                        return None
                    continue
                if not chunk:
                    conn.outcome = Outcome.CLIENT_CLOSED
                    return None
                buffer += chunk
                if not opening.done:
                    try:
                        if not opening.take(client, buffer, conn):
                            continue  # the rest of a header or a request is to come
                    except ProxyHeaderError as exc:
                        self._refuse(conn, Outcome.REFUSED_PROXY_PROTOCOL, str(exc))
                        return None
                    # Every byte left is the hello's, none fed yet: at once.
                    chunk = bytes(buffer)
                    if not chunk:
                        continue
                try:
                    hello = parser.feed(chunk)
                except ClientHelloError as exc:
                    conn.outcome, conn.detail = Outcome.REJECTED_NOT_TLS, str(exc)
                    return None
                if hello is not None:
                    conn.sni = hello.server_name
                    if hello.alpn:
                        conn.alpn = hello.alpn[0].decode("ascii", "replace")
                    self.metrics.client_hello_duration.observe(time.monotonic() - conn.started)
                    return bytes(buffer)
        finally:
            self.hello_work.fed += parser.fed
            self.hello_work.scanned += parser.scanned


def _answer_requests(
    client: socket.socket, buffer: bytearray, expecting: tuple[Prelude, ...], conn: AccessRecord
) -> tuple[Prelude, ...]:
    """Answer the PostgreSQL requests at the start of `buffer` and take them out of it; what
    may still come (empty: the rest is the hello's, or not TLS, for the parser to say). A
    GSSENCRequest is refused (`N`): the client falls back to an SSLRequest, answered `S`."""
    while expecting:
        kind = prelude(buffer)
        if kind is Prelude.MORE:
            return expecting
        if kind not in expecting:
            return ()
        client.send(REFUSE if kind is Prelude.GSSENC_REQUEST else ACCEPT)
        del buffer[:LENGTH]
        if kind is Prelude.SSL_REQUEST:
            conn.prelude = kind.value
            return ()
        expecting = (Prelude.SSL_REQUEST,)
    return ()


@attrs.define
class _Opening:
    """What may come before a ClientHello, in this order: a PROXY header where a listener
    of the socket reads them (`header_need`: the bytes needed before looking again), then
    PostgreSQL's requests (`expecting`)."""

    header_need: int
    #: Whether a listener of the socket takes headers from this peer.
    trusted: bool = False
    expecting: tuple[Prelude, ...] = (Prelude.GSSENC_REQUEST, Prelude.SSL_REQUEST)

    @property
    def done(self) -> bool:
        return not self.header_need and not self.expecting

    def take(self, client: socket.socket, buffer: bytearray, conn: AccessRecord) -> bool:
        """Take what precedes the hello off `buffer` (answering requests); True once the
        rest of `buffer` is the hello's. ProxyHeaderError for a malformed header."""
        if self.header_need:
            if len(buffer) < self.header_need:
                return False
            self.header_need = _take_header(buffer, conn, trusted=self.trusted)
            if self.header_need:
                return False
        if self.expecting:
            self.expecting = _answer_requests(client, buffer, self.expecting, conn)
        return not self.expecting


#: The longest PROXY header taken: v2 allows 64 KiB, load balancers send a few hundred bytes
#: (addresses and a few TLVs); a larger one is a peer holding memory, refused.
MAX_PROXY_HEADER = 4096


def _take_header(buffer: bytearray, conn: AccessRecord, *, trusted: bool) -> int:
    """Take a PROXY header off the start of `buffer`, if it begins with one: 0 once done
    (the carried addresses now the connection's, `conn.via` the socket's peer), else the
    bytes needed before trying again. Whether this peer may send one is the listener's to
    say, once the hello names it."""
    if not could_be_header(buffer):
        return 0  # a ClientHello (0x16) or an SSLRequest (0x00): no header
    if not trusted:
        # Before anything is answered (an SSLRequest's S): nothing goes back to it.
        raise ProxyHeaderError(
            f"{conn.peer[0]} sent a PROXY header, and no listener here trusts it"
        )
    found = parse(buffer)
    if isinstance(found, NeedMore):
        if found.total > MAX_PROXY_HEADER:
            raise ProxyHeaderError(
                f"a PROXY header of {found.total} bytes (more than {MAX_PROXY_HEADER})"
            )
        return found.total
    del buffer[: found.length]
    conn.proxied = True
    if found.source is not None and found.destination is not None:
        # LOCAL (a load balancer's own check) and UNKNOWN carry none: the socket's stand.
        conn.via, conn.peer = conn.peer, found.source
        conn.destination = found.destination
    return 0


def _proxy_header(
    client: socket.socket, backend: Backend, conn: AccessRecord, alpn: str | None
) -> bytes:
    """The PROXY header a BackendTrafficPolicy asks for (b"" without one): the client's
    address and port (as a trusted incoming header carried them), and the address and port
    it connected to; v2 adds the SNI (PP2_TYPE_AUTHORITY) and the ALPN protocol
    (PP2_TYPE_ALPN: negotiated in Terminate, the first offered in Passthrough)."""
    traffic = backend.traffic
    if traffic is None or traffic.proxy_version is None:
        return b""
    destination = conn.destination or client.getsockname()[:2]
    source = (conn.peer[0], conn.peer[1])
    if traffic.proxy_version == 1:
        return v1_header(source, destination)
    tlvs = []
    if conn.sni:
        tlvs.append((PP2_TYPE_AUTHORITY, conn.sni.encode("ascii", "replace")))
    if alpn:
        tlvs.append((PP2_TYPE_ALPN, alpn.encode("ascii", "replace")))
    return v2_header(source, destination, tlvs)
