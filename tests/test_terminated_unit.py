"""`relay_terminated` on its own: a real TLS client (Python's ssl engine, trustme
certificates) on one socket pair, the gateway's side of it handshaken by `TlsConnection`, and
the backend (plain, or TLS again: trio's SSLStream) on another pair, with the relay loop
between them as in the data plane.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import ssl
from collections.abc import AsyncIterator

import attrs
import pytest
import trio
import trio.testing
import trustme

from gateway.dataplane.relay import RelayLoop, Transfer
from gateway.dataplane.terminated import relay_terminated
from gateway.dataplane.tlsstream import TlsConnection, TlsError

from .streams import receive_exactly, receive_to_eof

SERVER_NAME = "db.test"
BACKEND_NAME = "backend.test"
IDLE = 60.0
#: A safety net against hangs, not a measurement.
SAFETY = 10.0
#: Bytes each way for the bulk test: far more than the socket pairs buffer.
BULK = 3 << 20


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _contexts(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(the gateway's server context for SERVER_NAME, a context that trusts `ca`)."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(SERVER_NAME).configure_cert(server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    return server_context, trusting


def _nonblocking_pair() -> tuple[socket.socket, socket.socket]:
    one, two = socket.socketpair()
    one.setblocking(False)
    two.setblocking(False)
    return one, two


def _stream(sock: socket.socket) -> trio.SocketStream:
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


class ClientApp:
    """A TLS client as an application drives one: Python's ssl engine over the socket, with
    the half-closes a stream hides (close_notify alone, a TCP FIN alone). One task may send
    while another receives (receiving never writes: a TLS 1.3 client has nothing to answer)."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=SERVER_NAME)
        #: The server's side ended without close_notify.
        self.cut = False

    async def do_handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
        await self._flush()

    async def send_all(self, data: bytes) -> None:
        self.tls.write(data)
        await self._flush()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Plaintext, b"" at close_notify or a TCP close; an alert raises ssl.SSLError."""
        while True:
            try:
                return self.tls.read(max_bytes or 1 << 16)
            except ssl.SSLWantReadError:
                await self._fill()
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLEOFError:
                self.cut = True  # a TCP close without close_notify: truncation
                return b""

    async def close_notify(self) -> None:
        """close_notify, with the TCP connection left open (as a TLS client may do it)."""
        with contextlib.suppress(ssl.SSLWantReadError):  # the peer's is not in yet
            self.tls.unwrap()
        await self._flush()

    def send_eof(self) -> None:
        """A TCP half-close with no close_notify."""
        self.sock.shutdown(socket.SHUT_WR)

    async def send_raw(self, data: bytes) -> None:
        await trio.lowlevel.wait_writable(self.sock)
        self.sock.send(data)

    async def _flush(self) -> None:
        view = memoryview(self.outgoing.read())
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)

    async def _fill(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)
                continue
            if data:
                self.incoming.write(data)
            else:
                self.incoming.write_eof()
            return


@attrs.define
class Connection:
    """client app <-> [client_tls | relay | backend] <-> backend app."""

    client: ClientApp
    client_tls: TlsConnection
    backend: socket.socket
    backend_app: trio.abc.Stream
    backend_tls: TlsConnection | None
    loop: RelayLoop
    #: The backend application's socket itself (under `backend_app`).
    backend_raw: socket.socket
    transfer: Transfer = attrs.Factory(lambda: Transfer(idle_timeout=IDLE))

    async def relay(self) -> None:
        await relay_terminated(
            self.loop, self.client_tls, self.backend, self.backend_tls, self.transfer
        )


async def _handshake(client: ClientApp, server: TlsConnection) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.handshake)


@pytest.fixture(params=["plain", "tls"], ids=["plain-backend", "tls-backend"])
async def connection(
    request: pytest.FixtureRequest, ca: trustme.CA, nursery: trio.Nursery
) -> AsyncIterator[Connection]:
    """A handshaken client and a connected backend (TLS too, as re-encryption makes it)."""
    client_app, client_side = _nonblocking_pair()
    backend_side, backend_app = _nonblocking_pair()
    server_context, client_context = _contexts(ca)
    client = ClientApp(client_app, client_context)
    client_tls = TlsConnection(client_side, server_context, server_side=True)
    backend_tls = None
    backend: trio.abc.Stream = _stream(backend_app)
    with trio.fail_after(SAFETY):
        await _handshake(client, client_tls)
        if request.param == "tls":
            backend_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ca.issue_cert(BACKEND_NAME).configure_cert(backend_context)
            backend_tls = TlsConnection(
                backend_side, client_context, server_side=False, server_hostname=BACKEND_NAME
            )
            backend = trio.SSLStream(backend, backend_context, server_side=True)
            async with trio.open_nursery() as handshakes:
                handshakes.start_soon(backend.do_handshake)
                handshakes.start_soon(backend_tls.handshake)
    loop = RelayLoop(None)
    await nursery.start(loop.run)
    try:
        yield Connection(client, client_tls, backend_side, backend, backend_tls, loop, backend_app)
    finally:
        for sock in (client_app, client_side, backend_side, backend_app):
            sock.close()


async def end_backend(connection: Connection) -> None:
    """The backend ends its side: close_notify when it speaks TLS, a FIN otherwise."""
    if isinstance(connection.backend_app, trio.SSLStream):
        await connection.backend_app.aclose()
    else:
        assert isinstance(connection.backend_app, trio.SocketStream)
        await connection.backend_app.send_eof()


async def test_both_ways_then_the_backend_ending_ends_both(connection: Connection) -> None:
    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.relay)
            await connection.client.send_all(b"query")
            assert await receive_exactly(connection.backend_app, 5) == b"query"
            await connection.backend_app.send_all(b"answer!")
            assert await receive_exactly(connection.client, 7) == b"answer!"
            # The client never ends its side: the backend's end closes the client's TLS
            # (close_notify) and the relay returns without waiting for the client.
            await end_backend(connection)
            assert await receive_to_eof(connection.client) == b""
    assert (connection.transfer.up, connection.transfer.down) == (5, 7)
    assert not connection.transfer.scope.cancelled_caught
    assert connection.loop.relaying == 0


async def test_the_clients_close_notify_half_closes_and_the_answer_still_flows(
    connection: Connection,
) -> None:
    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.relay)
            await connection.client.send_all(b"last query")
            await connection.client.close_notify()
            assert await receive_exactly(connection.backend_app, 10) == b"last query"
            if isinstance(connection.backend_app, trio.SSLStream):
                # A TLS backend hears close_notify in turn (trio's stream reads it as EOF).
                assert await connection.backend_app.receive_some(1) == b""
            else:
                assert await receive_to_eof(connection.backend_app) == b""  # SHUT_WR
            # The client's end does not end what the backend still sends.
            await connection.backend_app.send_all(b"late answer")
            assert await receive_exactly(connection.client, 11) == b"late answer"
            await end_backend(connection)
            assert await receive_to_eof(connection.client) == b""
    assert (connection.transfer.up, connection.transfer.down) == (10, 11)
    assert connection.loop.relaying == 0


async def test_a_tcp_close_without_close_notify_ends_the_connection(
    connection: Connection,
) -> None:
    """To OpenSSL a FIN without close_notify is truncation, after which its engine sends
    nothing more: the backend is told (half-close, or close_notify) and the pair ends by
    itself, with no answer awaited that could not be delivered."""
    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.relay)
            await connection.client.send_all(b"cut")
            connection.client.send_eof()
            assert await receive_exactly(connection.backend_app, 3) == b"cut"
            assert await receive_to_eof(connection.backend_app) == b""
    assert connection.transfer.up == 3
    assert connection.loop.relaying == 0


@pytest.mark.parametrize("connection", ["tls"], indirect=True)
async def test_a_tls_backend_closing_without_close_notify_ends_the_client_cleanly(
    connection: Connection,
) -> None:
    """A TLS backend that just closes TCP (common) ends the client's TLS with close_notify,
    as a plain backend's FIN does."""
    backend = connection.backend_app
    assert isinstance(backend, trio.SSLStream)
    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.relay)
            await backend.send_all(b"partial")
            assert await receive_exactly(connection.client, 7) == b"partial"
            transport = backend.transport_stream
            assert isinstance(transport, trio.SocketStream)
            await transport.send_eof()
            assert await receive_to_eof(connection.client) == b""
    assert not connection.client.cut  # close_notify came
    assert connection.loop.relaying == 0


