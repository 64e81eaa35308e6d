"""BackendTrafficPolicy `healthCheck` on real connections (API.md "Traffic policies"): passive
ejection after connect failures, its expiry and doubling; active TCP and TLS probes marking
an endpoint down and up in every worker; fail open when every endpoint is down; endpoint
health in the routing table, explain and `tlsgate_endpoint_healthy`."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import trio

from gateway.routing.explain import explain, table_to_wire
from gateway.routing.health import HealthState

from .harness import (
    Pki,
    admin_gateway,
    backends,
    free_port,
    gateway_yaml,
    route_yaml,
    run_tlsgate,
    running_gateway,
    serve_process,
    service_yaml,
    tls_client,
    wait_until,
)

T = TypeVar("T")
HOST = "db.example.com"
SERVICE = "apps/db:443"


def _policy(health: str) -> str:
    return f"""
---
apiVersion: gateway.tlsgate.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: db-health, namespace: apps}}
spec:
  targetRefs: [{{group: "", kind: Service, name: db}}]
  healthCheck:
{health}
"""


def _manifests(port: int, endpoints: tuple[int, ...], health: str) -> str:
    return (
        gateway_yaml(port)
        + service_yaml("db", *endpoints)
        + route_yaml("db", [HOST], [("db", 1)])
        + _policy(health)
    )


class Flapping:
    """An endpoint that comes and goes on one port: listening (it accepts and, with
    `close_at_once`, closes every connection: no TLS) or not at all."""

    def __init__(self, *, close_at_once: bool = False) -> None:
        self.close_at_once = close_at_once
        self.port = free_port()
        self.sock: socket.socket | None = None
        self.up()

    def up(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.sock = sock
        if self.close_at_once:
            threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    def down(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            self.sock.close()
            self.sock = None


@pytest.fixture
def flapping() -> Iterator[Flapping]:
    endpoint = Flapping()
    yield endpoint
    endpoint.down()


async def _reaches(port: int, context: ssl.SSLContext, times: int) -> list[str]:
    """The backend each of `times` connections reaches."""
    names = []
    for _ in range(times):
        with trio.fail_after(10):
            async with tls_client(port, HOST, context) as client:
                names.append((await client.test())["backend"])
    return names


async def test_connect_failures_eject_an_endpoint_for_a_time_that_doubles(
    tmp_path: Path,
) -> None:
    pki = Pki(tmp_path)
    port, dead = free_port(), free_port()  # nothing listens on `dead`
    health = """
    passive: {consecutiveConnectFailures: 2, baseEjectionTime: 1s, maxEjectionPercent: 50}
