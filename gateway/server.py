"""`tlsgate serve`: the composition root. Loads the configuration, binds and reconciles the
listeners, serves connections, and shuts down gracefully.

I/O. One Trio nursery holds the live connections; another holds one accept task per bound
(address, port). A configuration change cancels only the accept tasks of binds that went away
(their sockets close), so connections already relayed keep running (ARCHITECTURE.md).
"""

from __future__ import annotations

import collections
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
from gateway import collector
from gateway.api.kinds import Document
from gateway.dataplane.binds import BIND_RETRY_SECONDS, BoundSockets
from gateway.dataplane.plane import PlaneConfig, serve_dataplane
from gateway.dataplane.proxy import Proxy, ProxyConfig
from gateway.dataplane.relay import PIPE_POOL_SIZE, PipePool
from gateway.metrics import Metrics
from gateway.store.sqlite import Store
from gateway.store.state import State
from gateway.store.writes import WritePath
from gateway.supervisor import Supervisor

log = logging.getLogger(__name__)

#: File descriptors kept free for listeners, the admin API, logs and the like.
FD_RESERVE = 256


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
    #: Data-plane worker processes; 0 serves connections in this process (API.md).
    workers: int = 0
    #: Load and bootstrap as bulk writes (`gateway/collector.py`: the collector paused, then
    #: what is alive frozen): the process `tlsgate serve` runs does; an embedding program
    #: (the tests) decides for itself.
    bulk_start: bool = False
    #: Handed to worker processes, which set up their own logging.
    log_level: str = "info"
    log_format: str = "text"


async def serve(
    config: ServeConfig,
    bootstrap: Sequence[Document] = (),
    *,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until cancelled or until SIGTERM/SIGINT, then drain (see `Server.serve`)."""
    await Server(config, bootstrap=bootstrap).serve(task_status=task_status)


class Server:
    def __init__(
        self, config: ServeConfig, state: State | None = None, bootstrap: Sequence[Document] = ()
    ) -> None:
        self.config = config
        self.state = state or State(bind_address=config.bind_address)
        self.store = Store(config.state_dir) if config.state_dir else None
        self.bootstrap = list(bootstrap)
        self.metrics = Metrics(dataplane=config.workers == 0)
        self.metrics.snapshot_generation.set_function(lambda: self.state.generation)
        self.metrics.snapshot_swap_time.set_function(lambda: self.state.swapped_at)
        workers = config.workers > 0
        self.proxy = Proxy(
            lambda: self.state.snapshot,
            config.proxy,
            PipePool() if config.proxy.splice and not workers else None,
            metrics=self.metrics,
        )
        pipes = PIPE_POOL_SIZE if config.proxy.splice else 0
        self.limit = config.max_connections or connection_limit(
            pipes, config.admin_limits.max_connections if config.admin is not None else 0
        )
        self.plane = PlaneConfig(
            limit=self.limit,
            backlog=config.backlog,
            bind_retry=config.bind_retry,
            drain_timeout=config.drain_timeout,
        )
        self.supervisor: Supervisor | None = None
        if workers:
            self.supervisor = Supervisor(
                self.state,
                config.workers,
                proxy=config.proxy,
                plane=self.plane,
                log_level=config.log_level,
                log_format=config.log_format,
            )
            self.supervisor.register(self.metrics.registry)
        self.writes = WritePath(
            self.state, self.store, self.supervisor.wait_in_force if self.supervisor else None
        )
        self._stop = trio.Event()
        self.binds: BoundSockets | None = None
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
        if self.supervisor is not None:
            return self.supervisor.not_ready()
        bound = set(self.binds.bound) if self.binds else set()
        missing = set(self.state.snapshot.binds) - bound
        if missing:
            return "listeners not bound yet: " + ", ".join(f"{a}:{p}" for a, p in sorted(missing))
        return None

    async def serve(
        self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
    ) -> None:
        admin = self._open_admin()  # first: a taken admin address must fail the start, at once
        try:
            with collector.bulk(self.config.bulk_start):
                stored = self.writes.load()
            if self.bootstrap:
                with collector.bulk(self.config.bulk_start):
                    outcome = await self.writes.apply(self.bootstrap)
                counts = collections.Counter(c.action.value for c in outcome.changes)
                log.info("bootstrap applied: %s", dict(counts))
            self.loaded = True
            log.info(
                "configuration loaded: %d stored documents, generation %d",
                stored,
                self.state.generation,
            )
            async with trio.open_nursery() as nursery:
                if self.supervisor is not None:
                    await nursery.start(self.supervisor.serve, self._stop)
                else:
                    self.binds = await nursery.start(
                        serve_dataplane, self.state, self.proxy, self.plane, self._stop
                    )
                async with trio.open_nursery() as control:
                    if admin is not None:
                        self.admin_urls = await control.start(self._serve_admin, *admin)
                    control.start_soon(self._signals)
                    task_status.started(self)
                    await self._stop.wait()
                    control.cancel_scope.cancel()
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

    async def _serve_admin(
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
            self.writes,
            body_limit=self.config.body_limit,
            ready=self.not_ready,
            metrics=self.metrics,
            workers=self.supervisor.table if self.supervisor is not None else None,
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
