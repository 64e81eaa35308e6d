"""Passthrough end to end over real sockets on 127.0.0.1: real TLS backends (trustme), the real
gateway, real TLS clients (SPEC.md §10, issue "Passthrough data plane")."""

from __future__ import annotations

import collections
import socket
import ssl

import pytest
import trio

from gateway.dataplane.binds import _bind
from gateway.server import Server

from .harness import (
    Pki,
    backends,
    db_route,
    free_port,
    gateway_yaml,
    handshake_outcome,
    open_fds,
    route_yaml,
    running_gateway,
    service_yaml,
    tls_client,
)


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
async def test_exact_and_wildcard_sni_reach_their_backends(pki: Pki, splice: bool) -> None:
    port = free_port()
    with backends(
        pki, ("db", ["db.example.com"]), ("web", ["*.example.com", "*.b.example.com"])
    ) as (db, web):
        manifests = (
            gateway_yaml(port)
            + service_yaml("db", db.port)
            + service_yaml("web", web.port)
            + route_yaml("db", ["db.example.com"], [("db", 1)])
            + route_yaml("web", ["*.example.com"], [("web", 1)])
        )
        async with running_gateway(manifests, splice=splice):
            with trio.fail_after(10):
                # The client verifies the backend's own certificate: nothing was terminated.
                async with tls_client(port, "db.example.com", pki.client_context()) as client:
                    assert await client.test() == {
                        "backend": "db",
                        "sni": "db.example.com",
                        "tls": True,
                    }
                    assert await client.call("PING") == "PONG"
                async with tls_client(port, "a.b.example.com", pki.client_context()) as client:
                    assert (await client.test())["backend"] == "web"
                async with tls_client(port, "WWW.Example.COM", pki.client_context()) as client:
                    # Routed case-insensitively; the backend sees the SNI as the client sent it.
                    assert await client.test() == {
                        "backend": "web",
                        "sni": "WWW.Example.COM",
                        "tls": True,
                    }


async def test_most_specific_listener_wins_and_there_is_no_fallback(pki: Pki) -> None:
    port = free_port()
    listeners = f"""
  - {{name: wide, port: {port}, hostname: "*.example.com", protocol: TLS,
     tls: {{mode: Passthrough}}, allowedRoutes: {{namespaces: {{from: All}}}}}}
  - {{name: deep, port: {port}, hostname: "*.internal.example.com", protocol: TLS,
     tls: {{mode: Passthrough}}, allowedRoutes: {{namespaces: {{from: All}}}}}}
  - {{name: exact, port: {port}, hostname: api.internal.example.com, protocol: TLS,
     tls: {{mode: Passthrough}}, allowedRoutes: {{namespaces: {{from: All}}}}}}
"""
    names = ["*.example.com", "*.internal.example.com"]
    with backends(pki, ("wide", names), ("deep", names), ("exact", names)) as (wide, deep, exact):
        manifests = (
            gateway_yaml(port, listeners)
            + service_yaml("wide", wide.port)
            + service_yaml("deep", deep.port)
            + service_yaml("exact", exact.port)
            + route_yaml("wide", ["*.example.com"], [("wide", 1)], section="wide")
            + route_yaml("deep", ["db.internal.example.com"], [("deep", 1)], section="deep")
            + route_yaml("exact", ["api.internal.example.com"], [("exact", 1)], section="exact")
        )
        async with running_gateway(manifests):
            with trio.fail_after(10):
                for sni, expected in [
                    ("api.internal.example.com", "exact"),
                    ("db.internal.example.com", "deep"),
                    ("www.example.com", "wide"),
                ]:
                    async with tls_client(port, sni, pki.client_context()) as client:
                        assert (await client.test())["backend"] == expected, sni
                # *.internal.example.com is the most specific listener for this name, and has
                # no route for it: rejected, not handed to the *.example.com listener.
                outcome = await handshake_outcome(
                    port, "other.internal.example.com", pki.client_context()
                )
                assert outcome in ("eof", "reset")


