"""Moving bytes between two connected sockets, both ways at once, until both sides are done.

I/O. On Linux the bytes go socket -> pipe -> socket with `os.splice` and never enter Python
(STACK-NOTES.md "Relaying bytes": ~0.25 CPU-s per GiB against ~1.1 with receive/send); the
pipes come from a shared pool and are held only while a chunk is in flight, so an idle
connection holds none. Elsewhere, or when splice is refused, `receive_some`/`send_all`.

Half-close is propagated (EOF -> shutdown(SHUT_WR)); an error in either direction cancels the
other, so both sides are torn down together (a pump left waiting leaked connections).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket

import attrs
import trio

#: Bytes moved per splice round. Trio costs ~50-70 us per chunk, so larger is cheaper.
CHUNK = 1024 * 1024
SPLICE_AVAILABLE = hasattr(os, "splice")
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


class PipePool:
    """Non-blocking pipes shared by every connection. At most `limit` exist at once, which
    bounds both file descriptors and kernel buffer memory; a pipe that saw an error may still
    hold bytes, so it is closed rather than reused."""

    def __init__(self, limit: int = 64, size: int = CHUNK) -> None:
        self._free: list[tuple[int, int]] = []
        self._slots = trio.Semaphore(limit)
        self._size = size
        self.limit = limit

    async def acquire(self) -> tuple[int, int]:
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
        self.scope.deadline = trio.current_time() + self.idle_timeout


async def relay(
    client: trio.SocketStream, backend: trio.SocketStream, transfer: Transfer, pool: PipePool | None
) -> None:
    """Relay until both directions reach EOF; raises on the first failure of either.
    Exits quietly (the scope is cancelled) when the idle timeout passes."""
    transfer.progress()
    with transfer.scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, backend, client, transfer, pool, False)
            await _pump(client, backend, transfer, pool, True)


async def _pump(
    src: trio.SocketStream,
    dst: trio.SocketStream,
    transfer: Transfer,
    pool: PipePool | None,
    upstream: bool,
) -> None:
    if pool is not None:
        done = await _splice(src, dst, transfer, pool, upstream)
        if done:
            return
    await _copy(src, dst, transfer, upstream)


def _count(transfer: Transfer, upstream: bool, n: int) -> None:
    if upstream:
        transfer.up += n
    else:
        transfer.down += n
    transfer.progress()


def _send_eof(dst: trio.SocketStream) -> None:
    try:
        dst.socket.shutdown(socket.SHUT_WR)
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise


async def _splice(
    src: trio.SocketStream,
    dst: trio.SocketStream,
    transfer: Transfer,
    pool: PipePool,
    upstream: bool,
) -> bool:
    """Splice until EOF (True), or False when the kernel refuses splice for these sockets
    before any byte moved, so the caller falls back to copying."""
    src_sock, dst_sock = src.socket, dst.socket
    src_fd, dst_fd = src_sock.fileno(), dst_sock.fileno()
    while True:
        await trio.lowlevel.wait_readable(src_sock)
        read_fd, write_fd = await pool.acquire()
        clean = False
        try:
            try:
                n = os.splice(src_fd, write_fd, CHUNK, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                clean = True
                continue
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOSYS) and not (transfer.up or transfer.down):
                    clean = True
                    return False
                raise
            if n == 0:
                clean = True
                _send_eof(dst)
                return True
            pending = n
            # Drain the pipe fully before reading more (STACK-NOTES.md).
            while pending:
                try:
                    pending -= os.splice(read_fd, dst_fd, pending, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(dst_sock)
            clean = True
            _count(transfer, upstream, n)
        finally:
            pool.release((read_fd, write_fd), clean=clean)


async def _copy(
    src: trio.SocketStream, dst: trio.SocketStream, transfer: Transfer, upstream: bool
) -> None:
    while True:
        data = await src.receive_some(256 * 1024)
        if not data:
            _send_eof(dst)
            return
        await dst.send_all(data)
        _count(transfer, upstream, len(data))