@pytest.mark.parametrize("connection", ["plain"], indirect=True)
async def test_a_backend_that_answers_an_upload_it_will_not_read_is_heard(
    connection: Connection,
) -> None:
    """The backend stops reading an upload, answers (an HTTP 413, say) and closes: sending it
    the rest fails, and its answer still reaches the client before the pair ends."""
    backend = connection.backend_app
    assert isinstance(backend, trio.SocketStream)
    failure: list[BaseException] = []

    async def relay() -> None:
        try:
            await connection.relay()
        except OSError as exc:
            failure.append(exc)

    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay)
            nursery.start_soon(connection.client.send_all, b"u" * (8 << 20))
            moved = -1
            while moved != connection.transfer.up:  # until the upload is stuck
                moved = connection.transfer.up
                await trio.sleep(0.2)
            # The answer and the close at once (no checkpoint between): the loop sees the
            # backend gone (its send fails) with the answer still unread.
            connection.backend_raw.send(b"413 too large")
            connection.backend_raw.close()  # with the upload unread
            assert await receive_exactly(connection.client, 13) == b"413 too large"
            nursery.cancel_scope.cancel()  # the client's upload, stuck for good
    assert failure  # the upload was cut: an error, after the answer
    assert connection.loop.relaying == 0


async def test_garbage_from_the_client_is_a_tls_error(connection: Connection) -> None:
    # An application-data record of the right shape whose contents do not decrypt.
    await connection.client.send_raw(b"\x17\x03\x03\x00\x20" + bytes(32))
    with trio.fail_after(SAFETY), pytest.raises(TlsError) as caught:
        await connection.relay()
    assert str(caught.value)
    assert connection.loop.relaying == 0


