"""BackendTrafficPolicy (API.md "Traffic policies"): its status, and the PROXY protocol
headers a backend receives from tlsgate, read by a real backend that takes them before its
own protocol (as PostgreSQL behind pgbouncer, nginx `proxy_protocol` or HAProxy
`accept-proxy` do): v1 and v2, Passthrough and Terminate, with the client's address as a
trusted incoming header carried it."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.api.kinds import ObjectKey
from gateway.api.status import PolicyStatus
from gateway.dataplane.proxy_protocol import (
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    ProxyHeader,
    parse,
    v1_header,
)

from .harness import (
    LineClient,
    Pki,
    backends,
    free_port,
    gateway_yaml,
    route_yaml,
    running_gateway,
    secret_yaml,
    service_yaml,
    terminate_listener,
)
from .helpers import World

HOST = "db.example.com"


class ProxiedBackend:
    """A backend that reads a PROXY header, then speaks a line protocol (over TLS when it
    has a context): `HELLO`, then `PING` -> `PONG`. `headers` is what each connection got."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.headers: list[ProxyHeader] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(sock,), daemon=True).start()

    def _session(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError), sock:
            sock.settimeout(10)
            deadline = time.monotonic() + 10
            while True:  # peek until the whole header is in, then take exactly it
                found = parse(sock.recv(70000, socket.MSG_PEEK))
                if isinstance(found, ProxyHeader):
                    break
                if time.monotonic() > deadline:
                    return
                time.sleep(0.01)
            sock.recv(found.length, socket.MSG_WAITALL)
            self.headers.append(found)
            stream: Any = self.tls.wrap_socket(sock, server_side=True) if self.tls else sock
            with stream, stream.makefile("rb") as reader:
                stream.sendall(b"HELLO proxied\n")
                for line in reader:
                    if line.strip() == b"PING":
                        stream.sendall(b"PONG\n")

    def stop(self) -> None:
        self.listener.close()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def _policy(version: str, service: str = "db", name: str = "db-proxy") -> str:
    return f"""
---
apiVersion: gateway.tlsgate.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: {name}, namespace: apps}}
spec:
  targetRefs: [{{group: "", kind: Service, name: {service}}}]
  proxyProtocol: {{version: {version}}}
"""


@contextlib.asynccontextmanager
async def _client(
    port: int,
    context: ssl.SSLContext,
    *,
    source: str = "127.0.0.2",
    first: bytes = b"",
) -> AsyncIterator[LineClient]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    try:
        if first:
            await tcp.send_all(first)
        stream = trio.SSLStream(tcp, context, server_hostname=HOST)
        await stream.do_handshake()
        client = LineClient(stream)
        assert await client.line() == "HELLO proxied"
        assert await client.call("PING") == "PONG"
        yield client
    finally:
        await trio.aclose_forcefully(tcp)


@contextlib.contextmanager
def _backend(tls: ssl.SSLContext | None) -> Iterator[ProxiedBackend]:
    backend = ProxiedBackend(tls)
    try:
        yield backend
    finally:
        backend.stop()


async def test_passthrough_sends_v2_with_the_sni_and_the_first_alpn_offered(pki: Pki) -> None:
    port = free_port()
    with _backend(pki.backend_context(HOST)) as backend:
        manifests = (
            gateway_yaml(port)
            + service_yaml("db", backend.port)
            + route_yaml("db", [HOST], [("db", 1)])
            + _policy("V2")
        )
        context = pki.client_context()
        context.set_alpn_protocols(["postgresql", "h2"])
        async with running_gateway(manifests):
            with trio.fail_after(10):
                async with _client(port, context) as client:
                    local = client.stream.transport_stream.socket.getsockname()  # type: ignore[attr-defined]
    [header] = backend.headers
    assert header.version == 2
    assert header.source == ("127.0.0.2", local[1])
    assert header.destination == ("127.0.0.1", port)
    assert header.tlv(PP2_TYPE_AUTHORITY) == HOST.encode()
    assert header.tlv(PP2_TYPE_ALPN) == b"postgresql"


