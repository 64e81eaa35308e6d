"""`tlsgate serve`: the composition root. Loads the configuration, binds and reconciles the
listeners, serves connections, and shuts down gracefully.

I/O. One Trio nursery holds the live connections; another holds one accept task per bound
(address, port). A configuration change cancels only the accept tasks of binds that went away
(their sockets close), so connections already relayed keep running (ARCHITECTURE.md).
"""

from __future__ import annotations

import collections
import errno
import logging
import resource
import signal
import socket
import ssl
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from admin.listen import AdminLimits, AdminTLSError, admin_tls_context
from admin.listen import bind as bind_admin
from gateway.api.kinds import Document
from gateway.dataplane.proxy import Proxy, ProxyConfig
from gateway.dataplane.relay import PipePool
from gateway.dataplane.sockets import listening_socket
from gateway.metrics import Metrics
from gateway.store.sqlite import Store
from gateway.store.state import State
from gateway.store.writes import WritePath

log = logging.getLogger(__name__)

#: File descriptors kept free for listeners, the admin API, logs and the like.
FD_RESERVE = 256
#: Accept errors that mean "out of resources for now": wait and retry, never die of EMFILE.
_TRANSIENT_ACCEPT_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
#: How often a failed bind is retried while no configuration change happens.
BIND_RETRY_SECONDS = 5.0


class StartError(Exception):
    """The gateway cannot start (an address in use, an unreadable certificate): one line for
    the operator, no traceback."""


