"""Moving bytes between connected socket pairs, both ways at once, until both sides are done:
every passthrough connection of the process, from one task.

I/O.

Theory of operation. A passthrough connection past its ClientHello is two non-blocking sockets
and bytes to move between them. Two tasks per connection (a pump each way, in a nursery),
each waiting on Trio once per message, cost ~28 us to start and a scheduler pass and an epoll
re-arm per message, and ~11 KiB while idle. `RelayLoop` keeps every such pair in one epoll set
of its own instead, and moves their bytes from its one task. Trio waits on the set's
descriptor, so one scheduler pass serves every pair that became ready since the last.

- Supervision stays Trio's. `RelayLoop.relay` runs in the connection's own task: it puts the
  pair in the set and sleeps (no second task, no nursery) until the loop wakes it because the
  pair is done (both EOFs) or failed (the error is raised in the task), or until the task is
  cancelled (the idle deadline, or the drain timeout cancelling the connections nursery):
  then the pair leaves the set at once, and the caller closes both sockets as before.
- Rounds, level-triggered. Each time the set says a source is readable, one round moves what
  is there: a read of up to SPLICE_MIN bytes and a send (a handshake flight or a request is
  one read and one write, cheaper so than a splice round, ~30 us whatever its size); after a
  round that filled its buffer (bulk), a splice through a pipe from the shared pool, socket ->
  pipe -> socket without entering Python (STACK-NOTES.md "Relaying bytes": ~0.25 CPU-s per
  GiB against ~1.1 with receive/send). A source with more waiting is reported again in the
  next pass: busy pairs take turns, a pass is at most MAX_EVENTS rounds, and the loop yields
  to Trio between passes. No FIONREAD: the size of the last round decides the next.
- Back-pressure. A send that does not take everything keeps the rest (bytes, or the pipe
  still holding them) and that direction stops reading its source until its destination is
  writable: a slow reader holds at most one round of its peer's bytes. Pipes are held only
  while bytes are in them; when the pool has none free, a round is a read and a send.
- Half-close. EOF on one side becomes shutdown(SHUT_WR) on the other and that direction is
  done; the other keeps flowing until its own EOF (a client that sends a query and
  half-closes still gets the whole answer).
- Timeouts. One idle deadline for both directions: the transfer's cancel scope, pushed forward
  by progress either way (at most every 1% of the timeout). When it passes, `relay` returns
  quietly with `cancelled_caught` set.
- Errors. A failing call ends the pair: both sockets leave the set, a pipe it held is closed
  (it may hold bytes), and the error is raised in the connection's task. An unexpected
  exception is handled the same way, so a bug ends one connection, not the loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import attrs
import outcome
import trio

from gateway.dataplane.sockio import send_eof

#: Bytes moved per splice round (the pipes' size). Larger rounds are cheaper per byte.
CHUNK = 1024 * 1024
#: A round reads this much at most with a plain read; a read that fills it means bulk.
SPLICE_MIN = 64 * 1024
SPLICE_AVAILABLE = hasattr(os, "splice")
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
#: Rounds in one pass of the loop before it yields to the other tasks (a bulk round is ~0.3 ms).
MAX_EVENTS = 64

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
#: A socket in error or hung up: the next call on it says what happened.
_ERR = select.EPOLLERR | select.EPOLLHUP

#: Pipes a process keeps at most (each is two descriptors and up to CHUNK of kernel memory).
PIPE_POOL_SIZE = 64


class PipePool:
    """Non-blocking pipes shared by every connection. At most `limit` exist at once, which
    bounds both file descriptors and kernel buffer memory; a pipe that saw an error may still
    hold bytes, so it is closed rather than reused."""

    def __init__(self, limit: int = PIPE_POOL_SIZE, size: int = CHUNK) -> None:
        self._free: list[tuple[int, int]] = []
        self._size = size
        self.limit = limit
        self.taken = 0

    def take(self) -> tuple[int, int] | None:
        """A pipe, or None when `limit` are in use (the caller copies instead)."""
        if self.taken >= self.limit:
            return None
        if self._free:
            pipe = self._free.pop()
        else:
            try:
                pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                return None  # out of descriptors: a copy round still works
            with contextlib.suppress(OSError):  # a smaller pipe only means more rounds
                fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, self._size)
        self.taken += 1
        return pipe

    def give_back(self, pipe: tuple[int, int], *, clean: bool) -> None:
        self.taken -= 1
        if clean:
            self._free.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])

    def close(self) -> None:
        for read_fd, write_fd in self._free:
            os.close(read_fd)
            os.close(write_fd)
        self._free.clear()


@attrs.define
class Transfer:
    """Bytes moved each way, and the idle deadline both directions push forward."""

    idle_timeout: float
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    up: int = 0
    down: int = 0
    #: Bytes the backend gets before anything from the client (the buffered ClientHello);
    #: held here, not by the caller, so that they are let go of once sent.
    first: bytes = b""
    #: The backend's connect has completed (`RelayLoop.relay` with a connect deadline).
    connected: bool = True
    #: Called once when a connect the loop waited for completes (a health report).
    on_connect: Callable[[], None] | None = None
    #: The side whose end (EOF, close_notify) came first: "client" or "backend".
    ended_by: str | None = None

    def progress(self) -> None:
        # Moving a deadline costs trio some bookkeeping: do it at most every ~1% of the timeout.
        deadline = trio.current_time() + self.idle_timeout
        if deadline - self.scope.deadline > self.idle_timeout / 100:
            self.scope.deadline = deadline


class _Way:
    """One direction of a pair: bytes from `src` to `dst`."""

    __slots__ = ("bulk", "done", "dst", "dst_fd", "in_pipe", "pending", "pipe", "src_fd", "up")

    def __init__(self, src: socket.socket, dst: socket.socket, *, up: bool) -> None:
        self.src_fd = src.fileno()
        self.dst = dst
        self.dst_fd = dst.fileno()
        self.up = up
        #: The last round filled its buffer: the next one splices.
        self.bulk = False
        #: EOF seen and passed on (SHUT_WR): nothing more this way.
        self.done = False
        #: Bytes read and not yet sent (the destination was full).
        self.pending: memoryview | None = None
        #: The pipe holding `in_pipe` spliced bytes not yet sent, while it holds any.
        self.pipe: tuple[int, int] | None = None
        self.in_pipe = 0

    @property
    def blocked(self) -> bool:
        return self.pending is not None or self.in_pipe > 0


def blame(exc: BaseException, side: str) -> None:
    """Say which socket failed ("client" or "backend"), for the access log's `ended_by`;
    the first to say it is kept (a failure raised on through another side's code)."""
    if getattr(exc, "side", None) is None:
        with contextlib.suppress(AttributeError):
            exc.side = side  # type: ignore[attr-defined]


def _src(way: _Way) -> str:
    return "client" if way.up else "backend"


def _dst(way: _Way) -> str:
    return "backend" if way.up else "client"


class ConnectError(OSError):
    """The backend's connect failed (`RelayLoop.relay` with a connect deadline): nothing was
    sent or read, so the caller may try another endpoint."""


class Parked:
    """One connection in the loop's set: two descriptors, what each is watched for, and the
    task asleep in `RelayLoop.park`. A kind of pair says what to watch (`masks`) and what to
    do when a descriptor is ready (`step`); the loop does the rest."""

    __slots__ = (
        "backend_fd",
        "backend_mask",
        "client_fd",
        "client_mask",
        "loop",
        "task",
        "transfer",
    )

    def __init__(self, client_fd: int, backend_fd: int, transfer: Transfer) -> None:
        self.client_fd = client_fd
        self.backend_fd = backend_fd
        self.transfer = transfer
        #: What the set watches for on each socket; 0 is "not in the set".
        self.client_mask = 0
        self.backend_mask = 0
        self.loop: RelayLoop | None = None
        self.task: trio.lowlevel.Task | None = None

    def start(self) -> bool:
        """In the set now, before the first wait: do what needs no readiness; True if that
        was all (the connection is done)."""
        return False

    def masks(self) -> tuple[int, int]:
        """What to watch the client and the backend for now (0: nothing)."""
        raise NotImplementedError

    def step(self, fd: int, events: int) -> bool:
        """Do what `events` on `fd` allow; True once the connection is done. An exception
        ends the connection with it (raised in its task)."""
        raise NotImplementedError

    def release(self) -> None:
        """Out of the set for good: give back what is held."""

    def abort(self, _: object) -> trio.lowlevel.Abort:
        """The connection's task is cancelled: out of the set before its sockets close."""
        assert self.loop is not None
        self.loop._detach(self)
        return trio.lowlevel.Abort.SUCCEEDED


class _Pair(Parked):
    """A passthrough connection: bytes as they are, both ways."""

    # Few slots: an idle connection holds its pair. The connect is in progress while
    # `transfer.connected` is false (only the backend's writability is watched then).
    __slots__ = ("down", "up")

    def __init__(self, client: socket.socket, backend: socket.socket, transfer: Transfer) -> None:
        super().__init__(client.fileno(), backend.fileno(), transfer)
        self.up = _Way(client, backend, up=True)
        self.down = _Way(backend, client, up=False)

    @property
    def pool(self) -> PipePool | None:
        assert self.loop is not None
        return self.loop.pool

    def start(self) -> bool:
        if self.transfer.connected:
            self._connected()
        return False

    def _connected(self) -> None:
        """The backend is connected: the idle deadline starts, the first bytes are queued."""
        transfer = self.transfer
        transfer.connected = True
        if transfer.on_connect is not None:
            transfer.on_connect()
            transfer.on_connect = None
        transfer.scope.deadline = trio.current_time() + transfer.idle_timeout
        if transfer.first:
            self.up.pending, transfer.first = memoryview(transfer.first), b""
            self._flush(self.up)

    def masks(self) -> tuple[int, int]:
        if not self.transfer.connected:
            return 0, _OUT
        up, down = self.up, self.down
        client = (_IN if not (up.done or up.blocked) else 0) | (_OUT if down.blocked else 0)
        backend = (_IN if not (down.done or down.blocked) else 0) | (_OUT if up.blocked else 0)
        return client, backend

    def step(self, fd: int, events: int) -> bool:
        if not self.transfer.connected:  # only the backend is in the set, for its connect
            code = self.up.dst.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise ConnectError(code, os.strerror(code))
            self._connected()
            return False
        if fd == self.client_fd:
            out_of, into = self.up, self.down  # the client is up's source and down's destination
        else:
            out_of, into = self.down, self.up
        if events & (_OUT | _ERR) and into.blocked:
            try:
                self._flush(into)
            except OSError:
                # This socket's peer is gone; what it sent before it went (an answer to an
                # upload it stopped reading, as an HTTP 413 is) still goes the other way.
                if not out_of.done and not out_of.blocked:
                    with contextlib.suppress(OSError):
                        self._round(out_of)
                raise
        if events & (_IN | _ERR) and not out_of.done and not out_of.blocked:
            self._round(out_of)
        return self.up.done and self.down.done

    def _round(self, way: _Way) -> None:
        pool = self.pool
        if way.bulk and pool is not None:
            pipe = pool.take()
            if pipe is not None:
                self._splice(way, pool, pipe)
                return
        try:
            data = os.read(way.src_fd, SPLICE_MIN)
        except BlockingIOError:
            return  # nothing there after all
        except OSError as exc:
            blame(exc, _src(way))
            raise
        if not data:
            self._eof(way)
            return
        way.bulk = len(data) == SPLICE_MIN
        try:
            sent = way.dst.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            blame(exc, _dst(way))
            raise
        if sent < len(data):
            way.pending = memoryview(data)[sent:]
        self._moved(way, sent)

    def _splice(self, way: _Way, pool: PipePool, pipe: tuple[int, int]) -> None:
        try:
            moved = os.splice(way.src_fd, pipe[1], CHUNK, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            moved = -1
        except BaseException as exc:
            pool.give_back(pipe, clean=False)
            blame(exc, _src(way))
            raise
        if moved <= 0:
            pool.give_back(pipe, clean=True)
            if moved == 0:
                self._eof(way)
            return
        way.bulk = moved >= SPLICE_MIN
        way.pipe, way.in_pipe = pipe, moved
        self._flush(way)

    def _flush(self, way: _Way) -> None:
        """Send what the way holds, as far as the destination takes it."""
        if way.pending is not None:
            try:
                sent = way.dst.send(way.pending)
            except BlockingIOError:
                return
            except OSError as exc:
                blame(exc, _dst(way))
                raise
            way.pending = way.pending[sent:] if sent < len(way.pending) else None
            self._moved(way, sent)
            return
        assert way.pipe is not None
        # Drain the pipe fully before reading more (STACK-NOTES.md).
        while way.in_pipe:
            try:
                sent = os.splice(way.pipe[0], way.dst_fd, way.in_pipe, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                return
            except OSError as exc:
                blame(exc, _dst(way))
                raise
            way.in_pipe -= sent
            self._moved(way, sent)
        pipe, way.pipe = way.pipe, None
        assert self.pool is not None
        self.pool.give_back(pipe, clean=True)

    def _moved(self, way: _Way, count: int) -> None:
        if count:
            transfer = self.transfer
            if way.up:
                transfer.up += count
            else:
                transfer.down += count
            transfer.progress()

    def _eof(self, way: _Way) -> None:
        way.done = True
        if self.transfer.ended_by is None:
            self.transfer.ended_by = _src(way)
        send_eof(way.dst)

    def release(self) -> None:
        for way in (self.up, self.down):
            if way.pipe is not None:
                pipe, way.pipe, way.in_pipe = way.pipe, None, 0
                assert self.pool is not None
                self.pool.give_back(pipe, clean=False)  # it may hold bytes never sent


class RelayLoop:
    """The process's relays: `run` is their one task; `relay` (a passthrough pair) and
    `park` (any `Parked`) are a connection's one wait."""

    def __init__(self, pool: PipePool | None) -> None:
        #: The splice relay's pipes; None relays with reads and writes (the caller decides).
        self.pool = pool
        self._epoll: select.epoll | None = None
        #: Descriptor -> its pair, for both descriptors of every pair in the set.
        self._pairs: dict[int, Parked] = {}

    @property
    def relaying(self) -> int:
        """Pairs in the set now."""
        return len(self._pairs) // 2

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Move bytes for every pair until cancelled. Pairs still here then get an error."""
        epoll = self._epoll = select.epoll()
        try:
            task_status.started()
            while True:
                await trio.lowlevel.wait_readable(epoll)
                for fd, events in epoll.poll(0, MAX_EVENTS):
                    pair = self._pairs.get(fd)
                    if pair is not None:  # else it ended earlier in this pass
                        self._ready(pair, fd, events)
        finally:
            for pair in {id(pair): pair for pair in self._pairs.values()}.values():
                self._end(pair, trio.ClosedResourceError("the relay loop stopped"))
            self._epoll = None
            trio.lowlevel.notify_closing(epoll)
            epoll.close()

    def relay(
        self,
        client: socket.socket,
        backend: socket.socket,
        transfer: Transfer,
        *,
        connect_deadline: float | None = None,
    ) -> Coroutine[Any, Any, None]:
        """Relay until both directions reach EOF; raises the first failure of either. Returns
        quietly (with `transfer.scope.cancelled_caught`) when the idle timeout passes.

        With `connect_deadline`, `backend` is a socket whose non-blocking connect is under
        way: the loop waits for it (so the connection's task waits once, not twice), raises
        ConnectError if it fails, and returns quietly with `transfer.connected` false if the
        deadline passes first. `transfer.first` goes to the backend before anything else.

        Not a coroutine itself but `park`'s: a parked connection holds one frame less."""
        pair = _Pair(client, backend, transfer)
        if connect_deadline is None:
            deadline = trio.current_time() + transfer.idle_timeout
        else:
            transfer.connected = False
            deadline = connect_deadline
        return self.park(pair, deadline)

    async def park(self, pair: Parked, deadline: float) -> None:
        """Put the pair in the set and sleep until it is done (returns), fails (raises its
        error), or the task is cancelled. The transfer's scope, with `deadline`, is the
        pair's timeout: the pair may move it; when it passes, this returns quietly with
        `cancelled_caught` set."""
        if self._epoll is None:
            raise RuntimeError("RelayLoop.run is not running")
        pair.loop, pair.task = self, trio.lowlevel.current_task()
        # A fresh scope per call: a retry (the next endpoint) gets its own.
        pair.transfer.scope = scope = trio.CancelScope(deadline=deadline)
        with scope:
            self._pairs[pair.client_fd] = self._pairs[pair.backend_fd] = pair
            try:
                done = pair.start()
                if not done:
                    self._watch(pair)
            except BaseException:
                self._detach(pair)
                raise
            if done:
                self._detach(pair)
                return
            await trio.lowlevel.wait_task_rescheduled(pair.abort)

    # --- the loop's work, synchronous -------------------------------------------------------

    def _ready(self, pair: Parked, fd: int, events: int) -> None:
        try:
            if not pair.step(fd, events):
                self._watch(pair)
                return
        except Exception as exc:  # the connection's task judges it (a bug is logged there)
            self._end(pair, exc)
            return
        self._end(pair, None)

    def _watch(self, pair: Parked) -> None:
        """Point the set at what each socket waits for now."""
        client, backend = pair.masks()
        if client != pair.client_mask:
            self._set(pair.client_fd, pair.client_mask, client)
            pair.client_mask = client
        if backend != pair.backend_mask:
            self._set(pair.backend_fd, pair.backend_mask, backend)
            pair.backend_mask = backend

    def _set(self, fd: int, old: int, mask: int) -> None:
        epoll = self._epoll
        assert epoll is not None
        # A socket watched for nothing leaves the set: level-triggered, a hung-up socket
        # watched for nothing would still be reported on every pass.
        if not mask:
            epoll.unregister(fd)
        elif not old:
            epoll.register(fd, mask)
        else:
            epoll.modify(fd, mask)

    def _detach(self, pair: Parked) -> None:
        """Take the pair out of the set and give back what it holds; idempotent."""
        for fd, mask in ((pair.client_fd, pair.client_mask), (pair.backend_fd, pair.backend_mask)):
            if self._pairs.get(fd) is pair:
                del self._pairs[fd]
            if mask and self._epoll is not None:
                with contextlib.suppress(OSError):
                    self._epoll.unregister(fd)
        pair.client_mask = pair.backend_mask = 0
        pair.release()

    def _end(self, pair: Parked, error: BaseException | None) -> None:
        self._detach(pair)
        assert pair.task is not None
        trio.lowlevel.reschedule(pair.task, outcome.Error(error) if error else outcome.Value(None))
