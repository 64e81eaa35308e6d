"""What a new user meets first, as real processes (issue 9, items 9 and 10): the admin API over
HTTPS with the token (the compose stack's certificates), the refusal to serve it in plain
HTTP off loopback, one-line start errors, environment values, pipes that close early."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trustme

from .harness import free_port, gateway_yaml, run_tlsgate, serve_process

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "t0ken-for-tests"


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSGATE_")}
    return env | extra


def _tls(ca: str, cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert)
    return context


def _demo_certificates(directory: Path) -> Path:
    """The compose stack's certs step, run as a local process."""
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo_stack.py"), "--certs-only", str(directory)],
        check=True,
        timeout=60,
    )
    return directory


def test_admin_api_over_https_with_the_compose_certificates(tmp_path: Path) -> None:
    certs = _demo_certificates(tmp_path / "certs")
    ca, admin = str(certs / "ca.pem"), str(certs / "admin.pem")
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    bootstrap = tmp_path / "gateway.yaml"  # a free listener port: readyz needs it bound
    bootstrap.write_text(gateway_yaml(free_port()))
    with serve_process(
        "--admin",
        f"127.0.0.1:{port}",
        "--admin-tls-cert",
        admin,
        "--admin-tls-key",
        admin,
        "--state-dir",
        "",
        "--bootstrap",
        str(bootstrap),
        env=_environment(TLSGATE_ADMIN_TOKEN=TOKEN),
        admin_url=url,
        path="/readyz",
        verify=_tls(ca),
    ):
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=url, verify=_tls(ca)) as http:
            assert http.get("/v1/gateways", headers=auth).status_code == 200
            assert http.get("/v1/gateways").status_code == 401
        with pytest.raises(httpx.TransportError):  # no plain HTTP on the HTTPS port
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError):  # the certificate is checked
            httpx.get(f"{url}/healthz", timeout=5)

        # The CLI, as a user runs it.
        got = run_tlsgate("get", "gateways", "--server", url, "--cacert", ca, "--token", TOKEN)
        assert got.returncode == 0, got.stderr
        assert "infra" in got.stdout
        assert "gw" in got.stdout
        unverified = run_tlsgate("get", "gateways", "--server", url, "--token", TOKEN)
        assert unverified.returncode == 1
        assert (
            "CERTIFICATE_VERIFY_FAILED" in unverified.stderr or "certificate" in unverified.stderr
        )


def test_admin_client_certificates_are_required_with_a_client_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("operator@example.test")
    files = {}
    for name, blob in (
        ("ca", ca.cert_pem),
        ("server", server.private_key_and_cert_chain_pem),
        ("client", client.private_key_and_cert_chain_pem),
    ):
        files[name] = str(tmp_path / f"{name}.pem")
        blob.write_to_path(files[name])
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    with serve_process(
        "--admin",
        f"127.0.0.1:{port}",
        "--admin-tls-cert",
        files["server"],
        "--admin-tls-key",
        files["server"],
        "--admin-client-ca",
        files["ca"],
        "--state-dir",
        "",
        env=_environment(),
        admin_url=url,
        path="/readyz",
        verify=_tls(files["ca"], files["client"]),
    ):
        anonymous = run_tlsgate("get", "tlsroutes", "--server", url, "--cacert", files["ca"])
        assert anonymous.returncode == 1
        identified = run_tlsgate(
            "get", "tlsroutes", "--server", url, "--cacert", files["ca"], "--cert", files["client"]
        )
        assert identified.returncode == 0, identified.stderr


def test_plaintext_admin_off_loopback_is_refused_unless_tls_ends_in_front(tmp_path: Path) -> None:
    port = free_port()
    refused = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--admin", f"0.0.0.0:{port}", "--state-dir", ""],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=_environment(TLSGATE_ADMIN_TOKEN=TOKEN),
    )
    assert refused.returncode == 2
    assert "clear text" in refused.stderr
    assert "--admin-plaintext" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    with serve_process(
        "--admin",
        f"0.0.0.0:{port}",
        "--admin-plaintext",
        "--state-dir",
        "",
        env=_environment(TLSGATE_ADMIN_TOKEN=TOKEN),
        admin_url=f"http://127.0.0.1:{port}",
    ):
        pass  # entered once /healthz answers: it serves
    # The CLI does not send a token in clear text to a non-loopback server either (refused
    # before any connection is attempted).
    cli = run_tlsgate("get", "tlsroutes", "--server", "http://admin.invalid:9901", "--token", "x")
    assert cli.returncode == 1
    assert "clear text" in cli.stderr


def test_start_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--admin",
                f"127.0.0.1:{port}",
                "--state-dir",
                "",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=_environment(),
        )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0]
    assert "in use" in lines[0]

    for variable, value in (
        ("TLSGATE_IDLE_TIMEOUT", "abc"),
        ("TLSGATE_BODY_LIMIT", "4MB"),
        ("TLSGATE_MAX_CONNECTIONS", "-3"),
        ("TLSGATE_LOG_LEVEL", "verbose"),
        ("TLSGATE_LOG_FORMAT", "xml"),
        ("TLSGATE_ADMIN", "garbage"),
    ):
        bad = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--state-dir", ""],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=_environment(**{variable: value}),
        )
        assert bad.returncode == 2, bad.stderr
        assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
        assert variable in bad.stderr
        assert value in bad.stderr

    unreadable = run_tlsgate(
        "serve", "--admin", "127.0.0.1:0", "--admin-tls-cert", str(tmp_path / "nope.pem"),
        "--admin-tls-key", str(tmp_path / "nope.pem"), "--state-dir", "",
    )  # fmt: skip
    assert unreadable.returncode == 2
    assert len(unreadable.stderr.strip().splitlines()) == 1
    assert "nope.pem" in unreadable.stderr
    ca_alone = run_tlsgate(
        "serve", "--admin-client-ca", str(tmp_path / "ca.pem"), "--state-dir", ""
    )
    assert ca_alone.returncode == 2
    assert "--admin-tls-cert" in ca_alone.stderr


def test_a_second_gateway_on_the_same_state_directory_is_refused(tmp_path: Path) -> None:
    port = free_port()
    state = str(tmp_path / "state")
    with serve_process(
        "--admin",
        f"127.0.0.1:{port}",
        "--state-dir",
        state,
        env=_environment(),
        admin_url=f"http://127.0.0.1:{port}",
    ):
        second = run_tlsgate("serve", "--admin", "", "--state-dir", state)
        assert second.returncode == 2
        assert "in use by another tlsgate process" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serve_process(
        "--admin", f"127.0.0.1:{port}", "--state-dir", "", env=_environment(), admin_url=url
    ):
        documents = "".join(
            f"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}, namespace: a}}\n"
            f"data: {{k: '{'v' * 200}'}}\n"
            for i in range(300)
        )
        applied = run_tlsgate("apply", "-f", "-", "--server", url, stdin=documents)
        assert applied.returncode == 0, applied.stderr
        piped = subprocess.run(
            [
                "bash",
                "-c",
                f"{sys.executable} -m gateway get configmaps -o yaml --server {url} | head -1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert piped.stdout.strip() == "apiVersion: v1"
        assert "Traceback" not in piped.stderr, piped.stderr
        assert "BrokenPipe" not in piped.stderr, piped.stderr


def test_help_is_written_for_users() -> None:
    result = run_tlsgate("--help")
    assert result.returncode == 0
    opening = result.stdout.split("positional arguments")[0]
    for developer_word in ("API.md", "I/O edge", "SPEC.md"):
        assert developer_word not in result.stdout
    assert "SNI" in opening
    assert "Gateway API" in opening