def connection_limit(reserve_pipes: int, admin_connections: int = 0) -> int:
    """Concurrent connections the file-descriptor limit allows: two sockets each, after the
    reserve, the pipe pool and the admin API's own bounded share. Above it new connections
    are closed at once."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, (soft - FD_RESERVE - admin_connections - 2 * reserve_pipes) // 2)


@attrs.frozen(kw_only=True)
class ServeConfig:
    bootstrap: tuple[str, ...] = ()
    bind_address: str = "0.0.0.0"
    drain_timeout: float = 30.0
    proxy: ProxyConfig = attrs.Factory(ProxyConfig)
    max_connections: int | None = None
    backlog: int = 4096
    #: How often a failed bind is retried while no configuration change happens.
    bind_retry: float = BIND_RETRY_SECONDS
    #: The admin API's (host, port), or None for no admin API.
    admin: tuple[str, int] | None = None
    admin_token: str | None = None
    #: The admin API's HTTPS certificate chain and key (PEM files); None serves plain HTTP.
    admin_tls_cert: str | None = None
    admin_tls_key: str | None = None
    #: CA bundle (PEM) that admin clients' certificates must chain to; None asks for none.
    admin_client_ca: str | None = None
    admin_limits: AdminLimits = attrs.Factory(AdminLimits)
    body_limit: int = 4 * 1024 * 1024
    #: Seconds a request body may take to arrive in full.
    body_timeout: float = 30.0
    #: The embedded store's directory, or None to keep the configuration in memory only.
    state_dir: str | None = None


class Listeners:
    """Keeps one listening socket per (address, port) of the snapshot."""

    def __init__(
        self,
        state: State,
        proxy: Proxy,
        connections: trio.Nursery,
        limit: int,
        config: ServeConfig,
    ) -> None:
        self.state = state
        self.proxy = proxy
        self.connections = connections
        self.limit = limit
        self.backlog = config.backlog
        self.bind_retry = config.bind_retry
        self.bound: dict[tuple[str, int], trio.CancelScope] = {}
        self.over_capacity = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            generation = -1
            while True:
                await self.reconcile(nursery)
                generation = self.state.generation
                if task_status is not trio.TASK_STATUS_IGNORED:
                    task_status.started()
                    task_status = trio.TASK_STATUS_IGNORED
                with trio.move_on_after(
                    self.bind_retry if self.state.bind_failures else float("inf")
                ):
                    await self.state.wait_changed(generation)

    async def reconcile(self, nursery: trio.Nursery) -> None:
        wanted = set(self.state.snapshot.binds)
        for key in set(self.bound) - wanted:
            self.bound.pop(key).cancel()  # closes the socket; live connections are untouched
            log.info("listener closed address=%s port=%d", *key)
        failures: dict[tuple[str, int], str] = {}
        for key in sorted(wanted - set(self.bound)):
            try:
                sock = _bind(key, self.backlog)
            except OSError as exc:
                failures[key] = exc.strerror or str(exc)
                log.warning("cannot bind address=%s port=%d: %s", key[0], key[1], failures[key])
                continue
            scope = trio.CancelScope()
            self.bound[key] = scope
            nursery.start_soon(self._accept, sock, key, scope)
            log.info("listener bound address=%s port=%d", *key)
        self.state.set_bind_failures(failures)

    async def _accept(
        self, sock: socket.socket, key: tuple[str, int], scope: trio.CancelScope
    ) -> None:
        with scope, sock:
            try:
                await self._accept_loop(sock, key)
            finally:
                trio.lowlevel.notify_closing(sock)

    async def _accept_loop(self, sock: socket.socket, key: tuple[str, int]) -> None:
        # Plain non-blocking calls, waiting only when there is nothing to accept: a Trio socket
        # would add a scheduler pass to every accept (~30 us each).
        accepted = 0
        counter = self.proxy.metrics.connections_accepted.labels(key[0], str(key[1]))
        while True:
            try:
                conn, peer = sock.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as exc:
                if exc.errno in _TRANSIENT_ACCEPT_ERRORS:
                    log.warning("accept on %s:%d: %s; retrying", key[0], key[1], exc.strerror)
                    await trio.sleep(0.1)
                    continue
                raise
            if self.proxy.active >= self.limit:
                self.over_capacity += 1
                conn.close()
                continue
            counter.inc()
            conn.setblocking(False)
            # Small messages (handshake flights) must not wait for Nagle.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections.start_soon(self.proxy.handle, conn, peer, key)
            accepted += 1
            if accepted % 32 == 0:
                await trio.lowlevel.checkpoint()  # a flood of connections must not starve others


def _bind(key: tuple[str, int], backlog: int) -> socket.socket:
    sock = listening_socket(key[0], key[1], backlog)
    sock.setblocking(False)
    return sock


async def serve(
    config: ServeConfig,
    bootstrap: Sequence[Document] = (),
    *,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until cancelled or until SIGTERM/SIGINT, then drain (see `Server.run`)."""
    await Server(config, bootstrap=bootstrap).run(task_status=task_status)


