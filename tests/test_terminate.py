"""Terminate and Mixed modes, client certificates and re-encryption, over real sockets with
trustme certificates (SPEC.md §10.6-§10.8)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme

from gateway.api.kinds import ObjectKey
from gateway.api.status import GatewayStatus
from gateway.dataplane.proxy import ProxyConfig

from .harness import (
    Pki,
    admin_gateway,
    backends,
    ca_config_map_yaml,
    free_port,
    gateway_yaml,
    handshake_outcome,
    passthrough_listener,
    route_yaml,
    run_tlsgate,
    secret_yaml,
    service_yaml,
    terminate_listener,
    tls_client,
)

YAML = {"Content-Type": "application/yaml"}


async def _apply(http: httpx.AsyncClient, text: str) -> None:
    response = await http.post("/v1/apply", headers=YAML, content=text)
    assert response.status_code == 200, response.text


def _redis_route(pki: Pki, port: int, backend_port: int) -> str:
    """A Terminate listener on `port` serving redis.example.com to a plain backend."""
    return (
        gateway_yaml(port, terminate_listener("tls", port, None, "cert"))
        + secret_yaml("cert", pki.ca.issue_cert("redis.example.com"))
        + service_yaml("redis", backend_port)
        + route_yaml("r", ["redis.example.com"], [("redis", 1)])
    )


def _peer_names(client: object) -> list[str]:
    stream = client.stream  # type: ignore[attr-defined]
    cert = stream.getpeercert()
    return [value for kind, value in cert["subjectAltName"] if kind == "DNS"]


async def test_terminate_serves_the_listener_certificate_and_plain_tcp_to_the_backend(
    pki: Pki,
) -> None:
    port = free_port()
    with backends(pki, ("redis", None)) as (redis,):
        bundle = (
            gateway_yaml(port, terminate_listener("tls", port, "*.example.com", "cert"))
            + secret_yaml("cert", pki.ca.issue_cert("*.example.com"))
            + service_yaml("redis", redis.port)
            + route_yaml("redis", ["redis.example.com"], [("redis", 1)])
        )
        async with admin_gateway(None) as (_, url), httpx.AsyncClient(base_url=url) as http:
            await _apply(http, bundle)
            with trio.fail_after(20):
                async with tls_client(port, "redis.example.com", pki.client_context()) as client:
                    assert _peer_names(client) == ["*.example.com"]
                    assert await client.call("IS_TLS") == "false"
                    assert await client.test() == {"backend": "redis", "sni": None, "tls": False}
                    # Large transfers both ways, many records per read.
                    payload = "x" * 200_000
                    assert await client.call(f"ECHO {payload}") == payload


async def test_mixed_passthrough_and_terminate_on_one_port(pki: Pki) -> None:
    port = free_port()
    listeners = passthrough_listener("pass", port, "db.example.com") + terminate_listener(
        "term", port, "*.example.com", "cert"
    )
    with backends(pki, ("db", ["db.example.com"]), ("cache", None)) as (db, cache):
        bundle = (
            gateway_yaml(port, listeners)
            + secret_yaml("cert", pki.ca.issue_cert("*.example.com"))
            + service_yaml("db", db.port)
            + service_yaml("cache", cache.port)
            + route_yaml("db", ["db.example.com"], [("db", 1)], section="pass")
            + route_yaml("cache", ["cache.example.com"], [("cache", 1)], section="term")
        )
        async with admin_gateway(None) as (_, url), httpx.AsyncClient(base_url=url) as http:
            await _apply(http, bundle)
            with trio.fail_after(20):
                async with tls_client(port, "db.example.com", pki.client_context()) as client:
                    assert await client.test() == {
                        "backend": "db",
                        "sni": "db.example.com",
                        "tls": True,
                    }
                    assert _peer_names(client) == ["db.example.com"]  # the backend's own
                async with tls_client(port, "cache.example.com", pki.client_context()) as client:
                    assert await client.test() == {"backend": "cache", "sni": None, "tls": False}
                    assert _peer_names(client) == ["*.example.com"]  # the gateway's


async def test_broken_certificate_secret_is_reported_and_rejected_during_the_handshake(
    pki: Pki,
) -> None:
    port = free_port()
    broken = """
