"""The data plane's listening sockets: one per (address, port) of the snapshot, each with an
accept task, reconciled at every swap.

I/O. A configuration change cancels only the accept tasks of binds that went away (their
sockets close), so connections already relayed keep running (ARCHITECTURE.md). A bind that
fails is a runtime fact: reported to the state (status says PortUnavailable) and retried.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Mapping
from typing import Protocol

import trio

from gateway.dataplane.proxy import Proxy
from gateway.dataplane.sockets import listening_socket
from gateway.routing.snapshot import Snapshot

# Every logger is under `tlsgate.` (docs/configuration.md lists them).
log = logging.getLogger("tlsgate.server")

#: Accept errors that mean "out of resources for now": wait and retry, never die of EMFILE.
_TRANSIENT_ACCEPT_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
#: How often a failed bind is retried while no configuration change happens.
BIND_RETRY_SECONDS = 5.0


class SnapshotSource(Protocol):
    """Where the sockets learn what to bind, and report what failed (`store.state.State`)."""

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def generation(self) -> int: ...

    @property
    def bind_failures(self) -> Mapping[tuple[str, int], str]: ...

    def set_bind_failures(self, failures: Mapping[tuple[str, int], str]) -> None: ...

    async def wait_changed(self, generation: int) -> Snapshot: ...


class BoundSockets:
    """One listening socket per (address, port) of the snapshot, each with its accept task."""

    def __init__(
        self,
        state: SnapshotSource,
        proxy: Proxy,
        connections: trio.Nursery,
        *,
        limit: int,
        backlog: int = 4096,
        bind_retry: float = BIND_RETRY_SECONDS,
        reuse_port: bool = False,
    ) -> None:
        self.state = state
        self.proxy = proxy
        self.connections = connections
        self.limit = limit
        self.backlog = backlog
        self.bind_retry = bind_retry
        self.reuse_port = reuse_port
        self.bound: dict[tuple[str, int], trio.CancelScope] = {}
        self.over_capacity = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind what the snapshot asks for, then follow every swap until cancelled."""
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
            log.info("listener closed", extra={"fields": {"address": key[0], "port": key[1]}})
        failures: dict[tuple[str, int], str] = {}
        for key in sorted(wanted - set(self.bound)):
            try:
                sock = _bind(key, self.backlog, reuse_port=self.reuse_port)
            except OSError as exc:
                failures[key] = exc.strerror or str(exc)
                log.warning(
                    "cannot bind",
                    extra={"fields": {"address": key[0], "port": key[1], "error": failures[key]}},
                )
                continue
            scope = trio.CancelScope()
            self.bound[key] = scope
            nursery.start_soon(self._accept, sock, key, scope)
            log.info("listener bound", extra={"fields": {"address": key[0], "port": key[1]}})
        self.state.set_bind_failures(failures)
        # Counters of listeners, routes and backends no longer configured go with them.
        self.proxy.metrics.retain(self.state.snapshot)

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
        accepted_key = (key[0], str(key[1]))
        counts = self.proxy.metrics.connections_accepted.counts
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
                self.proxy.metrics.connections_refused.add(("max-connections",))
                conn.close()
                continue
            counts[accepted_key] = counts.get(accepted_key, 0) + 1
            conn.setblocking(False)  # TCP_NODELAY it has from the listener (`_bind`)
            self.connections.start_soon(self.proxy.handle, conn, peer, key)
            accepted += 1
            if accepted % 32 == 0:
                await trio.lowlevel.checkpoint()  # a flood of connections must not starve others


#: Seconds the kernel may hold a connection whose client has sent nothing yet before the
#: listener sees it (TCP_DEFER_ACCEPT). A TLS client (and a PostgreSQL one) speaks first, so a
#: connection is accepted with its ClientHello already queued and is read at once, without a
#: wait and a scheduler pass (~50 us a connection). A client that stays silent is accepted
#: after about this long and then gets the hello timeout as before.
DEFER_ACCEPT_SECONDS = 1


def _bind(key: tuple[str, int], backlog: int, *, reuse_port: bool) -> socket.socket:
    sock = listening_socket(key[0], key[1], backlog, reuse_port=reuse_port)
    sock.setblocking(False)
    # Small messages (handshake flights) must not wait for Nagle. Set here, not per accepted
    # connection: Linux gives an accepted socket its listener's TCP options.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(socket, "TCP_DEFER_ACCEPT"):  # Linux
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_SECONDS)
    return sock
