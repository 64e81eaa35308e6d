"""TLS over a non-blocking socket through `ssl.MemoryBIO`, for Terminate listeners and for
re-encryption to backends.

I/O. `trio.SSLStream` returns one 16 KiB record per call and pays Trio's scheduling for each
(~3 CPU-s per GiB, STACK-NOTES.md); this reads up to 64 KiB (`CHUNK`) from the socket at a
time and drains every decrypted record in one call. The server side starts from the
ClientHello bytes already read for routing, replayed into the engine, so the routing decision
needs no TLS code.
Every receive also flushes what the engine wants to send (TLS 1.3 tickets, KeyUpdate).

Tasks: one connection is used full duplex by two tasks (`relay_ends`): one receives, the other
sends and finishes. Both can write to the socket, since receiving flushes too, so the outgoing
side has one writer at a time (a send lock), as in trio's own `SSLStream` (trio/_ssl.py, "Why
do we need a lock on sending?"): bytes taken out of the outgoing BIO reach the socket before
any later ones, and only one task ever waits writable on it. Receiving is single-reader: one
task at a time calls `handshake` or `receive`, the only callers of `_fill`, so one task at
most waits readable.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

import trio

from gateway.dataplane.sockio import receive_some

#: Copies through the BIOs go in pieces below glibc's mmap threshold (128 KiB by default), so
#: each one reuses heap memory instead of mapping and faulting in fresh pages.
CHUNK = 64 * 1024
#: The largest TLS plaintext record (RFC 8446 §5.1): what one SSLObject.read can return.
RECORD = 16 * 1024


class TlsError(Exception):
    """The handshake or the record layer failed; the message is OpenSSL's reason."""


class TlsConnection:
    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        initial: bytes = b"",
        server_hostname: str | None = None,
    ) -> None:
        self.sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.tls = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        if initial:
            self._in.write(initial)
        self._eof = False
        #: The peer ended its side (close_notify, or TCP closed): every receive is b"" now.
        self._closed_by_peer = False
        # The send lock: held from taking bytes out of `_out` until the socket has them all;
        # who holds it writes out everything in `_out`, including what other tasks put there
        # meanwhile. A flag and a FIFO of waiters, to which `_flush` hands it on, rather than
        # `trio.Lock`: uncontended this costs two attribute writes per send, where
        # `acquire_nowait` + `release` cost ~0.7 us (task ownership, parking-lot breakers).
        self._writing = False
        self._writers = trio.lowlevel.ParkingLot()
        # Bytes already taken out of `_out` but not yet sent: kept here, not in a local, so
        # that a flush cancelled mid-chunk leaves them first in line for the next one.
        self._unsent = memoryview(b"")

    async def handshake(self) -> None:
        failure: ssl.SSLError | None = None
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                failure = exc
                break
            await self._flush()
            if not await self._fill():
                raise TlsError("the peer closed the connection during the handshake")
        # On failure, the alert OpenSSL prepared (e.g. certificate_required) is sent first.
        with contextlib.suppress(OSError):
            await self._flush()
        if failure is not None:
            raise TlsError(failure.reason or str(failure))

    async def receive(self) -> bytes:
        """Every byte of plaintext available now (waiting for at least one), b"" at EOF.

        One receiving task at a time; `send` and `finish` may run meanwhile in another."""
        while True:
            if self._closed_by_peer:
                return b""
            chunks = []
            try:
                while True:
                    chunk = self.tls.read(RECORD)
                    if not chunk:
                        # No data is SSLWantReadError; b"" is the peer's close_notify, as
                        # CPython reports it while ours is unsent (Modules/_ssl.c: a zero
                        # return with SSL_RECEIVED_SHUTDOWN). The TCP side may stay open.
                        raise ssl.SSLZeroReturnError
                    chunks.append(chunk)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._closed_by_peer = True
                await self._flush_unless_sending()
                return b"".join(chunks)  # close_notify (or a plain TCP close): EOF after this
            except ssl.SSLError as exc:
                raise TlsError(exc.reason or str(exc)) from None
            if self._out.pending:
                await self._flush_unless_sending()
            if chunks:
                return b"".join(chunks)
            if self._eof:
                return b""
            if not await self._fill():
                self._in.write_eof()

    async def send(self, data: bytes) -> None:
        try:
            self.tls.write(data)
        except ssl.SSLError as exc:
            raise TlsError(exc.reason or str(exc)) from None
        await self._flush()

    async def finish(self) -> None:
        await self.close_notify()

    async def close_notify(self) -> None:
        """Tell the peer we are done (TLS has no half-close to rely on; the caller closes)."""
        with contextlib.suppress(ssl.SSLError):
            self.tls.unwrap()
        with contextlib.suppress(OSError):
            await self._flush()

    def peer_certificate(self) -> dict[str, object] | None:
        certificate = self.tls.getpeercert()
        return dict(certificate) if certificate else None

    async def _fill(self) -> bool:
        """Read what the socket has (waiting if nothing); False at EOF."""
        if self._eof:
            return False
        data = await receive_some(self.sock, CHUNK)
        if not data:
            self._eof = True
            return False
        self._in.write(data)
        return True

    async def _flush(self) -> None:
        """Send everything in the outgoing BIO, in order; returns once the socket has it.

        Not `sockio.send_all`: the bytes in flight live in `_unsent` (so a cancelled flush
        leaves them first in line), and the lock is handed to the next writer."""
        if self._writing:
            await self._writers.park()  # returns holding the lock, handed on by its holder
        else:
            self._writing = True  # uncontended, nearly always: no scheduler pass
        try:
            while True:
                if not self._unsent:
                    if not self._out.pending:
                        return
                    self._unsent = memoryview(self._out.read(CHUNK))
                try:
                    sent = self.sock.send(self._unsent)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self.sock)  # the only writer: the lock
                    continue
                self._unsent = self._unsent[sent:]
        finally:
            if self._writers:
                self._writers.unpark()  # the next waiter now holds it: `_writing` stays True
            else:
                self._writing = False

    async def _flush_unless_sending(self) -> None:
        """Flush from `receive`: if another task is flushing, it also sends what this one put
        in the BIO (it drains until empty), so the receiver never waits behind a peer that is
        slow to read; that would stall the other direction of a full duplex relay."""
        if not self._writing:
            await self._flush()
