"""Relaying plaintext between a terminated TLS client and its backend (Terminate listeners).

I/O. Two tasks, one per direction, in a nursery inside the transfer's cancel scope: a TLS end
reads and writes records through its engine, so it cannot be moved by the socket-pair loop
(`relay`). An error in either direction leaves the nursery, which cancels the other, so both
sides are torn down together.
"""

from __future__ import annotations

import socket
from typing import Protocol

import trio

from gateway.dataplane.relay import Transfer
from gateway.dataplane.sockio import receive_some, send_all, send_eof

#: Largest plaintext read from a backend socket per round.
READ_SIZE = 64 * 1024


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
        send_eof(self.sock)


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
