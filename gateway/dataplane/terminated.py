"""Relaying a terminated connection's plaintext from the relay loop: the client's TLS engine
on one side, the backend (plain TCP, or TLS again as a BackendTLSPolicy says) on the other.

I/O: non-blocking socket calls made by the loop (`relay.RelayLoop`), never a wait of its own.

Theory of operation. After the handshake (in the connection's task, `tlsstream`), a
terminated connection is two sockets and two TLS engines at most, all synchronous: bytes in,
records out. So it parks in the same epoll set as passthrough pairs, and the connection's
task sleeps once for the rest of its life (no second task, no nursery), as in `relay`.

- A side is a socket with its engine, if it speaks TLS: `receive` reads what the socket has
  (at most CHUNK) and decrypts every whole record; `queue` encrypts (or keeps) plaintext for
  the peer; `flush` sends what is queued as far as the socket takes it.
- Back-pressure: a side is read only while the other has nothing queued, so a slow reader
  holds at most one read's worth (CHUNK of ciphertext) of its peer's bytes.
- Records the engine writes by itself while receiving (a KeyUpdate answer, an alert) are
  queued on the side that received them and flushed before it is read again.
- EOF (SPEC.md §10.6): the client's close_notify is a half-close toward the backend (a TLS
  backend gets close_notify), whose answer still flows; the backend ending sends the client
  close_notify and, once that is out, ends the pair: TLS has no half-close to rely on
  (STACK-NOTES.md). A failure to send that last close_notify, once everything before it
  was sent, is not an error: the client is gone. A TCP close without close_notify is
  truncation to OpenSSL, whose engine can then send nothing more: from the client, the
  backend is told (half-close) and the pair ends; from a TLS backend, it ends the client's
  TLS like any backend's end (close_notify).
- A send that fails (the peer is gone) ends the pair, after passing on what that peer sent
  before it went (a backend that answers an upload it will not read, and closes).
- Errors: OpenSSL's are TlsError, the sockets' OSError; either ends the pair and is raised
  in the connection's task. The idle timeout is the transfer's scope, as in `relay`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
from collections.abc import Coroutine
from typing import Any

import trio

from gateway.dataplane.relay import Parked, RelayLoop, Transfer, blame
from gateway.dataplane.sockio import send_eof
from gateway.dataplane.tlsstream import CHUNK, NOTHING, RECORD, TlsConnection, TlsError

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
#: A socket in error or hung up: the next call on it says what happened.
_ERR = select.EPOLLERR | select.EPOLLHUP
#: How a side ended: not yet; cleanly (close_notify, or a FIN on plain TCP); or cut (a TCP
#: close without close_notify: OpenSSL takes it as truncation, and the engine can send
#: nothing more).
_OPEN, _CLEAN, _CUT = 0, 1, 2
#: Bytes a side may hold toward its own socket and still be read: what its engine writes by
#: itself while reading (KeyUpdate answers) must not grow without bound for a peer that
#: sends and never reads. One read's records fit well below it.
BACKLOG = 2 * CHUNK


class _Side:
    """One socket of the pair and its TLS engine, if it speaks TLS: plaintext in and out."""

    __slots__ = ("closing", "incoming", "outgoing", "sock", "tls", "unsent", "who")

    def __init__(self, sock: socket.socket, tls: TlsConnection | None, who: str) -> None:
        self.sock = sock
        #: "client" or "backend": what the access log says failed (`relay.blame`).
        self.who = who
        self.tls = tls.tls if tls is not None else None
        self.incoming = tls.incoming if tls is not None else None
        self.outgoing = tls.outgoing if tls is not None else None
        #: Bytes taken from the engine (or plaintext, without one) not yet sent.
        self.unsent = tls.unsent if tls is not None else NOTHING
        #: A plain side half-closes (SHUT_WR) once what is queued is out.
        self.closing = False

    @property
    def pending(self) -> bool:
        return bool(self.unsent) or (self.outgoing is not None and self.outgoing.pending > 0)

    @property
    def backlogged(self) -> bool:
        held = len(self.unsent) + (self.outgoing.pending if self.outgoing is not None else 0)
        return held > BACKLOG

    def receive(self) -> tuple[bytes, int] | None:
        """The plaintext the socket had, and whether and how the peer ended its side
        (`_OPEN`, `_CLEAN`, `_CUT`); None if the socket had nothing after all."""
        try:
            data = self.sock.recv(CHUNK)
        except BlockingIOError:
            return None
        except OSError as exc:
            blame(exc, self.who)
            raise
        if self.tls is None:
            return data, _OPEN if data else _CLEAN
        assert self.incoming is not None
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()  # a TCP close: the engine says whether it was clean
        return self.decrypt()

    def decrypt(self) -> tuple[bytes, int]:
        """Every whole record the engine holds, as plaintext, and how the peer ended."""
        assert self.tls is not None
        chunks = []
        ended = _OPEN
        try:
            # b"" is the peer's close_notify, as CPython reports it while ours is unsent
            # (Modules/_ssl.c: a zero return with SSL_RECEIVED_SHUTDOWN).
            while chunk := self.tls.read(RECORD):
                chunks.append(chunk)
            ended = _CLEAN
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            ended = _CLEAN
        except ssl.SSLEOFError:
            ended = _CUT
        except ssl.SSLError as exc:
            error = TlsError(exc.reason or str(exc))
            blame(error, self.who)  # what this side sent did not decrypt
            raise error from None
        return b"".join(chunks), ended

    def queue(self, data: bytes) -> None:
        """Plaintext for the peer (nothing else is queued: the caller checked `pending`)."""
        if self.tls is None:
            self.unsent = memoryview(data)
            return
        try:
            self.tls.write(data)
        except ssl.SSLError as exc:
            raise TlsError(exc.reason or str(exc)) from None

    def finish(self) -> None:
        """Nothing more for the peer: close_notify, or a TCP half-close once all is sent."""
        if self.tls is None:
            self.closing = True
            return
        with contextlib.suppress(ssl.SSLError):  # SSLWantReadError: theirs is not in yet
            self.tls.unwrap()

    def flush(self) -> None:
        """Send what is queued, as far as the socket takes it."""
        while True:
            if not self.unsent:
                outgoing = self.outgoing
                if outgoing is None or not outgoing.pending:
                    break
                self.unsent = memoryview(outgoing.read(CHUNK))
            try:
                sent = self.sock.send(self.unsent)
            except BlockingIOError:
                return
            except OSError as exc:
                blame(exc, self.who)
                raise
            self.unsent = self.unsent[sent:] if sent < len(self.unsent) else NOTHING
        if self.closing:
            self.closing = False
            send_eof(self.sock)


class _Terminated(Parked):
    __slots__ = ("answered", "backend", "client", "cut", "down_done", "up_done")

    def __init__(
        self,
        client: TlsConnection,
        backend: socket.socket,
        backend_tls: TlsConnection | None,
        transfer: Transfer,
    ) -> None:
        super().__init__(client.sock.fileno(), backend.fileno(), transfer)
        self.client = _Side(client.sock, client, "client")
        self.backend = _Side(backend, backend_tls, "backend")
        #: The client ended (and the backend was told); the backend ended (and the client).
        self.up_done = False
        self.down_done = False
        #: The client cut its TLS (a TCP close without close_notify): nothing more can reach
        #: it, so the pair ends once the backend has been told.
        self.cut = False
        #: Everything the backend sent had reached the client when it ended: a failure to
        #: send the close_notify after it is then no error (the client is gone, nothing lost).
        self.answered = False

    def start(self) -> bool:
        self.client.flush()
        self.backend.flush()
        # What came with the handshake's last flight (a backend that speaks first, a client's
        # first request behind its Finished) is in the engine already, not the socket: no
        # readiness would ever announce it. The backend's first: a client's close_notify
        # among its bytes would have the backend's engine shut down over unread records.
        for from_client, side in ((False, self.backend), (True, self.client)):
            if (
                side.incoming is not None
                and side.incoming.pending
                and self._forward(from_client, side.decrypt())
            ):
                return True
        return False

    def masks(self) -> tuple[int, int]:
        client, backend = self.client, self.backend
        if self.down_done:  # only the client's last bytes and close_notify are left
            return _OUT, 0
        if self.cut:  # only the backend's last bytes and half-close are left
            return 0, _OUT
        client_mask = (0 if self.up_done or backend.pending or client.backlogged else _IN) | (
            _OUT if client.pending else 0
        )
        backend_mask = (0 if client.pending or backend.backlogged else _IN) | (
            _OUT if backend.pending else 0
        )
        return client_mask, backend_mask

    def _readable(self, from_client: bool) -> bool:
        """May this side be read now (its peer can take what it gives)?"""
        side, other = (self.client, self.backend) if from_client else (self.backend, self.client)
        if self.down_done or self.cut or (from_client and self.up_done):
            return False
        return not other.pending and not side.backlogged

    def step(self, fd: int, events: int) -> bool:
        from_client = fd == self.client_fd
        side = self.client if from_client else self.backend
        if events & (_OUT | _ERR) and side.pending:
            if self.down_done or self.cut:
                return self._last_flush()
            try:
                side.flush()
            except OSError:
                self._salvage(from_client)
                raise
        if not (events & (_IN | _ERR)) or not self._readable(from_client):
            return False
        got = side.receive()
        return got is not None and self._forward(from_client, got)

    def _salvage(self, from_client: bool) -> None:
        """Sending to this side failed; what it sent before it went may still be readable
        (the answer and close of a backend that stopped reading an upload, as an HTTP 413
        is): pass that on before the pair ends with the failure."""
        if self._readable(from_client):
            side = self.client if from_client else self.backend
            with contextlib.suppress(OSError, TlsError):
                got = side.receive()
                if got is not None:
                    self._forward(from_client, got)

    def _forward(self, from_client: bool, got: tuple[bytes, int]) -> bool:
        """Pass on what one side received; True once the connection is done."""
        side, other = (self.client, self.backend) if from_client else (self.backend, self.client)
        data, ended = got
        if data:
            other.queue(data)
            if from_client:
                self.transfer.up += len(data)
            else:
                self.transfer.down += len(data)
            self.transfer.progress()
            other.flush()
        if side.pending and ended != _CUT:  # what the engine wrote by itself while receiving
            side.flush()
        if ended == _OPEN:
            return False
        if self.transfer.ended_by is None:
            self.transfer.ended_by = side.who
        if from_client:
            self.up_done = True
            self.backend.finish()
            if ended == _CUT:
                self.cut = True
                return self._last_flush()
            self.backend.flush()
            return False
        self.down_done = True
        self.answered = not self.client.pending
        # A TLS backend's TCP close without close_notify ends the client's TLS cleanly all
        # the same, as a plain backend's FIN does (and as HAProxy and nginx do): backends
        # that just close are common, and their clients would see every end as an attack.
        self.client.finish()
        return self._last_flush()

    def _last_flush(self) -> bool:
        """One side ended for good: send the other the rest and the end (close_notify, or a
        half-close); done once that is out, or once the other turns out to be gone."""
        side = self.backend if self.cut else self.client
        try:
            side.flush()
        except OSError:
            if self.cut or self.answered:
                return True  # only the end itself was lost
            raise
        return not side.pending


def relay_terminated(
    loop: RelayLoop,
    client: TlsConnection,
    backend: socket.socket,
    backend_tls: TlsConnection | None,
    transfer: Transfer,
) -> Coroutine[Any, Any, None]:
    """Relay plaintext between a terminated client and its backend (plain, or TLS through
    `backend_tls` over `backend`) until the backend ends, or both; raises the first failure.
    Returns quietly (with `transfer.scope.cancelled_caught`) when the idle timeout passes.

    Not a coroutine itself but `RelayLoop.park`'s: a parked connection holds one frame less."""
    pair = _Terminated(client, backend, backend_tls, transfer)
    return loop.park(pair, trio.current_time() + transfer.idle_timeout)