"""
    context = pki.client_context()
    with backends(pki, ("alive", [HOST])) as (alive,):
        async with running_gateway(_manifests(port, (dead, alive.port), health)) as server:
            failures = server.metrics.backend_connect_failures
            # Round robin starts on the dead endpoint every other connection: its second
            # failure ejects it, and then no connection tries it.
            assert await _reaches(port, context, 6) == ["alive"] * 6
            assert failures.value("apps/db:443") == 2
            key = f"127.0.0.1:{dead}"
            state = server.monitor.health(SERVICE, key)
            assert state is not None
            assert state.state is HealthState.EJECTED
            assert state.error is not None
            assert state.until is not None
            first = state.until - time.time()
            assert 0 < first <= 1
            # Shown where operators look.
            table = table_to_wire(server.state.snapshot, server.monitor.health)
            [backend] = table["binds"][0]["listeners"][0]["routes"][0]["backends"]
            assert backend["health"][key]["state"] == "ejected"
            assert backend["health"][key]["until"].endswith("Z")
            assert backend["health"][f"127.0.0.1:{alive.port}"] == {"state": "healthy"}
            explained = explain(
                server.state.snapshot, "127.0.0.1", port, HOST, server.monitor.health
            )
            assert explained["backends"][0]["health"][key]["state"] == "ejected"
            exposition = server.metrics.render().decode()
            assert (
                f'tlsgate_endpoint_healthy{{endpoint="{key}",namespace="apps",service="db"}} 0.0'
                in exposition
            )
            # It expires: the endpoint is tried again, fails twice more, and is ejected for
            # twice as long.
            await wait_until(
                lambda: server.monitor.health(SERVICE, key).state is HealthState.HEALTHY,  # type: ignore[union-attr]
                5,
                "the ejection's end",
            )
            assert await _reaches(port, context, 4) == ["alive"] * 4
            assert failures.value("apps/db:443") == 4
            again = server.monitor.health(SERVICE, key)
            assert again is not None
            assert again.state is HealthState.EJECTED
            assert again.until is not None
            assert 1 < again.until - time.time() <= 2


async def test_active_tls_checks_mark_a_plain_endpoint_down_and_fail_open_when_all_are(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A TLS check wants a handshake: an endpoint that accepts TCP and closes is unhealthy.
    With every endpoint down, connections still try them (fail open), and it is logged."""
    caplog.set_level(logging.INFO)
    pki = Pki(tmp_path)
    port = free_port()
    plain = Flapping(close_at_once=True)
    health = """
    active: {type: TLS, interval: 100ms, timeout: 1s, unhealthyThreshold: 2}
"""
    context = pki.client_context()
    try:
        with backends(pki, ("alive", [HOST])) as (alive,):
            manifests = _manifests(port, (plain.port, alive.port), health)
            async with running_gateway(manifests) as server:
                bad = f"127.0.0.1:{plain.port}"

                def state(endpoint: str) -> HealthState | None:
                    found = server.monitor.health(SERVICE, endpoint)
                    return found.state if found is not None else None

                await wait_until(lambda: state(bad) is HealthState.UNHEALTHY, 10, "unhealthy")
                down = server.monitor.health(SERVICE, bad)
                assert down is not None
                assert down.error is not None
                assert down.error.startswith("TLS handshake")
                assert state(f"127.0.0.1:{alive.port}") is HealthState.HEALTHY
                assert await _reaches(port, context, 4) == ["alive"] * 4
                assert server.metrics.backend_connect_failures.value("apps/db:443") == 0
                alive.stop()
                await wait_until(
                    lambda: state(f"127.0.0.1:{alive.port}") is HealthState.UNHEALTHY,
                    10,
                    "the last endpoint unhealthy",
                )
                # Fail open: both are tried, neither answers TLS.
                with trio.fail_after(10), pytest.raises(trio.BrokenResourceError):
                    async with tls_client(port, HOST, context):
                        pass
    finally:
        plain.down()
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "every endpoint of apps/db:443 is unhealthy or ejected: connections try them all" in m
        for m in messages
    )
    # The last connection went to an endpoint marked unhealthy, which ended it at once.
    last = [m for m in messages if "outcome=" in m][-1]
    assert (
        f"endpoint=127.0.0.1:{plain.port} " in last or f"endpoint=127.0.0.1:{alive.port} " in last
    )
    assert "bytes_down=0 " in last