---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: infra}
type: kubernetes.io/tls
data: {tls.crt: SGVsbG8gd29ybGQ=, tls.key: SGVsbG8gd29ybGQ=}
"""
    listeners = terminate_listener("broken", port, "*.example.com", "cert") + passthrough_listener(
        "wide", port, None
    )
    with backends(pki, ("any", ["x.example.com"])) as (anyone,):
        bundle = (
            gateway_yaml(port, listeners)
            + broken
            + service_yaml("any", anyone.port)
            + route_yaml("r", ["x.example.com"], [("any", 1)])
        )
        async with admin_gateway(None) as (server, url), httpx.AsyncClient(base_url=url) as http:
            await _apply(http, bundle)
            status = server.state.snapshot.statuses[ObjectKey("Gateway", "infra", "gw")]
            assert isinstance(status, GatewayStatus)
            broken_status = next(lst for lst in status.listeners if lst.name == "broken")
            reasons = {c.type: (c.status, c.reason) for c in broken_status.conditions}
            assert reasons["ResolvedRefs"] == ("False", "InvalidCertificateRef")
            assert reasons["Programmed"] == ("False", "Invalid")
            assert broken_status.attached_routes == 1
            # The broken listener wins x.example.com: closed, never served by "wide".
            with trio.fail_after(10):
                assert await handshake_outcome(port, "x.example.com", pki.client_context()) in (
                    "eof",
                    "reset",
                )


async def test_replacing_the_secret_changes_the_next_certificate(pki: Pki) -> None:
    port = free_port()
    with backends(pki, ("redis", None)) as (redis,):
        bundle = (
            gateway_yaml(port, terminate_listener("tls", port, None, "cert"))
            + service_yaml("redis", redis.port)
            + route_yaml("redis", ["redis.example.com"], [("redis", 1)])
        )
        first = pki.ca.issue_cert("redis.example.com", "first.example.com")
        second = pki.ca.issue_cert("redis.example.com", "second.example.com")
        async with admin_gateway(None) as (_, url), httpx.AsyncClient(base_url=url) as http:
            await _apply(http, bundle + secret_yaml("cert", first))
            with trio.fail_after(20):
                async with tls_client(port, "redis.example.com", pki.client_context()) as held:
                    assert "first.example.com" in _peer_names(held)
                    await _apply(http, secret_yaml("cert", second))
                    async with tls_client(
                        port, "redis.example.com", pki.client_context()
                    ) as client:
                        assert "second.example.com" in _peer_names(client)
                    assert await held.call("PING") == "PONG"  # the held one is untouched


async def test_several_certificates_the_best_san_match_is_served(pki: Pki) -> None:
    port = free_port()
    with backends(pki, ("redis", None)) as (redis,):
        bundle = (
            gateway_yaml(port, terminate_listener("tls", port, None, "wide", "exact"))
            + secret_yaml("wide", pki.ca.issue_cert("*.example.com"))
            + secret_yaml("exact", pki.ca.issue_cert("db.example.com"))
            + service_yaml("redis", redis.port)
            + route_yaml("r", ["db.example.com", "web.example.com"], [("redis", 1)])
        )
        async with admin_gateway(None) as (_, url), httpx.AsyncClient(base_url=url) as http:
            await _apply(http, bundle)
            with trio.fail_after(20):
                async with tls_client(port, "db.example.com", pki.client_context()) as client:
                    assert _peer_names(client) == ["db.example.com"]
                async with tls_client(port, "web.example.com", pki.client_context()) as client:
                    assert _peer_names(client) == ["*.example.com"]


def _client_context(pki: Pki, client_cert: trustme.LeafCert | None) -> ssl.SSLContext:
    context = pki.client_context()
    if client_cert is not None:
        client_cert.configure_cert(context)
    return context


async def _outcome(port: int, sni: str, context: ssl.SSLContext) -> str:
    """'ok' when a full exchange works, else how it failed. With TLS 1.3 a refused client
    certificate shows on the first read, after the client's handshake returned."""
    try:
        async with tls_client(port, sni, context) as client:
            return "ok" if await client.call("PING") == "PONG" else "bad"
    except (trio.BrokenResourceError, EOFError, AssertionError):
        return "refused"


