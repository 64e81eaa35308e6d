"""PostgreSQL through tlsgate, for real (issue 14; API.md "PostgreSQL"): Debian's
`postgresql` server with SSL on loopback, run as its own user in a temporary directory
(installed by the test set-up), and `psql` as the client. PostgreSQL clients send an
SSLRequest in plain text before their ClientHello: tlsgate answers it, routes by SNI, and
asks the backend in turn where the backend's TLS is wanted."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trustme

from gateway.dataplane.postgres import GSSENC_REQUEST, SSL_REQUEST

from .harness import (
    Pki,
    ca_config_map_yaml,
    free_port,
    gateway_yaml,
    route_yaml,
    running_gateway,
    secret_yaml,
    terminate_listener,
)

pytestmark = pytest.mark.slow

USER = "tlsgate"
HOST = "db.example.test"


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    path = found[-1] if found else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: scripts/setup-env installs Debian's postgresql")
    return path


class Postgres:
    """One PostgreSQL server on a free loopback port, SSL on (certificate for HOST from the
    test CA), trust authentication for USER over TCP, with and without SSL."""

    def __init__(self, cert: trustme.LeafCert) -> None:
        # The server refuses to run as root: it runs as the postgres user when the tests do.
        account = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.directory = Path(tempfile.mkdtemp(prefix="tlsgate-pg-"))
        data = self.directory / "data"
        (self.directory / "server.crt").write_bytes(
            b"".join(blob.bytes() for blob in cert.cert_chain_pems)
        )
        (self.directory / "server.key").write_bytes(cert.private_key_pem.bytes())
        os.chmod(self.directory / "server.key", 0o600)
        if account is not None:
            for path in self.directory.iterdir():
                os.chown(path, account.pw_uid, account.pw_gid)
            os.chown(self.directory, account.pw_uid, account.pw_gid)
        user = account.pw_name if account is not None else None
        subprocess.run(
            [_binary("initdb"), "-D", str(data), "-U", USER, "-A", "trust", "--no-sync"],
            check=True,
            capture_output=True,
            user=user,
        )
        with (data / "pg_hba.conf").open("w") as hba:
            hba.write(
                f"hostssl all {USER} 127.0.0.1/32 trust\nhostnossl all {USER} 127.0.0.1/32 trust\n"
            )
        self.port = free_port()
        self.log = (self.directory / "postgres.log").open("w")
        self.process = subprocess.Popen(
            [
                _binary("postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(self.directory),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "ssl=on",
                "-c",
                f"ssl_cert_file={self.directory / 'server.crt'}",
                "-c",
                f"ssl_key_file={self.directory / 'server.key'}",
                "-c",
                "fsync=off",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            user=user,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postgres did not start: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        return (self.directory / "postgres.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # smart shutdown; the clients are gone by now
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def postgres(pg_ca: trustme.CA) -> Iterator[Postgres]:
    if shutil.which("psql") is None:
        pytest.fail("psql is missing: scripts/setup-env installs Debian's postgresql")
    server = Postgres(pg_ca.issue_cert(HOST))
    try:
        yield server
    finally:
        server.stop()


def _psql(port: int, ca_file: str, query: str, **params: str) -> subprocess.CompletedProcess[str]:
    """psql as a user runs it: TLS verified against HOST, which routes in tlsgate."""
    conninfo = {
        "host": HOST,
        "hostaddr": "127.0.0.1",
        "port": str(port),
        "user": USER,
        "dbname": "postgres",
        "sslmode": "verify-full",
        "sslrootcert": ca_file,
        "connect_timeout": "10",
        **params,
    }
    text = " ".join(f"{key}={value}" for key, value in conninfo.items())
    return subprocess.run(
        ["psql", text, "-X", "-A", "-t", "-c", query],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PGAPPNAME": "tlsgate-test"},
    )


#: What the server says about the session psql is in: was it TLS to the server itself?
SESSION_SSL = "select ssl from pg_stat_ssl where pid = pg_backend_pid()"


def _service(port: int) -> str:
    return f"""
