"""`TlsConnection`'s handshakes on their own: real TLS (a trustme CA) between two of them over
a `socket.socketpair()`, both ends non-blocking as the data plane uses them. What follows a
handshake (records both ways, the ends of a connection) is the relay loop's:
tests/test_terminated_unit.py."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator

import attrs
import pytest
import trio
import trio.testing
import trustme

from gateway.dataplane.tlsstream import TlsConnection, TlsError

SERVER_NAME = "server.test"
CLIENT_NAME = "client.test"
#: How long a test may wait for what should happen at once: a hang fails, it does not stall
#: the suite (a safety net, not a measurement).
SAFETY = 10.0
#: Bytes each way for the full-duplex test: far more than the socket pair buffers.
BULK = 4 << 20


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def other_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the client's socket, the server's socket)."""
    client, server = socket.socketpair()
    for sock in (client, server):
        sock.setblocking(False)
    try:
        yield client, server
    finally:
        client.close()
        server.close()


def server_context(
    ca: trustme.CA, *, client_ca: trustme.CA | None = None, version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(SERVER_NAME).configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    if version is not None:
        context.maximum_version = version
    return context


def client_context(ca: trustme.CA, *, certificate_from: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if certificate_from is not None:
        certificate_from.issue_cert(CLIENT_NAME).configure_cert(context)
    return context


@attrs.define
class Ends:
    client: TlsConnection
    server: TlsConnection


def connections(
    pair: tuple[socket.socket, socket.socket],
    client: ssl.SSLContext,
    server: ssl.SSLContext,
    *,
    server_hostname: str = SERVER_NAME,
) -> Ends:
    return Ends(
        TlsConnection(pair[0], client, server_side=False, server_hostname=server_hostname),
        TlsConnection(pair[1], server, server_side=True),
    )


async def outcome(connection: TlsConnection) -> TlsError | None:
    try:
        await connection.handshake()
    except TlsError as exc:
        return exc
    return None


async def handshake_both(ends: Ends) -> tuple[TlsError | None, TlsError | None]:
    """Both handshakes at once; what each one raised (client, server)."""
    results: dict[str, TlsError | None] = {}

    async def run(name: str, connection: TlsConnection) -> None:
        results[name] = await outcome(connection)

    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "client", ends.client)
            nursery.start_soon(run, "server", ends.server)
    return results["client"], results["server"]


def send_plain(sender: TlsConnection, data: bytes) -> None:
    """Encrypt `data` and put the records on the socket (a few bytes: the pair takes them)."""
    sender.tls.write(data)
    sender.sock.send(sender.outgoing.read())


async def receive_plain(receiver: TlsConnection, size: int) -> bytes:
    """Decrypt what arrives until `size` bytes of plaintext came (an alert raises)."""
    data = bytearray()
    while len(data) < size:
        await trio.lowlevel.wait_readable(receiver.sock)
        receiver.incoming.write(receiver.sock.recv(1 << 16))
        try:
            while chunk := receiver.tls.read(1 << 14):
                data += chunk
        except ssl.SSLWantReadError:
            pass
    return bytes(data)


def raw_receive(sock: socket.socket) -> bytes:
    """What the socket holds now (the caller waited readable)."""
    return sock.recv(1 << 16)


# --- handshakes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["TLSv1.2", "TLSv1.3"]
)
async def test_handshake_then_data_both_ways(
    ca: trustme.CA, pair: tuple[socket.socket, socket.socket], version: ssl.TLSVersion
) -> None:
    ends = connections(pair, client_context(ca), server_context(ca, version=version))
    assert await handshake_both(ends) == (None, None)
    assert ends.client.tls.version() == ends.server.tls.version() == version.name.replace("_", ".")
    with trio.fail_after(SAFETY):
        send_plain(ends.client, b"hello")
        assert await receive_plain(ends.server, 5) == b"hello"
        send_plain(ends.server, b"world!")
        assert await receive_plain(ends.client, 6) == b"world!"


@pytest.mark.parametrize("split", [None, 1, 10], ids=["whole-hello", "1-byte", "10-bytes"])
async def test_initial_bytes_are_replayed_before_the_socket(
    ca: trustme.CA, pair: tuple[socket.socket, socket.socket], split: int | None
) -> None:
    """The server side starts from bytes already read for routing: all of the ClientHello,
    or only its first bytes with the rest still in the socket."""
    client = TlsConnection(
        pair[0], client_context(ca), server_side=False, server_hostname=SERVER_NAME
    )
    result: dict[str, TlsError | None] = {}

    async def client_side() -> None:
        result["client"] = await outcome(client)

    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_side)
            await trio.lowlevel.wait_readable(pair[1])
            hello = pair[1].recv(split or 1 << 16)
            assert hello[0] == 0x16, "a handshake record"
            if split is None:
                # All of it: the server side must not need the socket for the ClientHello.
                with pytest.raises(BlockingIOError):
                    pair[1].recv(1, socket.MSG_PEEK)
            server = TlsConnection(pair[1], server_context(ca), server_side=True, initial=hello)
            assert await outcome(server) is None
        assert result["client"] is None
        send_plain(client, b"routed")
        assert await receive_plain(server, 6) == b"routed"


