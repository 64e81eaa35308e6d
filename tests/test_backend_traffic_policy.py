"""BackendTrafficPolicy (API.md "Traffic policies"): its status, and the PROXY protocol
headers a backend receives from tlsgate, read by a real backend that takes them before its
own protocol (as PostgreSQL behind pgbouncer, nginx `proxy_protocol` or HAProxy
`accept-proxy` do): v1 and v2, Passthrough and Terminate, with the client's address as a
trusted incoming header carried it."""

from __future__ import annotations

import contextlib
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
    assert (backends[0].traffic.policy, backends[0].traffic.proxy_version) == ("apps/db-proxy", 2)
    # A policy on no Service any route of ours reaches gets no status.
    world.apply(_policy("V1", service="unused", name="unused"))
    assert ObjectKey("BackendTrafficPolicy", "apps", "unused") not in world.snapshot.statuses


@pytest.mark.parametrize(
    "extra",
    [
        "healthCheck: {passive: {consecutiveConnectFailures: 3}}",
        "timeout: {tcp: {connectTimeout: 1s}}",
        "retry: {numAttempts: 2}",
        "loadBalancer: {type: Random}",
    ],
)
def test_fields_not_enforced_yet_are_refused_at_admission(extra: str) -> None:
    from gateway.api.convert import Invalid

    world = World()
    with pytest.raises(Invalid, match="not supported by this version"):
        world.apply(_policy("V1") + f"  {extra}\n")


def test_an_unknown_version_is_refused() -> None:
    from gateway.api.convert import Invalid

    with pytest.raises(Invalid, match=r"spec\.proxyProtocol\.version"):
        World().apply(_policy("V3"))
