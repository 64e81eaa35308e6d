"""The listeners and the process: reconciliation, bind failures, limits, real clients
(openssl s_client, curl) and graceful shutdown on SIGTERM."""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from gateway.api.kinds import ObjectKey
from gateway.api.status import GatewayStatus

from .harness import (
    Pki,
    backends,
    db_route,
    free_port,
    gateway_yaml,
    handshake_outcome,
    listening,
    route_yaml,
    running_gateway,
    serve_manifests,
    service_yaml,
    tls_client,
    wait_until,
)
from .helpers import World


async def test_listeners_follow_the_configuration_and_live_connections_survive(pki: Pki) -> None:
    port, extra = free_port(), free_port()
    with backends(pki, ("db", ["db.example.com"])) as (db,):
        base = service_yaml("db", db.port) + route_yaml("db", ["db.example.com"], [("db", 1)])
        async with running_gateway(gateway_yaml(port) + base) as server:
            with trio.fail_after(20):
                async with tls_client(port, "db.example.com", pki.client_context()) as held:
                    assert await held.call("PING") == "PONG"
                    # A second listener appears with the configuration...
                    two = f"""
  - {{name: tls, port: {port}, protocol: TLS, tls: {{mode: Passthrough}},
     allowedRoutes: {{namespaces: {{from: All}}}}}}
  - {{name: extra, port: {extra}, protocol: TLS, tls: {{mode: Passthrough}},
     allowedRoutes: {{namespaces: {{from: All}}}}}}
"""
                    world = World()
                    world.apply(gateway_yaml(port, two) + base)
                    server.state.replace_documents(world.docs.values())
                    await wait_until(lambda: listening(extra))
                    async with tls_client(extra, "db.example.com", pki.client_context()) as c:
                        assert await c.call("PING") == "PONG"
                    # ...and every listener goes away with the Gateway, without a restart.
                    server.state.put([], deleted=[ObjectKey("Gateway", "infra", "gw")])
                    await wait_until(lambda: not listening(port) and not listening(extra))
                    # The relayed connection is untouched (ARCHITECTURE.md).
                    assert await held.call("ECHO still here") == "still here"


async def test_bind_failure_is_reported_and_retried() -> None:
    port = free_port()
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    async with running_gateway(gateway_yaml(port), bind_retry=0.1) as server:
        key = ObjectKey("Gateway", "infra", "gw")

        def listener_reason() -> str:
            status = server.state.snapshot.statuses[key]
            assert isinstance(status, GatewayStatus)
            return next(c.reason for c in status.listeners[0].conditions if c.type == "Accepted")

        await wait_until(lambda: listener_reason() == "PortUnavailable")
        assert server.state.snapshot.binds[("127.0.0.1", port)].error
        blocker.close()
        await wait_until(lambda: listener_reason() == "Accepted")
        assert listening(port)