async def test_bulk_both_ways_at_once_through_full_buffers_arrives_intact(
    connection: Connection,
) -> None:
    """Far more than the sockets buffer, both ways at once: each side is read only while the
    other can take what it gives, and nothing is lost or reordered."""
    up = random.Random(1).randbytes(BULK)
    down = random.Random(2).randbytes(BULK)
    got: dict[str, bytes] = {}

    async def collect(stream: trio.abc.ReceiveStream | ClientApp, name: str) -> None:
        got[name] = await receive_exactly(stream, BULK)

    async def send_in_pieces(stream: trio.abc.SendStream | ClientApp, data: bytes) -> None:
        for offset in range(0, len(data), 300_000):  # not a multiple of a record
            await stream.send_all(data[offset : offset + 300_000])

    with trio.fail_after(SAFETY * 3):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.relay)
            async with trio.open_nursery() as exchange:
                exchange.start_soon(collect, connection.backend_app, "backend")
                exchange.start_soon(collect, connection.client, "client")
                exchange.start_soon(send_in_pieces, connection.client, up)
                exchange.start_soon(send_in_pieces, connection.backend_app, down)
            await end_backend(connection)
            assert await receive_to_eof(connection.client) == b""
    digest = hashlib.sha256
    assert digest(got["backend"]).digest() == digest(up).digest()
    assert digest(got["client"]).digest() == digest(down).digest()
    assert (connection.transfer.up, connection.transfer.down) == (BULK, BULK)


async def test_a_slow_reader_stalls_only_its_direction(connection: Connection) -> None:
    """The client stops reading: the backend's bytes back up (the loop stops reading the
    backend), while the client's queries still reach the backend."""
    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.relay)
            flood = b"x" * (8 << 20)
            nursery.start_soon(connection.backend_app.send_all, flood)
            # Until the buffers between the backend and the client are full (real time:
            # the kernel's buffers fill, nothing here to wait on).
            moved = -1
            while moved != connection.transfer.down:
                moved = connection.transfer.down
                await trio.sleep(0.2)
            assert 0 < connection.transfer.down < len(flood)  # held back, not buffered whole
            await connection.client.send_all(b"still here")
            assert await receive_exactly(connection.backend_app, 10) == b"still here"
            nursery.cancel_scope.cancel()
    assert connection.loop.relaying == 0  # the cancelled relay left the set


async def test_the_idle_timeout_returns_quietly(
    connection: Connection, autojump_clock: trio.testing.MockClock
) -> None:
    connection.transfer = Transfer(idle_timeout=30)
    started = trio.current_time()
    await connection.relay()
    assert connection.transfer.scope.cancelled_caught
    assert trio.current_time() == pytest.approx(started + 30)
    assert connection.loop.relaying == 0