async def test_terminate_sends_v1_before_the_plaintext_and_v2_with_the_negotiated_alpn(
    pki: Pki,
) -> None:
    port = free_port()
    listeners = terminate_listener("term", port, HOST, "cert").replace(
        "tls: {mode: Terminate,",
        'tls: {mode: Terminate, options: {"gateway.tlsgate.dev/alpn": "h2"},',
    )
    for version in ("V1", "V2"):
        with _backend(None) as backend:
            manifests = (
                gateway_yaml(port, listeners)
                + secret_yaml("cert", pki.ca.issue_cert(HOST))
                + service_yaml("db", backend.port)
                + route_yaml("db", [HOST], [("db", 1)])
                + _policy(version)
            )
            context = pki.client_context()
            context.set_alpn_protocols(["postgresql", "h2"])
            async with running_gateway(manifests):
                with trio.fail_after(10):
                    async with _client(port, context, source="127.0.0.3"):
                        pass
        [header] = backend.headers
        assert header.version == int(version[1])
        assert header.source is not None
        assert header.source[0] == "127.0.0.3"
        assert header.destination == ("127.0.0.1", port)
        if version == "V2":
            assert header.tlv(PP2_TYPE_ALPN) == b"h2"  # what the listener negotiated
            assert header.tlv(PP2_TYPE_AUTHORITY) == HOST.encode()


async def test_the_address_a_trusted_incoming_header_carried_is_passed_on(pki: Pki) -> None:
    port = free_port()
    client_policy = """
---
apiVersion: gateway.tlsgate.dev/v1alpha1
kind: ClientTrafficPolicy
metadata: {name: lb, namespace: infra}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  proxyProtocol: {trustedCIDRs: [127.0.0.1/32]}
"""
    with _backend(pki.backend_context(HOST)) as backend:
        manifests = (
            gateway_yaml(port)
            + service_yaml("db", backend.port)
            + route_yaml("db", [HOST], [("db", 1)])
            + _policy("V1")
            + client_policy
        )
        incoming = v1_header(("203.0.113.7", 51812), ("198.51.100.1", 5432))
        async with running_gateway(manifests):
            with trio.fail_after(10):
                async with _client(port, pki.client_context(), source="127.0.0.1", first=incoming):
                    pass
    [header] = backend.headers
    assert (header.source, header.destination) == (("203.0.113.7", 51812), ("198.51.100.1", 5432))


def _status(world: World, name: str) -> list[tuple[str, str, str]]:
    assert world.snapshot is not None
    status = world.snapshot.statuses[ObjectKey("BackendTrafficPolicy", "apps", name)]
    assert isinstance(status, PolicyStatus)
    return [
        (a.ancestor_ref.name, c.status, c.reason) for a in status.ancestors for c in a.conditions
    ]


