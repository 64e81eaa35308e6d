"""The demo stack as local processes: what `scripts/demo` runs (see its header). I/O script.

The interactive demo runs on the documented fixed ports (the README prints them): the Gateway's
listener port and the Services' targetPorts in examples/demo.yaml, the admin API on
127.0.0.1:9901, certificates and store under ./demo-state. It refuses to start when one of
those ports is taken rather than half-starting next to another demo.

`--check` (CI) runs the same manifests with every port replaced by a free one and its
certificates and store in a temporary directory, so it can run beside a demo, or anything else,
without touching it. Every process the script starts is stopped by PID on every way out.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import trustme
import yaml

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "demo-state"
#: The manifests `scripts/demo` bootstraps; the compose stack shares examples/demo.yaml.
MANIFESTS = (ROOT / "examples" / "demo.yaml", ROOT / "examples" / "demo-endpoints-local.yaml")
ADMIN_PORT = 9901  # `tlsgate serve`'s default admin address, printed by the README
#: Service name: (answers HTTP, serves TLS itself). Their ports are the Services' targetPorts.
BACKENDS = {"db": (False, True), "web": (True, True), "cache": (False, False)}
TIMEOUT = 30  # seconds, for each process to start or stop


@dataclass(frozen=True)
class Stack:
    """Where one run of the stack lives: its directory (certificates, store) and its ports."""

    state: Path
    gateway_port: int
    admin_port: int
    backend_ports: Mapping[str, int]
    #: Where this tlsgate binds its listeners (with --replicas, each replica has its own).
    address: str = "127.0.0.1"


class Stopped(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived: unwind, so that every started process is stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signum)


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def documented_ports() -> tuple[int, dict[str, int]]:
    """The Gateway's listener port and each backend's port (its Service's targetPort), as
    examples/demo.yaml says them."""
    docs = load(MANIFESTS[0])
    listener_ports = {
        listener["port"]
        for doc in docs
        if doc["kind"] == "Gateway"
        for listener in doc["spec"]["listeners"]
    }
    (gateway_port,) = listener_ports  # the demo's listeners share one port (Mixed)
    backend_ports = {
        doc["metadata"]["name"]: port["targetPort"]
        for doc in docs
        if doc["kind"] == "Service"
        for port in doc["spec"]["ports"]
    }
    return gateway_port, backend_ports


def _integers(value: object) -> Iterator[int]:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _integers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _integers(item)


def with_ports(
    docs: list[dict[str, Any]], gateway_port: int, backend_ports: Mapping[str, int]
) -> list[dict[str, Any]]:
    """The demo manifests with the Gateway's listener ports and the backends' ports (Services'
    targetPorts, EndpointSlices' ports) changed in place in the structure; raises if a
    documented port is left anywhere, so a port added elsewhere in the examples is noticed."""
    out = copy.deepcopy(docs)
    for doc in out:
        kind = doc["kind"]
        if kind == "Gateway":
            for listener in doc["spec"]["listeners"]:
                listener["port"] = gateway_port
        elif kind == "Service":
            for port in doc["spec"]["ports"]:
                port["targetPort"] = backend_ports[doc["metadata"]["name"]]
        elif kind == "EndpointSlice":
            service = doc["metadata"]["labels"]["kubernetes.io/service-name"]
            for port in doc.get("ports") or []:
                port["port"] = backend_ports[service]
    old_gateway, old_backends = documented_ports()
    new = {gateway_port, *backend_ports.values()}
    left = ({old_gateway, *old_backends.values()} - new) & set(_integers(out))
    if left:
        raise SystemExit(f"demo manifests: port(s) {sorted(left)} not substituted for --check")
    return out


def ensure_free(port: int) -> None:
    """Bind as tlsgate and the backends will (SO_REUSEADDR: a TIME_WAIT left by an earlier
    run does not count, a listening socket does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise SystemExit(f"port {port} is in use: is another demo running?") from None


def free_ports(count: int) -> list[int]:
    """Distinct free ports: the sockets stay bound until all are picked."""
    with contextlib.ExitStack() as sockets:
        ports = []
        for _ in range(count):
            sock = sockets.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def secret_manifest(name: str, namespace: str, certificate: str, key: str) -> str:
    def block(text: str) -> str:
        return "\n".join("    " + line for line in text.strip().splitlines())

    return (
        f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
        f"type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{block(certificate)}\n"
        f"  tls.key: |\n{block(key)}\n"
    )


def certificates(directory: Path = STATE) -> None:
    """A demo CA, a certificate per TLS backend, the Terminate listener's Secret and the admin
    API's certificate, issued fresh on each run (also the compose stack's `certs` step)."""
    directory.mkdir(exist_ok=True)
    ca = trustme.CA(organization_name="tlsgate demo CA")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    for name, (_, tls) in BACKENDS.items():
        if tls:
            leaf = ca.issue_cert(f"{name}.example.test")
            leaf.private_key_and_cert_chain_pem.write_to_path(str(directory / f"{name}.pem"))
    gateway = ca.issue_cert("cache.example.test")
    chain = "".join(b.bytes().decode() for b in gateway.cert_chain_pems)
    manifest = secret_manifest("demo-cert", "demo", chain, gateway.private_key_pem.bytes().decode())
    (directory / "gateway-cert.yaml").write_text(manifest)
    # The admin API's HTTPS certificate (the compose stack serves the admin API off loopback,
    # where tlsgate refuses plain HTTP): reachable as localhost, 127.0.0.1 or the service name.
    admin = ca.issue_cert("localhost", "127.0.0.1", "tlsgate")
    admin.private_key_and_cert_chain_pem.write_to_path(str(directory / "admin.pem"))


class Processes:
    """The processes of one stack, stopped by PID (SIGTERM, then SIGKILL after TIMEOUT)."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, command: list[str], **options: Any) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, **options)
        self.started.append(process)
        return process

    def stop(self) -> None:
        # A second Ctrl-C must not cut the cleanup short (the children get it from the
        # terminal themselves). SIG_IGN is set only now, after the last child started.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        for process in reversed(self.started):  # tlsgate first, then its backends
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.started):
            try:
                process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout:
                process.stdout.close()


def listening_port(process: subprocess.Popen[bytes], what: str) -> int:
    """The port from the backend's first line, `listening HOST PORT` (tests/linebackend.py),
    printed once it is bound."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    line = b""
    deadline = time.monotonic() + TIMEOUT
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SystemExit(f"{what} did not start listening within {TIMEOUT}s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 256)
            if not chunk:
                raise SystemExit(f"{what} exited with {process.wait(TIMEOUT)}")
            line += chunk
    words = line.split()
    if len(words) != 3 or words[0] != b"listening" or not words[2].isdigit():
        raise SystemExit(f"{what} said {line!r}, not `listening HOST PORT`")
    return int(words[2])


def wait_ready(admin_port: int, process: subprocess.Popen[bytes]) -> None:
    """Until tlsgate's GET /readyz answers 200: the configuration is loaded and every listener
    bound (API.md). Asking the admin API, not the TLS port, keeps probes out of the access log."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    url = f"http://127.0.0.1:{admin_port}/readyz"
    reason = "no answer"
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"tlsgate exited with {process.returncode}")
        try:
            with opener.open(url, timeout=5) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:  # 503 with the reason
            reason = exc.read().decode(errors="replace").strip()
        except OSError as exc:
            reason = str(exc)
        time.sleep(0.05)
    raise SystemExit(f"tlsgate was not ready within {TIMEOUT}s: {reason}")


def start_backends(processes: Processes, state: Path, ports: Mapping[str, int]) -> dict[str, int]:
    """Starts each backend on its port (0: a free one) and returns the ports they bound."""
    bound = {}
    for name, (http, tls) in BACKENDS.items():
        pem = str(state / f"{name}.pem")
        process = processes.start(
            [
                sys.executable,
                str(ROOT / "tests" / "linebackend.py"),
                "--name",
                name,
                "--port",
                str(ports.get(name, 0)),
                *(["--cert", pem, "--key", pem] if tls else []),
                *(["--http"] if http else []),
            ],
            stdout=subprocess.PIPE,
        )
        bound[name] = listening_port(process, f"backend {name}")
    return bound


def s_client(stack: Stack, server_name: str) -> list[str]:
    return [
        "openssl",
        "s_client",
        "-connect",
        f"{stack.address}:{stack.gateway_port}",
        "-servername",
        server_name,
        "-CAfile",
        str(stack.state / "ca.pem"),
        "-verify_return_error",
        "-quiet",
    ]


def commands(stack: Stack) -> dict[str, list[str]]:
    port = stack.gateway_port
    return {
        "curl": [
            "curl",
            "--silent",
            "--show-error",
            "--cacert",
            str(stack.state / "ca.pem"),
            "--resolve",
            f"web.example.test:{port}:{stack.address}",
            f"https://web.example.test:{port}/",
        ],
        "passthrough": s_client(stack, "db.example.test"),
        "terminate": s_client(stack, "cache.example.test"),
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


def check(stack: Stack) -> bool:
    cmds = commands(stack)
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
            f"{stack.address}:{stack.gateway_port}",
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
    page = subprocess.run(
        ["curl", "-sS", f"http://127.0.0.1:{stack.admin_port}/ui"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    shown = all(f'data-route="{name}"' in page.stdout for name in _demo_routes())
    print(f"{'ok ' if shown else 'FAIL'} the dashboard at /ui lists the demo's routes")
    return ok and good and shown


def _demo_routes() -> list[str]:
    """The TLSRoutes of examples/demo.yaml, `namespace/name`."""
    with (ROOT / "examples" / "demo.yaml").open() as manifests:
        return [
            f"{doc['metadata'].get('namespace', 'default')}/{doc['metadata']['name']}"
            for doc in yaml.safe_load_all(manifests)
            if doc and doc.get("kind") == "TLSRoute"
        ]


def check_replicas(stacks: list[Stack]) -> bool:
    """Every replica is listed, live and ready, by each one's GET /v1/replicas."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    good = True
    for stack in stacks:
        deadline = time.monotonic() + TIMEOUT
        while True:
            url = f"http://127.0.0.1:{stack.admin_port}/v1/replicas"
            with opener.open(url, timeout=5) as response:
                items = json.load(response)["items"]
            ready = sorted(r["name"] for r in items if r["ready"])
            if len(ready) == len(stacks) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        ok = len(ready) == len(stacks)
        print(f"{'ok ' if ok else 'FAIL'} GET /v1/replicas on port {stack.admin_port} -> {ready}")
        good &= ok
    return good


def replicas_banner(stacks: list[Stack]) -> str:
    lines = "\n".join(
        f"    replica on {s.address}:{s.gateway_port}, admin http://127.0.0.1:{s.admin_port}"
        for s in stacks
    )
    first, second = stacks[0], stacks[1]
    return f"""Replicas sharing one configuration through a three-member etcd cluster:
{lines}

  Every replica and its applied revision:
    curl http://127.0.0.1:{first.admin_port}/v1/replicas

  A write through one replica, answered once every replica runs it:
    curl -X DELETE 'http://127.0.0.1:{second.admin_port}/v1/tlsroutes/demo/db?wait=replicas'
  (the commands above with {first.address} replaced by {second.address} use the other replica)
"""


def banner(stack: Stack) -> str:
    cmds = commands(stack)
    port = stack.gateway_port
    return f"""
tlsgate demo: listening on 127.0.0.1:{port} (manifests: examples/demo.yaml)

  HTTPS backend, passed through (the certificate you see is the backend's own):
    {" ".join(cmds["curl"])}

  Line-protocol backend, passed through (type PING, TEST, QUIT):
    {" ".join(cmds["passthrough"])}

  Plain-TCP backend, TLS terminated by tlsgate (TEST shows the backend saw no TLS):
    {" ".join(cmds["terminate"])}

  An unknown name is closed during the handshake:
    openssl s_client -connect 127.0.0.1:{port} -servername nope.example.test

  The admin API: curl http://127.0.0.1:{stack.admin_port}/v1/routingtable

  The dashboard, live: open http://127.0.0.1:{stack.admin_port}/ui in a browser

Ctrl-C stops everything.
"""


#: etcd members of `--replicas`, and the tlsgate replicas sharing them.
ETCD_MEMBERS = 3
REPLICAS = 2


def start_etcd(processes: Processes, directory: Path) -> str:
    """A cluster of ETCD_MEMBERS etcd processes on free loopback ports, its data under
    `directory`; the `--store` URL of tlsgate for it."""
    ports = free_ports(2 * ETCD_MEMBERS)
    clients, peers = ports[:ETCD_MEMBERS], ports[ETCD_MEMBERS:]
    initial = ",".join(f"m{i}=http://127.0.0.1:{peers[i]}" for i in range(ETCD_MEMBERS))
    for i in range(ETCD_MEMBERS):
        client, peer = f"http://127.0.0.1:{clients[i]}", f"http://127.0.0.1:{peers[i]}"
        log = (directory / f"etcd-m{i}.log").open("ab")
        processes.start(
            [
                "etcd",
                f"--name=m{i}",
                f"--data-dir={directory / f'etcd-m{i}'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster={initial}",
                "--initial-cluster-state=new",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + TIMEOUT
    for port in clients:
        while True:
            try:
                with opener.open(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if json.load(response).get("health") == "true":
                        break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"etcd did not start within {TIMEOUT}s: see {directory}")
            time.sleep(0.1)
    return "etcd://" + ",".join(f"127.0.0.1:{port}" for port in clients)


def store_option(
    processes: Processes, cleanup: contextlib.ExitStack, state: Path, *, replicas: bool
) -> list[str]:
    """tlsgate's store: the demo's SQLite directory, or with --replicas a fresh etcd cluster
    each run (its data in a temporary directory), the bootstrap shared through it."""
    if not replicas:
        return ["--state-dir", str(state / "store")]
    etcd_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="tlsgate-etcd-")))
    return ["--store", start_etcd(processes, etcd_dir)]


def replica_stacks(first: Stack, check_only: bool) -> list[Stack]:
    """The other replicas: replica i binds its listeners on 127.0.0.(i+1), and its admin
    API on a free port (--check) or the ports after 9901."""
    count = REPLICAS - 1
    ports = free_ports(count) if check_only else [ADMIN_PORT + 1 + i for i in range(count)]
    return [
        Stack(first.state, first.gateway_port, port, first.backend_ports, f"127.0.0.{i + 2}")
        for i, port in enumerate(ports)
    ]


def start_gateways(
    processes: Processes,
    stacks: list[Stack],
    bootstrap: list[Path],
    store: list[str],
    *,
    replicas: bool,
    output: dict[str, Any],
) -> list[subprocess.Popen[bytes]]:
    """One `tlsgate serve` per stack (one, or each replica)."""
    gateways = []
    for index, each in enumerate(stacks):
        named = ["--replica-name", f"replica-{index}"] if replicas else []
        gateways.append(
            processes.start(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "serve",
                    *(f"--bootstrap={path}" for path in bootstrap),
                    "--bind-address",
                    each.address,
                    "--admin",
                    f"127.0.0.1:{each.admin_port}",
                    *store,
                    *named,
                ],
                **output,
            )
        )
    return gateways


def verify(stacks: list[Stack], *, replicas: bool) -> bool:
    passed = True
    for each in stacks:
        if replicas:
            print(f"-- replica on {each.address}, admin port {each.admin_port}")
        passed &= check(each)
    if replicas:
        passed &= check_replicas(stacks)
    return passed


def reused(state: Path, *, fresh: bool, replicas: bool) -> str | None:
    """Forget (`--fresh`) or announce what an earlier interactive run stored: the demo's store
    keeps every write, so a second run serves the walk-through's objects too. The notice to
    print, or None. (With --replicas the store is a new etcd cluster each time.)"""
    store = state / "store"
    if fresh and store.exists():
        shutil.rmtree(store)
        return None
    if replicas or not (store / "tlsgate.db").exists():
        return None
    return (
        f"Reusing the configuration stored in {store.relative_to(ROOT)} by an earlier run: what "
        "was applied then is served too. `scripts/demo --fresh` starts from the demo's "
        "manifests alone."
    )


def announce(stacks: list[Stack], notice: str | None, *, replicas: bool) -> None:
    """What the interactive demo prints once it is up: the commands to try."""
    print(banner(stacks[0]), flush=True)
    if notice:
        print(notice, flush=True)
    if replicas:
        print(replicas_banner(stacks), flush=True)


def run(
    check_only: bool, cleanup: contextlib.ExitStack, replicas: bool = False, fresh: bool = False
) -> int:
    notice = None
    if check_only:
        state = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="tlsgate-demo-")))
        wanted: Mapping[str, int] = {}  # free ports, each backend binds port 0
    else:
        gateway_port, wanted = documented_ports()
        admins = [ADMIN_PORT + i for i in range(REPLICAS if replicas else 1)]
        for port in (gateway_port, *wanted.values(), *admins):
            ensure_free(port)  # before anything is written or started
        state = STATE
        notice = reused(state, fresh=fresh, replicas=replicas)
    certificates(state)
    processes = Processes()
    cleanup.callback(processes.stop)  # runs before the temporary directory goes
    backend_ports = start_backends(processes, state, wanted)
    store = store_option(processes, cleanup, state, replicas=replicas)
    if check_only:
        gateway_port, admin_port = free_ports(2)
        stack = Stack(state, gateway_port, admin_port, backend_ports)
        bootstrap = []
        for path in MANIFESTS:
            derived = with_ports(load(path), stack.gateway_port, backend_ports)
            bootstrap.append(state / path.name)
            bootstrap[-1].write_text(yaml.safe_dump_all(derived, sort_keys=False))
        log = cleanup.enter_context((state / "tlsgate.log").open("wb"))
        output: dict[str, Any] = {"stdout": log, "stderr": subprocess.STDOUT}
    else:
        stack = Stack(state, gateway_port, ADMIN_PORT, backend_ports)
        bootstrap = list(MANIFESTS)
        output = {}
    stacks = [stack, *(replica_stacks(stack, check_only) if replicas else [])]
    gateways = start_gateways(
        processes,
        stacks,
        [*bootstrap, state / "gateway-cert.yaml"],
        store,
        replicas=replicas,
        output=output,
    )
    try:
        for each, gateway in zip(stacks, gateways, strict=True):
            wait_ready(each.admin_port, gateway)
        if check_only:
            if verify(stacks, replicas=replicas):
                return 0
            raise SystemExit(1)
    except SystemExit:
        if check_only:
            print(f"tlsgate's log:\n{(state / 'tlsgate.log').read_text()}", file=sys.stderr)
        raise
    announce(stacks, notice, replicas=replicas)
    while True:
        signal.pause()  # until Stopped


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the tlsgate demo stack locally.")
    parser.add_argument(
        "--check",
        action="store_true",
        help="run the example commands against a stack on free ports, verify them, stop, exit 0/1",
    )
    parser.add_argument(
        "--replicas",
        action="store_true",
        help=f"run {REPLICAS} tlsgate replicas sharing a {ETCD_MEMBERS}-member etcd cluster "
        "(needs etcd, Debian's etcd-server)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="forget what an earlier run stored in demo-state/store and start from the "
        "demo's manifests alone",
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
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stopped)
    try:
        with contextlib.ExitStack() as cleanup:
            return run(args.check, cleanup, args.replicas, args.fresh)
    except Stopped:
        # Ctrl-C is how the interactive demo ends; a stopped check did not pass.
        return 1 if args.check else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