async def test_a_request_that_came_with_the_handshake_is_relayed(
    ca: trustme.CA, nursery: trio.Nursery
) -> None:
    """A client's first request right behind its Finished is read with it, so it waits in
    the engine, not in the socket: the relay passes it on with no readiness to wake it."""
    client_app, client_side = _nonblocking_pair()
    backend_side, backend_app = _nonblocking_pair()
    server_context, client_context = _contexts(ca)
    client = ClientApp(client_app, client_context)
    client_tls = TlsConnection(client_side, server_context, server_side=True)
    loop = RelayLoop(None)
    await nursery.start(loop.run)
    transfer = Transfer(idle_timeout=IDLE)
    backend = _stream(backend_app)
    try:
        with trio.fail_after(SAFETY):
            async with trio.open_nursery() as handshakes:
                handshakes.start_soon(client_tls.handshake)
                await client.do_handshake()
                await client.send_all(b"early")  # no checkpoint between: with the Finished
            assert client_tls.incoming.pending, "the request is in the engine already"
            async with trio.open_nursery() as relaying:
                relaying.start_soon(
                    relay_terminated, loop, client_tls, backend_side, None, transfer
                )
                assert await receive_exactly(backend, 5) == b"early"
                await backend.send_all(b"late")
                assert await receive_exactly(client, 4) == b"late"
                await backend.send_eof()
    finally:
        for sock in (client_app, client_side, backend_side, backend_app):
            sock.close()
    assert (transfer.up, transfer.down) == (5, 4)


def _shake(
    one: ssl.SSLObject, one_bios: tuple[ssl.MemoryBIO, ssl.MemoryBIO], other: TlsConnection
) -> None:
    """Handshake an engine of the test's with a TlsConnection's, in memory (no sockets)."""
    for _ in range(8):
        for engine in (one, other.tls):
            with contextlib.suppress(ssl.SSLWantReadError):
                engine.do_handshake()
        other.incoming.write(one_bios[1].read())
        one_bios[0].write(other.outgoing.read())


async def test_what_came_with_both_handshakes_is_passed_on_in_order(
    ca: trustme.CA, nursery: trio.Nursery
) -> None:
    """At the relay's start both engines already hold records: the client's request and
    close_notify, a TLS 1.2 backend's banner. The backend's go first: its engine must not be
    shut down (close_notify toward it) over records nobody read."""
    client_app, client_side = _nonblocking_pair()
    backend_side, backend_app = _nonblocking_pair()
    server_context, trusting = _contexts(ca)
    # The client and the gateway's server side; the request and close_notify stay queued.
    client_tls = TlsConnection(client_side, server_context, server_side=True)
    client_bios = (ssl.MemoryBIO(), ssl.MemoryBIO())
    client = trusting.wrap_bio(*client_bios, server_hostname=SERVER_NAME)
    _shake(client, client_bios, client_tls)
    client.write(b"req")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.unwrap()
    client_tls.incoming.write(client_bios[1].read())
    # The gateway's client side and a TLS 1.2 backend that speaks right after its Finished.
    backend_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    backend_context.maximum_version = ssl.TLSVersion.TLSv1_2
    ca.issue_cert(BACKEND_NAME).configure_cert(backend_context)
    backend_tls = TlsConnection(
        backend_side, trusting, server_side=False, server_hostname=BACKEND_NAME
    )
    backend_bios = (ssl.MemoryBIO(), ssl.MemoryBIO())
    backend = backend_context.wrap_bio(*backend_bios, server_side=True)
    for _ in range(8):
        with contextlib.suppress(ssl.SSLWantReadError):
            backend_tls.tls.do_handshake()
        backend_bios[0].write(backend_tls.outgoing.read())
        with contextlib.suppress(ssl.SSLWantReadError):
            backend.do_handshake()
            if not backend_tls.incoming.pending:
                backend.write(b"banner")  # with its Finished
        backend_tls.incoming.write(backend_bios[1].read())
    assert client_tls.incoming.pending
    assert backend_tls.incoming.pending
    loop = RelayLoop(None)
    await nursery.start(loop.run)
    transfer = Transfer(idle_timeout=IDLE)
    backend_stream = _stream(backend_app)
    try:
        with trio.fail_after(SAFETY):
            async with trio.open_nursery() as relaying:
                relaying.start_soon(
                    relay_terminated, loop, client_tls, backend_side, backend_tls, transfer
                )
                heard = bytearray()
                while not heard.endswith(b"req"):  # the request, then close_notify
                    backend_bios[0].write(await backend_stream.receive_some(1 << 16))
                    with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                        heard += backend.read(100)
                backend.write(b"answer")
                with contextlib.suppress(ssl.SSLError):
                    backend.unwrap()
                await backend_stream.send_all(backend_bios[1].read())
        received = bytearray()
        with contextlib.suppress(BlockingIOError):
            while chunk := client_app.recv(1 << 16):
                received += chunk
        client_bios[0].write(bytes(received))
        told = bytearray()
        with contextlib.suppress(ssl.SSLZeroReturnError):
            while chunk := client.read(100):
                told += chunk
    finally:
        for sock in (client_app, client_side, backend_side, backend_app):
            sock.close()
    assert bytes(told) == b"banneranswer"
    assert (transfer.up, transfer.down) == (3, 12)
