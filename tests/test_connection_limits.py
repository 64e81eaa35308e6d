"""ClientTrafficPolicy `connection` limits on real connections (API.md "Traffic policies"):
over a limit a new connection is closed before its handshake and counted; the limits hold
for the whole process tree (two real worker processes), per client by distinct loopback
source addresses (127.0.0.x)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from .harness import (
    LineClient,
    Pki,
    backends,
    client_traffic_policy_yaml,
    free_port,
    gateway_yaml,
    passthrough_listener,
    real_hello,
    route_yaml,
    running_gateway,
    serve_process,
    service_yaml,
    wait_until,
)

HOST = "db.example.com"
OTHER = "other.example.com"


def _policy(spec: str, name: str = "limits") -> str:
    return client_traffic_policy_yaml(name, spec)


@contextlib.asynccontextmanager
async def _held(
    port: int, context: ssl.SSLContext, source: str, sni: str = HOST
) -> AsyncIterator[LineClient]:
    """A connection through to the backend from `source`, held open."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    try:
        stream = trio.SSLStream(tcp, context, server_hostname=sni)
        with trio.fail_after(10):
            await stream.do_handshake()
            client = LineClient(stream)
            assert (await client.line()).startswith("HELLO ")
            assert await client.call("PING") == "PONG"
        yield client
    finally:
        await trio.aclose_forcefully(tcp)


async def _refused(port: int, source: str, sni: str = HOST) -> bool:
    """Is a new connection from `source` closed with nothing sent back (no handshake, no
    alert), once it has sent its ClientHello? False if anything comes back."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    try:
        with trio.fail_after(10):
            try:
                await tcp.send_all(real_hello(sni))
                return await tcp.receive_some(65536) == b""
            except trio.BrokenResourceError:
                return True  # reset: closed with the hello unread
    finally:
        await trio.aclose_forcefully(tcp)


def _metric(text: str, reason: str) -> float:
    """Refusals counted for `reason` (every reason: "")."""
    pattern = rf'^tlsgate_connections_refused_total\{{reason="({reason or ".*"})"\}} (\S+)$'
    return sum(float(value) for _, value in re.findall(pattern, text, re.M))


async def _open_per_worker(http: httpx.AsyncClient, total: int) -> list[int]:
    """Each worker's open connections once they add up to `total` (workers report every
    0.1 s)."""
    with trio.fail_after(10):
        while True:
            table = (await http.get("/v1/routingtable")).json()
            counts = [w["connections"] for w in table["workers"]]
            if sum(counts) == total:
                return counts
            await trio.sleep(0.05)  # polled over HTTP: nothing to wait on here


@pytest.mark.slow
async def test_limits_hold_over_every_worker_and_per_client_address(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    port, admin = free_port(), free_port()
    url = f"http://127.0.0.1:{admin}"
    policy = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  connection:
    connectionLimit: {value: 3}
    perClient: {maxConnections: 2}
"""
    context = pki.client_context()
    with backends(pki, ("db", [HOST])) as (db,):
        manifests = tmp_path / "gw.yaml"
        manifests.write_text(
            gateway_yaml(port)
            + service_yaml("db", db.port)
            + route_yaml("db", [HOST], [("db", 1)])
            + _policy(policy)
        )
        args = ["--workers", "2", "--admin", f"127.0.0.1:{admin}", "--state-dir", ""]
        args += ["--bootstrap", str(manifests)]
        async with (
            serve_process(*args, admin_url=url, path="/readyz"),
            httpx.AsyncClient(base_url=url, timeout=10) as http,
        ):
            async with contextlib.AsyncExitStack() as held:
                await held.enter_async_context(_held(port, context, "127.0.0.2"))
                await held.enter_async_context(_held(port, context, "127.0.0.2"))
                # A third from the same address is over perClient.maxConnections...
                assert await _refused(port, "127.0.0.2")
                # ...another address gets the last of the three places...
                last = await held.enter_async_context(_held(port, context, "127.0.0.3"))
                counts = await _open_per_worker(http, 3)
                # ...and then nobody: ten tries, which the kernel spreads over both workers
                # (each worker holds fewer than 3, so a limit per worker would admit some).
                for _ in range(10):
                    assert await _refused(port, "127.0.0.4")
                assert await last.call("PING") == "PONG"  # the held ones are untouched
                # Workers send their counts every 0.1 s: the totals once both are in.
                with trio.fail_after(10):
                    while _metric(metrics := (await http.get("/metrics")).text, "") < 11:  # noqa: ASYNC110 (polled over HTTP)
                        await trio.sleep(0.05)
            assert len(counts) == 2
            assert sum(counts) == 3
            assert _metric(metrics, "connection-limit") == 10
            assert _metric(metrics, "client-connection-limit") == 1
            await _open_per_worker(http, 0)  # closed, they give their places back

            # A worker killed with its connections: its successor starts with its counts
            # cleared, so the places its connections held are free again.
            async with contextlib.AsyncExitStack() as held:
                for source in ("127.0.0.4", "127.0.0.4", "127.0.0.5"):
                    await held.enter_async_context(_held(port, context, source))
                await _open_per_worker(http, 3)
                table = (await http.get("/v1/routingtable")).json()
                victim = max(table["workers"], key=lambda w: w["connections"])
                os.kill(victim["pid"], signal.SIGKILL)  # a child of the gateway we started
                freed = victim["connections"]
                with trio.fail_after(20):
                    while True:
                        workers = (await http.get("/v1/routingtable")).json()["workers"]
                        pids = {w["pid"] for w in workers}
                        replaced = victim["pid"] not in pids and None not in pids
                        if replaced and (await http.get("/readyz")).status_code == 200:
                            break
                        await trio.sleep(0.05)  # polled over HTTP: nothing to wait on here
                for i in range(freed):
                    await held.enter_async_context(_held(port, context, f"127.0.0.{10 + i}"))
                assert await _refused(port, "127.0.0.20")


