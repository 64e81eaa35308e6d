"""Serving the admin API: Hypercorn's HTTP/1.1 and HTTP/2 protocol code behind tlsgate's own
accept loop.

I/O. `hypercorn.trio.serve` accepts without bound and has no write timeout, so a few hundred
idle or slow clients could take the file descriptors the data plane counts on (its connection
limit is derived from the same limit, `server.connection_limit`). This loop is Hypercorn's
`worker_serve` (hypercorn/trio/run.py, pinned to 0.18) with three changes:

- at most `limits.max_connections` admin connections at once; the next client waits in the
  kernel's accept queue, holding no descriptor of ours;
- every send toward a client has a deadline (`limits.write_timeout`): Hypercorn shields its
  writes from cancellation, so a client that never reads would otherwise hold a slot for ever;
- the timeouts that do exist are set: the request head must arrive within the keep-alive
  timeout (Hypercorn's idle timer runs until a request's headers are complete), and each read
  within `read_timeout`. The body's overall deadline is `admin.edge`'s.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ASGIFramework
from hypercorn.utils import wrap_app

from admin.edge import CONNECTION, ConnectionGuard
from admin.listen import AdminLimits

log = logging.getLogger("tlsgate.admin")

#: Bytes a client must take within the write timeout for its answer to go on.
PROGRESS_CHUNK = 64 * 1024

#: accept() failures that mean "out of descriptors or memory for now": wait, retry.
_TRANSIENT_ACCEPT_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class _TimedStream(trio.abc.HalfCloseableStream):
    """A stream whose writes give up after `timeout` seconds: the client is then treated as
    gone (Hypercorn handles BrokenResourceError by closing the connection)."""

    def __init__(
        self, inner: trio.abc.HalfCloseableStream, timeout: float, guard: ConnectionGuard
    ) -> None:
        self.inner = inner
        self.timeout = timeout
        self.guard = guard
        self.scope = guard.scope

    def __getattr__(self, name: str) -> Any:
        # TCPServer asks for `do_handshake`, `transport_stream` and `socket` to tell TLS from
        # plain TCP: answer as the wrapped stream does (AttributeError included).
        return getattr(self.inner, name)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # The deadline is for progress, not for the whole answer: a client reading a large
        # answer slowly but steadily gets all of it; one that reads nothing for `timeout`
        # seconds does not. Hypercorn hands over a whole body in one call, hence the pieces.
        view = memoryview(data)
        for start in range(0, max(len(view), 1), PROGRESS_CHUNK):
            piece = view[start : start + PROGRESS_CHUNK]
            with trio.move_on_after(self.timeout) as deadline:
                await self.inner.send_all(piece)
            if deadline.cancelled_caught:
                break
            self.guard.sent += len(piece)
        else:
            return
        # The whole connection ends here, not only this write: Hypercorn's reader may be
        # parked waiting for pipelined answers to drain, and would hold the slot for ever.
        self.scope.cancel()
        await trio.aclose_forcefully(self.inner)
        raise trio.BrokenResourceError(f"the client read nothing for {self.timeout:g}s")

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _TCPServer(TCPServer):
    """Hypercorn's connection, with what the accept loop needs to know and do:

    - `evictable()`: the connection is between requests (or has not finished its first
      request head, or its TLS handshake), or is HTTP/2 with no stream open (a stream the
      client reset never reports itself closed to Hypercorn's idle tracking); `idle_since`
      says since when, so the longest idle goes first when room is needed;
    - once the client has gone, the keep-alive timer is stopped at once (upstream keeps the
      task and its socket until it runs out). Answers still being written are bounded by the
      write timeout, which is about progress (`_TimedStream`, `admin.edge`).
    """

    def __init__(self, *args: Any, scope: trio.CancelScope) -> None:
        super().__init__(*args)
        self.scope = scope
        self.idle = True
        self.idle_since = trio.current_time()
        self.ending = False
        self._read_scope: trio.CancelScope | None = None

    def evictable(self) -> bool:
        if self.ending:
            return False
        if self.idle:
            return True
        inner = getattr(getattr(self, "protocol", None), "protocol", None)
        streams = getattr(inner, "streams", None)
        return isinstance(streams, dict) and not streams

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            if event.idle and not self.idle:
                self.idle_since = trio.current_time()
            self.idle = event.idle
            self._arm()
        await super().protocol_send(event)

    def _arm(self) -> None:
        """The read timeout runs while no request is in progress only: an answer that
        streams for minutes (a watch) has a client that rightly sends nothing meanwhile.
        A request's head is bounded by the keep-alive timer, its body by the edge."""
        scope = self._read_scope
        if scope is not None:
            timeout = self.config.read_timeout
            scope.deadline = trio.current_time() + timeout if self.idle and timeout else math.inf

    async def _read_data(self) -> None:
        # Hypercorn's loop, with a read deadline that follows the connection's state.
        try:
            while True:
                with trio.CancelScope() as scope:
                    self._read_scope = scope
                    self._arm()
                    try:
                        data = await self.stream.receive_some(MAX_RECV)
                    except (trio.ClosedResourceError, trio.BrokenResourceError):
                        break
                self._read_scope = None
                if scope.cancelled_caught:
                    break  # nothing read for the read timeout while idle
                await self.protocol.handle(RawData(bytes(data)))
                if data == b"":
                    break
            await self.protocol.handle(Closed())
        finally:
            self.ending = True
            await self.idle_task.stop()


def hypercorn_config(limits: AdminLimits, log_name: str) -> Config:
    config = Config()
    config.accesslog = None
    config.errorlog = logging.getLogger(log_name)
    config.keep_alive_timeout = limits.keep_alive_timeout
    config.read_timeout = math.ceil(limits.read_timeout)
    config.ssl_handshake_timeout = limits.handshake_timeout
    config.graceful_timeout = 1.0
    # HTTP/2 streams per connection: with bodies up to the limit each, 100 (the default) would
    # let one connection hold hundreds of MiB; the edge's budget bounds the total as well.
    config.h2_max_concurrent_streams = limits.h2_max_streams
    return config


async def serve_admin(
    app: Callable[..., Awaitable[None]],
    sock: socket.socket,
    *,
    limits: AdminLimits,
    tls: ssl.SSLContext | None = None,
    log_name: str = "tlsgate.admin",
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on the listening `sock` until cancelled; `task_status` gets the URL."""
    server = _AdminServer(app, limits, log_name)
    listener: trio.abc.Listener[Any] = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    if tls is not None:
        # https_compatible: HTTP clients close without close_notify (RFC 2818 §2.2.2).
        listener = trio.SSLListener(listener, tls, https_compatible=True)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lifespan = Lifespan(server.app, server.config, {})
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        try:
            async with listener, trio.open_nursery() as connections:
                task_status.started([f"{'https' if tls else 'http'}://{shown}"])
                await server.accept_loop(listener, connections)
        finally:
            await server.context.terminated.set()
            lifespan_nursery.cancel_scope.cancel()


class _AdminServer:
    """The accept loop and the live connections of one admin listener."""

    def __init__(
        self, app: Callable[..., Awaitable[None]], limits: AdminLimits, log_name: str
    ) -> None:
        self.limits = limits
        self.config = hypercorn_config(limits, log_name)
        self.app = wrap_app(cast(ASGIFramework, app), self.config.wsgi_max_body_size, "asgi")
        self.context = WorkerContext(None)
        self.slots = trio.Semaphore(limits.max_connections)
        #: Live connections, oldest first (dicts keep insertion order).
        self.live: dict[_TCPServer, None] = {}

    async def accept_loop(
        self, listener: trio.abc.Listener[Any], connections: trio.Nursery
    ) -> None:
        while True:
            # Accept first (one descriptor beyond the slots at most), then make room.
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _TRANSIENT_ACCEPT_ERRORS:
                    raise
                await trio.sleep(0.1)
                continue
            try:
                self.slots.acquire_nowait()
            except trio.WouldBlock:
                self.evict_idle()
                try:
                    await self.slots.acquire()
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
            connections.start_soon(self.handle, stream)

    async def handle(self, stream: trio.abc.HalfCloseableStream) -> None:
        server = None
        try:
            with trio.CancelScope() as scope:
                # The edge's sends are bounded by this guard's progress watch.
                guard = ConnectionGuard(scope, self.limits.write_timeout)
                CONNECTION.set(guard)
                timed = _TimedStream(stream, self.limits.write_timeout, guard)
                server = _TCPServer(self.app, self.config, self.context, {}, timed, scope=scope)
                self.live[server] = None
                async with trio.open_nursery() as watchdog:
                    watchdog.start_soon(guard.watch)
                    await server
                    watchdog.cancel_scope.cancel()
        except Exception as exc:
            # The per-connection boundary: whatever one client makes the protocol code raise
            # (Hypercorn 0.18's HTTP/2 raises KeyError on DATA for a stream it has answered)
            # ends that connection only, never the process and its data plane. One line: a
            # client can do this at will, so no traceback per connection.
            log.warning("admin connection closed after an error: %s: %s", type(exc).__name__, exc)
            log.debug("admin connection error", exc_info=True)
        finally:
            if server is not None:
                self.live.pop(server, None)
            # Cancelled (at shutdown), TCPServer's own close can stop half way: make sure the
            # socket is closed before the slot is given back.
            await trio.aclose_forcefully(stream)
            self.slots.release()

    def evict_idle(self) -> None:
        """Every slot is taken and a client is waiting: close the connection idle longest
        (between requests, still sending its first request head or handshake, or HTTP/2 with
        no stream). Keep-alive clients, polling probes and slow senders then cannot keep a
        newcomer out."""
        candidates = [server for server in self.live if server.evictable()]
        if candidates:
            victim = min(candidates, key=lambda server: server.idle_since)
            victim.ending = True
            victim.scope.cancel()