async def test_connections_over_the_limit_are_closed_at_once(pki: Pki) -> None:
    port = free_port()
    with backends(pki, ("db", ["db.example.com"])) as (db,):
        manifests = db_route(port, db.port)
        async with running_gateway(manifests, max_connections=2) as server:
            with trio.fail_after(10):
                async with (
                    tls_client(port, "db.example.com", pki.client_context()) as one,
                    tls_client(port, "db.example.com", pki.client_context()) as two,
                ):
                    assert await handshake_outcome(
                        port, "db.example.com", pki.client_context()
                    ) in ("eof", "reset")
                    assert server.binds is not None
                    assert server.binds.over_capacity == 1
                    assert await one.call("PING") == await two.call("PING") == "PONG"
                await server.proxy.idle.wait()
                async with tls_client(port, "db.example.com", pki.client_context()) as three:
                    assert await three.call("PING") == "PONG"


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from https backend, sni={self.server.sni}\n".encode()  # type: ignore
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_backend(pki: Pki) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    context = pki.backend_context("www.example.com")

    def remember(tls: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        server.sni = name  # type: ignore[attr-defined]

    context.sni_callback = remember
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def test_openssl_s_client_and_curl_through_the_gateway(pki: Pki, https_backend: int) -> None:
    port = free_port()
    manifests = (
        gateway_yaml(port)
        + service_yaml("www", https_backend)
        + route_yaml("www", ["www.example.com"], [("www", 1)])
    )
    ca = pki.ca_file()
    async with running_gateway(manifests):
        with trio.fail_after(30):
            curl = await trio.run_process(
                [
                    "curl",
                    "--silent",
                    "--show-error",
                    "--cacert",
                    ca,
                    "--resolve",
                    f"www.example.com:{port}:127.0.0.1",
                    f"https://www.example.com:{port}/",
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert curl.returncode == 0, curl.stderr
            assert curl.stdout == b"hello from https backend, sni=www.example.com\n"
            s_client = await trio.run_process(
                [
                    "openssl",
                    "s_client",
                    "-connect",
                    f"127.0.0.1:{port}",
                    "-servername",
                    "www.example.com",
                    "-CAfile",
                    ca,
                    "-verify_return_error",
                    "-brief",
                ],
                stdin=b"",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            output = (s_client.stdout + s_client.stderr).decode()
            assert s_client.returncode == 0, output
            assert "Verification: OK" in output
            rejected = await trio.run_process(
                [
                    "openssl",
                    "s_client",
                    "-connect",
                    f"127.0.0.1:{port}",
                    "-servername",
                    "nobody.example.com",
                    "-brief",
                ],
                stdin=b"",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert rejected.returncode != 0  # closed during the handshake, no certificate


async def test_sigterm_drains_live_connections_then_exits_zero(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    with backends(pki, ("db", ["db.example.com"])) as (db,):
        async with serve_manifests(
            tmp_path,
            db_route(port, db.port),
            "--drain-timeout",
            "20",
            capture=True,
            port=port,
        ) as process:
            with trio.fail_after(30):
                async with tls_client(port, "db.example.com", pki.client_context()) as client:
                    assert await client.call("PING") == "PONG"
                    os.kill(process.pid, signal.SIGTERM)
                    await wait_until(lambda: not listening(port))  # stops accepting at once
                    # The live connection keeps working during the drain.
                    assert await client.call("ECHO draining") == "draining"
                    await client.call("PING")
                code = await trio.to_thread.run_sync(process.wait, 20)
                output = process.stdout.read() if process.stdout else ""
                assert code == 0, output
                assert "outcome=closed" in output
                assert "sni=db.example.com" in output


async def test_drain_timeout_closes_the_rest(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    with backends(pki, ("db", ["db.example.com"])) as (db,):
        async with serve_manifests(
            tmp_path,
            db_route(port, db.port),
            "--drain-timeout",
            "0.5",
            capture=True,
            port=port,
        ) as process:
            with trio.fail_after(30):
                async with tls_client(port, "db.example.com", pki.client_context()) as client:
                    os.kill(process.pid, signal.SIGINT)
                    code = await trio.to_thread.run_sync(process.wait, 20)
                    output = process.stdout.read() if process.stdout else ""
                    assert code == 0, output[-3000:]
                    with pytest.raises((trio.BrokenResourceError, EOFError)):
                        await client.call("PING")


def test_invalid_bootstrap_refuses_to_start(tmp_path: Path) -> None:
    bootstrap = tmp_path / "bad.yaml"
    bootstrap.write_text(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
        "metadata: {name: gw}\nspec: {gatewayClassName: x, listeners: []}\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--bootstrap",
            str(bootstrap),
            "--state-dir",
            "",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "spec.listeners" in result.stderr


@pytest.mark.parametrize(
    ("options", "checks"),
    [
        pytest.param((), 5, id="one"),
        # Two replicas on a three-member etcd cluster: the same commands on each replica's
        # own address (5 each: four connections and the dashboard), and each listing both
        # replicas (1 each).
        pytest.param(("--replicas",), 12, id="replicas", marks=pytest.mark.slow),
    ],
)
def test_demo_check_passes(options: tuple[str, ...], checks: int) -> None:
    """The README's demo, as CI runs it: real processes, curl and openssl s_client."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [str(root / "scripts" / "demo"), "--check", *options],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ") == checks
    if options:
        assert "replica-0', 'replica-1'" in result.stdout


#: The interactive demo's documented ports (README): the listener, the backends, the admin API.
_DEMO_PORTS = (18443, 19441, 19442, 19443, 9901)


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _demo_generation() -> object:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open("http://127.0.0.1:9901/v1/routingtable", timeout=10) as response:
        return json.load(response)["generation"]


def test_demo_check_runs_beside_a_running_demo() -> None:
    """`scripts/demo --check` while the interactive `scripts/demo` runs on the same machine: the
    check takes its own ports and directory, a second demo refuses to start, and the first one
    keeps answering, then stops everything it started on SIGTERM."""
    root = Path(__file__).resolve().parent.parent
    taken = [port for port in _DEMO_PORTS if _port_taken(port)]
    if taken:
        pytest.skip(f"port(s) {taken} in use on this machine: the interactive demo needs them")
    demo = subprocess.Popen(
        [str(root / "scripts" / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    listening = threading.Event()

    def read() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            output.append(line)
            if line.startswith("tlsgate demo: listening on 127.0.0.1:18443"):
                listening.set()
        listening.set()  # end of output: the demo exited

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert listening.wait(120), "".join(output)
        if demo.poll() is not None and any("is in use" in line for line in output):
            pytest.skip(f"another demo took the ports meanwhile: {''.join(output)}")
        assert demo.poll() is None, "".join(output)
        # The curl command the demo prints, as a user would paste it.
        curl = next(shlex.split(line) for line in output if line.strip().startswith("curl "))
        web = {"backend": "web", "sni": "web.example.test", "tls": True}

        def demo_answers() -> object:
            result = subprocess.run(curl, capture_output=True, text=True, timeout=30, check=False)
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)

        assert demo_answers() == web
        generation = _demo_generation()

        check = subprocess.run(
            [str(root / "scripts" / "demo"), "--check"],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.count("ok ") == 5
        second = subprocess.run(
            [str(root / "scripts" / "demo")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert "port 18443 is in use: is another demo running?" in second.stderr

        # The running demo was not touched: same certificates, same configuration.
        assert demo_answers() == web
        assert _demo_generation() == generation
        assert demo.poll() is None, "".join(output)
        os.kill(demo.pid, signal.SIGTERM)
        assert demo.wait(60) == 0, "".join(output)
        still = [port for port in _DEMO_PORTS if _port_taken(port)]
        assert not still, f"ports {still} still bound after the demo stopped"
    finally:
        if demo.poll() is None:
            os.kill(demo.pid, signal.SIGTERM)
            try:
                demo.wait(60)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait(10)
        reader.join(10)
        assert demo.stdout is not None
        demo.stdout.close()


async def test_json_logs_carry_connection_swap_and_listener_lines(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    with backends(pki, ("db", ["db.example.com"])) as (db,):
        async with serve_manifests(
            tmp_path,
            db_route(port, db.port),
            "--log-format",
            "json",
            capture=True,
            port=port,
        ) as process:
            with trio.fail_after(20):
                async with tls_client(port, "db.example.com", pki.client_context()) as client:
                    assert await client.call("PING") == "PONG"
                os.kill(process.pid, signal.SIGTERM)
                code = await trio.to_thread.run_sync(process.wait, 20)
                assert code == 0, (process.stdout.read() if process.stdout else "")[-3000:]
            lines = [
                json.loads(line)
                for line in (process.stdout.read() if process.stdout else "").splitlines()
            ]
    # The readiness probe's bare connect is logged too (outcome client-closed).
    access = [
        entry
        for entry in lines
        if entry["logger"] == "tlsgate.access" and entry["outcome"] != "client-closed"
    ]
    assert len(access) == 1
    entry = access[0]
    assert (entry["sni"], entry["listener"], entry["route"], entry["outcome"]) == (
        "db.example.com",
        "infra/gw/tls",
        "apps/db",
        "closed",
    )
    assert entry["endpoint"] == f"127.0.0.1:{db.port}"
    assert entry["bytes_up"] > 0
    assert entry["bytes_down"] > 0
    assert entry["duration"] >= 0
    # Times in UTC, ISO 8601; structured fields, never reprs; one logger namespace.
    for entry in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
        assert entry["logger"].startswith("tlsgate."), entry
    swaps = [e for e in lines if e["message"] == "configuration swapped"]
    assert swaps
    assert isinstance(swaps[0]["generation"], int)
    assert isinstance(swaps[0]["accepted"], int)
    bound = [e for e in lines if e["message"] == "listener bound"]
    assert {"address": "127.0.0.1", "port": port}.items() <= bound[0].items()
    assert access[0]["message"] == "connection"