async def test_a_listeners_rate_limit_acts_once_the_hello_names_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """connectionsPerSecond on one listener: its clients are counted after the ClientHello;
    the other listener of the port is not limited."""
    caplog.set_level("INFO", logger="tlsgate.access")
    pki = Pki(tmp_path)
    port = free_port()
    listeners = passthrough_listener("db", port, HOST) + passthrough_listener("other", port, OTHER)
    policy = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: db}]
  connection:
    perClient: {connectionsPerSecond: 1}
"""
    context = pki.client_context()
    context.check_hostname = False
    with backends(pki, ("db", [HOST, OTHER])) as (db,):
        manifests = (
            gateway_yaml(port, listeners)
            + service_yaml("db", db.port)
            + route_yaml("db", [HOST], [("db", 1)], section="db")
            + route_yaml("other", [OTHER], [("db", 1)], section="other")
            + _policy(policy)
        )
        async with running_gateway(manifests) as server:
            async with _held(port, context, "127.0.0.5"):
                pass
            # Within the second: the next two are refused, another address is not, and
            # the other listener takes the same address as often as it likes.
            assert await _refused(port, "127.0.0.5")
            assert await _refused(port, "127.0.0.5")
            async with _held(port, context, "127.0.0.6"):
                pass
            for _ in range(3):
                async with _held(port, context, "127.0.0.5", sni=OTHER):
                    pass
            assert server.metrics.connections_refused.value("client-rate-limit") == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "tlsgate.access"]
    refused = [line for line in lines if "outcome=refused-client-rate-limit" in line]
    assert len(refused) == 2
    # Refused after the hello named the listener: its SNI and listener are in the line.
    assert all(f"sni={HOST}" in line and "listener=infra/gw/db" in line for line in refused)
    assert all("perClient.connectionsPerSecond 1 of infra/gw/db" in line for line in refused)


async def test_a_flood_of_hostile_connections_leaves_no_count_behind(tmp_path: Path) -> None:
    """Many connections at once from one address, some finishing their hello, some sending
    half of it and leaving, some silent until the hello timeout: once all are gone every
    count is back to zero (no place leaks), and the held connections were never disturbed."""
    pki = Pki(tmp_path)
    port = free_port()
    policy = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  timeout: {tls: {helloTimeout: 500ms}}
  connection:
    connectionLimit: {value: 20}
    perClient: {maxConnections: 5, connectionsPerSecond: 1000}
"""
    context = pki.client_context()
    hello = real_hello(HOST)
    with backends(pki, ("db", [HOST])) as (db,):
        manifests = (
            gateway_yaml(port)
            + service_yaml("db", db.port)
            + route_yaml("db", [HOST], [("db", 1)])
            + _policy(policy)
        )
        async with running_gateway(manifests) as server:

            async def hostile(kind: int) -> None:
                with contextlib.suppress(OSError, trio.BrokenResourceError):
                    tcp = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
                    try:
                        if kind == 0:
                            await tcp.send_all(hello)
                        elif kind == 1:
                            await tcp.send_all(hello[: len(hello) // 2])
                        await tcp.receive_some(1024)  # until tlsgate closes it
                    finally:
                        await trio.aclose_forcefully(tcp)

            async with _held(port, context, "127.0.0.3"):
                with trio.fail_after(20):
                    async with trio.open_nursery() as nursery:
                        for i in range(60):
                            nursery.start_soon(hostile, i % 3)
                await wait_until(lambda: server.proxy.active == 1, 10, "the flood gone")
                rules = server.state.snapshot.binds[("127.0.0.1", port)].listeners[0].client
                assert rules is not None
                total, per_client, _ = rules.limits
                limits = server.proxy.limits
                assert limits.open_count(total) == 1  # the held one
                assert limits.open_count(per_client, "127.0.0.2") == 0
                assert limits.open_count(per_client, "127.0.0.3") == 1
            await wait_until(lambda: server.proxy.active == 0, 10, "all closed")
            assert limits.open_count(total) == 0
            refused = server.metrics.connections_refused
            assert refused.value("client-connection-limit") > 0
