"""The non-blocking socket calls every data-plane module uses: send all of a buffer, receive
what is there, pass an EOF on.

I/O. Plain non-blocking calls that wait only when the kernel says "would block": a Trio socket
would add a scheduler pass to every call (STACK-NOTES.md), and these run per relay round.
"""

from __future__ import annotations

import errno
import socket

import trio


async def send_all(sock: socket.socket, data: bytes | bytearray | memoryview) -> None:
    """Send every byte of `data`, waiting for room when the socket's buffer is full."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)


async def receive_some(sock: socket.socket, size: int) -> bytes:
    """What the socket has, up to `size` bytes, waiting for at least one; b"" at EOF."""
    while True:
        try:
            return sock.recv(size)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)


def send_eof(sock: socket.socket) -> None:
    """shutdown(SHUT_WR): the peer reads EOF after what was sent. Quiet when it is gone."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise
