"""A data plane's life: bind what the snapshot asks for, serve connections, and on stop close
the listening sockets and drain the connections for up to the drain timeout.

I/O. The same in the single-process mode (run by the server) and in each worker process.
"""

from __future__ import annotations

import logging

import attrs
import trio

from gateway.dataplane.binds import BIND_RETRY_SECONDS, BoundSockets, SnapshotSource
from gateway.dataplane.proxy import Proxy

# Every logger is under `tlsgate.` (docs/configuration.md lists them).
log = logging.getLogger("tlsgate.server")


#: Seconds between GIL hand-offs in a process whose event loop moves bytes while another
#: thread works (CPython's default is 0.005: a connection would wait that long at each step).
SWITCH_INTERVAL = 0.0002


@attrs.frozen(kw_only=True)
class PlaneConfig:
    #: Concurrent connections; above it new connections are closed at once.
    limit: int
    backlog: int = 4096
    bind_retry: float = BIND_RETRY_SECONDS
    drain_timeout: float = 30.0
    #: SO_REUSEPORT on listening sockets: several worker processes bind the same port.
    reuse_port: bool = False


async def serve_dataplane(
    source: SnapshotSource,
    proxy: Proxy,
    config: PlaneConfig,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[BoundSockets] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `stop` is set, then drain; `task_status` gets the bound sockets once the
    first snapshot's binds are reconciled."""
    async with trio.open_nursery() as connections:
        await connections.start(proxy.relays.run)
        binds = BoundSockets(
            source,
            proxy,
            connections,
            limit=config.limit,
            backlog=config.backlog,
            bind_retry=config.bind_retry,
            reuse_port=config.reuse_port,
        )
        async with trio.open_nursery() as listening:
            await listening.start(binds.serve)
            task_status.started(binds)
            await stop.wait()
            log.info(
                "shutting down: no new connections; draining %d for up to %.0fs",
                proxy.active,
                config.drain_timeout,
            )
            listening.cancel_scope.cancel()  # closes every listening socket
        with trio.move_on_after(config.drain_timeout):
            await proxy.idle.wait()
        if proxy.active:
            log.info("drain timeout: closing %d connections", proxy.active)
        connections.cancel_scope.cancel()
