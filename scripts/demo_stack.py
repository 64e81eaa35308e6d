"""The demo stack as local processes: what `scripts/demo` runs (see its header)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import trustme

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "demo-state"
GATEWAY_PORT = 18443
#: name: (port, answers HTTP, serves TLS itself)
BACKENDS = {
    "db": (19441, False, True),
    "web": (19442, True, True),
    "cache": (19443, False, False),
}


def wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not open port {port}")


def secret_manifest(name: str, namespace: str, certificate: str, key: str) -> str:
    def block(text: str) -> str:
        return "\n".join("    " + line for line in text.strip().splitlines())

    return (
        f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
        f"type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{block(certificate)}\n"
        f"  tls.key: |\n{block(key)}\n"
    )


def certificates(directory: Path = STATE) -> None:
    """A demo CA, a certificate per TLS backend, and the Terminate listener's Secret, issued
    fresh on each run (also the compose stack's `certs` step)."""
    directory.mkdir(exist_ok=True)
    ca = trustme.CA(organization_name="tlsgate demo CA")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    for name, (_, _, tls) in BACKENDS.items():
        if tls:
            leaf = ca.issue_cert(f"{name}.example.test")
            leaf.private_key_and_cert_chain_pem.write_to_path(str(directory / f"{name}.pem"))
    gateway = ca.issue_cert("cache.example.test")
    chain = "".join(b.bytes().decode() for b in gateway.cert_chain_pems)
    manifest = secret_manifest("demo-cert", "demo", chain, gateway.private_key_pem.bytes().decode())
    (directory / "gateway-cert.yaml").write_text(manifest)


def s_client(server_name: str) -> list[str]:
    return [
        "openssl",
        "s_client",
        "-connect",
        f"127.0.0.1:{GATEWAY_PORT}",
        "-servername",
        server_name,
        "-CAfile",
        str(STATE / "ca.pem"),
        "-verify_return_error",
        "-quiet",
    ]


def commands() -> dict[str, list[str]]:
    return {
        "curl": [
            "curl",
            "--silent",
            "--show-error",
            "--cacert",
            str(STATE / "ca.pem"),
            "--resolve",
            f"web.example.test:{GATEWAY_PORT}:127.0.0.1",
            f"https://web.example.test:{GATEWAY_PORT}/",
        ],
        "passthrough": s_client("db.example.test"),
        "terminate": s_client("cache.example.test"),
    }


def _line_check(label: str, command: list[str], greeting: str, expected: dict[str, object]) -> bool:
    result = subprocess.run(
        command, input="TEST\nQUIT\n", capture_output=True, text=True, timeout=30, check=False
    )
    lines = result.stdout.splitlines()
    try:
        good = (
            result.returncode == 0 and lines[:1] == [greeting] and json.loads(lines[1]) == expected
        )
    except (IndexError, json.JSONDecodeError):
        good = False
    print(f"{'ok ' if good else 'FAIL'} {label} -> {' | '.join(lines) or result.stderr.strip()}")
    return good


def check() -> bool:
    cmds = commands()
    curl = subprocess.run(cmds["curl"], capture_output=True, text=True, timeout=30, check=False)
    try:
        answer = json.loads(curl.stdout)
    except json.JSONDecodeError:
        answer = {}
    ok = answer == {"backend": "web", "sni": "web.example.test", "tls": True}
    print(f"{'ok ' if ok else 'FAIL'} curl -> {curl.stdout.strip() or curl.stderr.strip()}")
    ok &= _line_check(
        "openssl s_client, passthrough",
        cmds["passthrough"],
        "HELLO db",
        {"backend": "db", "sni": "db.example.test", "tls": True},
    )
    ok &= _line_check(
        "openssl s_client, terminated",
        cmds["terminate"],
        "HELLO cache",
        {"backend": "cache", "sni": None, "tls": False},
    )
    rejected = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{GATEWAY_PORT}",
            "-servername",
            "unknown.example.test",
            "-quiet",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    good = rejected.returncode != 0
    print(f"{'ok ' if good else 'FAIL'} an unknown SNI is closed during the handshake")
    return ok and good


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the tlsgate demo stack locally.")
    parser.add_argument(
        "--check", action="store_true", help="run the example commands, verify them, stop, exit 0/1"
    )
    parser.add_argument(
        "--certs-only",
        metavar="DIR",
        type=Path,
        help="only write the demo CA, certificates and Secret into DIR (the compose stack)",
    )
    args = parser.parse_args()
    if args.certs_only:
        certificates(args.certs_only)
        return 0
    certificates()
    started: list[subprocess.Popen[bytes]] = []
    python = sys.executable
    quiet = subprocess.DEVNULL if args.check else None
    try:
        for name, (port, http, tls) in BACKENDS.items():
            pem = str(STATE / f"{name}.pem")
            process = subprocess.Popen(
                [
                    python,
                    str(ROOT / "tests" / "linebackend.py"),
                    "--name",
                    name,
                    "--port",
                    str(port),
                    *(["--cert", pem, "--key", pem] if tls else []),
                    *(["--http"] if http else []),
                ],
                stdout=subprocess.DEVNULL,
            )
            started.append(process)
            wait_port(port, process, f"backend {name}")
        gateway = subprocess.Popen(
            [
                python,
                "-m",
                "gateway",
                "serve",
                "--bootstrap",
                str(ROOT / "examples" / "demo.yaml"),
                "--bootstrap",
                str(ROOT / "examples" / "demo-endpoints-local.yaml"),
                "--bootstrap",
                str(STATE / "gateway-cert.yaml"),
                "--bind-address",
                "127.0.0.1",
                "--state-dir",
                str(STATE / "store"),
            ],
            stdout=quiet,
            stderr=quiet,
        )
        started.append(gateway)
        wait_port(GATEWAY_PORT, gateway, "tlsgate")
        if args.check:
            return 0 if check() else 1
        cmds = commands()
        print(
            f"""
tlsgate demo: listening on 127.0.0.1:{GATEWAY_PORT} (manifests: examples/demo.yaml)

  HTTPS backend, passed through (the certificate you see is the backend's own):
    {" ".join(cmds["curl"])}

  Line-protocol backend, passed through (type PING, TEST, QUIT):
    {" ".join(cmds["passthrough"])}

  Plain-TCP backend, TLS terminated by tlsgate (TEST shows the backend saw no TLS):
    {" ".join(cmds["terminate"])}

  An unknown name is closed during the handshake:
    openssl s_client -connect 127.0.0.1:{GATEWAY_PORT} -servername nope.example.test

  The admin API: curl http://127.0.0.1:9901/v1/routingtable

Ctrl-C stops everything.
""",
            flush=True,
        )
        signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # after the children started
        signal.sigwait(signals)
        return 0
    finally:
        for process in reversed(started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(started):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
