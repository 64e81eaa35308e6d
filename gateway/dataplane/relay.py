"""Moving bytes between two connected sockets, both ways at once, until both sides are done.

I/O.

Theory of operation. `relay` runs one pump per direction: this task pumps client -> backend,
a child task backend -> client, in one nursery inside the transfer's cancel scope.

- Rounds. A pump waits readable. After a small message (and at the start) it reads up to
  SPLICE_MIN bytes at once and writes them: a handshake flight or a request is one read and
  one write, cheaper so than a splice round (~30 us whatever its size). A read that fills
  its buffer means bulk: then, round after round without waiting (checkpointing between
  them), the pump asks the kernel how much is waiting (FIONREAD) and moves it socket -> pipe
  -> socket with `os.splice`, never entering Python (STACK-NOTES.md "Relaying bytes": ~0.25
  CPU-s per GiB against ~1.1 with receive/send), or by one copy when it is little; a round
  that finds less than a buffer's worth waiting ends the bulk. Pipes come from a shared,
  bounded pool and are held only while a chunk is in flight, so an idle connection holds
  none.
- Full duplex. The two pumps share nothing but the transfer's counters and deadline; each
  waits only readable on its source and writable on its destination, which Trio allows on one
  socket from two tasks.
- Half-close. EOF on one side becomes shutdown(SHUT_WR) on the other, and that pump ends;
  the other direction keeps flowing until its own EOF (a client that sends a query and
  half-closes still gets the whole answer).
- Timeouts. One idle deadline for both directions, pushed forward by progress either way:
  a connection that is busy one way only is not idle. When it passes, the scope is cancelled
  and `relay` returns quietly with `cancelled_caught` set.
- Errors. An error in either direction leaves the nursery, which cancels the other pump, so
  both sides are torn down together (a pump left waiting leaked connections).

`relay_ends` is the same for plaintext `End`s (a terminated TLS client and its backend),
where TLS has no half-close to propagate (see its docstring).
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import socket
import termios
from typing import Protocol

import attrs
import trio

from gateway.dataplane.sockio import receive_some, send_all

#: Bytes moved per splice round. Trio costs ~50-70 us per round, so larger is cheaper.
CHUNK = 1024 * 1024
#: Below this many waiting bytes a round is a plain read and write.
SPLICE_MIN = 64 * 1024
#: Largest plaintext read from a backend socket per round (Terminate listeners).
READ_SIZE = 64 * 1024
SPLICE_AVAILABLE = hasattr(os, "splice")
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


#: Pipes a process keeps at most (each is two descriptors and up to CHUNK of kernel memory).
PIPE_POOL_SIZE = 64


class PipePool:
    """Non-blocking pipes shared by every connection. At most `limit` exist at once, which
    bounds both file descriptors and kernel buffer memory; a pipe that saw an error may still
    hold bytes, so it is closed rather than reused."""

    def __init__(self, limit: int = PIPE_POOL_SIZE, size: int = CHUNK) -> None:
        self._free: list[tuple[int, int]] = []
        self._slots = trio.Semaphore(limit)
        self._size = size
        self.limit = limit

    async def acquire(self) -> tuple[int, int]:
        try:
            self._slots.acquire_nowait()  # no scheduler pass in the common case
        except trio.WouldBlock:
            await self._slots.acquire()
        if self._free:
            return self._free.pop()
        try:
            read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self._slots.release()
            raise
        with contextlib.suppress(OSError):  # a smaller pipe only means more rounds
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, self._size)
        return read_fd, write_fd

    def release(self, pipe: tuple[int, int], *, clean: bool) -> None:
        if clean:
            self._free.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])
        self._slots.release()

    def close(self) -> None:
        for read_fd, write_fd in self._free:
            os.close(read_fd)
            os.close(write_fd)
        self._free.clear()


@attrs.define
class Transfer:
    """Bytes moved each way, and the idle deadline both pumps push forward."""

    idle_timeout: float
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    up: int = 0
    down: int = 0

    def progress(self) -> None:
        # Moving a deadline costs trio some bookkeeping: do it at most every ~1% of the timeout.
        deadline = trio.current_time() + self.idle_timeout
        if deadline - self.scope.deadline > self.idle_timeout / 100:
            self.scope.deadline = deadline


async def relay(
    client: socket.socket,
    backend: socket.socket,
    transfer: Transfer,
    pool: PipePool | None,
) -> None:
    """Relay until both directions reach EOF; raises on the first failure of either.
    Returns quietly (with `transfer.scope.cancelled_caught`) when the idle timeout passes."""
    transfer.scope.deadline = trio.current_time() + transfer.idle_timeout
    with transfer.scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, backend, client, transfer, pool, False)
            await _pump(client, backend, transfer, pool, True)


async def _pump(
    src: socket.socket,
    dst: socket.socket,
    transfer: Transfer,
    pool: PipePool | None,
    upstream: bool,
) -> None:
    src_fd, dst_fd = src.fileno(), dst.fileno()
    bulk = False  # the last round found a buffer's worth or more: go on without waiting
    while True:
        if not bulk:
            await trio.lowlevel.wait_readable(src)
        if bulk:
            # Mid-stream: how much is waiting decides between splice and a copy.
            waiting = _waiting(src_fd)
            if pool is not None and waiting >= SPLICE_MIN:
                moved = await _splice_round(src_fd, dst, dst_fd, pool)
            else:
                moved = await _copy_round(src_fd, dst, min(max(waiting, 4096), CHUNK))
            more = waiting >= SPLICE_MIN
        else:
            # After a small message (or at the start): most likely another one, read at once.
            moved = await _copy_round(src_fd, dst, SPLICE_MIN)
            more = moved is not None and moved >= SPLICE_MIN
        if moved is None:
            bulk = False  # nothing there after all
            continue
        if moved == 0:
            _send_eof(dst)
            return
        if upstream:
            transfer.up += moved
        else:
            transfer.down += moved
        transfer.progress()
        bulk = more
        if more:
            await trio.lowlevel.checkpoint()  # bulk: keep going, but let others run


def _waiting(fd: int) -> int:
    """Bytes in the socket's receive queue (FIONREAD); 0 at EOF."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count, True)
    return count[0]