def test_status_for_each_reason_and_the_table() -> None:
    world = World()
    world.apply(
        gateway_yaml(443)
        + service_yaml("db", 5432)
        + route_yaml("db", [HOST], [("db", 1), ("gone", 1)])
        + _policy("V2")
    )
    assert _status(world, "db-proxy") == [("gw", "True", "Accepted")]
    world.apply(_policy("V1", name="younger"))
    assert _status(world, "younger") == [("gw", "False", "Conflicted")]
    world.apply(_policy("V1", service="gone", name="missing"))
    assert _status(world, "missing") == [("gw", "False", "TargetNotFound")]
    assert world.snapshot is not None
    [bind] = world.snapshot.binds.values()
    backends = bind.listeners[0].ordered_routes()[0].backends
    assert backends[0].traffic is not None
    assert (backends[0].traffic.policies, backends[0].traffic.proxy_version) == (
        ("apps/db-proxy",),
        2,
    )
    # A younger policy setting another field adds it: both are in force.
    world.apply(_balancing("  retry: {numAttempts: 2}", name="retries"))
    assert _status(world, "retries") == [("gw", "True", "Accepted")]
    [bind] = world.snapshot.binds.values()
    traffic = bind.listeners[0].ordered_routes()[0].backends[0].traffic
    assert traffic is not None
    assert (traffic.policies, traffic.proxy_version, traffic.attempts) == (
        ("apps/db-proxy", "apps/retries"),
        2,
        2,
    )
    # A policy on no Service any route of ours reaches gets no status.
    world.apply(_policy("V1", service="unused", name="unused"))
    assert ObjectKey("BackendTrafficPolicy", "apps", "unused") not in world.snapshot.statuses


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("healthCheck: {passive: {consecutiveConnectFailures: 0}}", "between 1 and 1000"),
        ("healthCheck: {passive: {baseEjectionTime: 2h}}", "at most 1h"),
        ("healthCheck: {passive: {maxEjectionPercent: 101}}", "between 0 and 100"),
        ("healthCheck: {active: {type: HTTP}}", "spec.healthCheck.active.type"),
        ("healthCheck: {active: {type: TCP, interval: 10ms}}", "at least 100ms"),
        ("healthCheck: {active: {type: TCP, unhealthyThreshold: 0}}", "between 1 and 100"),
        ("healthCheck: {active: {interval: 5s}}", "spec.healthCheck.active.type"),
        ("timeout: {tcp: {connectTimeout: 0s}}", "longer than 0s"),
        ("timeout: {tcp: {connectTimeout: 5 s}}", "must be a duration"),
        ("retry: {numAttempts: 0}", "between 1 and 16"),
        ("retry: {numAttempts: 17}", "between 1 and 16"),
        ("loadBalancer: {type: LeastRequest}", "spec.loadBalancer.type"),
        ("loadBalancer: {type: ConsistentHash}", "consistentHash when type is"),
        ("loadBalancer: {type: Random, consistentHash: {type: SourceIP}}", "only with type"),
        (
            "loadBalancer: {type: ConsistentHash, consistentHash: {type: Header}}",
            "consistentHash.type",
        ),
    ],
)
def test_admission_refuses_what_is_not_valid(extra: str, message: str) -> None:
    from gateway.api.convert import Invalid

    world = World()
    with pytest.raises(Invalid, match=re.escape(message)):
        world.apply(_policy("V1") + f"  {extra}\n")


def _balancing(spec: str, name: str = "db-lb") -> str:
    return f"""
---
apiVersion: gateway.tlsgate.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: {name}, namespace: apps}}
spec:
  targetRefs: [{{group: "", kind: Service, name: db}}]
{spec}
"""


async def _greeting(port: int, context: ssl.SSLContext, source: str) -> str | None:
    """The backend's greeting (`HELLO <name>`), or None if the connection was closed."""
    try:
        with trio.fail_after(10):
            tcp = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
            stream = trio.SSLStream(tcp, context, server_hostname=HOST)
            try:
                await stream.do_handshake()
                return await LineClient(stream).line()
            finally:
                await trio.aclose_forcefully(stream)
    except (trio.BrokenResourceError, EOFError, OSError):
        return None


async def test_consistent_hashing_keeps_each_client_address_on_one_endpoint(pki: Pki) -> None:
    port = free_port()
    with backends(pki, ("a", [HOST]), ("b", [HOST]), ("c", [HOST])) as started:
        manifests = (
            gateway_yaml(port)
            + service_yaml("db", *(b.port for b in started))
            + route_yaml("db", [HOST], [("db", 1)])
            + _balancing("  loadBalancer: {type: ConsistentHash, consistentHash: {type: SourceIP}}")
        )
        context = pki.client_context()
        reached: dict[str, set[str | None]] = {}
        async with running_gateway(manifests):
            for _ in range(3):
                for last in range(2, 10):
                    source = f"127.0.0.{last}"
                    reached.setdefault(source, set()).add(await _greeting(port, context, source))
    assert all(len(names) == 1 and None not in names for names in reached.values()), reached
    assert len({name for names in reached.values() for name in names}) > 1  # not all on one