async def _polled(fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """`fetch()` again until `done` holds of what it returns, for up to 10 s."""
    with trio.fail_after(10):
        while not done(value := await fetch()):  # noqa: ASYNC110 (polled over HTTP)
            await trio.sleep(0.05)
    return value


def _healthy(exposition: str, endpoint: str) -> float | None:
    found = re.search(
        rf'^tlsgate_endpoint_healthy\{{endpoint="{re.escape(endpoint)}",'
        rf'namespace="apps",service="db"\}} (\S+)$',
        exposition,
        re.M,
    )
    return float(found.group(1)) if found else None


@pytest.mark.slow
async def test_active_tcp_checks_take_an_endpoint_out_of_every_worker_and_back(
    tmp_path: Path, flapping: Flapping
) -> None:
    pki = Pki(tmp_path)
    port, admin = free_port(), free_port()
    url = f"http://127.0.0.1:{admin}"
    health = """
    active: {type: TCP, interval: 100ms, timeout: 1s, healthyThreshold: 1, unhealthyThreshold: 2}
"""
    context = pki.client_context()
    endpoint = f"127.0.0.1:{flapping.port}"
    with backends(pki, ("alive", [HOST])) as (alive,):
        manifests = tmp_path / "gw.yaml"
        manifests.write_text(_manifests(port, (flapping.port, alive.port), health))
        args = ["--workers", "2", "--admin", f"127.0.0.1:{admin}", "--state-dir", ""]
        args += ["--bootstrap", str(manifests)]
        async with (
            serve_process(*args, admin_url=url, path="/readyz"),
            httpx.AsyncClient(base_url=url, timeout=10) as http,
        ):

            async def health_of() -> dict[str, str]:
                table = (await http.get("/v1/routingtable")).json()
                [backend] = table["binds"][0]["listeners"][0]["routes"][0]["backends"]
                return backend["health"][endpoint]  # type: ignore[no-any-return]

            async def becomes(state: str) -> dict[str, str]:
                return await _polled(health_of, lambda found: found["state"] == state)

            async def metrics() -> str:
                return (await http.get("/metrics")).text

            assert await becomes("healthy") == {"state": "healthy"}
            flapping.down()
            down = await becomes("unhealthy")
            assert down["error"] == "Connection refused"
            exposition = (await http.get("/metrics")).text
            assert _healthy(exposition, endpoint) == 0
            assert _healthy(exposition, f"127.0.0.1:{alive.port}") == 1
            # No worker tries it: round robin would start on it every other connection.
            assert await _reaches(port, context, 8) == ["alive"] * 8
            finished = r"^tlsgate_connections_finished_total\{.*\} (\S+)$"
            # Workers send their counts every 0.1 s: once all eight are in.
            text = await _polled(
                metrics, lambda text: sum(map(float, re.findall(finished, text, re.M))) >= 8
            )
            assert "tlsgate_backend_connect_failures_total{" not in text
            flapping.up()
            assert await becomes("healthy") == {"state": "healthy"}
            assert _healthy((await http.get("/metrics")).text, endpoint) == 1


async def test_a_probe_of_a_name_that_cannot_be_resolved_fails_and_crashes_nothing() -> None:
    from gateway.monitor import HealthMonitor
    from gateway.routing.snapshot import ActiveCheck
    from gateway.store.state import State

    monitor = HealthMonitor(State(bind_address="127.0.0.1"))
    check = ActiveCheck(type="TCP", timeout=5.0)
    # A label of 64 characters: IDNA refuses it (admission does too, since this change).
    too_long = "a" * 64 + ".example.test:5432"
    assert "label" in (await monitor._probe(too_long, (check, "x", None, None)) or "")
    refused = await monitor._probe(f"127.0.0.1:{free_port()}", (check, "x", None, None))
    assert refused == "Connection refused"
    missing = await monitor._probe("no-such-host.invalid:5432", (check, "x", None, None))
    assert missing is not None


async def test_explain_names_an_unhealthy_endpoint_in_text_and_json(tmp_path: Path) -> None:
    port, dead = free_port(), free_port()
    health = """
    active: {type: TCP, interval: 100ms, timeout: 1s, unhealthyThreshold: 1}
"""
    async with admin_gateway(None) as (server, url):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            answer = await http.post(
                "/v1/apply",
                content=_manifests(port, (dead,), health),
                headers={"Content-Type": "application/yaml"},
            )
            assert answer.status_code == 200, answer.text
            key = f"127.0.0.1:{dead}"
            await wait_until(
                lambda: (
                    getattr(server.monitor.health(SERVICE, key), "state", None)
                    is HealthState.UNHEALTHY
                ),
                10,
                "unhealthy",
            )
            explained = (await http.get(f"/v1/explain?port={port}&sni={HOST}")).json()
            assert explained["backends"][0]["health"][key] == {
                "state": "unhealthy",
                "error": "Connection refused",
            }
        text = await trio.to_thread.run_sync(
            lambda: run_tlsgate("explain", "--port", str(port), "--sni", HOST, "--server", url)
        )
    assert text.returncode == 0, text.stderr
    assert f"{key} (unhealthy: Connection refused)" in text.stdout
