"""The main process's health monitor: active probes, the workers' connect outcomes, ejection
timers, and the health view every data plane routes by (API.md "Traffic policies";
`routing/health.py` holds the rules).

I/O. The main process runs every active check, one task per checked endpoint, whatever the
number of workers (a probe per endpoint per interval, not one per worker), and keeps the one
book of the process tree. Workers report connect failures (and the successes of endpoints
with failures counted) over their channel; the view goes back to all of them at each change,
so an ejection is in force in every worker within a report interval. With `--workers 0`
the data plane calls `observe` directly and reads `view`.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
import trio
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.api.names import ip_version
from gateway.dataplane.tls import ContextRegistry, subject_alt_names_match
from gateway.routing.health import (
    BackendChecks,
    EndpointHealth,
    HealthBook,
    HealthState,
    HealthView,
    Key,
    backend_checks,
    service_of,
)
from gateway.routing.snapshot import ActiveCheck, BackendTLS, Certificate, Snapshot
from gateway.store.state import State

log = logging.getLogger("tlsgate.health")

#: Threads that may resolve endpoint names for probes at once.
RESOLVERS = 4
#: Probes under way at once (each holds a socket): thousands of checked endpoints wait their
#: turn rather than take the main process's descriptors.
PROBES_IN_FLIGHT = 64

_NO_SUBJECT_ALT_NAME = "TLS handshake: the certificate has none of the policy's subjectAltNames"

#: A probe's (check, SNI, BackendTLSPolicy, client certificate) as it was started: a
#: change restarts it.
_Probe = tuple[ActiveCheck, str, BackendTLS | None, Certificate | None]


class HealthMonitor:
    def __init__(
        self,
        state: State,
        clock: Callable[[], float] = time.monotonic,
        on_view: Callable[[HealthView], None] | None = None,
    ) -> None:
        self.state = state
        self.clock = clock
        #: Called with each new view (the single-process data plane's dialer takes it).
        self.on_view = on_view
        self.book = HealthBook()
        self.view = HealthView()
        #: Bumped at every new view; `wait_changed` waits for it to move.
        self.version = 0
        self._changed = trio.Event()
        self._probes: dict[Key, tuple[_Probe, trio.CancelScope]] = {}
        self._wake = trio.Event()
        self._down: set[str] = set()
        #: Contexts as re-encryption makes them (the same verification, the same client
        #: certificate); and one that takes any certificate, without a BackendTLSPolicy.
        self._contexts = ContextRegistry(0)
        self._any_certificate: ssl.SSLContext | None = None
        self._resolvers = trio.CapacityLimiter(RESOLVERS)
        self._in_flight = trio.CapacityLimiter(PROBES_IN_FLIGHT)

    # --- what the rest of the main process asks -------------------------------------------

    def health(self, backend: str, endpoint: str) -> EndpointHealth | None:
        """An endpoint's health, its `until` in wall-clock time (the book keeps the
        monotonic clock, which never steps)."""
        now = self.clock()
        state = self.book.state((backend, endpoint), now)
        if state is None or state.until is None:
            return state
        return attrs.evolve(state, until=state.until - now + time.time())

    def observe(self, backend: str, endpoint: str, error: str | None) -> None:
        """A data plane's connect outcome (None: it connected)."""
        self.observe_all(((backend, endpoint, error),))

    def observe_all(self, outcomes: Iterable[tuple[str, str, str | None]]) -> None:
        """Connect outcomes, in the order they happened; one new view for all of them."""
        now = self.clock()
        changed = False
        for backend, endpoint, error in outcomes:
            key = (backend, endpoint)
            if error is None:
                changed = self.book.connect_succeeded(key) or changed
            else:
                changed = self.book.connect_failed(key, error, now) or changed
        if changed:
            self._publish()
            self._wake.set()  # an ejection may have started: its end is the next timer

    async def wait_changed(self, version: int) -> None:
        while self.version == version:
            await self._changed.wait()

    # --- running ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the table: probe what it checks, end ejections on time; until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._expiries)
            generation = -1
            task_status.started()
            while True:
                snapshot = self.state.snapshot
                if snapshot.generation != generation:
                    generation = snapshot.generation
                    self._follow(snapshot, nursery)
                await self.state.wait_changed(generation)

    def _follow(self, snapshot: Snapshot, nursery: trio.Nursery) -> None:
        checks = backend_checks(snapshot)
        self.book.configure(checks)
        wanted = _probes(snapshot, checks)
        for key in list(self._probes):
            probe, scope = self._probes[key]
            if wanted.get(key) != probe:
                scope.cancel()
                del self._probes[key]
        for key, probe in wanted.items():
            if key not in self._probes:
                scope = trio.CancelScope()
                self._probes[key] = (probe, scope)
                nursery.start_soon(self._probe_loop, key, probe, scope)
        self._publish()

    async def _expiries(self) -> None:
        while True:
            self._wake = trio.Event()
            now = self.clock()
            ends = self.book.next_expiry(now)
            with trio.move_on_after((ends - now + 0.001) if ends is not None else float("inf")):
                await self._wake.wait()
            if ends is not None and self.clock() >= ends:
                self._publish()  # an ejection ended: the endpoint is tried again

    async def _probe_loop(self, key: Key, probe: _Probe, scope: trio.CancelScope) -> None:
        check = probe[0]
        with scope:
            await trio.sleep(random.uniform(0, check.interval))  # spread the first probes
            while True:
                try:
                    async with self._in_flight:
                        error = await self._probe(key[1], probe)
                except Exception as exc:  # a probe must never take the main process down
                    log.exception("probe of %s for %s failed unexpectedly", key[1], key[0])
                    error = f"probe error: {type(exc).__name__}: {exc}"
                if self.book.probed(key, error):
                    state = self.book.state(key, self.clock())
                    shown = state.state if state is not None else "gone"
                    log.info(
                        "endpoint %s of %s is %s%s",
                        key[1],
                        key[0],
                        shown,
                        f": {error}" if error else "",
                    )
                    self._publish()
                await trio.sleep(check.interval)

    async def _probe(self, endpoint: str, probe: _Probe) -> str | None:
        """One probe: a connect (TCP) or a full handshake (TLS) within the timeout; None
        if it passed, else why not."""
        check, server_name, tls, client_certificate = probe
        host, _, port = endpoint.rpartition(":")
        host = host.strip("[]")
        with trio.move_on_after(check.timeout):
            try:
                stream = await self._connect(host, int(port))
            except (OSError, UnicodeError) as exc:  # UnicodeError: IDNA refuses the name
                return _reason(exc)
            try:
                if check.type == "TLS":
                    context = self._context(tls, client_certificate)
                    wrapped = trio.SSLStream(stream, context, server_hostname=server_name)
                    await wrapped.do_handshake()
                    if tls is not None and tls.subject_alt_names:
                        peer = wrapped.getpeercert()
                        if not peer or not subject_alt_names_match(peer, tls.subject_alt_names):
                            return _NO_SUBJECT_ALT_NAME
                return None
            except trio.BrokenResourceError as exc:
                cause = exc.__cause__
                return f"TLS handshake: {cause or 'connection closed'}"
            except (ssl.SSLError, OSError) as exc:
                return f"TLS handshake: {exc}"
            finally:
                await trio.aclose_forcefully(stream)
        return f"no answer within {check.timeout:g}s"

    async def _connect(self, host: str, port: int) -> trio.SocketStream:
        """A TCP connection to the endpoint. A name is resolved in a thread of a small pool
        of the monitor's own: a resolver that hangs holds at most RESOLVERS threads, never
        the default pool that the rest of the main process relies on."""
        version = ip_version(host)
        if version:
            family = int(socket.AF_INET6 if version == 6 else socket.AF_INET)
            addresses: list[tuple[int, Any]] = [(family, (host, port))]
        else:
            infos = await trio.to_thread.run_sync(
                functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM),
                limiter=self._resolvers,
                abandon_on_cancel=True,
            )
            addresses = [(int(info[0]), info[4]) for info in infos]
        failure: OSError = OSError(f"{host} did not resolve")
        for kind, address in addresses:
            sock = trio.socket.socket(kind, socket.SOCK_STREAM)
            try:
                await sock.connect(address)
            except OSError as exc:
                sock.close()
                failure = exc
                continue
            return trio.SocketStream(sock)
        raise failure

    def _context(
        self, tls: BackendTLS | None, client_certificate: Certificate | None
    ) -> ssl.SSLContext:
        """Verify as re-encryption does when a BackendTLSPolicy applies (its CA bundle, its
        hostname or subjectAltNames, the Gateway's client certificate); otherwise any
        certificate passes (a Passthrough backend's certificate is its clients' to judge)."""
        if tls is not None:
            return self._contexts.backend_context(tls, client_certificate)
        if self._any_certificate is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self._any_certificate = context
        return self._any_certificate

    def _publish(self) -> None:
        view = self.book.view(self.clock())
        down = self.book.all_avoided(view)
        for backend in sorted(down - self._down):
            log.warning(
                "every endpoint of %s is unhealthy or ejected: connections try them all",
                backend,
            )
        for backend in sorted(self._down - down):
            log.info("%s has a healthy endpoint again", backend)
        self._down = down
        if view != self.view:
            self.view = view
            if self.on_view is not None:
                self.on_view(view)
            self.version += 1
            changed, self._changed = self._changed, trio.Event()
            changed.set()


