"""Terminate mode is full duplex: both directions at full speed at once, one side slow to read,
every byte checked, over real sockets with real TLS through an in-process gateway.

The side that reads slowly fills the gateway's socket toward it, so the gateway's writer parks
in `wait_writable` with part of a TLS chunk sent, while the other direction keeps calling
`receive`, which also flushes the engine's output. Without one writer at a time on each TLS
connection, the second flush either sends the next bytes of the outgoing BIO first (records
out of order: bad_record_mac at the peer) or waits writable on the same socket
(`trio.BusyResourceError`, an internal error). The slow side here also writes for a while
without reading, which checks that a stalled direction never stalls the other one.
"""

from __future__ import annotations

import hashlib
import logging
import random
import socket
import ssl
from typing import Literal

import pytest
import trio
import trustme

from .harness import (
    Pki,
    ca_config_map_yaml,
    free_port,
    gateway_yaml,
    route_yaml,
    running_gateway,
    secret_yaml,
    service_yaml,
    terminate_listener,
)

SNI = "duplex.example.com"
BACKEND_HOSTNAME = "internal.backend.test"
#: Bytes each way. The gateway's socket toward the slow side buffers ~4 MiB (Linux grows its
#: send buffer to tcp_wmem's maximum at once on loopback); the rest arrives in ROUNDS turns,
#: each one more time the gateway's writer parks, with the other direction flowing.
SIZE = 20 << 20
ROUNDS = 8  # divides SIZE
#: The slow side's receive buffer (a small TCP window), set before connect / listen.
SLOW_RCVBUF = 32 * 1024
#: How much the slow side reads at a time.
PIECE = 16 * 1024
SEND_PIECE = 1 << 20

POLICY = f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: duplex, namespace: apps}}
spec:
  targetRefs: [{{group: "", kind: Service, name: duplex}}]
  validation:
    hostname: {BACKEND_HOSTNAME}
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: backend-ca}}]
"""


def _payload(seed: int) -> bytes:
    return random.Random(seed).randbytes(SIZE)


async def _exchange(
    stream: trio.abc.Stream, outgoing: bytes, *, slow: bool, then_eof: bool
) -> tuple[str, int, bool]:
    """Send `outgoing` while receiving SIZE bytes. Returns the sha256 of what arrived, its
    length, and (`then_eof`) whether a clean EOF followed.

    A fast peer does both at once. A slow one takes turns, ROUNDS times: it sends a slice
    without reading, so the other direction stalls at the gateway while this one must keep
    flowing; then it reads a slice in small pieces, yielding between them, which wakes the
    gateway's writer toward it, to fill the socket and park again, mid-chunk, while the next
    slice comes up through the gateway."""
    digest = hashlib.sha256()
    received = 0

    async def send(data: bytes) -> None:
        for start in range(0, len(data), SEND_PIECE):
            await stream.send_all(data[start : start + SEND_PIECE])

    async def receive(until: int) -> None:
        nonlocal received
        while received < until:
            chunk = await stream.receive_some(PIECE if slow else None)
            if not chunk:
                return
            digest.update(chunk)
            received += len(chunk)
            if slow:
                await trio.lowlevel.checkpoint()

    if slow:
        step = SIZE // ROUNDS
        for turn in range(ROUNDS):
            await send(outgoing[turn * step : (turn + 1) * step])
            await receive((turn + 1) * step)
    else:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, outgoing)
            await receive(SIZE)
    eof = then_eof and received == SIZE and not await stream.receive_some()
    return digest.hexdigest(), received, eof


def _failure(group: BaseExceptionGroup[BaseException]) -> str:
    """What a peer saw when the connection broke (e.g. the SSLError behind a broken stream)."""
    leaves: list[str] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            leaves.append(_failure(exc))
        else:
            leaves.append(repr(exc) + (f" from {exc.__cause__!r}" if exc.__cause__ else ""))
    return "; ".join(leaves)


def _small_window(sock: trio.socket.SocketType) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)


@pytest.mark.parametrize(
    ("backend_tls", "slow_side"),
    [(False, "client"), (True, "client"), (True, "backend")],
    ids=["plain-backend-slow-client", "reencrypt-slow-client", "reencrypt-slow-backend"],
)
async def test_both_directions_at_once_with_a_slow_reader_arrive_intact(
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
    backend_tls: bool,
    slow_side: Literal["client", "backend"],
) -> None:
    upload, download = _payload(1), _payload(2)
    backend_ca = trustme.CA()
    backend_context: ssl.SSLContext | None = None
    if backend_tls:
        backend_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        backend_ca.issue_cert(BACKEND_HOSTNAME).configure_cert(backend_context)

    listen_sock = trio.socket.socket()
    if slow_side == "backend":
        _small_window(listen_sock)  # accepted sockets inherit it
    await listen_sock.bind(("127.0.0.1", 0))
    listen_sock.listen(8)
    listener = trio.SocketListener(listen_sock)
    backend_port = listen_sock.getsockname()[1]

    port = free_port()
    manifests = (
        gateway_yaml(port, terminate_listener("tls", port, None, "cert"))
        + secret_yaml("cert", pki.ca.issue_cert(SNI))
        + service_yaml("duplex", backend_port)
        + route_yaml("duplex", [SNI], [("duplex", 1)])
    )
    if backend_tls:
        manifests += ca_config_map_yaml("backend-ca", backend_ca, namespace="apps") + POLICY

    seen: dict[str, object] = {}

    async def backend() -> None:
        stream: trio.abc.Stream = await listener.accept()
        try:
            if backend_context is not None:
                stream = trio.SSLStream(stream, backend_context, server_side=True)
                await stream.do_handshake()
            seen["backend"] = await _exchange(
                stream, download, slow=slow_side == "backend", then_eof=False
            )
        except* (trio.BrokenResourceError, OSError) as group:
            seen["backend"] = _failure(group)
        finally:
            await trio.aclose_forcefully(stream)

    async def client() -> None:
        sock = trio.socket.socket()
        if slow_side == "client":
            _small_window(sock)
        await sock.connect(("127.0.0.1", port))
        stream = trio.SSLStream(trio.SocketStream(sock), pki.client_context(), server_hostname=SNI)
        try:
            await stream.do_handshake()
            seen["client"] = await _exchange(
                stream, upload, slow=slow_side == "client", then_eof=True
            )
        except* (trio.BrokenResourceError, OSError) as group:
            seen["client"] = _failure(group)
        finally:
            await trio.aclose_forcefully(stream)

    with caplog.at_level(logging.INFO, logger="tlsgate.access"), trio.fail_after(15):
        async with running_gateway(manifests) as server, listener:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(backend)
                await client()
            await server.proxy.idle.wait()

    access = [r.fields for r in caplog.records if r.name == "tlsgate.access"]  # type: ignore[attr-defined]
    assert len(access) == 1, access
    fields = access[0]
    assert {
        "outcome": fields["outcome"],
        "client got": seen["client"],
        "backend got": seen["backend"],
        "bytes": (fields["bytes_up"], fields["bytes_down"]),
    } == {
        "outcome": "closed",
        "client got": (hashlib.sha256(download).hexdigest(), SIZE, True),
        "backend got": (hashlib.sha256(upload).hexdigest(), SIZE, False),
        "bytes": (SIZE, SIZE),
    }, fields