async def _copy_round(src_fd: int, dst: socket.socket, size: int) -> int | None:
    try:
        data = os.read(src_fd, size)
    except BlockingIOError:
        return None
    await send_all(dst, data)
    return len(data)


async def _splice_round(src_fd: int, dst: socket.socket, dst_fd: int, pool: PipePool) -> int | None:
    read_fd, write_fd = await pool.acquire()
    clean = False
    try:
        try:
            moved = os.splice(src_fd, write_fd, CHUNK, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            clean = True
            return None
        pending = moved
        # Drain the pipe fully before reading more (STACK-NOTES.md).
        while pending:
            try:
                pending -= os.splice(read_fd, dst_fd, pending, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(dst)
        clean = True
        return moved
    finally:
        pool.release((read_fd, write_fd), clean=clean)


def _send_eof(dst: socket.socket) -> None:
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise


class End(Protocol):
    """One side of a terminated connection: plaintext in and out.

    `relay_ends` uses each end full duplex from two tasks: one calls `receive`, the other
    `send` and then `finish`, at the same time. An end must allow exactly that (a TLS end,
    whose `receive` also writes, serialises its writers: gateway/tlsstream.py)."""

    async def receive(self) -> bytes: ...

    async def send(self, data: bytes) -> None: ...

    async def finish(self) -> None: ...


class PlainEnd:
    """A plain TCP socket as an `End` (the backend of a Terminate listener). Its receiver only
    waits readable and its sender only writable, which trio allows at once on one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    async def receive(self) -> bytes:
        return await receive_some(self.sock, READ_SIZE)

    async def send(self, data: bytes) -> None:
        await send_all(self.sock, data)

    async def finish(self) -> None:
        _send_eof(self.sock)


async def relay_ends(client: End, backend: End, transfer: Transfer) -> None:
    """Relay plaintext between a terminated client and its backend.

    The client ending (close_notify or FIN) half-closes toward the backend, whose answer still
    flows back; the backend ending closes the client's TLS and then both sides, since TLS has
    no half-close to rely on (STACK-NOTES.md). Returns quietly on the idle timeout.

    Tasks: this one receives from the client and sends to (then finishes) the backend;
    `downstream` receives from the backend and sends to (then finishes) the client. So each
    end has one receiver and one sender, concurrently (`End`).
    """
    transfer.scope.deadline = trio.current_time() + transfer.idle_timeout
    with transfer.scope:
        async with trio.open_nursery() as nursery:

            async def downstream() -> None:
                while data := await backend.receive():
                    await client.send(data)
                    transfer.down += len(data)
                    transfer.progress()
                await client.finish()
                nursery.cancel_scope.cancel()

            nursery.start_soon(downstream)
            while data := await client.receive():
                await backend.send(data)
                transfer.up += len(data)
                transfer.progress()
            await backend.finish()
