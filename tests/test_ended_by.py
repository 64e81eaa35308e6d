"""The access log's `ended_by`: which side ended a connection, for real connections that end
four ways (the client or the backend first, with a FIN or a reset), in Passthrough (the
splice relay) and Terminate (the TLS relay). A reset names its side, so a client that cuts
its connection after its answer is not taken for a backend failure."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from typing import Any, Literal

import pytest
import trio

from .harness import (
    Pki,
    gateway_yaml,
    passthrough_listener,
    real_hello,
    route_yaml,
    running_gateway,
    secret_yaml,
    service_yaml,
    terminate_listener,
)

Ending = Literal["client", "backend", "client-reset", "backend-reset"]
SNI = "db.example.com"


def _reset(sock: trio.socket.SocketType) -> None:
    """Close with a reset (SO_LINGER 0), not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def _backend(listener: trio.socket.SocketType, ending: Ending, mode: str) -> None:
    conn, _ = await listener.accept()
    with conn:
        assert await conn.recv(65536)  # the hello (Passthrough) or the request (Terminate)
        if ending == "backend":
            await conn.send(b"bye\n")
            conn.shutdown(socket.SHUT_WR)
            while await conn.recv(65536):
                pass
        elif ending == "backend-reset":
            _reset(conn)
        else:  # the client ends: read until it has, then close
            with contextlib.suppress(ConnectionResetError):
                while await conn.recv(65536):
                    pass


async def _client(port: int, ending: Ending, mode: str, pki: Pki) -> None:
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", port))
    stream: trio.abc.Stream
    if mode == "Passthrough":
        stream = trio.SocketStream(sock)
        await stream.send_all(real_hello(SNI))
    else:
        stream = trio.SSLStream(trio.SocketStream(sock), pki.client_context(), server_hostname=SNI)
        await stream.do_handshake()
        await stream.send_all(b"request\n")
    try:
        if ending == "client":
            if isinstance(stream, trio.SSLStream):
                await stream.aclose()  # close_notify, then the TCP close
                return
            await stream.send_eof()
            while await sock.recv(65536):
                pass
        elif ending == "client-reset":
            await trio.sleep(0.2)  # the backend has the bytes and waits
            _reset(sock)
        else:  # the backend ends: read to the end (or its reset, passed on)
            try:
                while await stream.receive_some(65536):
                    pass
            except (trio.BrokenResourceError, ConnectionResetError):
                pass
    finally:
        sock.close()


@pytest.mark.parametrize("mode", ["Passthrough", "Terminate"])
@pytest.mark.parametrize(
    ("ending", "outcome", "ended_by"),
    [
        ("client", "closed", "client"),
        ("backend", "closed", "backend"),
        ("client-reset", "error", "client"),
        ("backend-reset", "error", "backend"),
    ],
)
async def test_the_access_line_names_the_side_that_ended(
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    ending: Ending,
    outcome: str,
    ended_by: str,
) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    backend_port = listener.getsockname()[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if mode == "Passthrough":
        listeners = passthrough_listener("tls", port, None)
        secret = ""
    else:
        listeners = terminate_listener("tls", port, None, "cert")
        secret = secret_yaml("cert", pki.ca.issue_cert(SNI))
    manifests = (
        gateway_yaml(port, listeners)
        + secret
        + service_yaml("db", backend_port)
        + route_yaml("db", [SNI], [("db", 1)])
    )
    with caplog.at_level(logging.INFO, logger="tlsgate.access"), trio.fail_after(15), listener:
        async with running_gateway(manifests) as server:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_backend, listener, ending, mode)
                await _client(port, ending, mode, pki)
            await server.proxy.idle.wait()
    access: list[dict[str, Any]] = [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "tlsgate.access"
    ]
    assert [(a["outcome"], a["ended_by"]) for a in access] == [(outcome, ended_by)], access


async def test_a_client_that_resets_during_its_hello_ended_it(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """What port scanners do: half a ClientHello, then a reset, before any backend."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manifests = (
        gateway_yaml(port, passthrough_listener("tls", port, None))
        + service_yaml("db", 9)
        + route_yaml("db", [SNI], [("db", 1)])
    )
    with caplog.at_level(logging.INFO, logger="tlsgate.access"), trio.fail_after(15):
        async with running_gateway(manifests) as server:
            sock = trio.socket.socket()
            await sock.connect(("127.0.0.1", port))
            await sock.send(real_hello(SNI)[:20])
            await trio.sleep(0.2)
            _reset(sock)
            await server.proxy.idle.wait()
    access = [r.fields for r in caplog.records if r.name == "tlsgate.access"]  # type: ignore[attr-defined]
    assert [(a["outcome"], a["ended_by"]) for a in access] == [("error", "client")], access


async def test_a_backend_that_resets_at_the_sslrequest_ended_it(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL's prelude: the backend gets the SSLRequest first, and resets."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manifests = (
        gateway_yaml(port, passthrough_listener("tls", port, None))
        + service_yaml("db", listener.getsockname()[1])
        + route_yaml("db", [SNI], [("db", 1)])
    )
    ssl_request = struct.pack("!ii", 8, 80877103)

    async def backend() -> None:
        conn, _ = await listener.accept()
        assert await conn.recv(8) == ssl_request
        _reset(conn)

    with caplog.at_level(logging.INFO, logger="tlsgate.access"), trio.fail_after(15), listener:
        async with running_gateway(manifests) as server:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(backend)
                sock = trio.socket.socket()
                with sock:
                    await sock.connect(("127.0.0.1", port))
                    await sock.send(ssl_request)
                    assert await sock.recv(1) == b"S"
                    await sock.send(real_hello(SNI))
                    with contextlib.suppress(ConnectionResetError):
                        while await sock.recv(65536):
                            pass
            await server.proxy.idle.wait()
    access = [r.fields for r in caplog.records if r.name == "tlsgate.access"]  # type: ignore[attr-defined]
    assert [(a["outcome"], a["ended_by"]) for a in access] == [("error", "backend")], access
