"""TLS over a non-blocking socket through `ssl.MemoryBIO`, for Terminate listeners and for
re-encryption to backends.

I/O. `trio.SSLStream` returns one 16 KiB record per call and pays Trio's scheduling for each
(~3 CPU-s per GiB, STACK-NOTES.md); this reads up to 256 KiB from the socket at a time and
drains every decrypted record in one call. The server side starts from the ClientHello bytes
already read for routing, replayed into the engine, so the routing decision needs no TLS code.
Every receive also flushes what the engine wants to send (TLS 1.3 tickets, KeyUpdate).
"""

from __future__ import annotations

import contextlib
import socket
import ssl

import trio

READ_SIZE = 256 * 1024
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
        """Every byte of plaintext available now (waiting for at least one), b"" at EOF."""
        while True:
            chunks = []
            try:
                while True:
                    chunk = self.tls.read(RECORD)
                    if not chunk:
                        break
                    chunks.append(chunk)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                await self._flush()
                return b"".join(chunks)  # close_notify (or a plain TCP close): EOF after this
            except ssl.SSLError as exc:
                raise TlsError(exc.reason or str(exc)) from None
            if self._out.pending:
                await self._flush()
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
        while True:
            try:
                data = self.sock.recv(CHUNK)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)
                continue
            if not data:
                self._eof = True
                return False
            self._in.write(data)
            return True

    async def _flush(self) -> None:
        while self._out.pending:
            view = memoryview(self._out.read(CHUNK))
            while view:
                try:
                    view = view[self.sock.send(view) :]
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self.sock)