async def test_retries_go_to_distinct_endpoints_as_many_as_numattempts_says(pki: Pki) -> None:
    """Two endpoints that refuse connections and one that serves: one attempt per
    connection fails two connections in three (round robin); three distinct attempts,
    even from a random start, reach the one that serves every time."""
    port = free_port()
    dead = [free_port(), free_port()]  # nothing listens there
    with backends(pki, ("live", [HOST])) as (live,):
        base = (
            gateway_yaml(port)
            + service_yaml("db", dead[0], dead[1], live.port)
            + route_yaml("db", [HOST], [("db", 1)])
        )
        context = pki.client_context()
        async with running_gateway(base + _balancing("  retry: {numAttempts: 1}")):
            once = [await _greeting(port, context, "127.0.0.2") for _ in range(3)]
        many = _balancing("  retry: {numAttempts: 3}\n  loadBalancer: {type: Random}")
        async with running_gateway(base + many):
            thrice = [await _greeting(port, context, "127.0.0.2") for _ in range(6)]
    assert sorted(once, key=str) == ["HELLO live", None, None]
    assert thrice == ["HELLO live"] * 6


def test_the_table_shows_each_backends_traffic_settings() -> None:
    from gateway.routing.explain import table_to_wire

    world = World()
    world.apply(
        gateway_yaml(443)
        + service_yaml("db", 5432, 5433)
        + route_yaml("db", [HOST], [("db", 1)])
        + _balancing(
            "  timeout: {tcp: {connectTimeout: 750ms}}\n  retry: {numAttempts: 2}\n"
            "  loadBalancer: {type: Random}"
        )
    )
    assert world.snapshot is not None
    [bind] = table_to_wire(world.snapshot)["binds"]
    [backend] = bind["listeners"][0]["routes"][0]["backends"]
    assert backend["traffic"] == {
        "policies": ["apps/db-lb"],
        "connectTimeoutSeconds": 0.75,
        "numAttempts": 2,
        "loadBalancer": "Random",
    }


def test_an_unknown_version_is_refused() -> None:
    from gateway.api.convert import Invalid

    with pytest.raises(Invalid, match=r"spec\.proxyProtocol\.version"):
        World().apply(_policy("V3"))


def test_health_check_fields_conflict_leaf_by_leaf_and_merge() -> None:
    """Two policies setting different fields of the passive check both apply; a third
    setting one of them again is Conflicted; two active checks conflict on `type`."""
    from gateway.routing.explain import table_to_wire

    world = World()
    world.apply(
        gateway_yaml(443)
        + service_yaml("db", 5432, 5433)
        + route_yaml("db", [HOST], [("db", 1)])
        + _balancing("  healthCheck: {passive: {consecutiveConnectFailures: 5}}", "a-count")
        + _balancing("  healthCheck: {passive: {baseEjectionTime: 10s}}", "b-time")
        + _balancing("  healthCheck: {passive: {consecutiveConnectFailures: 2}}", "c-count")
        + _balancing("  healthCheck: {active: {type: TCP}}", "d-tcp")
        + _balancing("  healthCheck: {active: {type: TLS, interval: 1s}}", "e-tls")
    )
    assert world.snapshot is not None
    statuses = world.snapshot.statuses

    def accepted(name: str) -> tuple[str, str]:
        status = statuses[ObjectKey("BackendTrafficPolicy", "apps", name)]
        assert isinstance(status, PolicyStatus)
        [condition] = status.ancestors[0].conditions
        return condition.status, condition.reason

    assert accepted("a-count") == accepted("b-time") == accepted("d-tcp") == ("True", "Accepted")
    assert accepted("c-count") == accepted("e-tls") == ("False", "Conflicted")
    [bind] = table_to_wire(world.snapshot)["binds"]
    [backend] = bind["listeners"][0]["routes"][0]["backends"]
    assert backend["traffic"]["policies"] == ["apps/a-count", "apps/b-time", "apps/d-tcp"]
    assert backend["traffic"]["passiveHealthCheck"] == {
        "consecutiveConnectFailures": 5,
        "baseEjectionTimeSeconds": 10.0,
        "maxEjectionPercent": 50,
    }
    assert backend["traffic"]["activeHealthCheck"]["type"] == "TCP"
