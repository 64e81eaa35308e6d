"""TLS over a non-blocking socket through `ssl.MemoryBIO`: the handshakes of Terminate
listeners and of re-encryption to backends.

I/O. `trio.SSLStream` returns one 16 KiB record per call and pays Trio's scheduling for each
(~3 CPU-s per GiB, STACK-NOTES.md); an engine over memory BIOs is driven by plain socket
calls instead. The server side starts from the ClientHello bytes already read for routing,
replayed into the engine, so the routing decision needs no TLS code. Once the handshake is
done, the relay loop moves the connection's records (`terminated`): one task, one wait.
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
#: What `unsent` is once all is sent: an empty slice of the last chunk would keep that
#: chunk alive for the connection's life (a memoryview holds its whole buffer).
NOTHING = memoryview(b"")


class TlsError(Exception):
    """The handshake or the record layer failed; the message is OpenSSL's reason."""


class TlsConnection:
    """A TLS engine over a non-blocking socket, for the handshake. The connection's task
    runs `handshake`; the relay loop then moves the records (`terminated`), reading
    `incoming`, `outgoing` and `unsent` directly."""

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
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side, server_hostname=server_hostname
        )
        if initial:
            self.incoming.write(initial)
        self._eof = False
        # Bytes already taken out of `outgoing` but not yet sent: kept here, not in a local,
        # so that a flush cancelled mid-chunk leaves them first in line for the next one.
        self.unsent = NOTHING

    async def handshake(self) -> None:
        """One wait per flight: each pass gives OpenSSL all the socket has, sends all it
        wrote, and waits only when it needs the peer's next flight."""
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
        # On failure, the alert OpenSSL prepared (e.g. certificate_required) is sent first;
        # on success, what follows the handshake (TLS 1.3 session tickets).
        with contextlib.suppress(OSError):
            await self._flush()
        if failure is not None:
            raise TlsError(failure.reason or str(failure))

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
        self.incoming.write(data)
        return True

    async def _flush(self) -> None:
        """Send everything in the outgoing BIO, in order; returns once the socket has it."""
        while True:
            if not self.unsent:
                if not self.outgoing.pending:
                    return
                self.unsent = memoryview(self.outgoing.read(CHUNK))
            try:
                sent = self.sock.send(self.unsent)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)
                continue
            self.unsent = self.unsent[sent:] if sent < len(self.unsent) else NOTHING