def _reason(exc: BaseException) -> str:
    """The error a failed connect or resolution names, without the address it repeats."""
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc)


def _probes(snapshot: Snapshot, checks: dict[str, BackendChecks]) -> dict[Key, _Probe]:
    """Each actively checked endpoint's probe: its check, the SNI (the BackendTLSPolicy's
    hostname if one applies, else the Service's name), the policy to verify with and the
    client certificate re-encryption would present (the first listener's that reaches it)."""
    probes: dict[Key, _Probe] = {}
    for listener, backend in snapshot.backends():
        traffic = backend.traffic
        if traffic is None or traffic.active is None or backend.name not in checks:
            continue
        if backend.reject is not None:
            continue  # no connection reaches it (a policy not accepted, say)
        tls = backend.tls
        server_name = tls.hostname if tls is not None else service_of(backend.name)[1]
        certificate = listener.backend_client_certificate if tls else None
        probe = (traffic.active, server_name, tls, certificate)
        for endpoint in backend.endpoints:
            probes.setdefault((backend.name, endpoint.text), probe)
    return probes


class HealthCollector(Collector):
    """`tlsgate_endpoint_healthy{namespace,service,endpoint}`: 1 for a healthy endpoint, 0
    for one ejected or unhealthy; the endpoints of Services with a health check only (an
    endpoint is `host:port`, so one per Service port)."""

    def __init__(self, monitor: HealthMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "tlsgate_endpoint_healthy",
            "Whether an endpoint of a health-checked Service gets new connections (1) or not",
            labels=["namespace", "service", "endpoint"],
        )
        for (backend, endpoint), health in self.monitor.book.states(self.monitor.clock()):
            namespace, name = service_of(backend)
            healthy = health.state is HealthState.HEALTHY
            family.add_metric([namespace, name, endpoint], 1.0 if healthy else 0.0)
        yield family