async def test_client_certificates_in_both_modes_with_a_per_port_override(pki: Pki) -> None:
    port, other_port = free_port(), free_port()
    clients_ca, stranger_ca = trustme.CA(), trustme.CA()
    valid = clients_ca.issue_cert("client.example.com")
    foreign = stranger_ca.issue_cert("client.example.com")
    listeners = terminate_listener("strict", port, None, "cert") + terminate_listener(
        "lenient", other_port, None, "cert"
    )
    frontend = f"""
  tls:
    frontend:
      default:
        validation:
          caCertificateRefs: [{{group: "", kind: ConfigMap, name: clients}}]
      perPort:
      - port: {other_port}
        tls:
          validation:
            mode: AllowInsecureFallback
            caCertificateRefs: [{{group: "", kind: ConfigMap, name: clients}}]
"""
    with backends(pki, ("redis", None)) as (redis,):
        bundle = (
            gateway_yaml(port, listeners).replace("  listeners:", frontend + "  listeners:")
            + secret_yaml("cert", pki.ca.issue_cert("redis.example.com"))
            + ca_config_map_yaml("clients", clients_ca)
            + service_yaml("redis", redis.port)
            + route_yaml("r", ["redis.example.com"], [("redis", 1)])
        )
        async with admin_gateway(None) as (server, url), httpx.AsyncClient(base_url=url) as http:
            await _apply(http, bundle)
            status = server.state.snapshot.statuses[ObjectKey("Gateway", "infra", "gw")]
            assert isinstance(status, GatewayStatus)
            assert any(
                c.type == "InsecureFrontendValidationMode" and c.status == "True"
                for c in status.conditions
            )
            with trio.fail_after(30):
                sni = "redis.example.com"
                # AllowValidOnly (the default): only a certificate from the configured CA.
                assert await _outcome(port, sni, _client_context(pki, valid)) == "ok"
                assert await _outcome(port, sni, _client_context(pki, None)) == "refused"
                assert await _outcome(port, sni, _client_context(pki, foreign)) == "refused"
                # AllowInsecureFallback on the other port: every client gets through.
                for cert in (valid, None, foreign):
                    assert await _outcome(other_port, sni, _client_context(pki, cert)) == "ok"


async def test_reencryption_to_the_backend_with_a_backend_tls_policy(pki: Pki) -> None:
    port = free_port()
    backend_ca = trustme.CA()
    wrong_ca = trustme.CA()
    policy = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}, namespace: apps}}