async def test_peer_certificate(ca: trustme.CA, pair: tuple[socket.socket, socket.socket]) -> None:
    ends = connections(pair, client_context(ca), server_context(ca))
    assert await handshake_both(ends) == (None, None)
    seen = ends.client.peer_certificate()
    assert seen is not None
    assert seen["subjectAltName"] == (("DNS", SERVER_NAME),)
    assert ends.server.peer_certificate() is None, "no client certificate was asked for"


async def test_peer_certificate_of_a_client(
    ca: trustme.CA, other_ca: trustme.CA, pair: tuple[socket.socket, socket.socket]
) -> None:
    ends = connections(
        pair,
        client_context(ca, certificate_from=other_ca),
        server_context(ca, client_ca=other_ca),
    )
    assert await handshake_both(ends) == (None, None)
    seen = ends.server.peer_certificate()
    assert seen is not None
    assert seen["subjectAltName"] == (("DNS", CLIENT_NAME),)


# --- failures -------------------------------------------------------------------------------


async def test_server_closing_tcp_mid_handshake_is_a_tls_error(
    ca: trustme.CA, pair: tuple[socket.socket, socket.socket]
) -> None:
    client = TlsConnection(
        pair[0], client_context(ca), server_side=False, server_hostname=SERVER_NAME
    )
    result: dict[str, TlsError | None] = {}

    async def client_side() -> None:
        result["client"] = await outcome(client)

    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_side)
            await trio.lowlevel.wait_readable(pair[1])
            assert raw_receive(pair[1])  # the ClientHello; no answer, only a close
            pair[1].shutdown(socket.SHUT_WR)
    error = result["client"]
    assert isinstance(error, TlsError)
    assert "closed" in str(error)


@pytest.mark.parametrize("sent", [0, 40], ids=["nothing", "part-of-a-hello"])
async def test_client_closing_tcp_mid_handshake_is_a_tls_error(
    ca: trustme.CA, pair: tuple[socket.socket, socket.socket], sent: int
) -> None:
    # The first bytes of a real ClientHello, from a client engine of our own.
    engine = client_context(ca).wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname=SERVER_NAME
    )
    with pytest.raises(ssl.SSLWantReadError):
        engine.do_handshake()
    pair[0].send(outgoing.read()[:sent])
    pair[0].shutdown(socket.SHUT_WR)
    server = TlsConnection(pair[1], server_context(ca), server_side=True)
    with trio.fail_after(SAFETY):
        error = await outcome(server)
    assert isinstance(error, TlsError)
    assert "closed" in str(error)


@attrs.frozen
class Failure:
    client: Callable[[trustme.CA, trustme.CA], ssl.SSLContext]
    server: Callable[[trustme.CA, trustme.CA], ssl.SSLContext]
    hostname: str
    #: OpenSSL's reason on each side. In TLS 1.3 a client finishes its handshake before the
    #: server judges its certificate: the server's alert is then the client's first read.
    client_reason: str
    server_reason: str


FAILURES = {
    "wrong-hostname": Failure(
        lambda ca, other: client_context(ca),
        lambda ca, other: server_context(ca),
        "elsewhere.test",
        "CERTIFICATE_VERIFY_FAILED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
    ),
    "untrusted-server-ca": Failure(
        lambda ca, other: client_context(other),
        lambda ca, other: server_context(ca),
        SERVER_NAME,
        "CERTIFICATE_VERIFY_FAILED",
        "TLSV1_ALERT_UNKNOWN_CA",
    ),
    "no-client-certificate": Failure(
        lambda ca, other: client_context(ca),
        lambda ca, other: server_context(ca, client_ca=other),
        SERVER_NAME,
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "PEER_DID_NOT_RETURN_A_CERTIFICATE",
    ),
    "untrusted-client-ca": Failure(
        lambda ca, other: client_context(ca, certificate_from=ca),
        lambda ca, other: server_context(ca, client_ca=other),
        SERVER_NAME,
        "TLSV1_ALERT_UNKNOWN_CA",
        "CERTIFICATE_VERIFY_FAILED",
    ),
}


@pytest.mark.parametrize("case", FAILURES.values(), ids=FAILURES.keys())
async def test_handshake_failures_carry_openssls_reason(
    ca: trustme.CA, other_ca: trustme.CA, pair: tuple[socket.socket, socket.socket], case: Failure
) -> None:
    ends = connections(
        pair, case.client(ca, other_ca), case.server(ca, other_ca), server_hostname=case.hostname
    )
    client_error, server_error = await handshake_both(ends)
    # The failing side's alert went out before it gave up: the other side hears why.
    assert isinstance(server_error, TlsError)
    assert str(server_error) == case.server_reason
    if client_error is None:
        with trio.fail_after(SAFETY), pytest.raises(ssl.SSLError) as caught:
            await receive_plain(ends.client, 1)
        assert caught.value.reason == case.client_reason
    else:
        assert str(client_error) == case.client_reason
