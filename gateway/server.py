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
from gateway.metrics import BuildInfo, CertificateExpiry, Metrics, OpenConnections, ProcessTree
from gateway.monitor import HealthCollector, HealthMonitor
from gateway.routing.health import HealthView
from gateway.store.etcd import EtcdStore, EtcdTLS
from gateway.store.follow import Follower, Health
from gateway.store.location import EtcdLocation, SqliteLocation, parse_location
from gateway.store.replicas import Registry, rfc3339
from gateway.store.sqlite import Store, StoreError
from gateway.store.state import State
from gateway.store.writes import DocumentStore, WritePath
from gateway.supervisor import Supervisor

log = logging.getLogger("tlsgate.server")

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
    #: `--store URL` (API.md "Store and replicas"); wins over `state_dir` when given.
    store_url: str | None = None
    #: TLS to etcd, for `etcds://` stores.
    etcd_tls: EtcdTLS | None = None
    #: This replica's name under the etcd prefix (default: host name and admin port).
    replica_name: str | None = None
    #: Seconds of this replica's etcd lease: a dead replica is forgotten after it.
    replica_lease: int = 10
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
        self.health = Health()
        self.store: DocumentStore | None = self._open_store()
        self.bootstrap = list(bootstrap)
        self.metrics = Metrics(dataplane=config.workers == 0)
        self.metrics.store_up.set_function(lambda: 1 if self.health.up else 0)
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
        #: Endpoint health: active probes and passive ejection, for every worker.
        self.monitor = HealthMonitor(self.state, on_view=self._health_view)
        self.metrics.registry.register(HealthCollector(self.monitor))
        if not workers:
            self.proxy.dialer.report = self.monitor.observe
        self.supervisor: Supervisor | None = None
        if workers:
            self.supervisor = Supervisor(
                self.state,
                config.workers,
                proxy=config.proxy,
                plane=self.plane,
                log_level=config.log_level,
                log_format=config.log_format,
                monitor=self.monitor,
            )
            self.supervisor.register(self.metrics.registry)
        supervisor = self.supervisor
        self.metrics.registry.register(BuildInfo())
        self.metrics.registry.register(
            ProcessTree(supervisor.pids if supervisor is not None else tuple)
        )
        self.certificates = CertificateExpiry(lambda: self.state.snapshot)
        self.metrics.registry.register(self.certificates)
        self.open_connections = (
            supervisor.open_connections
            if supervisor is not None
            else OpenConnections(lambda: [self.proxy.open])
        )
        if supervisor is None:
            self.metrics.registry.register(self.open_connections)
        self.writes = WritePath(
            self.state, self.store, self.supervisor.wait_in_force if self.supervisor else None
        )
        self.follower: Follower | None = None
        self.registry: Registry | None = None
        if isinstance(self.store, EtcdStore):
            self.registry = Registry(
                self.store,
                self.health,
                name=self.replica_name,
                ttl=config.replica_lease,
                info=self.replica_info,
            )
            self.follower = Follower(
                self.store, self.writes, self.health, on_applied=self.registry.nudge
            )
        self._stop = trio.Event()
        self.binds: BoundSockets | None = None
        self.admin_urls: list[str] = []
        self.admin_edge: Any = None  # admin.edge.Edge once serving (tests read its counters)
        self.loaded = False

    def _open_store(self) -> DocumentStore | None:
        config = self.config
        if config.store_url:
            location = parse_location(config.store_url)
        elif config.state_dir:
            location = SqliteLocation(config.state_dir)
        else:
            return None
        if isinstance(location, SqliteLocation):
            return Store(location.directory)
        assert isinstance(location, EtcdLocation)
        if location.tls and config.etcd_tls is None:
            tls: EtcdTLS | None = EtcdTLS()
        else:
            tls = config.etcd_tls
        if tls is not None and not location.tls:
            raise StoreError("--etcd-cacert/--etcd-cert/--etcd-key need an etcds:// store")
        return EtcdStore(location.endpoints, location.prefix, tls=tls)

    def _health_view(self, view: HealthView) -> None:
        self.proxy.dialer.health = view  # read by this process's data plane (--workers 0)

    @property
    def replica_name(self) -> str:
        if self.config.replica_name:
            return self.config.replica_name
        port = self.config.admin[1] if self.config.admin else 0
        return f"{socket.gethostname()}:{port}"

    def replica_info(self) -> dict[str, object]:
        """This replica's entry in `GET /v1/replicas` (API.md)."""
        return {
            "name": self.replica_name,
            "revision": self.writes.applied,
            "generation": self.state.generation,
            "ready": self.loaded and self.not_ready() is None,
            "lastSwap": rfc3339(self.state.swapped_at),
        }

    def store_status(self) -> dict[str, object]:
        """What `/readyz` says of the store: its kind, and whether it takes writes."""
        kind = "none" if self.store is None else "etcd" if self.follower else "sqlite"
        status: dict[str, object] = {"kind": kind, "up": self.health.up}
        if self.store is not None:
            status["revision"] = self.writes.applied
        if (problem := self.health.problem()) is not None:
            status["problem"] = problem
        return status

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
                log.info("bootstrap applied", extra={"fields": dict(sorted(counts.items()))})
            self.loaded = True
            log.info(
                "configuration loaded",
                extra={"fields": {"stored": stored, "generation": self.state.generation}},
            )
            async with trio.open_nursery() as nursery:
                if self.supervisor is not None:
                    await nursery.start(self.supervisor.serve, self._stop)
                else:
                    self.binds = await nursery.start(
                        serve_dataplane, self.state, self.proxy, self.plane, self._stop
                    )
                async with trio.open_nursery() as control:
                    # Stopped with the rest of the control tasks: draining connections
                    # need no new health facts.
                    await control.start(self.monitor.run)
                    if self.follower is not None and self.registry is not None:
                        await control.start(self.follower.run)
                        await control.start(self.registry.run)
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
        from admin.dashboard import Sources
        from admin.edge import Edge
        from admin.serve import serve_admin

        supervisor = self.supervisor
        dashboard = Sources(
            totals=supervisor.counters.totals if supervisor is not None else self.metrics.totals,
            open=self.open_connections.sums,
            recent=lambda: supervisor.recent if supervisor is not None else self.proxy.recent,
            certificates=self.certificates.expiries,
            token=self.config.admin_token,
        )

        app = create_app(
            self.writes,
            body_limit=self.config.body_limit,
            ready=self.not_ready,
            metrics=self.metrics,
            workers=self.supervisor.table if self.supervisor is not None else None,
            health=self.monitor.health,
            replicas=self.registry or Solo(self.replica_info),
            store=self.store_status,
            credentials=[
                name
                for name, configured in (
                    ("token", self.config.admin_token),
                    ("client-certificate", self.config.admin_client_ca),
                )
                if configured
            ],
            dashboard=dashboard,
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


class Solo:
    """`/v1/replicas` of a gateway whose store no other replica shares: itself. Its own
    writes are applied when answered, so there is never anyone to wait for."""

    def __init__(self, info: Any) -> None:
        self.info = info

    async def replicas(self) -> list[dict[str, object]]:
        return [self.info()]

    async def wait(self, revision: int, seconds: float) -> list[dict[str, object]]:
        return []