async def test_rejections_close_during_the_client_handshake(pki: Pki) -> None:
    port = free_port()
    with backends(pki, ("db", ["db.example.com"])) as (db,):
        manifests = db_route(port, db.port)
        async with running_gateway(manifests):
            with trio.fail_after(10):
                context = pki.client_context()
                context.check_hostname = False
                assert await handshake_outcome(port, None, context) in ("eof", "reset")
                assert await handshake_outcome(port, "unknown.example.com", context) in (
                    "eof",
                    "reset",
                )
                http = b"GET / HTTP/1.1\r\nHost: db.example.com\r\n\r\n"
                assert await handshake_outcome(port, None, context, payload=http) == "eof"
                garbage = bytes(range(256)) * 4
                assert await handshake_outcome(port, None, context, payload=garbage) == "eof"
                # The gateway is unharmed.
                async with tls_client(port, "db.example.com", pki.client_context()) as client:
                    assert await client.call("PING") == "PONG"


async def _greeted_by(port: int, sni: str, context: ssl.SSLContext) -> str:
    """Connect, handshake, and return the backend's name from its greeting, or the outcome."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, context, server_hostname=sni)
    try:
        await stream.do_handshake()
        data = b""
        while b"\n" not in data:
            chunk = await stream.receive_some(1024)
            if not chunk:
                return "closed"
            data += chunk
        return data.decode().split()[1]
    except trio.BrokenResourceError:
        return "rejected"
    finally:
        await trio.aclose_forcefully(stream)


async def test_weights_split_traffic_and_invalid_share_is_rejected(pki: Pki) -> None:
    port = free_port()
    names = ["db.example.com", "half.example.com"]
    with backends(pki, ("eighty", names), ("twenty", names)) as (eighty, twenty):
        manifests = (
            gateway_yaml(port)
            + service_yaml("eighty", eighty.port)
            + service_yaml("twenty", twenty.port)
            + route_yaml("split", ["db.example.com"], [("eighty", 80), ("twenty", 20)])
            + route_yaml("half", ["half.example.com"], [("eighty", 1), ("does-not-exist", 1)])
        )
        async with running_gateway(manifests, seed=2024):
            context = pki.client_context()
            with trio.fail_after(120):
                counts = collections.Counter(
                    [await _greeted_by(port, "db.example.com", context) for _ in range(500)]
                )
                half = collections.Counter(
                    [await _greeted_by(port, "half.example.com", context) for _ in range(200)]
                )
    assert set(counts) == {"eighty", "twenty"}
    assert abs(counts["eighty"] - 400) <= 25, counts  # 80/20 within +-5 % of 500
    assert set(half) == {"eighty", "rejected"}
    assert abs(half["rejected"] - 100) <= 20, half


async def test_dead_endpoint_is_skipped_and_all_dead_closes_promptly(pki: Pki) -> None:
    port = free_port()
    dead_a, dead_b = free_port(), free_port()  # nothing listens there: connection refused
    with backends(pki, ("alive", ["db.example.com", "dead.example.com"])) as (alive,):
        manifests = (
            gateway_yaml(port)
            + service_yaml("mixed", dead_a, alive.port, dead_b)
            + service_yaml("dead", dead_a, dead_b)
            + route_yaml("db", ["db.example.com"], [("mixed", 1)])
            + route_yaml("dead", ["dead.example.com"], [("dead", 1)])
        )
        async with running_gateway(manifests):
            with trio.fail_after(20):
                # Round robin starts at each endpoint in turn; every try reaches `alive`.
                for _ in range(6):
                    assert (
                        await _greeted_by(port, "db.example.com", pki.client_context()) == "alive"
                    )
                started = trio.current_time()
                assert (
                    await _greeted_by(port, "dead.example.com", pki.client_context()) == "rejected"
                )
                assert trio.current_time() - started < 5


async def test_an_endpoint_that_never_completes_the_connect_is_skipped_at_the_timeout(
    pki: Pki,
) -> None:
    """The connect timeout is per endpoint, and a connect that times out sent nothing: the
    next endpoint gets the whole ClientHello, and the client its handshake."""
    port = free_port()
    # A listener that never accepts, its queue full: further SYNs are dropped, as toward a
    # host that is down (no refusal to fail fast on).
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        queued = [socket.socket() for _ in range(3)]
        for sock in queued:
            sock.setblocking(False)
            sock.connect_ex(full.getsockname())  # the first fills the queue, the rest hang
        silent = full.getsockname()[1]
        with backends(pki, ("alive", ["db.example.com", "dead.example.com"])) as (alive,):
            manifests = (
                gateway_yaml(port)
                + service_yaml("mixed", silent, alive.port)
                + service_yaml("dead", silent)
                + route_yaml("db", ["db.example.com"], [("mixed", 1)])
                + route_yaml("dead", ["dead.example.com"], [("dead", 1)])
            )
            async with running_gateway(manifests, connect_timeout=0.5) as server:
                context = pki.client_context()
                with trio.fail_after(20):
                    times = []
                    for _ in range(2):  # round robin: one of the two starts at `silent`
                        started = trio.current_time()
                        assert await _greeted_by(port, "db.example.com", context) == "alive"
                        times.append(trio.current_time() - started)
                    assert await _greeted_by(port, "dead.example.com", context) == "rejected"
        for sock in queued:
            sock.close()
    assert max(times) >= 0.5  # waited out the connect timeout once
    assert min(times) < 0.5
    failures = server.metrics.backend_connect_failures
    assert failures.value("apps/mixed:443") == 1
    assert failures.value("apps/dead:443") == 1
    finished = server.metrics.connections_finished
    assert finished.value("infra/gw", "infra/gw/tls", "apps/db", "closed") == 2
    assert finished.value("infra/gw", "infra/gw/tls", "apps/dead", "connect-failed") == 1


async def test_backend_reset_closes_the_client_and_leaks_nothing(pki: Pki) -> None:
    port = free_port()
    with backends(pki, ("db", ["db.example.com"])) as (db,):
        manifests = db_route(port, db.port)
        async with running_gateway(manifests) as server:
            context = pki.client_context()

            async def reset_once() -> None:
                async with tls_client(port, "db.example.com", context) as client:
                    await client.stream.send_all(b"RESET\n")
                    with pytest.raises((trio.BrokenResourceError, EOFError)):
                        await client.line()

            with trio.fail_after(60):
                await reset_once()
                await _wait_idle(server)
                baseline = open_fds()
                for _ in range(200):
                    await reset_once()
                await _wait_idle(server)
                assert open_fds() <= baseline
        # Each reset is an expected failure (one log line), never an internal error.
        finished = server.metrics.connections_finished
        assert finished.value("infra/gw", "infra/gw/tls", "apps/db", "error") == 201
        assert finished.value("infra/gw", "infra/gw/tls", "apps/db", "internal-error") == 0


async def _wait_idle(server: Server) -> None:
    with trio.fail_after(10):
        await server.proxy.idle.wait()


async def test_silent_client_times_out_while_others_are_served(pki: Pki) -> None:
    port = free_port()
    with backends(pki, ("db", ["db.example.com"])) as (db,):
        manifests = db_route(port, db.port)
        async with running_gateway(manifests, hello_timeout=0.5):
            with trio.fail_after(10):
                silent = await trio.open_tcp_stream("127.0.0.1", port)
                started = trio.current_time()
                async with tls_client(port, "db.example.com", pki.client_context()) as client:
                    assert await client.call("PING") == "PONG"
                assert await silent.receive_some(10) == b""  # closed by the gateway
                assert trio.current_time() - started >= 0.4
                await silent.aclose()


async def test_a_connection_reaches_the_gateway_with_its_hello(pki: Pki) -> None:
    """TCP_DEFER_ACCEPT: until the client speaks, the kernel holds the connection, so the
    gateway reads the ClientHello at once on accept (no wait, no scheduler pass); once it
    speaks it is served as usual."""
    port = free_port()
    with backends(pki, ("db", ["db.example.com"])) as (db,):
        manifests = db_route(port, db.port)
        async with running_gateway(manifests) as server:
            with trio.fail_after(10):
                silent = await trio.open_tcp_stream("127.0.0.1", port)
                await trio.sleep(0.3)
                assert server.proxy.active == 0  # not accepted yet: nothing was sent
                async with tls_client(port, "db.example.com", pki.client_context()) as client:
                    assert await client.call("PING") == "PONG"
                await silent.aclose()


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
async def test_bulk_both_ways_and_half_close(pki: Pki, splice: bool) -> None:
    port = free_port()
    with backends(pki, ("db", ["db.example.com"])) as (db,):
        manifests = db_route(port, db.port)
        async with running_gateway(manifests, splice=splice):
            with trio.fail_after(30):
                size = 8 * 1024 * 1024 + 17
                async with tls_client(port, "db.example.com", pki.client_context()) as client:
                    await client.stream.send_all(f"SOURCE {size}\n".encode())
                    received = len(client.buffer)
                    while True:
                        try:
                            chunk = await client.stream.receive_some(1 << 20)
                        except trio.BrokenResourceError:
                            break  # the backend closed without close_notify: fine here
                        if not chunk:
                            break
                        received += len(chunk)
                    assert received == size
                async with tls_client(port, "db.example.com", pki.client_context()) as client:
                    await client.stream.send_all(b"SINK\n" + b"y" * size)
                    # Half-close the TCP connection under TLS: the gateway must carry the FIN to
                    # the backend and still relay its answer back.
                    assert isinstance(client.stream, trio.SSLStream)
                    transport = client.stream.transport_stream
                    assert isinstance(transport, trio.SocketStream)
                    await transport.send_eof()
                    assert await client.line() == str(size)


async def test_idle_connection_is_closed_after_the_idle_timeout(pki: Pki) -> None:
    port = free_port()
    with backends(pki, ("db", ["db.example.com"])) as (db,):
        manifests = db_route(port, db.port)
        async with running_gateway(manifests, idle_timeout=0.5):
            with trio.fail_after(10):
                async with tls_client(port, "db.example.com", pki.client_context()) as client:
                    assert await client.call("PING") == "PONG"
                    started = trio.current_time()
                    with pytest.raises((trio.BrokenResourceError, EOFError)):
                        await client.line()  # nothing is said: the gateway closes both sides
                    assert trio.current_time() - started >= 0.4


async def test_fqdn_endpoints_are_resolved_when_connecting(pki: Pki) -> None:
    """How the compose stack finds its backends: an FQDN EndpointSlice, resolved with DNS at
    connect time (API.md)."""
    port = free_port()
    with backends(pki, ("db", ["db.example.com"])) as (db,):
        fqdn = service_yaml("db", db.port).replace("addressType: IPv4", "addressType: FQDN")
        fqdn = fqdn.replace("addresses: [127.0.0.1]", "addresses: [localhost]")
        manifests = gateway_yaml(port) + fqdn + route_yaml("db", ["db.example.com"], [("db", 1)])
        async with running_gateway(manifests):
            with trio.fail_after(10):
                async with tls_client(port, "db.example.com", pki.client_context()) as client:
                    assert (await client.test())["backend"] == "db"


def test_accepted_connections_have_the_listeners_tcp_nodelay() -> None:
    """The listener sets TCP_NODELAY once; every accepted socket has it from there (Linux),
    so handshake flights never wait for Nagle and the accept loop makes no setsockopt."""
    listener = _bind(("127.0.0.1", 0), 16, reuse_port=False)
    with listener, socket.create_connection(listener.getsockname()) as client:
        client.sendall(b"\x16")  # TCP_DEFER_ACCEPT: the connection is accepted once it speaks
        listener.settimeout(5)
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
