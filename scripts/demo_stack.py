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
BACKENDS = {"db": (19441, False), "web": (19442, True)}  # name: (port, speaks HTTP)


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


def certificates() -> None:
    """A demo CA and one certificate per backend, issued fresh each run."""
    STATE.mkdir(exist_ok=True)
    ca = trustme.CA(organization_name="tlsgate demo CA")
    ca.cert_pem.write_to_path(str(STATE / "ca.pem"))
    for name in BACKENDS:
        ca.issue_cert(f"{name}.example.test").private_key_and_cert_chain_pem.write_to_path(
            str(STATE / f"{name}.pem")
        )


def commands() -> dict[str, list[str]]:
    ca = str(STATE / "ca.pem")
    return {
        "curl": [
            "curl",
            "--silent",
            "--show-error",
            "--cacert",
            ca,
            "--resolve",
            f"web.example.test:{GATEWAY_PORT}:127.0.0.1",
            f"https://web.example.test:{GATEWAY_PORT}/",
        ],
        "openssl": [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{GATEWAY_PORT}",
            "-servername",
            "db.example.test",
            "-CAfile",
            ca,
            "-verify_return_error",
            "-quiet",
        ],
    }


def check() -> bool:
    ok = True
    cmds = commands()
    curl = subprocess.run(cmds["curl"], capture_output=True, text=True, timeout=30, check=False)
    try:
        answer = json.loads(curl.stdout)
    except json.JSONDecodeError:
        answer = {}
    good = answer == {"backend": "web", "sni": "web.example.test", "tls": True}
    print(f"{'ok ' if good else 'FAIL'} curl -> {curl.stdout.strip() or curl.stderr.strip()}")
    ok &= good
    s_client = subprocess.run(
        cmds["openssl"],
        input="TEST\nQUIT\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    lines = s_client.stdout.splitlines()
    good = (
        s_client.returncode == 0
        and lines[:1] == ["HELLO db"]
        and json.loads(lines[1]) == {"backend": "db", "sni": "db.example.test", "tls": True}
    )
    print(f"{'ok ' if good else 'FAIL'} openssl s_client -> {' | '.join(lines) or s_client.stderr}")
    ok &= good
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
    return ok & good


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the tlsgate demo stack locally.")
    parser.add_argument(
        "--check", action="store_true", help="run the example commands, verify them, stop, exit 0/1"
    )
    args = parser.parse_args()
    certificates()
    started: list[subprocess.Popen[bytes]] = []
    python = sys.executable
    try:
        for name, (port, http) in BACKENDS.items():
            pem = str(STATE / f"{name}.pem")
            process = subprocess.Popen(
                [
                    python,
                    str(ROOT / "tests" / "linebackend.py"),
                    "--name",
                    name,
                    "--port",
                    str(port),
                    "--cert",
                    pem,
                    "--key",
                    pem,
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
                "--bind-address",
                "127.0.0.1",
                "--state-dir",
                str(STATE / "store"),
            ],
            stdout=None if not args.check else subprocess.DEVNULL,
            stderr=None if not args.check else subprocess.DEVNULL,
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

  Line-protocol backend (type PING, TEST, QUIT):
    {" ".join(cmds["openssl"])}

  An unknown name is closed during the handshake:
    openssl s_client -connect 127.0.0.1:{GATEWAY_PORT} -servername nope.example.test

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