---
apiVersion: v1
kind: Service
metadata: {{name: pg, namespace: apps}}
spec: {{ports: [{{name: pg, port: 5432, targetPort: pg}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: pg, namespace: apps, labels: {{kubernetes.io/service-name: pg}}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{name: pg, port: {port}}}]
"""


def _route() -> str:
    return route_yaml("pg", [HOST], [("pg", 1)]).replace("port: 443", "port: 5432")


async def test_psql_through_a_passthrough_listener_verifies_the_servers_own_certificate(
    postgres: Postgres, pg_ca: trustme.CA, tmp_path: Path
) -> None:
    """The client's TLS reaches PostgreSQL itself: psql verifies the server's certificate
    for HOST (sslmode=verify-full) and the server sees an SSL session."""
    ca_file = str(tmp_path / "ca.pem")
    pg_ca.cert_pem.write_to_path(ca_file)
    port = free_port()
    manifests = gateway_yaml(port) + _service(postgres.port) + _route()
    async with running_gateway(manifests):
        result = await trio.to_thread.run_sync(_psql, port, ca_file, SESSION_SSL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "t"


async def test_psql_through_a_terminate_listener_reaches_the_plain_port(
    postgres: Postgres, tmp_path: Path
) -> None:
    """tlsgate ends the client's TLS with its own certificate for HOST and forwards the
    PostgreSQL protocol as it is: the server sees a session without SSL."""
    pki = Pki(tmp_path)
    port = free_port()
    listeners = terminate_listener("pg", port, HOST, "pg-cert")
    manifests = (
        gateway_yaml(port, listeners)
        + secret_yaml("pg-cert", pki.ca.issue_cert(HOST))
        + _service(postgres.port)
        + _route()
    )
    async with running_gateway(manifests):
        result = await trio.to_thread.run_sync(_psql, port, pki.ca_file(), SESSION_SSL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "f"


async def test_a_terminate_listener_re_encrypts_with_its_own_sslrequest(
    postgres: Postgres, pg_ca: trustme.CA, tmp_path: Path
) -> None:
    """With a BackendTLSPolicy, tlsgate asks the server for SSL as PostgreSQL clients do
    (an SSLRequest, then its handshake, verifying the server's certificate for HOST)."""
    pki = Pki(tmp_path)
    port = free_port()
    listeners = terminate_listener("pg", port, HOST, "pg-cert")
    policy = f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: pg-tls, namespace: apps}}
spec:
  targetRefs: [{{group: "", kind: Service, name: pg}}]
  validation:
    hostname: {HOST}
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: pg-ca}}]
"""
    manifests = (
        gateway_yaml(port, listeners)
        + secret_yaml("pg-cert", pki.ca.issue_cert(HOST))
        + ca_config_map_yaml("pg-ca", pg_ca, namespace="apps")
        + _service(postgres.port)
        + _route()
        + policy
    )
    async with running_gateway(manifests):
        result = await trio.to_thread.run_sync(_psql, port, pki.ca_file(), SESSION_SSL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "t"


async def test_a_gssencrequest_is_refused_and_the_sslrequest_after_it_accepted(
    postgres: Postgres, pg_ca: trustme.CA, tmp_path: Path
) -> None:
    """libpq with GSSAPI credentials asks for GSSAPI encryption first (gssencmode=prefer):
    `N`, as from a server without it, and the SSLRequest that follows gets `S`; then TLS
    goes on to the server in Passthrough."""
    port = free_port()
    manifests = gateway_yaml(port) + _service(postgres.port) + _route()
    context = ssl.create_default_context()
    pg_ca.configure_trust(context)
    async with running_gateway(manifests):

        def connect() -> str:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(GSSENC_REQUEST)
                assert sock.recv(1) == b"N"
                sock.sendall(SSL_REQUEST)
                assert sock.recv(1) == b"S"
                with context.wrap_socket(sock, server_hostname=HOST) as tls:
                    return tls.version() or ""

        version = await trio.to_thread.run_sync(connect)
    assert version.startswith("TLS")


async def test_a_backend_that_refuses_ssl_closes_the_passthrough_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client was told `S`; a backend that answers `N` (SSL off) cannot give it TLS:
    both sides are closed, and the access line says why."""
    caplog.set_level(logging.INFO, logger="tlsgate.access")
    refusing = socket.create_server(("127.0.0.1", 0))
    refusing.settimeout(10)
    received: list[bytes] = []

    async def refuse() -> None:
        sock, _ = await trio.to_thread.run_sync(refusing.accept)
        with sock:
            received.append(await trio.to_thread.run_sync(sock.recv, 64))
            await trio.to_thread.run_sync(sock.sendall, b"N")

    port = free_port()
    manifests = gateway_yaml(port) + _service(refusing.getsockname()[1]) + _route()
    context = ssl.create_default_context()
    try:
        async with running_gateway(manifests), trio.open_nursery() as nursery:
            nursery.start_soon(refuse)

            def connect() -> bytes:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(SSL_REQUEST)
                    assert sock.recv(1) == b"S"
                    with pytest.raises((ssl.SSLError, OSError)):
                        context.wrap_socket(sock, server_hostname=HOST)
                    return b""

            await trio.to_thread.run_sync(connect)
    finally:
        refusing.close()
    assert received == [SSL_REQUEST]  # the SSLRequest, and never the ClientHello
    assert "outcome=backend-tls-failed" in caplog.text
    assert "prelude=sslrequest" in caplog.text
    assert "answered the SSLRequest with b'N'" in caplog.text


async def test_a_terminate_listener_negotiates_the_alpn_its_options_name(
    postgres: Postgres, tmp_path: Path
) -> None:
    """PostgreSQL 17's direct TLS sends its ClientHello at once, with ALPN `postgresql`,
    and libpq insists on it being selected: a Terminate listener selects what its
    `gateway.tlsgate.dev/alpn` option lists. A client that offers none still connects."""
    pki = Pki(tmp_path)
    port = free_port()
    listeners = terminate_listener("pg", port, HOST, "pg-cert").replace(
        "tls: {mode: Terminate,",
        'tls: {mode: Terminate, options: {"gateway.tlsgate.dev/alpn": "postgresql"},',
    )
    manifests = (
        gateway_yaml(port, listeners)
        + secret_yaml("pg-cert", pki.ca.issue_cert(HOST))
        + _service(postgres.port)
        + _route()
    )

    def negotiated(offered: list[str]) -> str | None:
        context = pki.client_context()
        if offered:
            context.set_alpn_protocols(offered)
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        with context.wrap_socket(sock, server_hostname=HOST) as tls:
            return tls.selected_alpn_protocol()

    async with running_gateway(manifests):
        assert await trio.to_thread.run_sync(negotiated, ["h2", "postgresql"]) == "postgresql"
        assert await trio.to_thread.run_sync(negotiated, ["h2"]) is None
        assert await trio.to_thread.run_sync(negotiated, []) is None