class Server:
    def __init__(
        self, config: ServeConfig, state: State | None = None, bootstrap: Sequence[Document] = ()
    ) -> None:
        self.config = config
        self.state = state or State(bind_address=config.bind_address)
        self.store = Store(config.state_dir) if config.state_dir else None
        self.control = WritePath(self.state, self.store)
        self.bootstrap = list(bootstrap)
        self.metrics = Metrics()
        self.metrics.snapshot_generation.set_function(lambda: self.state.generation)
        self.metrics.snapshot_swap_time.set_function(lambda: self.state.swapped_at)
        self.proxy = Proxy(
            lambda: self.state.snapshot,
            config.proxy,
            PipePool() if config.proxy.splice else None,
            metrics=self.metrics,
        )
        self.limit = config.max_connections or connection_limit(
            self.proxy.pool.limit if self.proxy.pool else 0,
            config.admin_limits.max_connections if config.admin is not None else 0,
        )
        self._stop = trio.Event()
        self.listeners: Listeners | None = None
        self.admin_urls: list[str] = []
        self.admin_edge: Any = None  # admin.edge.Edge once serving (tests read its counters)
        self.loaded = False

    def shutdown(self) -> None:
        self._stop.set()

    def not_ready(self) -> str | None:
        """Why /readyz says 503, or None when the configuration is loaded and every listener
        of the table is bound (API.md)."""
        if not self.loaded:
            return "the stored configuration is not loaded yet"
        if self.state.bind_failures:
            failed = ", ".join(f"{a}:{p}" for a, p in sorted(self.state.bind_failures))
            return f"listeners not bound: {failed}"
        bound = set(self.listeners.bound) if self.listeners else set()
        missing = set(self.state.snapshot.binds) - bound
        if missing:
            return "listeners not bound yet: " + ", ".join(f"{a}:{p}" for a, p in sorted(missing))
        return None

    async def run(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        admin = self._open_admin()  # first: a taken admin address must fail the start, at once
        try:
            stored = self.control.load()
            if self.bootstrap:
                outcome = await self.control.apply(self.bootstrap)
                counts = collections.Counter(c.action.value for c in outcome.changes)
                log.info("bootstrap applied: %s", dict(counts))
            self.loaded = True
            log.info(
                "configuration loaded: %d stored documents, generation %d",
                stored,
                self.state.generation,
            )
            async with trio.open_nursery() as connections:
                self.listeners = Listeners(
                    self.state, self.proxy, connections, self.limit, self.config
                )
                async with trio.open_nursery() as control:
                    await control.start(self.listeners.run)
                    if admin is not None:
                        self.admin_urls = await control.start(self._admin, *admin)
                    control.start_soon(self._signals)
                    task_status.started(self)
                    await self._stop.wait()
                    log.info(
                        "shutting down: no new connections; draining %d for up to %.0fs",
                        self.proxy.active,
                        self.config.drain_timeout,
                    )
                    control.cancel_scope.cancel()  # closes every listening socket
                with trio.move_on_after(self.config.drain_timeout):
                    await self.proxy.idle.wait()
                if self.proxy.active:
                    log.info("drain timeout: closing %d connections", self.proxy.active)
                connections.cancel_scope.cancel()
        finally:
            if admin is not None:
                admin[0].close()
            if self.proxy.pool is not None:
                self.proxy.pool.close()
            if self.store is not None:
                self.store.close()

    def _open_admin(self) -> tuple[socket.socket, ssl.SSLContext | None] | None:
        """The admin API's listening socket and TLS context, or StartError saying why not."""
        if self.config.admin is None:
            return None
        tls = None
        if self.config.admin_tls_cert or self.config.admin_tls_key:
            try:
                tls = admin_tls_context(
                    self.config.admin_tls_cert,
                    self.config.admin_tls_key,
                    self.config.admin_client_ca,
                )
            except AdminTLSError as exc:
                raise StartError(str(exc)) from None
        host, port = self.config.admin
        try:
            sock = bind_admin(host, port)
        except OSError as exc:
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise StartError(
                f"cannot serve the admin API on {shown}: {exc.strerror or exc}"
            ) from None
        return sock, tls

    async def _admin(
        self,
        sock: socket.socket,
        tls: ssl.SSLContext | None,
        *,
        task_status: trio.TaskStatus[list[str]],
    ) -> None:
        from admin.app import OPEN_PATHS, create_app
        from admin.edge import Edge
        from admin.serve import serve_admin

        app = create_app(
            self.control,
            body_limit=self.config.body_limit,
            ready=self.not_ready,
            metrics=self.metrics,
        )
        edge = Edge(
            app,
            token=self.config.admin_token,
            body_limit=self.config.body_limit,
            body_timeout=self.config.body_timeout,
            open_paths=OPEN_PATHS,
            metrics=self.metrics,
            write_timeout=self.config.admin_limits.write_timeout,
        )
        self.admin_edge = edge
        await serve_admin(
            edge, sock, limits=self.config.admin_limits, tls=tls, task_status=task_status
        )

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s", signal.Signals(signum).name)
                self.shutdown()
                return