spec:
  targetRefs: [{{group: "", kind: Service, name: {service}}}]
  validation:
    hostname: internal.backend.test
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: backend-ca}}]
"""
    good_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    backend_ca.issue_cert("internal.backend.test").configure_cert(good_context)
    bad_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    wrong_ca.issue_cert("internal.backend.test").configure_cert(bad_context)
    from .linebackend import LineBackend

    good = LineBackend("secure", tls_context=good_context).start()
    bad = LineBackend("impostor", tls_context=bad_context).start()
    try:
        bundle = (
            gateway_yaml(port, terminate_listener("tls", port, None, "cert"))
            + secret_yaml("cert", pki.ca.issue_cert("*.example.com"))
            + service_yaml("secure", good.port)
            + service_yaml("impostor", bad.port)
            + ca_config_map_yaml("backend-ca", backend_ca, namespace="apps")
            + policy.format(name="secure", service="secure")
            + policy.format(name="impostor", service="impostor")
            + route_yaml("secure", ["secure.example.com"], [("secure", 1)])
            + route_yaml("impostor", ["impostor.example.com"], [("impostor", 1)])
        )
        async with admin_gateway(None) as (_server, url), httpx.AsyncClient(base_url=url) as http:
            await _apply(http, bundle)
            policy_status = (await http.get("/v1/backendtlspolicies/apps/secure")).json()
            ancestor = policy_status["status"]["ancestors"][0]
            assert ancestor["ancestorRef"]["name"] == "gw"
            assert [(c["type"], c["status"]) for c in ancestor["conditions"]] == [
                ("Accepted", "True"),
                ("ResolvedRefs", "True"),
            ]
            with trio.fail_after(20):
                async with tls_client(port, "secure.example.com", pki.client_context()) as c:
                    # The backend sees TLS, with the policy's hostname as SNI.
                    assert await c.test() == {
                        "backend": "secure",
                        "sni": "internal.backend.test",
                        "tls": True,
                    }
                assert (
                    await _outcome(port, "impostor.example.com", pki.client_context()) == "refused"
                )
    finally:
        good.stop()
        bad.stop()


async def test_openssl_s_client_shows_the_listener_chain(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    with backends(pki, ("redis", None)) as (redis,):
        bundle = _redis_route(pki, port, redis.port)
        async with admin_gateway(None) as (_, url), httpx.AsyncClient(base_url=url) as http:
            await _apply(http, bundle)
            with trio.fail_after(30):
                result = await trio.run_process(
                    [
                        "openssl",
                        "s_client",
                        "-connect",
                        f"127.0.0.1:{port}",
                        "-servername",
                        "redis.example.com",
                        "-CAfile",
                        pki.ca_file(),
                        "-verify_return_error",
                        "-showcerts",
                        "-ign_eof",
                        "-nocommands",
                    ],
                    stdin=b"PING\nQUIT\n",
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            output = result.stdout.decode()
            assert result.returncode == 0, output + result.stderr.decode()
            assert "Verify return code: 0 (ok)" in output
            assert "Certificate chain" in output
            assert "trustme" in output
            assert "PONG" in output


async def test_garbage_after_the_handshake_closes_only_that_connection(pki: Pki) -> None:
    port = free_port()
    with backends(pki, ("redis", None)) as (redis,):
        bundle = _redis_route(pki, port, redis.port)
        async with admin_gateway(None) as (server, url), httpx.AsyncClient(base_url=url) as http:
            await _apply(http, bundle)
            with trio.fail_after(20):
                async with tls_client(port, "redis.example.com", pki.client_context()) as client:
                    assert isinstance(client.stream, trio.SSLStream)
                    transport = client.stream.transport_stream
                    await transport.send_all(b"\x17\x03\x03\x00\x10" + b"\x00" * 16)
                    with pytest.raises((trio.BrokenResourceError, EOFError)):
                        await client.line()
                await server.proxy.idle.wait()
                finished = server.metrics.connections_finished.value(
                    "infra/gw", "infra/gw/tls", "apps/r", "error"
                )
                assert finished == 1  # an expected failure, not an internal error
                async with tls_client(port, "redis.example.com", pki.client_context()) as client:
                    assert await client.call("PING") == "PONG"


def _session_after_a_call(
    port: int, context: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[ssl.SSLSession | None, bool]:
    """A blocking client (as most users' are): connect, one call, close; the session it
    ends with and whether it resumed the one given."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with context.wrap_socket(raw, server_hostname="redis.example.com", session=session) as tls:
        stream = tls.makefile("rwb")
        assert stream.readline().startswith(b"HELLO ")
        stream.write(b"IS_TLS\n")
        stream.flush()
        assert stream.readline() == b"false\n"  # TLS 1.3 tickets came before this answer
        return tls.session, bool(tls.session_reused)


@pytest.mark.parametrize("tickets", [2, 0])
async def test_session_tickets_resume_by_default_and_can_be_turned_off(
    pki: Pki, tickets: int
) -> None:
    port = free_port()
    with backends(pki, ("redis", None)) as (redis,):
        config: dict[str, Any] = {} if tickets else {"proxy": ProxyConfig(session_tickets=0)}
        async with (
            admin_gateway(None, **config) as (_, url),
            httpx.AsyncClient(base_url=url) as http,
        ):
            await _apply(http, _redis_route(pki, port, redis.port))
            context = pki.client_context()
            with trio.fail_after(20):
                first, _ = await trio.to_thread.run_sync(_session_after_a_call, port, context, None)
                assert first is not None
                assert first.has_ticket == bool(tickets)
                _, resumed = await trio.to_thread.run_sync(
                    _session_after_a_call, port, context, first
                )
    assert resumed == bool(tickets)  # no ticket: a full handshake again


def test_the_session_tickets_option_is_checked() -> None:
    result = run_tlsgate("serve", "--tls-session-tickets", "17")
    assert result.returncode == 2
    assert "is not a number of tickets from 0 to 16" in result.stderr
